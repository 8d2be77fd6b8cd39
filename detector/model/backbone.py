"""Backbones returning the C3, C4, C5 feature maps (strides 8, 16, 32).

ResNets are torchvision's, always randomly initialised; `weights` loads a local state dict
(anchorlab never downloads). `tiny` is a small residual CNN for CPU work on the synthetic benchmark.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn
from torchvision.models import resnet
from torchvision.ops import FrozenBatchNorm2d

from detector.config import BackboneConfig

RESNETS = {
    "resnet18": resnet.resnet18,
    "resnet34": resnet.resnet34,
    "resnet50": resnet.resnet50,
    "resnet101": resnet.resnet101,
}


class ResNetBackbone(nn.Module):
    def __init__(self, cfg: BackboneConfig):
        super().__init__()
        norm = FrozenBatchNorm2d if cfg.frozen_bn else nn.BatchNorm2d
        net = RESNETS[cfg.name](weights=None, norm_layer=norm)
        if cfg.weights:
            load_local_weights(net, cfg.weights)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1)
        self.layer2, self.layer3, self.layer4 = net.layer2, net.layer3, net.layer4
        expansion = 4 if cfg.name in ("resnet50", "resnet101") else 1
        self.out_channels = [128 * expansion, 256 * expansion, 512 * expansion]

    def forward(self, x: Tensor) -> list[Tensor]:
        c3 = self.layer2(self.stem(x))
        c4 = self.layer3(c3)
        return [c3, c4, self.layer4(c4)]


def load_local_weights(net: nn.Module, path: str) -> None:
    """Load a state dict from a local file; classifier keys (`fc.*`) are allowed to be missing or extra."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"backbone weights not found: {p}")
    state = torch.load(p, map_location="cpu", weights_only=True)
    state = state.get("model", state) if isinstance(state, dict) else state
    missing, unexpected = net.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("fc.")]
    unexpected = [k for k in unexpected if not k.startswith("fc.")]
    if missing or unexpected:
        raise ValueError(f"backbone weights {p} do not fit: missing {missing[:3]}, unexpected {unexpected[:3]}")


def _conv_bn(cin: int, cout: int, stride: int, norm) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), norm(cout), nn.ReLU(inplace=True))


def _residual(c: int, norm) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c, c, 3, 1, 1, bias=False), norm(c))


class _Block(nn.Module):
    """Downsampling conv followed by `depth` residual 3x3 convs (x = relu(x + bn(conv(x))))."""

    def __init__(self, cin: int, cout: int, norm, depth: int = 1):
        super().__init__()
        self.down = _conv_bn(cin, cout, 2, norm)
        self.conv = _residual(cout, norm)
        self.more = nn.ModuleList([_residual(cout, norm) for _ in range(depth - 1)])  # `conv` keeps old state keys

    def forward(self, x: Tensor) -> Tensor:
        x = self.down(x)
        x = torch.relu(x + self.conv(x))
        for conv in self.more:
            x = torch.relu(x + conv(x))
        return x


class TinyBackbone(nn.Module):
    """A small residual CNN: stride-4 stem, then three stages of width 2w, 4w, 8w, each a downsampling conv
    and `tiny_depth` residual convs. Its stages run at 1/8-1/32 of the image, so depth there is cheap next to
    the head on P3, and it is what widens the receptive field (C5: 175 px at depth 1, 400 px at depth 3)."""

    def __init__(self, cfg: BackboneConfig):
        super().__init__()
        w = cfg.tiny_width
        norm = FrozenBatchNorm2d if cfg.frozen_bn else nn.BatchNorm2d
        self.stem = nn.Sequential(_conv_bn(3, w, 2, norm), _conv_bn(w, w, 2, norm))
        d = cfg.tiny_depth
        self.stages = nn.ModuleList([_Block(w, 2 * w, norm, d), _Block(2 * w, 4 * w, norm, d),
                                     _Block(4 * w, 8 * w, norm, d)])
        self.out_channels = [2 * w, 4 * w, 8 * w]
        if cfg.weights:
            load_local_weights(self, cfg.weights)

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.stem(x)
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats


def build_backbone(cfg: BackboneConfig) -> nn.Module:
    if cfg.name == "tiny":
        return TinyBackbone(cfg)
    return ResNetBackbone(cfg)
