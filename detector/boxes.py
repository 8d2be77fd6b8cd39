"""Box helpers. All boxes are xyxy in pixels unless a name says otherwise.

`box_iou` is torchvision's; what it lacks (batched pairwise IoU with padding, IoF against ignore
regions, centres, point-to-side distances) lives here.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import box_iou  # [N,4] x [M,4] -> [N,M]

__all__ = ["box_iou", "batched_box_iou", "box_iof", "box_centers", "point_box_distances", "aligned_iou", "aligned_giou"]


def box_area(boxes: Tensor) -> Tensor:
    """[..., 4] -> [...]; degenerate boxes have area 0."""
    return (boxes[..., 2] - boxes[..., 0]).clamp(min=0) * (boxes[..., 3] - boxes[..., 1]).clamp(min=0)


def _intersection(a: Tensor, b: Tensor) -> Tensor:
    """a [..., N, 1, 4], b [..., 1, M, 4] (broadcastable) -> [..., N, M] intersection areas."""
    lt = torch.maximum(a[..., :2], b[..., :2])
    rb = torch.minimum(a[..., 2:], b[..., 2:])
    wh = (rb - lt).clamp(min=0)
    return wh[..., 0] * wh[..., 1]


def batched_box_iou(gt: Tensor, anchors: Tensor) -> Tensor:
    """IoU of padded GTs with shared anchors: [B, M, 4] x [A, 4] -> [B, M, A].

    Padding rows give arbitrary values; callers mask them with their valid mask.
    The (B, M, A) tensors dominate every assigner's cost, so this works in place on few of them.
    """
    g, a = gt[:, :, None, :], anchors[None, None, :, :]
    inter = torch.minimum(g[..., 2], a[..., 2]).sub_(torch.maximum(g[..., 0], a[..., 0])).clamp_(min=0)
    inter.mul_(torch.minimum(g[..., 3], a[..., 3]).sub_(torch.maximum(g[..., 1], a[..., 1])).clamp_(min=0))
    union = (box_area(gt)[:, :, None] + box_area(anchors)[None, None, :]).sub_(inter).clamp_(min=1e-9)
    return inter.div_(union)


def box_iof(regions: Tensor, anchors: Tensor) -> Tensor:
    """Share of each anchor covered by each region: [B, K, 4] x [A, 4] -> [B, K, A]."""
    inter = _intersection(regions[:, :, None, :], anchors[None, None, :, :])
    return inter / box_area(anchors)[None, None, :].clamp(min=1e-9)


def box_centers(boxes: Tensor) -> Tensor:
    """[..., 4] -> [..., 2] (cx, cy)."""
    return (boxes[..., :2] + boxes[..., 2:]) / 2


def point_box_distances(points: Tensor, boxes: Tensor) -> Tensor:
    """Distances (l, t, r, b) from points to the four sides of boxes: [..., 2] x [..., 4] (broadcastable) -> [..., 4].

    l = x - x1, t = y - y1, r = x2 - x, b = y2 - y: all positive exactly when the point lies strictly
    inside the box (ATSS's centre test, FCOS's regression targets and centerness).
    """
    return torch.cat([points - boxes[..., :2], boxes[..., 2:] - points], dim=-1)


def aligned_iou(a: Tensor, b: Tensor) -> Tensor:
    """Element-wise IoU of matched pairs: [..., 4] x [..., 4] -> [...]."""
    inter = _intersection(a, b)
    union = box_area(a) + box_area(b) - inter
    return inter / union.clamp(min=1e-9)


def aligned_giou(a: Tensor, b: Tensor, eps: float = 1e-7) -> Tensor:
    """Element-wise generalized IoU of matched pairs: [..., 4] x [..., 4] -> [...] in [-1, 1]."""
    inter = _intersection(a, b)
    union = box_area(a) + box_area(b) - inter
    iou = inter / (union + eps)
    lt = torch.minimum(a[..., :2], b[..., :2])
    rb = torch.maximum(a[..., 2:], b[..., 2:])
    hull = (rb - lt).clamp(min=0).prod(-1)
    return iou - (hull - union) / (hull + eps)
