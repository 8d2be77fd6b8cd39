"""Scaled-box assignment (Li et al., CVPRW 2021, Sec. 4.2, Table 2 "S-box", after FSAF's central region), batched.

1. FCOS candidates (`fcos.fcos_candidates`), each with its smallest-area GT.
2. Positive iff the point lies strictly inside its GT scaled by `scale` about the GT centre:
   |x - xc| < s w / 2 and |y - yc| < s h / 2, i.e. |l - r| / (l + r) < s and |t - b| / (t + b) < s (float64;
   exact ties are outside, `fcos.TIE_TOLERANCE`). Others are negatives; no GT is forced a positive.
The rule filters each point's one FCOS GT, as Pseudo-IoU does in the official code (REFERENCE_NOTES 5: no code
of this variant was released, so where it sits is inferred). Scale 1 keeps every candidate.
"""
from __future__ import annotations

import torch
from torch import Tensor

from detector.assigners.base import AssignInputs, AssignResult
from detector.assigners.fcos import TIE_TOLERANCE, assign_points
from detector.config.assign_sections import ScaledBoxConfig  # public here too: its section


def relative_offset(ltrb: Tensor) -> Tensor:
    """[..., 4] (l, t, r, b) -> [...]: max(2|dx| / w, 2|dy| / h), the smallest scale whose box holds the point."""
    return torch.maximum((ltrb[..., 0] - ltrb[..., 2]).abs() / (ltrb[..., 0] + ltrb[..., 2]),
                         (ltrb[..., 1] - ltrb[..., 3]).abs() / (ltrb[..., 1] + ltrb[..., 3]))


@torch.no_grad()
def assign_scaled_box(inputs: AssignInputs, cfg: ScaledBoxConfig) -> AssignResult:
    """Scaled-box labels of every point for a batch (steps in the module doc).

    Args / Returns: as `pseudo_iou.assign_pseudo_iou` (iou: the pIoU of positives), with the box scale in `cfg`.
    """
    return assign_points(inputs, cfg, lambda ltrb: relative_offset(ltrb) < cfg.scale - TIE_TOLERANCE)
