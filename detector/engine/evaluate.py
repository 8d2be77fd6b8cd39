"""Run a detector over a dataset, write COCO results JSON and the 12 COCO metrics (and, on request, VOC mAP and the
optional metrics of `detector.evaluation.extra`: NMS recall, AP by aspect ratio and by crowdedness)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torch import Tensor
from torch.utils.data import Subset
from torchvision.ops import box_iou

from detector import distributed
from detector.config import Config
from detector.data.sampler import build_eval_loader
from detector.evaluation.coco_eval import evaluate_detections, write_json
from detector.evaluation.extra import extra_metrics
from detector.evaluation.nms_recall import gt_overlaps
from detector.evaluation.voc_eval import evaluate_voc
from detector.methods import METHODS, build_box_coder
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


def true_ious(det: dict, gt_boxes: Tensor, gt_labels: Tensor, gt_valid: Tensor) -> Tensor:
    """Per detection, the best IoU with a GT of its class (0 if none)."""
    iou = box_iou(det["boxes"], gt_boxes[gt_valid])
    iou = iou * (det["labels"][:, None] == gt_labels[gt_valid][None, :])
    return iou.amax(dim=1) if iou.shape[1] else torch.zeros(len(det["boxes"]), device=iou.device)


@torch.no_grad()
def predict(model, dataset, cfg: Config, device, progress: Callable[[int, int], None] | None = None,
            overlaps: list[Tensor] | None = None):
    """COCO-format detections of `model` on every image of `dataset`, and (aux prediction, true IoU) pairs
    of those detections (for PAA's Table 2 right; empty without an aux branch). Given a list `overlaps`, appends
    to it per batch the (G, 2) best IoU of each GT before and after NMS (`nms_recall.gt_overlaps`, on the CPU)."""
    model.eval()
    coder = build_box_coder(cfg)
    method_fusion = METHODS[cfg.assign.name].score_fusion
    group = distributed.group()
    # a data-parallel run predicts on its rank's share of the images (every world-th) and gathers below
    part = dataset if group.world == 1 else Subset(dataset, range(group.rank, len(dataset), group.world))
    loader = build_eval_loader(part, max(1, cfg.train.batch_size // group.world), cfg.data.num_workers,
                               size_divisibility=dataset.cfg.size_divisibility)
    results, aux_pairs, done = [], [], 0
    for batch in loader:
        batch = batch.to(device)
        out, anchors, counts = model(batch.images)
        dets = postprocess(out, anchors, counts, batch.image_sizes, coder, cfg.inference, method_fusion)
        if overlaps is not None:
            overlaps.append(gt_overlaps(out, anchors, counts, batch.image_sizes, batch.gt_boxes, batch.gt_valid,
                                        coder, cfg.inference, method_fusion).cpu())
        for i, det in enumerate(dets):
            if "aux" in det and len(det["boxes"]):
                true = true_ious(det, batch.gt_boxes[i], batch.gt_labels[i], batch.gt_valid[i])
                aux_pairs.append(torch.stack([det["aux"], true], 1))
        results.extend(to_coco_results(dets, batch.image_ids, batch.scales, dataset.label_to_cat_id))
        done += len(batch) * group.world
        if progress:
            progress(min(done, len(dataset)), len(dataset))
    aux = torch.cat(aux_pairs).cpu() if aux_pairs else torch.zeros(0, 2)
    if group.world > 1:  # every rank gets every image's detections (and NMS-recall overlaps) to evaluate once
        parts = distributed.gather((results, aux, overlaps))
        results = [r for rs, _, _ in parts for r in rs]
        aux = torch.cat([a for _, a, _ in parts])
        if overlaps is not None:
            overlaps[:] = [o for _, _, os_ in parts for o in os_]
    return results, aux


def _metrics(results: list[dict], aux_pairs: Tensor, dataset, cfg: Config,
             overlaps: list[Tensor] | None = None) -> dict[str, float]:
    """The 12 COCO stats; with `eval.voc_metric` also VOC mAP at IoU 0.5 ("VOC07_mAP" 11-point, "VOC07_mAP_area")
    over the same detections and GT file; the optional metrics `eval` turns on (`evaluation.extra`: NR from
    `overlaps`, the per-batch IoUs `predict` collected; AP per aspect-ratio and crowdedness bucket); with an
    IoU-predicting aux branch also the mean |predicted - true IoU| over all kept detections ("iou_pred_error")
    and over those with true IoU >= 0.5 ("iou_pred_error_tp")."""
    metrics = evaluate_detections(dataset.ann_file, results, image_ids=list(dataset.image_ids))
    if cfg.eval.voc_metric != "none":
        metrics.update(evaluate_voc(dataset.ann_file, results, image_ids=list(dataset.image_ids),
                                    metric=cfg.eval.voc_metric, iou=cfg.eval.voc_iou))
    gt_ious = torch.cat(overlaps) if overlaps else (torch.zeros(0, 2) if overlaps is not None else None)
    metrics.update(extra_metrics(dataset.ann_file, results, list(dataset.image_ids), cfg.eval, gt_ious))
    if len(aux_pairs) and cfg.model.head.aux == "iou":
        err = (aux_pairs[:, 0] - aux_pairs[:, 1]).abs()
        tp = aux_pairs[:, 1] >= 0.5
        metrics["iou_pred_error"] = err.mean().item()
        if tp.any():
            metrics["iou_pred_error_tp"] = err[tp].mean().item()
    return metrics


def evaluate_metrics(model, dataset, cfg: Config, device, progress=None) -> dict[str, float]:
    """Predict and evaluate without writing files (evaluations during training)."""
    overlaps = [] if cfg.eval.nms_recall else None
    results, aux_pairs = predict(model, dataset, cfg, device, progress, overlaps)
    # a data-parallel run evaluates once, on the main rank, and every rank gets the metrics (a pruner's stop)
    metrics = _metrics(results, aux_pairs, dataset, cfg, overlaps) if distributed.group().main else None
    return distributed.broadcast(metrics)


def evaluate_model(model, dataset, cfg: Config, device, out_dir: Path, progress=None) -> tuple[dict, dict]:
    """Predict, write `detections.json` and `metrics.json` into out_dir; returns (metrics, files)."""
    out_dir = Path(out_dir)
    overlaps = [] if cfg.eval.nms_recall else None
    results, aux_pairs = predict(model, dataset, cfg, device, progress, overlaps)
    if not distributed.group().main:  # the main rank writes and evaluates (every rank gathered everything)
        return distributed.broadcast(None), {}
    out_dir.mkdir(parents=True, exist_ok=True)
    det_path = write_json(out_dir / "detections.json", results)
    metrics = _metrics(results, aux_pairs, dataset, cfg, overlaps)
    metrics_path = write_json(out_dir / "metrics.json", metrics)
    return distributed.broadcast(metrics), {"detections": det_path, "metrics": metrics_path}
