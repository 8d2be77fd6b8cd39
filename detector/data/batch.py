"""The batch record every model, assigner and loss reads.

Images of different sizes are zero-padded to one (H, W); images with different numbers of GT boxes
are padded to M rows with an explicit `gt_valid` mask (padding is never inferred from zeros).
Boxes are xyxy in the pixel frame of the resized image.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor


@dataclass
class Batch:
    images: Tensor  # (B, 3, H, W) float32, normalised, zero-padded bottom/right
    image_sizes: Tensor  # (B, 2) long: (h, w) of each resized image before padding
    gt_boxes: Tensor  # (B, M, 4) float32 xyxy, resized-image pixels; padding rows are 0
    gt_labels: Tensor  # (B, M) long, contiguous class index 0..C-1; padding rows are -1
    gt_valid: Tensor  # (B, M) bool
    ignore_boxes: Tensor  # (B, K, 4) float32 xyxy crowd regions (K may be 0)
    ignore_valid: Tensor  # (B, K) bool
    image_ids: Tensor  # (B,) long, dataset image ids
    scales: Tensor  # (B,) float32: resized = original * scale

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Batch":
        return Batch(**{f.name: getattr(self, f.name).to(device, non_blocking=non_blocking) for f in fields(self)})

    def __len__(self) -> int:
        return self.images.shape[0]

    def pin_memory(self) -> "Batch":
        """Page-locked copies, so that `to(cuda, non_blocking=True)` overlaps the copy (DataLoader `pin_memory`)."""
        return Batch(**{f.name: getattr(self, f.name).pin_memory() for f in fields(self)})
