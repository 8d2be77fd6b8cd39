"""Box helpers. All boxes are xyxy in pixels unless a name says otherwise.

`box_iou` is torchvision's; what it lacks (batched pairwise IoU with padding, IoF against ignore
regions, centres, point-to-side distances) lives here.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import box_iou  # [N,4] x [M,4] -> [N,M]

__all__ = ["box_iou", "batched_box_iou", "box_iof", "box_centers", "point_box_distances", "centerness", "pseudo_iou",
           "aligned_iou", "aligned_giou"]


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


def centerness(ltrb: Tensor) -> Tensor:
    """FCOS centerness sqrt(min(l, r) / max(l, r) x min(t, b) / max(t, b)) of distances [..., 4] -> [...] in [0, 1].

    Negative distances (a point outside its box) count as 0; a ratio's denominator is at least 1e-6.
    """
    lr = ltrb[..., 0::2].clamp(min=0)
    tb = ltrb[..., 1::2].clamp(min=0)
    ratio = (lr.amin(-1) / lr.amax(-1).clamp(min=1e-6)) * (tb.amin(-1) / tb.amax(-1).clamp(min=1e-6))
    return ratio.sqrt()


def pseudo_iou(ltrb: Tensor) -> Tensor:
    """Pseudo-IoU (Li et al., CVPRW 2021, Alg. 1) of points in their boxes, closed form: [..., 4] (l, t, r, b) -> [...].

    The pseudo box has the box's size w x h and is centred on the point; it meets the box in a
    (w - |dx|) x (h - |dy|) box, where dx = (l - r) / 2 and dy = (t - b) / 2 are the point's offsets from the
    box centre. With a = (1 - |dx|/w)(1 - |dy|/h): pIoU = a w h / (2 w h - a w h) = a / (2 - a). Scale-free (the
    stride normalisation of the reference changes nothing); in (1/7, 1] for a point strictly inside its box.
    """
    w, h = ltrb[..., 0] + ltrb[..., 2], ltrb[..., 1] + ltrb[..., 3]
    a = (1 - (ltrb[..., 0] - ltrb[..., 2]).abs() / (2 * w)) * (1 - (ltrb[..., 1] - ltrb[..., 3]).abs() / (2 * h))
    return a / (2 - a)


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
