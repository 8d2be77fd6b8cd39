"""PAA's anchor score (step 2 of `detector.assigners.paa`): how well an anchor's detached predictions fit a GT.

score = focal loss summed over all classes (one-hot target at the GT's class) + w x (1 - GIoU(decoded
box, GT)), lower is better; the official code's "combined loss" with w = `score_giou_weight` (1.0).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from detector.assigners.base import AssignInputs
from detector.boxes import aligned_giou
from detector.config import PAAConfig

SCORE_CHUNK = 2048  # anchors scored at once; a speed knob only, results do not depend on it


def focal_over_classes(logits: Tensor, rows: Tensor, labels: Tensor, alpha: float, gamma: float) -> Tensor:
    """Sigmoid focal loss summed over all classes, one-hot target at `labels`: (P,) for logits[rows].

    logits (N, C); rows, labels (P,) long. Equals torchvision's `sigmoid_focal_loss(...).sum(1)` (to float
    rounding) as sum_c neg(x_c) - neg(x_y) + pos(x_y), with neg(x) = (1-a) sigmoid(x)^g softplus(x) and
    pos(x) = a sigmoid(-x)^g softplus(-x): three passes over the (P, C) logits instead of ten. They run in
    chunks of `SCORE_CHUNK` rows, which stay in cache; a whole batch's (P, C) temporaries would cost more
    in fresh-memory page faults than in arithmetic.
    """
    def sigmoid_pow(x: Tensor) -> Tensor:
        p = torch.sigmoid(x)
        return p.mul_(p) if gamma == 2.0 else p.pow_(gamma)

    c = logits.shape[1]
    total = torch.empty(len(rows), device=logits.device)
    for lo in range(0, len(rows), SCORE_CHUNK):
        x = logits.index_select(0, rows[lo:lo + SCORE_CHUNK]).float()
        total[lo:lo + SCORE_CHUNK] = torch.linalg.vecdot(sigmoid_pow(x), F.softplus(x))
    x = logits.reshape(-1).index_select(0, rows * c + labels).float()  # the target class's logit
    neg_y = sigmoid_pow(x).mul_(F.softplus(x))
    pos_y = sigmoid_pow(-x).mul_(F.softplus(-x))
    return total.sub_(neg_y).mul_(1.0 - alpha).add_(pos_y.mul_(alpha))


def anchor_scores(inputs: AssignInputs, anchor_flat: Tensor, gt_flat: Tensor, cfg: PAAConfig) -> Tensor:
    """(P,) anchor score for (anchor, GT) pairs: focal over all classes + w (1 - GIoU(decoded box, GT)).

    anchor_flat = image * A + anchor, gt_flat = image * M + GT, each (P,) long.
    """
    b, a, c = inputs.cls_logits.shape
    labels = inputs.gt_labels.reshape(-1).index_select(0, gt_flat)
    focal = focal_over_classes(inputs.cls_logits.reshape(b * a, c), anchor_flat, labels,
                               cfg.score_focal_alpha, cfg.score_focal_gamma)
    pred = inputs.pred_boxes.reshape(b * a, 4).index_select(0, anchor_flat).float()
    target = inputs.gt_boxes.reshape(-1, 4).index_select(0, gt_flat).float()
    return focal.add_(cfg.score_giou_weight * (1.0 - aligned_giou(pred, target)))
