"""Training-step time of anchorlab next to torchvision's FCOS with the same backbone, image size and batch.

Both detectors get the same backbone + FPN (built from the config), the same number of head convs,
the same random batch, and run forward + backward + SGD step. Each runs in its own subprocess so
its peak memory (max RSS on CPU, max allocated on CUDA) is its own.

    python bench/train_step.py                         # quick profile, ATSS, CPU
    python bench/train_step.py -c studies/configs/retinanet_iou.yaml -c studies/configs/quick.yaml
    python bench/train_step.py --device cuda --set train.batch_size=16
    python bench/train_step.py -c studies/configs/paa.yaml -c studies/configs/quick.yaml --threads 1
    python bench/train_step.py -m fcos_inside -m pseudo_iou   # each method against one torchvision FCOS

`-m NAME` times studies/configs/NAME.yaml with the `-c` configs layered on it (default: quick.yaml); repeated,
one run times every method and torchvision's FCOS once per distinct backbone / FPN / head / batch / image size,
and prints each method's ratio to it. The point methods (fcos_inside, pseudo_iou) are the like-for-like ones:
FCOS points, centerness branch, GIoU loss, as torchvision's FCOS. It also prints the assignment's median time and
share of anchorlab's step.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import subprocess
import sys
import time
from collections import OrderedDict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def random_batch(b, size, num_gt, num_classes, device):
    import torch

    from detector.data.batch import Batch

    g = torch.Generator().manual_seed(0)
    xy = torch.rand(b, num_gt, 2, generator=g) * size * 0.7
    wh = torch.rand(b, num_gt, 2, generator=g) * size * 0.3 + 8
    return Batch(
        images=torch.randn(b, 3, size, size, generator=g), image_sizes=torch.full((b, 2), size),
        gt_boxes=torch.cat([xy, xy + wh], -1), gt_labels=torch.randint(0, num_classes, (b, num_gt), generator=g),
        gt_valid=torch.ones(b, num_gt, dtype=torch.bool), ignore_boxes=torch.zeros(b, 0, 4),
        ignore_valid=torch.zeros(b, 0, dtype=torch.bool), image_ids=torch.arange(b), scales=torch.ones(b),
    ).to(device)


def measure(which: str, cfg_paths: list[str], overrides: list[str], device: str, steps: int, warmup: int,
            threads: int = 0) -> dict:
    import torch

    if threads > 0:  # with another busy process, 2 OpenMP threads on 2 cores can be 10x slower than 1
        torch.set_num_threads(threads)
    from torch import nn

    from detector.config import load_config
    from detector.engine.step import TrainStep
    from detector.model.detector import DenseDetector

    # Denormal floats make CPU convolutions many times slower; flush them to zero for both detectors.
    torch.set_flush_denormal(True)
    cfg = load_config(cfg_paths, overrides)
    size, b, num_classes, num_gt = cfg.data.min_size[0], cfg.train.batch_size, 8, 10
    dev = torch.device(device)
    batch = random_batch(b, size, num_gt, num_classes, dev)
    ours = DenseDetector(cfg.model, num_classes)
    if which == "anchorlab":
        model, step = ours.to(dev), TrainStep(ours.to(dev), cfg)

        def run():
            return step(batch)[0]["loss"]
    else:
        from torchvision.models.detection import FCOS
        from torchvision.models.detection.anchor_utils import AnchorGenerator
        from torchvision.models.detection.fcos import FCOSHead

        class BackboneFPN(nn.Module):  # our backbone + FPN, in torchvision's interface
            def __init__(self):
                super().__init__()
                self.body, self.fpn, self.out_channels = ours.backbone, ours.fpn, cfg.model.head.fpn_width

            def forward(self, x):
                return OrderedDict((str(i), f) for i, f in enumerate(ours.features(x)))

        anchor_gen = AnchorGenerator(tuple((s * 8,) for s in cfg.model.anchors.strides), ((1.0,),) * 5)
        head = FCOSHead(cfg.model.head.fpn_width, 1, num_classes, num_convs=cfg.model.head.num_convs)
        model = FCOS(BackboneFPN(), num_classes, min_size=size, max_size=size, anchor_generator=anchor_gen,
                     head=head).to(dev)
        images = list(batch.images)
        targets = [{"boxes": bx[v], "labels": lb[v]} for bx, lb, v in zip(batch.gt_boxes, batch.gt_labels, batch.gt_valid)]

        def run():
            return sum(model(images, targets).values())
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    times, assign_times = [], []
    for i in range(warmup + steps):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        loss = run()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t)
            if which == "anchorlab":
                assign_times.append(step.assign_seconds)
    times.sort()
    assign_times.sort()
    peak = (torch.cuda.max_memory_allocated() if dev.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    shape = {"backbone": dataclasses.asdict(cfg.model.backbone), "fpn_width": cfg.model.head.fpn_width,
             "num_convs": cfg.model.head.num_convs, "strides": cfg.model.anchors.strides, "batch": b, "size": size}
    return {"which": which, "median_s": times[len(times) // 2], "peak_mb": peak / 2**20, "batch": b, "size": size,
            "assign_s": assign_times[len(assign_times) // 2] if assign_times else None,
            "params_m": sum(p.numel() for p in model.parameters()) / 1e6, "method": cfg.assign.name,
            "shape": json.dumps(shape, sort_keys=True)}  # what the torchvision FCOS is built from


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-c", "--config", action="append", default=None)
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    p.add_argument("-m", "--method", action="append", default=[],
                   help="time studies/configs/NAME.yaml (the -c configs layered on it, default quick.yaml); repeat")
    p.add_argument("--only", choices=["anchorlab", "fcos"], help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.method:
        missing = [m for m in a.method if not (ROOT / f"studies/configs/{m}.yaml").is_file()]
        if missing:
            p.error(f"no studies/configs/{missing[0]}.yaml (-m takes a method config's name, e.g. pseudo_iou)")
        tail = a.config or [str(ROOT / "studies/configs/quick.yaml")]
        runs = [[str(ROOT / f"studies/configs/{m}.yaml")] + tail for m in a.method]
    else:
        runs = [a.config or [str(ROOT / "studies/configs/atss.yaml"), str(ROOT / "studies/configs/quick.yaml")]]
    if a.only:
        print(json.dumps(measure(a.only, runs[0], a.set, a.device, a.steps, a.warmup, a.threads)))
        return

    def child(which: str, configs: list[str]) -> dict:
        cmd = [sys.executable, __file__, "--only", which, "--device", a.device, "--steps", str(a.steps),
               "--warmup", str(a.warmup), "--threads", str(a.threads)] + sum([["-c", c] for c in configs], []) + sum([["--set", s] for s in a.set], [])
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        return json.loads(out.strip().splitlines()[-1])

    ours, fcos = [], {}  # torchvision FCOS: once per model shape (backbone, FPN, head convs, batch, image size)
    for configs in runs:
        ours.append((configs, child("anchorlab", configs)))
        shape = ours[-1][1]["shape"]
        if shape not in fcos:
            fcos[shape] = child("fcos", configs)
    for configs, r in ours:
        f = fcos[r["shape"]]
        print(f"configs: {' + '.join(Path(c).name for c in configs)}  method: {r['method']}  device: {a.device}  "
              f"threads: {a.threads or 'default'}  batch {r['batch']} x {r['size']} px")
        for row in (r, f):
            print(f"  {row['which']:<10} step {1000 * row['median_s']:8.1f} ms   peak {row['peak_mb']:8.1f} MB   "
                  f"params {row['params_m']:.2f} M")
        print(f"  ratio anchorlab / torchvision FCOS: {r['median_s'] / f['median_s']:.2f}")
        if r["assign_s"] is not None:  # CPU-accurate; on CUDA the assignment may still be running
            print(f"  anchorlab assignment: {1000 * r['assign_s']:.1f} ms median, "
                  f"{100 * r['assign_s'] / r['median_s']:.1f}% of the step")
    if len(ours) > 1:
        ratios = [f"{r['method']} {r['median_s'] / fcos[r['shape']]['median_s']:.2f}" for _, r in ours]
        print(f"ratio anchorlab / torchvision FCOS (goal <= 1.0): {', '.join(ratios)}")


if __name__ == "__main__":
    main()
