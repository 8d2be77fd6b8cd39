"""The assignment contract shared by every assigner.

An assigner is a pure `@torch.no_grad()` function `(AssignInputs, its config) -> AssignResult`
(`AssignFn`), batched over the images of a batch with padded GTs and an explicit valid mask.

Dimensions: B images, M padded GTs per image, A anchors (all levels, level-major), C classes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol

import torch
from torch import Tensor

from detector.boxes import box_iof

BG = -1  # matched_gt value of a negative (background) anchor
IGNORE = -2  # matched_gt value of an anchor excluded from the classification loss


@dataclass
class AssignInputs:
    anchors: Tensor  # (A, 4) xyxy
    num_per_level: list[int]  # anchors of each level, sums to A
    strides: list[int]  # stride of each level
    gt_boxes: Tensor  # (B, M, 4) xyxy
    gt_labels: Tensor  # (B, M) long
    gt_valid: Tensor  # (B, M) bool
    anchors_per_location: int = 1
    ignore_boxes: Tensor | None = None  # (B, K, 4) crowd regions
    ignore_valid: Tensor | None = None  # (B, K) bool
    # Detached predictions, for prediction-dependent methods (PAA); None for geometric assigners.
    cls_logits: Tensor | None = None  # (B, A, C)
    pred_boxes: Tensor | None = None  # (B, A, 4) decoded xyxy


class Details(Protocol):
    """Method-specific rows an assigner keeps for diagnostics (e.g. `paa_details.PAADetails`)."""

    @classmethod
    def cat(cls, parts: list[Details], image_offsets: list[int]) -> Details:
        """The details of consecutive chunks of images as one; chunk i starts at image `image_offsets[i]`."""
        ...


@dataclass
class AssignResult:
    matched_gt: Tensor  # (B, A) long: GT index in [0, M), or BG / IGNORE
    iou: Tensor  # (B, A) float: IoU of the anchor with its matched GT (0 where none)
    weight: Tensor  # (B, A) float: per-positive loss weight (1 by default)
    details: Details | None = None  # method-specific diagnostics (PAA: candidates and GMM fits), read by `Method.summary`

    @property
    def positive(self) -> Tensor:
        return self.matched_gt >= 0

    def labels(self, gt_labels: Tensor) -> Tensor:
        """(B, A) class index of positives, BG / IGNORE elsewhere."""
        idx = self.matched_gt.clamp(min=0)
        cls = torch.gather(gt_labels, 1, idx) if gt_labels.shape[1] else torch.zeros_like(idx)
        return torch.where(self.positive, cls, self.matched_gt)


AssignFn = Callable[[AssignInputs, Any], AssignResult]  # (inputs, the method's config or None) -> result


def empty_result(batch: int, num_anchors: int, device) -> AssignResult:
    return AssignResult(
        matched_gt=torch.full((batch, num_anchors), BG, dtype=torch.long, device=device),
        iou=torch.zeros(batch, num_anchors, device=device),
        weight=torch.ones(batch, num_anchors, device=device),
    )


def apply_ignore_regions(result: AssignResult, inputs: AssignInputs, iof_thresh: float) -> AssignResult:
    """Background anchors mostly covered by a crowd region become IGNORE (positives are kept)."""
    if inputs.ignore_boxes is None or inputs.ignore_boxes.shape[1] == 0 or inputs.anchors.shape[0] == 0:
        return result
    iof = box_iof(inputs.ignore_boxes, inputs.anchors)  # (B, K, A)
    iof = iof.masked_fill(~inputs.ignore_valid[:, :, None], 0.0)
    covered = iof.amax(dim=1) > iof_thresh  # (B, A)
    result.matched_gt = torch.where(covered & (result.matched_gt == BG), IGNORE, result.matched_gt)
    return result
