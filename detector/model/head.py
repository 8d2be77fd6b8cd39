"""Dense detection head: separate classification and box towers shared across FPN levels.

Outputs are flattened in the anchor order of `detector.model.anchors` (level-major, y, x, anchor).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from detector.config.sections import HeadConfig


@dataclass
class HeadOutput:
    cls_logits: Tensor  # (B, A, C)
    box_deltas: Tensor  # (B, A, 4) encoded w.r.t. the anchors
    aux_logits: Tensor | None  # (B, A) IoU or centerness logits, or None when head.aux == "none"


class Scale(nn.Module):
    """A learnable scalar per level on the box output (FCOS/ATSS/PAA)."""

    def __init__(self, init: float = 1.0):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(init))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale


def _tower(cfg: HeadConfig) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(cfg.num_convs):
        cin = cfg.fpn_width if i == 0 else cfg.width
        layers.append(nn.Conv2d(cin, cfg.width, 3, padding=1, bias=cfg.norm == "none"))
        if cfg.norm == "gn":
            layers.append(nn.GroupNorm(cfg.gn_groups, cfg.width))
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def _flatten(x: Tensor, channels: int) -> Tensor:
    """(B, a*channels, H, W) -> (B, H*W*a, channels)."""
    b, _, h, w = x.shape
    return x.view(b, -1, channels, h, w).permute(0, 3, 4, 1, 2).reshape(b, -1, channels)


class DenseHead(nn.Module):
    def __init__(self, cfg: HeadConfig, num_classes: int, anchors_per_location: int, num_levels: int):
        super().__init__()
        self.num_classes, self.num_anchors = num_classes, anchors_per_location
        tower_out = cfg.width if cfg.num_convs > 0 else cfg.fpn_width
        self.cls_tower, self.box_tower = _tower(cfg), _tower(cfg)
        self.cls_logits = nn.Conv2d(tower_out, anchors_per_location * num_classes, 3, padding=1)
        self.box_pred = nn.Conv2d(tower_out, anchors_per_location * 4, 3, padding=1)
        self.aux_pred = nn.Conv2d(tower_out, anchors_per_location, 3, padding=1) if cfg.aux != "none" else None
        self.scales = nn.ModuleList([Scale() for _ in range(num_levels)])
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        # Focal-loss prior: every anchor starts as background with probability 1 - prior_prob.
        nn.init.constant_(self.cls_logits.bias, -math.log((1 - cfg.prior_prob) / cfg.prior_prob))

    def forward(self, features: list[Tensor]) -> HeadOutput:
        cls_out, box_out, aux_out = [], [], []
        for feat, scale in zip(features, self.scales):
            cls_feat, box_feat = self.cls_tower(feat), self.box_tower(feat)
            cls_out.append(_flatten(self.cls_logits(cls_feat), self.num_classes))
            box_out.append(_flatten(scale(self.box_pred(box_feat)), 4))
            if self.aux_pred is not None:
                aux_out.append(_flatten(self.aux_pred(box_feat), 1))
        aux = torch.cat(aux_out, dim=1).squeeze(-1) if aux_out else None
        return HeadOutput(torch.cat(cls_out, dim=1), torch.cat(box_out, dim=1), aux)
