"""Label assigners: which anchors are positives, negatives or ignored for which GT.

`ASSIGNERS` maps the config name (`assign.name`) to the assigner function and the name of its
config section in `AssignConfig`. `assign()` is the one entry point the training step calls.
"""
from __future__ import annotations

from dataclasses import fields, replace

import torch

from detector.assigners.atss import assign_atss
from detector.assigners.base import BG, IGNORE, AssignInputs, AssignResult, apply_ignore_regions
from detector.assigners.max_iou import assign_max_iou
from detector.assigners.paa import assign_paa

ASSIGNERS = {
    "max_iou": (assign_max_iou, "max_iou"),
    "atss": (assign_atss, "atss"),
    "paa": (assign_paa, "paa"),
}

# Assigners that read the detached predictions (AssignInputs.cls_logits / pred_boxes); the training
# step decodes every anchor's box only for these.
NEEDS_PREDICTIONS = {"paa"}

# Above this many (image, GT, anchor) entries the batch is assigned in chunks of images: the
# (B, M, A) IoU matrix of a 9-anchor RetinaNet at 800 px would otherwise take gigabytes.
MAX_BATCH_ELEMENTS = 50_000_000


def _slice_images(inputs: AssignInputs, lo: int, hi: int) -> AssignInputs:
    sliced = {}
    for f in fields(inputs):
        value = getattr(inputs, f.name)
        per_image = isinstance(value, torch.Tensor) and f.name != "anchors"
        sliced[f.name] = value[lo:hi] if per_image else value
    return replace(inputs, **sliced)


def _concat(results: list[AssignResult]) -> AssignResult:
    if len(results) == 1:
        return results[0]
    extras: dict = {}
    for r in results:
        for key, value in r.extras.items():
            extras.setdefault(key, []).append(value)
    return AssignResult(
        matched_gt=torch.cat([r.matched_gt for r in results]),
        iou=torch.cat([r.iou for r in results]),
        weight=torch.cat([r.weight for r in results]),
        extras=extras,
    )


@torch.no_grad()
def assign(inputs: AssignInputs, cfg) -> AssignResult:
    """Run the assigner named by `cfg.name` (an `AssignConfig`) and mark crowd-covered anchors IGNORE."""
    fn, section = ASSIGNERS[cfg.name]
    b, m = inputs.gt_labels.shape
    per_image = max(1, m * inputs.anchors.shape[0])
    step = max(1, MAX_BATCH_ELEMENTS // per_image)
    results = [fn(_slice_images(inputs, lo, min(b, lo + step)), getattr(cfg, section)) for lo in range(0, b, step)]
    return apply_ignore_regions(_concat(results), inputs, cfg.ignore_iof)


__all__ = ["ASSIGNERS", "NEEDS_PREDICTIONS", "BG", "IGNORE", "AssignInputs", "AssignResult", "assign"]
