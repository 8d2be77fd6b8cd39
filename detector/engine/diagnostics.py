"""Assignment diagnostics, read from an `AssignResult` (never by re-running the model)."""
from __future__ import annotations

import torch

from detector.assigners.base import IGNORE, AssignResult
from detector.engine.hooks import GT_WITHOUT_POS_MEAN, RUN_SECONDS  # public here too: the run-level metrics


def positives_per_gt(result: AssignResult, gt_valid) -> torch.Tensor:
    """(B, M) long: number of positive anchors of each GT (padding rows count 0)."""
    b, m = gt_valid.shape
    counts = torch.zeros(b, m + 1, dtype=torch.long, device=gt_valid.device)
    idx = torch.where(result.positive, result.matched_gt, torch.full_like(result.matched_gt, m))
    counts.scatter_add_(1, idx, torch.ones_like(idx))
    return counts[:, :m]


@torch.no_grad()
def assignment_diagnostics(result: AssignResult, gt_valid, num_per_level: list[int]) -> dict[str, float]:
    """Positives per image, per GT (mean/median/min/max, share with none), per level; IoU of positives."""
    b = gt_valid.shape[0]
    pos = result.positive
    out = {
        "assign/pos_per_image": pos.sum().item() / max(b, 1),
        "assign/ignored_per_image": (result.matched_gt == IGNORE).sum().item() / max(b, 1),
    }
    per_gt = positives_per_gt(result, gt_valid)[gt_valid].float()
    if per_gt.numel():
        out.update({
            "assign/pos_per_gt_mean": per_gt.mean().item(),
            "assign/pos_per_gt_median": per_gt.median().item(),
            "assign/pos_per_gt_min": per_gt.min().item(),
            "assign/pos_per_gt_max": per_gt.max().item(),
            "assign/gt_without_pos": (per_gt == 0).float().mean().item(),
        })
    for level, part in enumerate(pos.split(num_per_level, dim=1)):
        out[f"assign/pos_per_image_P{level + 3}"] = part.sum().item() / max(b, 1)
    if pos.any():
        out["assign/pos_iou_mean"] = result.iou[pos].mean().item()
    return out
