"""Anchor grids for the FPN levels.

Order (shared by the head's outputs and every assigner): level-major, then row y, then column x,
then the anchors of one location (aspect ratio-major, then octave scale).
An anchor of level l at location (i, j) is centred at ((j + offset) * s_l, (i + offset) * s_l),
with size `octave_base_scale * s_l * 2**(k / scales_per_octave)` and aspect ratio h/w = r.
Anchor-free methods read the same grid with one anchor per location and use its centres as points.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from detector.config.sections import anchors_per_location  # public here too: the grid's own count

if TYPE_CHECKING:  # annotations only
    from detector.config.sections import AnchorConfig


def base_anchors(stride: int, cfg: AnchorConfig) -> Tensor:
    """Anchors of one location centred at the origin: [anchors_per_location, 4] xyxy."""
    out = []
    for ratio in cfg.aspect_ratios:
        for k in range(cfg.scales_per_octave):
            size = cfg.octave_base_scale * stride * 2 ** (k / cfg.scales_per_octave)
            w = size / math.sqrt(ratio)
            h = size * math.sqrt(ratio)
            out.append([-w / 2, -h / 2, w / 2, h / 2])
    return torch.tensor(out, dtype=torch.float32)


def grid_anchors(feature_sizes: list[tuple[int, int]], cfg: AnchorConfig, device=None) -> tuple[Tensor, list[int]]:
    """All anchors of all levels.

    Args:
        feature_sizes: (h, w) of each FPN level, in the order of `cfg.strides`.
    Returns:
        anchors [A, 4] xyxy float32 and the number of anchors of each level (sums to A).
    """
    if len(feature_sizes) != len(cfg.strides):
        raise ValueError(f"{len(feature_sizes)} feature maps for {len(cfg.strides)} strides")
    all_anchors, counts = [], []
    for (h, w), stride in zip(feature_sizes, cfg.strides):
        ys = (torch.arange(h, dtype=torch.float32, device=device) + cfg.center_offset) * stride
        xs = (torch.arange(w, dtype=torch.float32, device=device) + cfg.center_offset) * stride
        cy, cx = torch.meshgrid(ys, xs, indexing="ij")
        centers = torch.stack([cx, cy, cx, cy], dim=-1).reshape(-1, 1, 4)
        anchors = (centers + base_anchors(stride, cfg).to(device)[None]).reshape(-1, 4)
        all_anchors.append(anchors)
        counts.append(anchors.shape[0])
    return torch.cat(all_anchors), counts
