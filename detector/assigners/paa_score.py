"""PAA's anchor score (step 2 of `detector.assigners.paa`): how well an anchor's detached predictions fit a GT.

score = focal loss summed over all classes (one-hot target at the GT's class) + w x (1 - GIoU(decoded
box, GT)), lower is better; the official code's "combined loss" with w = `score_giou_weight` (1.0).
"""
from __future__ import annotations

import torch
from torch import Tensor

from detector.assigners.base import AssignInputs
from detector.boxes import aligned_giou
from detector.config.assign_sections import PAAConfig

SCORE_CHUNK = 2048  # anchors scored at once; a speed knob only, results do not depend on it

# Every value here is a function of its own anchor's logits alone, bit for bit, whatever else is scored in the
# same call (so `needed_scores`, which scores a subset, gives exactly the scores of `anchor_scores`). Two kinds
# of CPU kernel break that (torch 2.14): torch.sigmoid, softplus and pow run vector code on most of a tensor
# and a scalar loop, which rounds differently, on its tail, so a value depends on its position; and a row
# reduction (sum, vecdot) may vectorise across rows, so its order depends on the number of rows. Hence only
# exp and log1p (vector code to the last element), correctly rounded arithmetic and a summation tree fixed by
# C below (tests/test_paa_sparse.py checks a pair's score alone, in subsets and across chunks).


def _softplus_pair(x: Tensor) -> tuple[Tensor, Tensor]:
    """x -> (softplus(x), softplus(-x)) = (relu(x) + log1p(exp(-|x|)), relu(-x) + log1p(exp(-|x|)))."""
    tail = x.abs().neg_().exp_().log1p_()
    return x.clamp(min=0).add_(tail), x.neg().clamp_(min=0).add_(tail)


def _neg_term(x: Tensor, gamma: float) -> Tensor:
    """Logits -> neg(x) = sigmoid(x)^g softplus(x), elementwise, with sigmoid(x)^g = exp(-g softplus(-x))
    (any g >= 0, without pow)."""
    sp, sp_neg = _softplus_pair(x)
    return sp_neg.mul_(-gamma).exp_().mul_(sp)


def _row_sum(t: Tensor) -> Tensor:
    """(P, C) -> (P,) sums over C by a pairwise tree fixed by C alone (elementwise adds of column halves)."""
    while t.shape[1] > 1:
        half = t.shape[1] // 2
        s = t[:, :half] + t[:, half:2 * half]
        t = torch.cat([s, t[:, 2 * half:]], 1) if t.shape[1] % 2 else s
    return t[:, 0] if t.shape[1] else t.new_zeros(t.shape[0])


def _neg_sum(logits: Tensor, rows: Tensor, gamma: float) -> Tensor:
    """(P,) sum over classes of sigmoid(x)^g softplus(x) for logits[rows], in chunks of `SCORE_CHUNK` rows:
    they stay in cache, where a whole batch's (P, C) temporaries would cost more in fresh-memory page
    faults than in arithmetic. Each row's value does not depend on the chunk it is in, nor on its place there."""
    total = torch.empty(len(rows), device=logits.device)
    for lo in range(0, len(rows), SCORE_CHUNK):
        x = logits.index_select(0, rows[lo:lo + SCORE_CHUNK]).float()
        total[lo:lo + SCORE_CHUNK] = _row_sum(_neg_term(x, gamma))
    return total


def _target_terms(x: Tensor, alpha: float, gamma: float) -> tuple[Tensor, Tensor]:
    """GT-class logits (P,) -> neg(x_y) and a pos(x_y), the target class's two focal terms
    (pos(x) = sigmoid(-x)^g softplus(-x) = exp(-g softplus(x)) softplus(-x))."""
    sp, sp_neg = _softplus_pair(x)
    neg = sp_neg.mul(-gamma).exp_().mul_(sp)
    return neg, sp.mul_(-gamma).exp_().mul_(sp_neg).mul_(alpha)


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
