"""RetinaNet max-IoU matching (Lin et al., 2017), batched, with the low-quality rule of either reference.

1. IoU (B, M, A) of every GT with every anchor; padding GTs get -1 so they never win.
2. Per anchor, the best GT and its IoU: >= pos -> that GT; < neg -> BG; in between -> IGNORE.
3. Low-quality matches (`low_quality`; REFERENCE_NOTES 3 and 7.12), for each GT the anchors reaching its
   highest IoU (ties included, whatever that IoU):
   * "torchvision": restored to *their own* best GT, as torchvision's and maskrcnn-benchmark's
     `Matcher(pos, neg, allow_low_quality_matches=True)`. A GT whose best anchor prefers another GT
     ends with no positive (a slender GT can lose its only overlapping anchor).
   * "mmdet": given to *that* GT, GTs in index order so the last one wins, overriding step 2, as
     mmdetection's `MaxIoUAssigner(gt_max_assign_all=True, match_low_quality=True, min_pos_iou=0)`.
   * "off": no low-quality step.
   Both references misbehave on a GT overlapping no anchor (best IoU 0, a degenerate box): torchvision
   restores every anchor it does not overlap to that anchor's own best GT, mmdet gives them all to it.
   This module does the same as each; the data pipeline should drop such boxes.
"""
from __future__ import annotations

import torch

from detector.assigners.base import BG, IGNORE, AssignInputs, AssignResult, empty_result
from detector.boxes import batched_box_iou
from detector.config.assign_sections import LOW_QUALITY_RULES, MaxIoUConfig  # public here too: its section

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
    if cfg.low_quality not in LOW_QUALITY_RULES:
        raise ValueError(f"low_quality '{cfg.low_quality}' is not one of {', '.join(LOW_QUALITY_RULES)}")
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
    if cfg.low_quality != "off":
        # (B, M, A): the anchor attains valid GT m's maximum; padding rows (-1) never match a real IoU >= 0.
        is_best_of = (iou == iou.amax(dim=2, keepdim=True)) & inputs.gt_valid[:, :, None]
        if cfg.low_quality == "torchvision":
            matched = torch.where(is_best_of.any(dim=1), best_gt, matched)
        else:  # "mmdet": the last GT (highest index) the anchor is a best anchor of
            gt_index = torch.arange(m, device=iou.device).view(1, m, 1)
            last = torch.where(is_best_of, gt_index, -1).amax(dim=1)  # (B, A)
            matched = torch.where(last >= 0, last, matched)
    no_gt = ~inputs.gt_valid.any(dim=1)  # images without GT: all background
    matched[no_gt] = BG
    matched_iou = iou.gather(1, matched.clamp(min=0).unsqueeze(1)).squeeze(1).clamp(min=0)
    matched_iou = torch.where(matched >= 0, matched_iou, torch.zeros_like(matched_iou))
    return AssignResult(matched_gt=matched, iou=matched_iou, weight=torch.ones_like(best_iou))
