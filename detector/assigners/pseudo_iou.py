"""Pseudo-IoU assignment (Li et al., CVPRW 2021, Sec. 3.1-3.2, Alg. 1), batched.

1. FCOS candidates (`fcos.fcos_candidates`): points inside a GT and in their level's size range, each with
   its smallest-area GT.
2. Pseudo-IoU of each candidate with its GT (`detector.boxes.pseudo_iou`, the closed form a / (2 - a) of
   Algorithm 1; computed in float64).
3. Positive iff pIoU > `threshold` (strict; exact ties are not above, `fcos.TIE_TOLERANCE`); the others are
   negatives, not ignored, and are not offered to another GT; no GT is forced a positive. A GT can lose every
   point: the paper's collapse at T >= 0.6 (Table 1a).
Threshold 0 keeps every candidate (pIoU > 1/7 inside a GT): the AF-baseline, `fcos.assign_fcos_inside`.

What T selects (REFERENCE_NOTES 5.5): positive iff a > 2T / (1 + T); at T = 0.4 that is |dx|/w < 0.429 on an
axis and |dx|/w = |dy|/h < 0.244 on the diagonal.
"""
from __future__ import annotations

import torch

from detector.assigners.base import AssignInputs, AssignResult
from detector.assigners.fcos import TIE_TOLERANCE, assign_points
from detector.boxes import pseudo_iou
from detector.config.assign_sections import PseudoIoUConfig  # public here too: its section


@torch.no_grad()
def assign_pseudo_iou(inputs: AssignInputs, cfg: PseudoIoUConfig) -> AssignResult:
    """Pseudo-IoU labels of every point for a batch (steps in the module doc).

    Args:
        inputs: anchors (A, 4) xyxy pixels, one per location, whose centres are the points, level-major with
            `num_per_level` and `strides`; gt_boxes (B, M, 4) xyxy pixels; gt_labels (B, M); gt_valid (B, M)
            bool. Predictions are not read.
        cfg: threshold, size bounds, centre sampling.
    Returns:
        AssignResult: matched_gt (B, A) long, a GT index or BG; iou (B, A) the pIoU of positives (0 elsewhere);
        weight (B, A) all 1.
    """
    return assign_points(inputs, cfg, lambda ltrb: pseudo_iou(ltrb) > cfg.threshold + TIE_TOLERANCE)
