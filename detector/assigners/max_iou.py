"""RetinaNet max-IoU matching (Lin et al., 2017), batched.

Same labels as torchvision's `Matcher(pos, neg, allow_low_quality_matches=True)`:
1. IoU (B, M, A) of every GT with every anchor; padding GTs get -1 so they never win.
2. Per anchor, the best GT and its IoU: >= pos -> that GT; < neg -> BG; in between -> IGNORE.
3. Low-quality matches: for each GT, the anchors reaching its highest IoU (ties included) are
   restored to *their own* best GT (torchvision/maskrcnn-benchmark rule, not mmdet's "that GT").
   So a GT whose best anchor prefers another GT can end with no positive (REFERENCE_NOTES 3).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from detector.assigners.base import BG, IGNORE, AssignInputs, AssignResult, empty_result
from detector.boxes import batched_box_iou


@dataclass
class MaxIoUConfig:
    """RetinaNet's thresholds (Lin et al., 2017, Sec. 4)."""

    pos_iou: float = 0.5
    neg_iou: float = 0.4
    low_quality: bool = True


@torch.no_grad()
def assign_max_iou(inputs: AssignInputs, cfg: MaxIoUConfig) -> AssignResult:
    """Max-IoU labels of every anchor for a batch (RetinaNet, Lin et al. 2017, Sec. 4; steps in the module doc).

    Args:
        inputs: anchors (A, 4) float xyxy pixels; gt_boxes (B, M, 4) float xyxy in the same frame;
            gt_labels (B, M) long; gt_valid (B, M) bool (padding rows False). Predictions are not read.
        cfg: pos_iou / neg_iou thresholds and the low-quality rule.
    Returns:
        AssignResult: matched_gt (B, A) long, a GT index in [0, M) or BG / IGNORE; iou (B, A) float, the
        IoU with the matched GT (0 elsewhere); weight (B, A) float, all 1. An image without a valid GT is
        all BG, as is every image when M = 0 or A = 0.
    """
    b, m = inputs.gt_labels.shape
    a = inputs.anchors.shape[0]
    if m == 0 or a == 0:
        return empty_result(b, a, inputs.anchors.device)
    iou = batched_box_iou(inputs.gt_boxes, inputs.anchors)  # (B, M, A)
    iou = iou.masked_fill(~inputs.gt_valid[:, :, None], -1.0)
    best_iou, best_gt = iou.max(dim=1)  # (B, A)
    matched = best_gt.clone()
    matched[best_iou < cfg.pos_iou] = IGNORE
    matched[best_iou < cfg.neg_iou] = BG
    if cfg.low_quality:
        gt_best = iou.amax(dim=2, keepdim=True)  # (B, M, 1)
        # Anchors attaining some valid GT's maximum; padding rows (-1) never match a real IoU >= 0.
        is_best = ((iou == gt_best) & inputs.gt_valid[:, :, None]).any(dim=1)  # (B, A)
        matched = torch.where(is_best, best_gt, matched)
    no_gt = ~inputs.gt_valid.any(dim=1)  # images without GT: all background
    matched[no_gt] = BG
    matched_iou = torch.where(matched >= 0, best_iou.clamp(min=0), torch.zeros_like(best_iou))
    return AssignResult(matched_gt=matched, iou=matched_iou, weight=torch.ones_like(best_iou))
