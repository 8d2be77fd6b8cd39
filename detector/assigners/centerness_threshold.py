"""Centerness-threshold assignment (Li et al., CVPRW 2021, Sec. 4.2, Table 2 "Centerness"), batched.

1. FCOS candidates (`fcos.fcos_candidates`), each with its smallest-area GT.
2. Positive iff the FCOS centerness of the point in its GT, sqrt(min(l, r) / max(l, r) x min(t, b) / max(t, b)),
   exceeds `threshold` (strict, float64; exact ties are not above, `fcos.TIE_TOLERANCE`). Others are negatives;
   no GT is forced a positive.
The rule filters each point's one FCOS GT, as Pseudo-IoU does in the official code (REFERENCE_NOTES 5: no code
of this variant was released, so where it sits is inferred). Threshold 0 keeps every candidate: centerness is
> 0 strictly inside a GT.
"""
from __future__ import annotations

import torch

from detector.assigners.base import AssignInputs, AssignResult
from detector.assigners.fcos import TIE_TOLERANCE, assign_points
from detector.boxes import centerness
from detector.config.assign_sections import CenternessThresholdConfig  # public here too: its section


@torch.no_grad()
def assign_centerness_threshold(inputs: AssignInputs, cfg: CenternessThresholdConfig) -> AssignResult:
    """Centerness-threshold labels of every point for a batch (steps in the module doc).

    Args / Returns: as `pseudo_iou.assign_pseudo_iou` (iou: the pIoU of positives), with the threshold in `cfg`.
    """
    return assign_points(inputs, cfg, lambda ltrb: centerness(ltrb) > cfg.threshold + TIE_TOLERANCE)
