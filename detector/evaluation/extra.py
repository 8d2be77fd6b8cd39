"""The optional metrics an `eval` config turns on beside the 12 COCO stats, for any method: names and computation.

| switch (`eval.<name>`) | metric names (FreeAnchor) | module |
|---|---|---|
| `nms_recall` | NR, NR50, NR55, ..., NR90 (Table 1) | `nms_recall` (needs the model: in `engine.evaluate.predict`) |
| `aspect_ap` (`aspect_edges`) | AP_square, AP_oblong, AP_slender (Fig. 5) | `buckets` (detections + GT file) |
| `crowd_ap` (`crowd_edges`) | AP_sparse, AP_moderate, AP_crowded (Fig. 6) | `buckets` |

All off by default (they cost evaluation time). A study may name one of these columns only when every run's
resolved config turns its switch on (`ablation/study/expand.py`), as for the VOC columns (`eval.voc_metric`).

Extra evaluation time on the 500-image embedded val set (320 px, 8 classes), with the quick profile's
800-iteration checkpoints, on 2 CPU cores that another training held (slow in absolute terms; the details are in
the two modules' docstrings):
  * nms_recall: `predict` +86% (RetinaNet, 79 s -> 147 s) to +119% (ATSS, 80 s -> 175 s): a second NMS over every
    pair above the score threshold, with no top-k; the most expensive of the three;
  * aspect_ap and crowd_ap: 3.3 s and 1.2 s of pycocotools, 4.2 s together (the 12 COCO stats: 1.0 s).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from detector.evaluation.buckets import bucket_aps
from detector.evaluation.extra_names import (METRIC_NAMES, NR_NAMES, NR_THRESHOLDS, SWITCHES,  # public here too
                                             metric_names, switch_of)

if TYPE_CHECKING:  # annotation only: `extra_metrics` runs where torch is loaded anyway
    from torch import Tensor


def extra_metrics(gt: str | Path, results: list[dict], image_ids: list[int], eval_cfg,
                  overlaps: Tensor | None) -> dict[str, float]:
    """The optional metrics `eval_cfg` turns on, over the run's COCO results and (for NR) the per-GT overlaps.

    Args:
        gt: the val GT file; results: COCO results of the run's final detections; image_ids: the images evaluated;
        eval_cfg: the run's `EvalConfig`; overlaps: (G, 2) best IoU before / after NMS per val GT
            (`nms_recall.gt_overlaps`, collected by `engine.evaluate.predict`), required when `eval_cfg.nms_recall`.
    """
    out: dict[str, float] = {}
    if eval_cfg.nms_recall:
        if overlaps is None:
            raise ValueError("eval.nms_recall: needs the per-GT overlaps before and after NMS from the model")
        from detector.evaluation.nms_recall import nms_recall  # needs torch: imported where it runs

        out.update(nms_recall(overlaps))
    if eval_cfg.aspect_ap or eval_cfg.crowd_ap:
        out.update(bucket_aps(gt, results, image_ids,
                              aspect_edges=eval_cfg.aspect_edges if eval_cfg.aspect_ap else None,
                              crowd_edges=eval_cfg.crowd_edges if eval_cfg.crowd_ap else None))
    return out


__all__ = ["SWITCHES", "METRIC_NAMES", "NR_NAMES", "NR_THRESHOLDS", "metric_names", "switch_of", "extra_metrics"]
