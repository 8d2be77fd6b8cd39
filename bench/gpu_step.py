"""A paper-scale training step on one GPU: images/s per method and precision, and where the step's time goes.

ResNet-50 FPN at the paper's input (800 x 1216 after the 800/1333 resize of a 4:3 COCO image), 80 classes,
COCO-like GTs (log-uniform sides 16-500 px, 3-12 per image), random pixels: no dataset is read, so the
figures are the model's, the assignment's and the loss's, not the data pipeline's. Each precision runs
`--steps` timed steps after `--warmup` (plain: one synchronisation per step), then as many instrumented steps
that synchronise around each phase: forward (model), assignment (FreeAnchor: its whole loss, which matches),
the other losses, backward, optimizer.

    python bench/gpu_step.py                                 # paa, atss, free_anchor x fp32, fp16, bf16
    python bench/gpu_step.py -m paa --amp bf16 --batch 16
    python bench/gpu_step.py --device cpu --height 320 --width 320 --backbone tiny --batch 2 --steps 2 \\
        --set model.head.width=32 --set model.head.fpn_width=32   # a CPU smoke test

Prints one line per (method, precision) and, with --json, writes the figures as a list of records.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from detector.config import load_config  # noqa: E402
from detector.data.batch import Batch  # noqa: E402
from detector.engine.optim import build_optimizer  # noqa: E402
from detector.engine.step import TrainStep  # noqa: E402
from detector.methods import LossInputs  # noqa: E402
from detector.model.detector import DenseDetector  # noqa: E402

CONFIGS = {"paa": "paa.yaml", "atss": "atss.yaml", "free_anchor": "free_anchor.yaml", "max_iou": "retinanet_iou.yaml",
           "fcos_inside": "fcos_inside.yaml", "pseudo_iou": "pseudo_iou.yaml"}
PRECISIONS = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}
PHASES = ("forward", "assign", "loss", "backward", "optimizer")


def coco_like_batch(images: int, height: int, width: int, classes: int, seed: int, device: torch.device) -> Batch:
    """Random pixels and 3-12 GTs per image (padded to 12), sides log-uniform in [16, 500] px."""
    rng = np.random.default_rng(seed)
    m = 12
    n = rng.integers(3, m + 1, images)
    wh = np.exp(rng.uniform(np.log(16), np.log(500), (images, m, 2)))
    wh = np.minimum(wh, [width - 1, height - 1])
    xy = rng.uniform(0, 1, (images, m, 2)) * ([width, height] - wh)
    boxes = torch.tensor(np.concatenate([xy, xy + wh], 2), dtype=torch.float32)
    valid = torch.arange(m)[None] < torch.tensor(n)[:, None]
    labels = torch.where(valid, torch.tensor(rng.integers(0, classes, (images, m))), -1)
    return Batch(images=torch.randn(images, 3, height, width), image_sizes=torch.tensor([[height, width]] * images),
                 gt_boxes=boxes * valid[..., None], gt_labels=labels, gt_valid=valid,
                 ignore_boxes=torch.zeros(images, 0, 4), ignore_valid=torch.zeros(images, 0, dtype=torch.bool),
                 image_ids=torch.arange(images), scales=torch.ones(images)).to(device)


class _Clock:
    """Synchronised phase timings: `mark(name)` closes the phase that began at the previous mark."""

    def __init__(self, device: torch.device):
        self.sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        self.times: dict[str, float] = {}
        self.t = 0.0

    def start(self) -> None:
        self.sync()
        self.times, self.t = {}, time.perf_counter()

    def mark(self, name: str) -> None:
        self.sync()
        now = time.perf_counter()
        self.times[name] = self.times.get(name, 0.0) + now - self.t
        self.t = now


def _timed_method(method, clock: _Clock):
    """The method record with its assignment (or matching loss) closed off by synchronised marks."""
    if method.assign is not None:
        inner = method.assign

        def assign(inputs, cfg):
            clock.mark("loss")  # decoding the predictions for the assigner counts as loss time
            result = inner(inputs, cfg)
            clock.mark("assign")
            return result
        return dataclasses.replace(method, assign=assign)
    inner_loss = method.loss

    def loss(m, inputs):
        clock.mark("forward")
        out = inner_loss(m, inputs)
        clock.mark("assign")
        return out
    return dataclasses.replace(method, loss=loss)


def bench(name: str, precision: str, args, device: torch.device) -> dict:
    overrides = [f"model.backbone.name={args.backbone}", f"model.num_classes={args.classes}",
                 f"model.channels_last={str(args.channels_last).lower()}", *args.overrides]
    cfg = load_config([str(ROOT / "studies/configs" / CONFIGS[name])], overrides)
    torch.manual_seed(0)
    model = DenseDetector(cfg.model, args.classes).to(device)
    optimizer = build_optimizer(model, cfg.train)
    dtype = PRECISIONS[precision]
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    step = TrainStep(model, cfg)
    plain_method = step.method
    clock = _Clock(device)
    batch = coco_like_batch(args.batch, args.height, args.width, args.classes, 0, device)
    model.train()

    def one_step(timed: bool) -> float:
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            out, anchors, counts = model(batch.images)
            if timed:
                clock.mark("forward")
            losses = step.method.loss(step.method, LossInputs(out, anchors, counts, batch, step.coder, step.cfg)).losses
        loss = losses["loss"]
        if timed:
            clock.mark("loss")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if timed:
            clock.mark("backward")
        scaler.step(optimizer)
        scaler.update()
        if timed:
            clock.mark("optimizer")
        return float(loss.detach())

    for _ in range(args.warmup):
        one_step(False)
    clock.start()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        last_loss = one_step(False)  # float() synchronises once per step, as training's finite-loss check
    step_s = (time.perf_counter() - t0) / args.steps
    step.method = _timed_method(plain_method, clock)
    phases: dict[str, list[float]] = {p: [] for p in PHASES}
    for _ in range(args.steps):
        clock.start()
        one_step(True)
        for p in PHASES:
            phases[p].append(clock.times.get(p, 0.0))
    step.method = plain_method
    med = {p: statistics.median(v) for p, v in phases.items()}
    total = sum(med.values())
    return {"method": name, "precision": precision, "batch": args.batch, "size": [args.height, args.width],
            "backbone": args.backbone, "device": str(device), "step_ms": 1000 * step_s,
            "images_per_s": args.batch / step_s, "loss": last_loss,
            "phases_ms": {p: 1000 * v for p, v in med.items()},
            "assign_share": med["assign"] / total if total else float("nan"),
            "max_memory_gb": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-m", "--method", action="append", choices=sorted(CONFIGS), help="default: paa, atss, free_anchor")
    ap.add_argument("--amp", action="append", choices=sorted(PRECISIONS), help="default: fp32, fp16, bf16")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--height", type=int, default=800)
    ap.add_argument("--width", type=int, default=1216)
    ap.add_argument("--classes", type=int, default=80)
    ap.add_argument("--backbone", default="resnet50")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="config override, e.g. model.head.width=32")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--json", help="write the records here")
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    records = []
    for name in args.method or ["paa", "atss", "free_anchor"]:
        for precision in args.amp or ["fp32", "fp16", "bf16"]:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            try:
                r = bench(name, precision, args, device)
            except Exception as e:  # one failing combination (say, a kernel without bf16) must not hide the others
                print(f"{name:<12} {precision}: FAILED {type(e).__name__}: {e}", flush=True)
                records.append({"method": name, "precision": precision, "error": f"{type(e).__name__}: {e}"})
                continue
            records.append(r)
            ph = "  ".join(f"{p} {v:.1f}" for p, v in r["phases_ms"].items())
            mem = f", peak {r['max_memory_gb']:.1f} GiB" if r["max_memory_gb"] is not None else ""
            print(f"{name:<12} {precision}: {r['step_ms']:7.1f} ms/step  {r['images_per_s']:6.1f} img/s  "
                  f"assign {100 * r['assign_share']:4.1f}%  [ms: {ph}]  loss {r['loss']:.3f}{mem}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(records, indent=1))


if __name__ == "__main__":
    main()
