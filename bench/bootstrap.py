"""Paired bootstrap over val images: the cost of matching once and of re-accumulating per resample.

Two runs' detections on a COCO-like val set (default 500 images of 640x480, ~7 GTs per image over 80
categories, one crowd box in every tenth image, 100 detections per image: jittered GT boxes with some
missed or relabelled, the rest false positives), matched once per run (`match_detections`), then
`paired_bootstrap` with 1000 resamples of the images (the same for both runs). Prints the time of each
stage and the full-set AP of each run against `evaluate_detections` (faster-coco-eval).

    python bench/bootstrap.py [--images 500] [--resamples 1000] [--categories 80] [--dets-per-image 100]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detector.evaluation.bootstrap import coco_ap, match_detections, paired_bootstrap  # noqa: E402
from detector.evaluation.coco_eval import evaluate_detections, write_json  # noqa: E402

IMAGE_W, IMAGE_H = 640, 480


def make_gt(images: int, categories: int, gt_per_image: float, rng: np.random.Generator) -> dict:
    anns = []
    for img in range(1, images + 1):
        for _ in range(max(1, rng.poisson(gt_per_image))):
            w, h = np.exp(rng.uniform(np.log(12), np.log(300), size=2))
            x, y = rng.uniform(0, IMAGE_W - w), rng.uniform(0, IMAGE_H - h)
            anns.append({"image_id": img, "category_id": int(rng.integers(1, categories + 1)),
                         "bbox": [float(x), float(y), float(w), float(h)], "area": float(w * h), "iscrowd": 0})
        if img % 10 == 0:
            anns.append({"image_id": img, "category_id": 1, "bbox": [100.0, 100.0, 200.0, 150.0], "area": 30000.0,
                         "iscrowd": 1})
    for i, a in enumerate(anns, start=1):
        a["id"] = i
    return {"images": [{"id": i, "width": IMAGE_W, "height": IMAGE_H, "file_name": f"{i}.png"}
                       for i in range(1, images + 1)],
            "categories": [{"id": c, "name": f"c{c}"} for c in range(1, categories + 1)], "annotations": anns}


def make_detections(gt: dict, categories: int, per_image: int, rng: np.random.Generator) -> list[dict]:
    by_image: dict[int, list[dict]] = {}
    for a in gt["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    dets = []
    for img in gt["images"]:
        kept = 0
        for a in by_image.get(img["id"], []):
            if a["iscrowd"] or rng.random() < 0.2:
                continue
            x, y, w, h = a["bbox"]
            j = rng.normal(0, 0.08, size=4) * [w, h, w, h]
            cat = a["category_id"] if rng.random() > 0.1 else int(rng.integers(1, categories + 1))
            dets.append({"image_id": img["id"], "category_id": cat, "score": float(rng.uniform(0.3, 1.0)),
                         "bbox": [x + j[0], y + j[1], max(w + j[2], 1.0), max(h + j[3], 1.0)]})
            kept += 1
        for _ in range(per_image - kept):
            w, h = rng.uniform(10, 200, size=2)
            dets.append({"image_id": img["id"], "category_id": int(rng.integers(1, categories + 1)),
                         "score": float(rng.uniform(0.0, 0.8)),
                         "bbox": [float(rng.uniform(0, IMAGE_W - w)), float(rng.uniform(0, IMAGE_H - h)), w, h]})
    return [{**d, "bbox": [round(float(v), 2) for v in d["bbox"]], "score": round(d["score"], 5)} for d in dets]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=500)
    p.add_argument("--resamples", type=int, default=1000)
    p.add_argument("--categories", type=int, default=80)
    p.add_argument("--gt-per-image", type=float, default=7.0)
    p.add_argument("--dets-per-image", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    rng = np.random.default_rng(args.seed)
    gt = make_gt(args.images, args.categories, args.gt_per_image, rng)
    runs = [make_detections(gt, args.categories, args.dets_per_image, rng) for _ in range(2)]
    print(f"{args.images} images, {len(gt['annotations'])} GTs, {args.categories} categories, "
          f"{sum(map(len, runs))} detections over 2 runs, {args.resamples} resamples")
    with tempfile.TemporaryDirectory() as tmp:
        gt_path = write_json(Path(tmp) / "gt.json", gt)
        for i, dets in enumerate(runs):
            t = time.perf_counter()
            want = evaluate_detections(gt_path, dets)["AP"]
            print(f"  run {i}: evaluate_detections {time.perf_counter() - t:6.2f} s   AP {want:.6f}")
    matches = []
    for i, dets in enumerate(runs):
        t = time.perf_counter()
        matches.append(match_detections(gt, dets))
        got = coco_ap(matches[-1])["AP"]
        print(f"  run {i}: match_detections    {time.perf_counter() - t:6.2f} s   AP {got:.6f} (per-image matching)")
    t = time.perf_counter()
    result = paired_bootstrap([matches[0]], [matches[1]], resamples=args.resamples)
    took = time.perf_counter() - t
    print(f"paired bootstrap, {args.resamples} resamples x 2 runs: {took:.2f} s "
          f"({1000 * took / (2 * args.resamples):.2f} ms per run and resample)")
    print(f"  AP difference {100 * result.estimate:+.2f} points, 95% interval "
          f"[{100 * result.low:+.2f}, {100 * result.high:+.2f}]")


if __name__ == "__main__":
    main()
