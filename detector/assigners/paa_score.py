"""PAA's anchor score (step 2 of `detector.assigners.paa`): how well an anchor's detached predictions fit a GT.

score = focal loss summed over all classes (one-hot target at the GT's class) + w x (1 - GIoU(decoded
box, GT)), lower is better; the official code's "combined loss" with w = `score_giou_weight` (1.0).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from detector.assigners.base import AssignInputs
from detector.assigners.paa_config import PAAConfig
from detector.boxes import aligned_giou

SCORE_CHUNK = 2048  # anchors scored at once; a speed knob only, results do not depend on it


def _sigmoid_pow(x: Tensor, gamma: float) -> Tensor:
    p = torch.sigmoid(x)
    return p.mul_(p) if gamma == 2.0 else p.pow_(gamma)


def _neg_sum(logits: Tensor, rows: Tensor, gamma: float) -> Tensor:
    """(P,) sum over classes of sigmoid(x)^g softplus(x) for logits[rows], in chunks of `SCORE_CHUNK` rows:
    they stay in cache, where a whole batch's (P, C) temporaries would cost more in fresh-memory page
    faults than in arithmetic. Each row's value does not depend on the chunk it is in."""
    total = torch.empty(len(rows), device=logits.device)
    for lo in range(0, len(rows), SCORE_CHUNK):
        x = logits.index_select(0, rows[lo:lo + SCORE_CHUNK]).float()
        total[lo:lo + SCORE_CHUNK] = torch.linalg.vecdot(_sigmoid_pow(x, gamma), F.softplus(x))
    return total


def _target_terms(x: Tensor, alpha: float, gamma: float) -> tuple[Tensor, Tensor]:
    """GT-class logits (P,) -> neg(x_y) and a pos(x_y), the target class's two focal terms."""
    return (_sigmoid_pow(x, gamma).mul_(F.softplus(x)),
            _sigmoid_pow(-x, gamma).mul_(F.softplus(-x)).mul_(alpha))


class AnchorScorer:
    """Scores of P (anchor, GT) pairs, on demand: the per-pair parts for all at once, the focal sum over all
    classes (the cost: P x C) only for the pairs asked for.

    focal over classes = (1-a) (sum_c neg(x_c) - neg(x_y)) + a pos(x_y), with neg(x) = sigmoid(x)^g softplus(x)
    and pos(x) = sigmoid(-x)^g softplus(-x), x_y the logit of the GT's class: torchvision's
    `sigmoid_focal_loss(...).sum(1)` to float rounding, in three passes over the logits instead of ten.
    Since the bracket is a sum of non-negative terms, `lower_bound` = a pos(x_y) + w (1 - GIoU) <= score.

    Args:
        anchor_flat = image * A + anchor, gt_flat = image * M + GT, each (P,) long.
    """

    def __init__(self, inputs: AssignInputs, anchor_flat: Tensor, gt_flat: Tensor, cfg: PAAConfig):
        b, a, c = inputs.cls_logits.shape
        self.logits, self.rows = inputs.cls_logits.reshape(b * a, c), anchor_flat
        self.alpha, self.gamma = cfg.score_focal_alpha, cfg.score_focal_gamma
        labels = inputs.gt_labels.reshape(-1).index_select(0, gt_flat)
        x = self.logits.reshape(-1).index_select(0, anchor_flat * c + labels).float()  # the GT class's logit
        self.neg_y, self.pos_y = _target_terms(x, self.alpha, self.gamma)
        pred = inputs.pred_boxes.reshape(b * a, 4).index_select(0, anchor_flat).float()
        target = inputs.gt_boxes.reshape(-1, 4).index_select(0, gt_flat).float()
        self.giou_term = cfg.score_giou_weight * (1.0 - aligned_giou(pred, target))

    def lower_bound(self) -> Tensor:
        """(P,) a value <= each pair's score (up to float rounding), from the GT class's logit alone."""
        return self.pos_y + self.giou_term

    def scores(self, idx: Tensor) -> Tensor:
        """(len(idx),) exact scores of the pairs `idx` (indices into P)."""
        neg = _neg_sum(self.logits, self.rows.index_select(0, idx), self.gamma).sub_(self.neg_y.index_select(0, idx))
        return neg.mul_(1.0 - self.alpha).add_(self.pos_y.index_select(0, idx)).add_(self.giou_term.index_select(0, idx))


def anchor_scores(inputs: AssignInputs, anchor_flat: Tensor, gt_flat: Tensor, cfg: PAAConfig) -> Tensor:
    """(P,) anchor score of every pair: focal over all classes + w (1 - GIoU(decoded box, GT))."""
    return AnchorScorer(inputs, anchor_flat, gt_flat, cfg).scores(torch.arange(len(anchor_flat), device=anchor_flat.device))
