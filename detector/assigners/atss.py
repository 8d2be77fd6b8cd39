"""ATSS: adaptive training sample selection (Zhang et al., CVPR 2020, Alg. 1), batched.

1. Per level and GT, the k anchors whose centres are closest to the GT centre are candidates
   (k = topk x anchors per location, capped by the level's size). The "x anchors per location" follows
   the later commits of the official sfzhang15/ATSS; its first release, the copy in kkhoot/PAA and
   mmdetection's `ATSSAssigner` take plain topk (REFERENCE_NOTES 8.3). With one anchor per location,
   the ATSS setting, all agree. Distances are exact (`nearest_anchors`).
2. Threshold per GT = mean + unbiased std of the candidates' IoUs (torch.std, as both references).
3. Positive = candidate with IoU >= threshold whose centre lies strictly inside the GT
   (more than `center_eps` pixels from every side).
4. An anchor positive for several GTs goes to the one with the highest IoU.
No forced positives: a GT may end with none (e.g. a tiny box no candidate centre falls in).
"""
from __future__ import annotations

import torch
from torch import Tensor

from detector.assigners.base import BG, AssignInputs, AssignResult, empty_result
from detector.boxes import batched_box_iou, box_centers, point_box_distances
from detector.config.assign_sections import ATSSConfig  # public here too: its section


def nearest_anchors(gt_ctr: Tensor, anchor_ctr: Tensor, num_per_level: list[int], k_per_level: int) -> Tensor:
    """Step 1: indices (B, M, K) of the min(k, level size) anchors of each level nearest to each GT centre.

    gt_ctr (B, M, 2) and anchor_ctr (A, 2) in pixels. Ranks by the squared distance from direct differences,
    dx^2 + dy^2 (the order of the references' sqrt of it), never by |x|^2 + |y|^2 - 2xy: that form, which
    `torch.cdist` uses above 25 points, loses ~1e-3 px in float32 at image coordinates and swaps the k-th
    and (k+1)-th nearest anchors when they are that close (REFERENCE_NOTES 8.1).
    """
    out, start = [], 0
    for n in num_per_level:
        k = min(k_per_level, n)
        if k > 0:
            ctr = anchor_ctr[start:start + n]
            dx = gt_ctr[..., 0:1] - ctr[:, 0]  # (B, M, n)
            dist2 = dx.square_().add_((gt_ctr[..., 1:2] - ctr[:, 1]).square_())
            out.append(dist2.topk(k, dim=2, largest=False).indices + start)
        start += n
    return torch.cat(out, dim=2) if out else gt_ctr.new_zeros(*gt_ctr.shape[:2], 0, dtype=torch.long)


@torch.no_grad()
def assign_atss(inputs: AssignInputs, cfg: ATSSConfig) -> AssignResult:
    """ATSS labels of every anchor for a batch (Zhang et al., CVPR 2020, Alg. 1; steps in the module doc).

    Args:
        inputs: anchors (A, 4) float xyxy pixels, level-major with `num_per_level` anchors per level and
            `anchors_per_location` shapes per location; gt_boxes (B, M, 4) float xyxy in the same frame;
            gt_labels (B, M) long; gt_valid (B, M) bool (padding rows False). Predictions are not read.
        cfg: topk (candidates per level = topk x anchors_per_location) and the centre margin in pixels.
    Returns:
        AssignResult: matched_gt (B, A) long, a GT index in [0, M) or BG (ATSS ignores no anchor);
        iou (B, A) float, the IoU with the matched GT (0 elsewhere); weight (B, A) float, all 1.
    """
    b, m = inputs.gt_labels.shape
    a = inputs.anchors.shape[0]
    device = inputs.anchors.device
    if m == 0 or a == 0:
        return empty_result(b, a, device)
    iou = batched_box_iou(inputs.gt_boxes, inputs.anchors)  # (B, M, A)
    anchor_ctr = box_centers(inputs.anchors)  # (A, 2)
    gt_ctr = box_centers(inputs.gt_boxes)  # (B, M, 2)
    cand = nearest_anchors(gt_ctr, anchor_ctr, inputs.num_per_level, cfg.topk * inputs.anchors_per_location)  # (B, M, K)
    cand_iou = iou.gather(2, cand)
    thresh = cand_iou.mean(dim=2, keepdim=True) + cand_iou.std(dim=2, keepdim=True)  # NaN for K = 1: no positive
    is_pos = cand_iou >= thresh

    ltrb = point_box_distances(anchor_ctr[cand], inputs.gt_boxes[:, :, None, :])  # (B, M, K, 4)
    is_pos &= ltrb.amin(dim=-1) > cfg.center_eps
    is_pos &= inputs.gt_valid[:, :, None]

    pos_iou = torch.full_like(iou, -1.0)
    pos_iou.scatter_(2, cand, torch.where(is_pos, cand_iou, torch.full_like(cand_iou, -1.0)))
    best_iou, best_gt = pos_iou.max(dim=1)  # (B, A); conflicts go to the highest IoU
    matched = torch.where(best_iou >= 0, best_gt, torch.full_like(best_gt, BG))
    matched_iou = torch.where(matched >= 0, best_iou, torch.zeros_like(best_iou))
    return AssignResult(matched_gt=matched, iou=matched_iou, weight=torch.ones_like(matched_iou))
