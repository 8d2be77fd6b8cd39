"""Run a detector over a dataset, write COCO results JSON and the 12 COCO metrics."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from detector.box_coder import BoxCoder
from detector.config import Config
from detector.data.sampler import build_eval_loader
from detector.evaluation.coco_eval import evaluate_detections, write_json
from detector.postprocess import postprocess


def to_coco_results(dets: list[dict], image_ids, scales, label_to_cat_id: list[int]) -> list[dict]:
    """Per-image detections in resized pixels -> COCO results in original pixels (xywh)."""
    results = []
    for det, image_id, scale in zip(dets, image_ids.tolist(), scales.tolist()):
        boxes = (det["boxes"] / scale).cpu()
        boxes[:, 2:] -= boxes[:, :2]
        for box, score, label in zip(boxes.tolist(), det["scores"].tolist(), det["labels"].tolist()):
            results.append({
                "image_id": image_id, "category_id": label_to_cat_id[label],
                "bbox": [round(v, 2) for v in box], "score": round(score, 5),
            })
    return results


@torch.no_grad()
def predict(model, dataset, cfg: Config, device, progress: Callable[[int, int], None] | None = None) -> list[dict]:
    """COCO-format detections of `model` on every image of `dataset`."""
    model.eval()
    coder = BoxCoder(cfg.model.box_coder.weights, cfg.model.box_coder.clamp)
    loader = build_eval_loader(dataset, cfg.train.batch_size, cfg.data.num_workers)
    results, done = [], 0
    for batch in loader:
        batch = batch.to(device)
        out, anchors, counts = model(batch.images)
        dets = postprocess(out, anchors, counts, batch.image_sizes, coder, cfg.inference)
        results.extend(to_coco_results(dets, batch.image_ids, batch.scales, dataset.label_to_cat_id))
        done += len(batch)
        if progress:
            progress(done, len(dataset))
    return results


def evaluate_model(model, dataset, cfg: Config, device, out_dir: Path, progress=None) -> tuple[dict, dict]:
    """Predict, write `detections.json` and `metrics.json` into out_dir; returns (metrics, files)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = predict(model, dataset, cfg, device, progress)
    det_path = write_json(out_dir / "detections.json", results)
    metrics = evaluate_detections(dataset.ann_file, results, image_ids=list(dataset.image_ids))
    metrics_path = write_json(out_dir / "metrics.json", metrics)
    return metrics, {"detections": det_path, "metrics": metrics_path}
