"""FCOS point candidates (Tian et al., ICCV 2019, Sec. 3.2-3.3), batched, and the all-inside AF-baseline.

Points are the centres of a one-anchor-per-location grid (`detector.model.anchors`: level-major, at
(i + 0.5) x stride, mmdetection's i x stride + stride // 2 for even strides). Every point rule of the
Pseudo-IoU paper (Li et al., CVPRW 2021) starts from the same candidates, as its official `PIOUHead`
(mmdetection's `FCOSHead._get_target_single`, REFERENCE_NOTES 5):
1. (l, t, r, b) = distances from each point to the four sides of each GT, in pixels.
2. Inside: min(l, t, r, b) > 0 (strict). With `center_sampling`, the test is against the GT's centre box of
   half-size `center_radius` x stride, clipped to the GT (mmdetection's `center_sampling`; the official
   Pseudo-IoU head has none).
3. In range: lo <= max(l, t, r, b) <= hi for the point's level, both ends inclusive (a point at exactly a
   bound qualifies for two levels, as the reference). Ranges come from `size_bounds`.
4. A point that is a candidate of several GTs goes to the one of smallest area; ties to the lowest GT
   index (`min` over GTs, as the reference's `areas.min(dim=1)`).
A rule (`assign_points`) then keeps or rejects each candidate with its one GT: a rejected point is a negative
(not ignored) and is not offered to another GT; no GT is forced a positive (REFERENCE_NOTES 5, step 4).
The AF-baseline (`assign_fcos_inside`) keeps every candidate: the Pseudo-IoU head with threshold 0.

Dimensions: B images, M padded GTs, A points (all levels).
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from detector.assigners.base import BG, AssignInputs, AssignResult, empty_result
from detector.boxes import box_area, box_centers, point_box_distances, pseudo_iou
from detector.config.assign_sections import FCOSConfig  # public here too: its section

# Rules compare float64 values with their threshold; values within this of it are ties, decided by the
# strict comparison of the paper (a tie is not above the threshold). On boxes aligned with the stride grid
# exact ties occur (pIoU = 0.4 exactly, REFERENCE_NOTES 8.8), and float rounding would otherwise decide them
# either way; the official float32 computation scores them "not above" too.
TIE_TOLERANCE = 1e-9


def point_levels(inputs: AssignInputs) -> Tensor:
    """(A,) long: the level index of each point."""
    sizes = torch.tensor(inputs.num_per_level, device=inputs.anchors.device)
    return torch.repeat_interleave(torch.arange(len(sizes), device=sizes.device), sizes)


def level_ranges(num_levels: int, size_bounds: list[float], device=None) -> Tensor:
    """(L, 2) float: the inclusive range [lo, hi] of max(l, t, r, b) of each level (module doc, step 3)."""
    if len(size_bounds) != num_levels - 1:
        raise ValueError(f"size_bounds: {len(size_bounds)} bounds for {num_levels} levels (need {num_levels - 1})")
    edges = torch.tensor([-math.inf, *size_bounds, math.inf], dtype=torch.float32, device=device)
    return torch.stack([edges[:-1], edges[1:]], dim=1)


def _sides(x: Tensor, y: Tensor, x1: Tensor, y1: Tensor, x2: Tensor, y2: Tensor) -> tuple[Tensor, ...]:
    """Distances (l, t, r, b) from points x, y (A,) to box sides (B, M, 1) or (B, M, A) -> four (B, M, A).

    Four tensors rather than one (B, M, A, 4): a min / max over a trailing dimension of 4 is ~6x slower.
    """
    return x - x1, y - y1, x2 - x, y2 - y


def _min_max(l: Tensor, t: Tensor, r: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """The smallest and the largest of four distances, element-wise."""
    smallest = torch.minimum(torch.minimum(l, t), torch.minimum(r, b))
    return smallest, torch.maximum(torch.maximum(l, t), torch.maximum(r, b))


def fcos_candidates(inputs: AssignInputs, cfg: FCOSConfig) -> tuple[Tensor, Tensor]:
    """Steps 1-4 of the module doc: each point's FCOS GT, if any.

    Args:
        inputs: anchors (A, 4) xyxy pixels whose centres are the points, level-major with `num_per_level` per
            level and `strides`; gt_boxes (B, M, 4) xyxy pixels; gt_valid (B, M) bool (padding rows False).
        cfg: size bounds and centre sampling.
    Returns:
        matched (B, A) long: the candidate's GT index in [0, M), or BG;
        ltrb (B, A, 4) float: distances (l, t, r, b) in pixels from each point to its GT (to GT 0 where BG).
    """
    points = box_centers(inputs.anchors)  # (A, 2)
    x, y = points[:, 0], points[:, 1]
    level = point_levels(inputs)
    lo, hi = level_ranges(len(inputs.num_per_level), cfg.size_bounds, points.device)[level].unbind(1)  # (A,)
    gt = inputs.gt_boxes[..., None]  # (B, M, 4, 1): each side broadcasts over the points
    min_dist, max_dist = _min_max(*_sides(x, y, *gt.unbind(2)))  # (B, M, A)
    if cfg.center_sampling:
        half = cfg.center_radius * torch.tensor(inputs.strides, dtype=points.dtype, device=points.device)[level]
        cx, cy = box_centers(inputs.gt_boxes)[..., None].unbind(2)  # (B, M, 1) each
        x1, y1, x2, y2 = gt.unbind(2)
        centre_box = (torch.maximum(cx - half, x1), torch.maximum(cy - half, y1),
                      torch.minimum(cx + half, x2), torch.minimum(cy + half, y2))  # (B, M, A) each, clipped to the GT
        min_dist = _min_max(*_sides(x, y, *centre_box))[0]
    cand = (min_dist > 0) & (max_dist >= lo) & (max_dist <= hi) & inputs.gt_valid[:, :, None]
    area = torch.where(cand, box_area(inputs.gt_boxes)[:, :, None], torch.full_like(max_dist, math.inf))
    min_area, best = area.min(dim=1)  # (B, A); the first GT on ties, as the reference
    matched = torch.where(torch.isfinite(min_area), best, torch.full_like(best, BG))
    own_gt = inputs.gt_boxes.gather(1, best[..., None].expand(-1, -1, 4))  # (B, A, 4)
    return matched, point_box_distances(points, own_gt)


Rule = Callable[[Tensor], Tensor]  # (P, 4) float64 (l, t, r, b) of candidates -> (P,) bool: kept as positives


@torch.no_grad()
def assign_points(inputs: AssignInputs, cfg: FCOSConfig, rule: Rule | None) -> AssignResult:
    """FCOS candidates (steps 1-4), then `rule` over each candidate's distances to its GT (float64).

    Returns:
        AssignResult: matched_gt (B, A) long, a GT index or BG (no point is ignored here); iou (B, A) float,
        the Pseudo-IoU of each positive with its GT (0 elsewhere), the one IoU a point has; weight all 1.
    """
    b, m = inputs.gt_labels.shape
    a = inputs.anchors.shape[0]
    if m == 0 or a == 0:
        return empty_result(b, a, inputs.anchors.device)
    matched, ltrb = fcos_candidates(inputs, cfg)
    pos = matched >= 0
    cand_ltrb = ltrb[pos].double()  # (P, 4)
    iou = torch.zeros(b, a, dtype=torch.float64, device=ltrb.device)
    iou[pos] = pseudo_iou(cand_ltrb)
    if rule is not None:
        pos[pos.clone()] = rule(cand_ltrb)
    matched = torch.where(pos, matched, torch.full_like(matched, BG))
    iou = torch.where(pos, iou, 0.0).float()
    return AssignResult(matched_gt=matched, iou=iou, weight=torch.ones_like(iou))


@torch.no_grad()
def assign_fcos_inside(inputs: AssignInputs, cfg: FCOSConfig) -> AssignResult:
    """The AF-baseline (Li et al., Table 1 "Baseline"): every FCOS candidate is positive (module doc).

    Args / Returns: as `assign_points` (points = anchor centres; GTs padded with `gt_valid`; no predictions).
    """
    return assign_points(inputs, cfg, rule=None)
