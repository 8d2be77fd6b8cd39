"""Label assigners: which anchors are positives, negatives or ignored for which GT.

Each assigner is one module (its config section in `detector/config/assign_sections.py`); `detector.methods.METHODS`
says which method uses which. `assign()` is the one entry point: it runs a given assign function
with that method's config over a batch, in chunks of images when the batch is large, and marks
crowd-covered background anchors IGNORE.
"""
from __future__ import annotations

from dataclasses import fields, replace
from typing import Any

import torch

from detector.assigners.base import BG, IGNORE, AssignFn, AssignInputs, AssignResult, apply_ignore_regions

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


def _concat(results: list[AssignResult], starts: list[int]) -> AssignResult:
    """Results of consecutive chunks of images (chunk i starts at image `starts[i]`) as one."""
    if len(results) == 1:
        return results[0]
    parts = [(r.details, lo) for r, lo in zip(results, starts) if r.details is not None]
    details = type(parts[0][0]).cat([d for d, _ in parts], [lo for _, lo in parts]) if parts else None
    return AssignResult(
        matched_gt=torch.cat([r.matched_gt for r in results]),
        iou=torch.cat([r.iou for r in results]),
        weight=torch.cat([r.weight for r in results]),
        details=details,
    )


@torch.no_grad()
def assign(inputs: AssignInputs, fn: AssignFn, cfg: Any, ignore_iof: float) -> AssignResult:
    """Run assign function `fn` with its method's config `cfg` (None for a method without one) over the
    batch, then mark background anchors covered more than `ignore_iof` by a crowd region IGNORE."""
    b, m = inputs.gt_labels.shape
    per_image = max(1, m * inputs.anchors.shape[0])
    step = max(1, MAX_BATCH_ELEMENTS // per_image)
    starts = list(range(0, b, step))
    results = [fn(_slice_images(inputs, lo, min(b, lo + step)), cfg) for lo in starts]
    return apply_ignore_regions(_concat(results, starts), inputs, ignore_iof)


__all__ = ["BG", "IGNORE", "AssignFn", "AssignInputs", "AssignResult", "MAX_BATCH_ELEMENTS", "assign"]
