"""Box coding: (dx, dy, dw, dh) deltas of a box relative to an anchor, with weights and a clamp.

The standard R-CNN parameterisation used by RetinaNet, ATSS and PAA (weights 10, 10, 5, 5).
Unlike maskrcnn-benchmark we use no legacy "+1" widths (torchvision and mmdet do not either).
"""
from __future__ import annotations

import torch
from torch import Tensor


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
