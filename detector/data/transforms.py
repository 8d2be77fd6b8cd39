"""Image/box transforms and the collate function that builds a `Batch`.

Dimensions: n = GT boxes of one image, k = ignore (crowd) regions of one image, B = images in a
batch, M = max n over the batch, K = max k over the batch. Boxes are xyxy in continuous pixel
coordinates (a box covering column 0 only is x1=0, x2=1), so a horizontal flip maps x to w - x.

Randomness: a transform never touches the global RNG. Its random choices come from a
`torch.Generator` the caller passes in; the training loader seeds that generator per sample from
`derive_seed(base_seed, pass, index)` (see `detector.data.sampler`), so a sample's augmentation
depends only on (seed, pass, index) and not on worker count or on when it was loaded.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from detector.data.batch import Batch

_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def derive_seed(*parts: int) -> int:
    """Mix integers into one 63-bit seed (splitmix64 chain): stable across runs and platforms.

    Python's `hash` is not used because it is not specified as stable across versions.
    """
    h = 0
    for p in parts:
        h = _splitmix64(h ^ (int(p) & _MASK64))
    return h & ((1 << 63) - 1)


def resize_scale(height: int, width: int, min_size: int, max_size: int) -> float:
    """torchvision GeneralizedRCNNTransform rule: shorter side to `min_size`, longer side capped at `max_size`."""
    short, long = min(height, width), max(height, width)
    return min(min_size / short, max_size / long)


def resize(image: Tensor, boxes: Tensor, ignore: Tensor, min_size: int, max_size: int) -> tuple[Tensor, Tensor, Tensor, float]:
    """Resize an image and its boxes by one factor `scale` (see `resize_scale`).

    Args:
        image: (3, h, w) uint8 (0..255) or float in [0, 1].
        boxes: (n, 4) float32 xyxy, pixels of `image`.  ignore: (k, 4) likewise.
        min_size, max_size: target shorter side and cap on the longer side.
    Returns:
        image (3, h', w') float32 in [0, 1], bilinear with antialiasing; boxes * scale; ignore * scale; scale.
        h' = round(h * scale), w' = round(w * scale). Deviation from torchvision, which floors the
        float product and so can lose a pixel to rounding error (800/48*48 = 799.99..). Boxes are
        multiplied by exactly `scale` (so `original = resized / scale` is exact), which puts a box
        edge at most half a pixel past the rounded border.
    """
    _, h, w = image.shape
    scale = resize_scale(h, w, min_size, max_size)
    new_h, new_w = int(h * scale + 0.5), int(w * scale + 0.5)
    image = image.float() / 255.0 if image.dtype == torch.uint8 else image.float()
    if (new_h, new_w) != (h, w):
        image = F.interpolate(image[None], size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=True)[0]
    return image, boxes * scale, ignore * scale, scale


def hflip(image: Tensor, boxes: Tensor, ignore: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Mirror left-right: image columns reversed, x1' = w - x2, x2' = w - x1 (boxes (n,4), ignore (k,4) xyxy)."""
    w = image.shape[-1]

    def mirror(b: Tensor) -> Tensor:
        return torch.stack([w - b[:, 2], b[:, 1], w - b[:, 0], b[:, 3]], dim=1)

    return image.flip(-1), mirror(boxes), mirror(ignore)


def normalize(image: Tensor, mean: list[float], std: list[float]) -> Tensor:
    """(image - mean) / std per channel; image (3, h, w) float in [0, 1]."""
    m = torch.as_tensor(mean, dtype=image.dtype).view(-1, 1, 1)
    s = torch.as_tensor(std, dtype=image.dtype).view(-1, 1, 1)
    return (image - m) / s


@dataclass(frozen=True)
class TrainTransform:
    """Random shorter side from `min_sizes`, then a flip with probability `flip_prob`, then normalise.

    Draw order from the generator (fixed, so seeds stay comparable): one `randint` for the size,
    one `rand` for the flip, both drawn even when there is a single size or flip_prob is 0 or 1.
    """

    min_sizes: tuple[int, ...]
    max_size: int
    flip_prob: float
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __call__(self, sample: dict, generator: torch.Generator) -> dict:
        size_idx = int(torch.randint(len(self.min_sizes), (1,), generator=generator))
        flip = bool(torch.rand(1, generator=generator) < self.flip_prob)
        image, boxes, ignore = sample["image"], sample["boxes"], sample["ignore"]
        if flip:
            image, boxes, ignore = hflip(image, boxes, ignore)
        image, boxes, ignore, scale = resize(image, boxes, ignore, self.min_sizes[size_idx], self.max_size)
        return {**sample, "image": normalize(image, self.mean, self.std), "boxes": boxes, "ignore": ignore,
                "scale": scale, "flipped": flip}


@dataclass(frozen=True)
class EvalTransform:
    """Shorter side to `min_size` (capped by `max_size`), no flip, normalise. Deterministic."""

    min_size: int
    max_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __call__(self, sample: dict, generator: torch.Generator | None = None) -> dict:
        image, boxes, ignore, scale = resize(sample["image"], sample["boxes"], sample["ignore"], self.min_size, self.max_size)
        return {**sample, "image": normalize(image, self.mean, self.std), "boxes": boxes, "ignore": ignore,
                "scale": scale, "flipped": False}


def _round_up(x: int, d: int) -> int:
    return -(-x // d) * d if d > 0 else x


def collate(items: list[dict], size_divisibility: int) -> Batch:
    """Stack transformed samples into a padded `Batch`.

    Args:
        items: dicts with "image" (3, h, w) float normalised, "boxes" (n, 4) float32 xyxy resized
            pixels, "labels" (n,) long, "ignore" (k, 4) float32, "image_id" int, "scale" float.
        size_divisibility: padded H and W are rounded up to a multiple of this (0 or 1 = no rounding).
    Returns:
        `Batch`: images zero-padded bottom/right (0 in normalised space, i.e. the mean colour);
        gt_boxes (B, M, 4) with zero padding rows, gt_labels -1 there, gt_valid marking real rows;
        ignore_boxes (B, K, 4) / ignore_valid likewise. M and K may be 0.
    """
    if not items:
        raise ValueError("collate: empty list of samples")
    b = len(items)
    sizes = torch.tensor([list(it["image"].shape[-2:]) for it in items], dtype=torch.long)
    pad_h = _round_up(int(sizes[:, 0].max()), size_divisibility)
    pad_w = _round_up(int(sizes[:, 1].max()), size_divisibility)
    images = items[0]["image"].new_zeros((b, 3, pad_h, pad_w), dtype=torch.float32)
    m = max(len(it["boxes"]) for it in items)
    k = max(len(it["ignore"]) for it in items)
    gt_boxes = torch.zeros((b, m, 4), dtype=torch.float32)
    gt_labels = torch.full((b, m), -1, dtype=torch.long)
    gt_valid = torch.zeros((b, m), dtype=torch.bool)
    ignore_boxes = torch.zeros((b, k, 4), dtype=torch.float32)
    ignore_valid = torch.zeros((b, k), dtype=torch.bool)
    for i, it in enumerate(items):
        h, w = it["image"].shape[-2:]
        images[i, :, :h, :w] = it["image"]
        n, ki = len(it["boxes"]), len(it["ignore"])
        gt_boxes[i, :n] = it["boxes"]
        gt_labels[i, :n] = it["labels"]
        gt_valid[i, :n] = True
        ignore_boxes[i, :ki] = it["ignore"]
        ignore_valid[i, :ki] = True
    return Batch(
        images=images,
        image_sizes=sizes,
        gt_boxes=gt_boxes,
        gt_labels=gt_labels,
        gt_valid=gt_valid,
        ignore_boxes=ignore_boxes,
        ignore_valid=ignore_valid,
        image_ids=torch.tensor([int(it["image_id"]) for it in items], dtype=torch.long),
        scales=torch.tensor([float(it["scale"]) for it in items], dtype=torch.float32),
    )


__all__ = ["derive_seed", "resize_scale", "resize", "hflip", "normalize", "TrainTransform", "EvalTransform", "collate"]
