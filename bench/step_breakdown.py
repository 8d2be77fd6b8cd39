"""Where a training step's time goes, on the real data pipeline: data (decode + augment + collate),
backbone + FPN forward, head forward, assignment, losses, backward, optimizer step.

    python bench/step_breakdown.py -c studies/configs/atss.yaml -c studies/configs/quick.yaml
    python bench/step_breakdown.py -c studies/configs/paa.yaml -c studies/configs/quick.yaml --threads 1
    python bench/step_breakdown.py ... --set data.min_size=[256] --set model.head.width=32   # a lever
    python bench/step_breakdown.py ... --channels-last        # NHWC convolutions: --set model.channels_last=true
    python bench/step_breakdown.py ... --set data.cache_images=true   # decoded images in memory (filled first)
    python bench/step_breakdown.py ... --compile              # torch.compile the backbone + FPN + head

Prints the median of each phase over `--steps` steps after `--warmup`, its share of the step, and the
step's median. Take figures on an otherwise idle machine: a second busy process slows each several-fold.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PHASES = ("data", "backbone_fpn", "head", "assign", "loss", "backward", "optimizer")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-c", "--config", action="append", default=[])
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--workspace", default=str(ROOT / "anchorlab-runs"))
    args = ap.parse_args()

    import torch

    from detector.config import load_config
    from detector.data.build import build_datasets
    from detector.data.sampler import build_train_loader
    from detector.engine.optim import build_optimizer, lr_at, set_lr
    from detector.methods import METHODS, LossInputs, build_box_coder
    from detector.model.detector import DenseDetector

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    if args.channels_last:  # the model's own option: it converts its weights and its input
        args.overrides.append("model.channels_last=true")
    cfg = load_config(args.config or [str(ROOT / "studies/configs/atss.yaml"), str(ROOT / "studies/configs/quick.yaml")],
                      args.overrides)
    train_set, _ = build_datasets(cfg, Path(args.workspace))
    if cfg.data.cache_images:  # time the steps of a later epoch: every image already decoded
        for i in range(len(train_set)):
            train_set.load(i)
    model = DenseDetector(cfg.model, cfg.model.num_classes or train_set.num_classes)
    features, head = model.features, model.head
    if args.compile:
        features, head = torch.compile(model.features), torch.compile(model.head)
    optimizer = build_optimizer(model, cfg.train)
    method, coder = METHODS[cfg.assign.name], build_box_coder(cfg)
    batches = iter(build_train_loader(train_set, cfg.train.batch_size, cfg.train.seed, num_workers=cfg.data.num_workers))
    model.train()
    times: dict[str, list[float]] = {p: [] for p in PHASES}
    steps: list[float] = []
    for it in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        batch = next(batches)
        images = batch.images  # with model.channels_last the model converts its input itself
        t1 = time.perf_counter()
        feats = features(images)
        t2 = time.perf_counter()
        out = head(feats)
        anchors, counts = model.anchors([tuple(f.shape[-2:]) for f in feats], images.device)
        t3 = time.perf_counter()
        output = method.loss(method, LossInputs(out, anchors, counts, batch, coder, cfg))
        t4 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        output.losses["loss"].backward()
        t5 = time.perf_counter()
        set_lr(optimizer, lr_at(it, cfg.train))
        if cfg.train.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
        optimizer.step()
        t6 = time.perf_counter()
        if it >= args.warmup:
            loss_only = (t4 - t3) - output.assign_seconds
            for phase, dt in zip(PHASES, (t1 - t0, t2 - t1, t3 - t2, output.assign_seconds, loss_only, t5 - t4, t6 - t5)):
                times[phase].append(dt)
            steps.append(t6 - t0)
    step = statistics.median(steps)
    levers = [f"threads={torch.get_num_threads()}"] + \
             (["compile"] if args.compile else []) + args.overrides
    print(f"{cfg.assign.name}: batch {cfg.train.batch_size} x {cfg.data.min_size[0]} px, "
          f"backbone {cfg.model.backbone.name}, {', '.join(levers)}; {args.steps} steps")
    for phase in PHASES:
        med = statistics.median(times[phase])
        print(f"  {phase:<13} {1000 * med:8.1f} ms  {100 * med / step:5.1f}%")
    print(f"  {'step':<13} {1000 * step:8.1f} ms  ({1 / step:.2f} it/s, {60 / step:.0f} it/min)")


if __name__ == "__main__":
    main()
