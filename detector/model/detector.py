"""The dense detector: backbone -> FPN P3-P7 -> dense head, plus its anchors."""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import Tensor, nn
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from detector.config import ModelConfig
from detector.model.anchors import anchors_per_location, grid_anchors
from detector.model.backbone import build_backbone
from detector.model.head import DenseHead, HeadOutput


class DenseDetector(nn.Module):
    def __init__(self, cfg: ModelConfig, num_classes: int):
        super().__init__()
        if len(cfg.anchors.strides) != 5:
            raise ValueError("model.anchors.strides: the FPN has 5 levels (P3-P7)")
        self.cfg = cfg
        self.num_classes = num_classes
        self.backbone = build_backbone(cfg.backbone)
        width = cfg.head.fpn_width
        # P6 from P5 (not C5), as FCOS/ATSS/PAA do.
        self.fpn = FeaturePyramidNetwork(self.backbone.out_channels, width, extra_blocks=LastLevelP6P7(width, width))
        self.head = DenseHead(cfg.head, num_classes, anchors_per_location(cfg.anchors), len(cfg.anchors.strides))
        self._anchor_cache: dict = {}
        if cfg.channels_last:
            self.to(memory_format=torch.channels_last)

    def features(self, images: Tensor) -> list[Tensor]:
        if self.cfg.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        feats = self.backbone(images)
        pyramid = self.fpn(OrderedDict((str(i), f) for i, f in enumerate(feats)))
        return list(pyramid.values())

    def forward(self, images: Tensor) -> tuple[HeadOutput, Tensor, list[int]]:
        """images (B, 3, H, W) -> head outputs, anchors (A, 4), anchors per level."""
        feats = self.features(images)
        anchors, counts = self.anchors([tuple(f.shape[-2:]) for f in feats], images.device)
        return self.head(feats), anchors, counts

    def anchors(self, sizes: list[tuple[int, int]], device: torch.device) -> tuple[Tensor, list[int]]:
        key = (tuple(sizes), str(device))
        if key not in self._anchor_cache:
            self._anchor_cache = {key: grid_anchors(sizes, self.cfg.anchors, device)}  # keep one entry
        return self._anchor_cache[key]
