"""Box codings: how the head's 4 box outputs of an anchor (or point) map to a box. Both coders share
`encode(boxes, anchors) -> codes` and `decode(codes, anchors) -> boxes`; `detector.methods.build_box_coder`
picks one by the method's `box_coding`.

- `BoxCoder` ("delta"): the R-CNN (dx, dy, dw, dh) deltas of a box relative to an anchor, with weights and a
  clamp, as RetinaNet, ATSS and PAA (weights 10, 10, 5, 5). Unlike maskrcnn-benchmark we use no legacy "+1"
  widths (torchvision and mmdet do not either).
- `LTRBCoder` ("ltrb"): FCOS's distances (l, t, r, b) from a point to the box's sides, divided by the point's
  level stride (mmdetection `FCOSHead` with `norm_on_bbox=True`).
"""
from __future__ import annotations

import torch
from torch import Tensor

from detector.boxes import box_centers, point_box_distances


class BoxCoder:
    def __init__(self, weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0), clamp: float = 4.135):
        self.weights = tuple(float(w) for w in weights)
        self.clamp = float(clamp)  # bound on dw, dh before exp: keeps a wild prediction from overflowing

    def encode(self, boxes: Tensor, anchors: Tensor) -> Tensor:
        """GT boxes [..., 4] and anchors [..., 4] (broadcastable, xyxy) -> deltas [..., 4]."""
        wx, wy, ww, wh = self.weights
        aw = (anchors[..., 2] - anchors[..., 0]).clamp(min=1e-6)
        ah = (anchors[..., 3] - anchors[..., 1]).clamp(min=1e-6)
        ax = anchors[..., 0] + 0.5 * aw
        ay = anchors[..., 1] + 0.5 * ah
        bw = (boxes[..., 2] - boxes[..., 0]).clamp(min=1e-6)
        bh = (boxes[..., 3] - boxes[..., 1]).clamp(min=1e-6)
        bx = boxes[..., 0] + 0.5 * bw
        by = boxes[..., 1] + 0.5 * bh
        return torch.stack(
            [wx * (bx - ax) / aw, wy * (by - ay) / ah, ww * torch.log(bw / aw), wh * torch.log(bh / ah)], dim=-1
        )

    def decode(self, deltas: Tensor, anchors: Tensor) -> Tensor:
        """Deltas [..., 4] and anchors [..., 4] (broadcastable) -> boxes [..., 4] xyxy."""
        wx, wy, ww, wh = self.weights
        aw = anchors[..., 2] - anchors[..., 0]
        ah = anchors[..., 3] - anchors[..., 1]
        ax = anchors[..., 0] + 0.5 * aw
        ay = anchors[..., 1] + 0.5 * ah
        dx, dy = deltas[..., 0] / wx, deltas[..., 1] / wy
        dw = (deltas[..., 2] / ww).clamp(max=self.clamp)
        dh = (deltas[..., 3] / wh).clamp(max=self.clamp)
        cx, cy = dx * aw + ax, dy * ah + ay
        w, h = torch.exp(dw) * aw, torch.exp(dh) * ah
        return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)


class LTRBCoder:
    """FCOS's point coding: a box as its side distances (l, t, r, b) from a point, in units of the point's stride.

    Points are the centres of the anchors of a one-anchor-per-location grid (`detector.model.anchors`): a
    square of side `anchor_scale` x stride (`model.anchors.octave_base_scale`), which is where the stride of
    each point is read from (`build_config` refuses point methods with another anchor shape).
    """

    def __init__(self, anchor_scale: float):
        self.anchor_scale = float(anchor_scale)

    def _points(self, anchors: Tensor) -> tuple[Tensor, Tensor]:
        """Anchors [..., 4] -> their centres [..., 2] and strides [..., 1]."""
        return box_centers(anchors), (anchors[..., 2:3] - anchors[..., 0:1]) / self.anchor_scale

    def encode(self, boxes: Tensor, anchors: Tensor) -> Tensor:
        """GT boxes [..., 4] and anchors [..., 4] (broadcastable, xyxy) -> (l, t, r, b) / stride [..., 4]."""
        points, stride = self._points(anchors)
        return point_box_distances(points, boxes) / stride

    def decode(self, codes: Tensor, anchors: Tensor) -> Tensor:
        """Codes [..., 4] and anchors [..., 4] (broadcastable) -> boxes [..., 4] xyxy.

        Negative distances are clamped to 0 first, as mmdetection's FCOS applies a ReLU to its distance output
        (`norm_on_bbox`); the clamp also passes no gradient to a negative output, as the ReLU.
        """
        points, stride = self._points(anchors)
        dist = codes.clamp(min=0) * stride
        return torch.cat([points - dist[..., :2], points + dist[..., 2:]], dim=-1)


Coder = BoxCoder | LTRBCoder  # what `build_box_coder` returns
