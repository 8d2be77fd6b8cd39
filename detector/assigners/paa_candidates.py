"""PAA step 3: the candidates of every GT, the `topk` lowest-score first-matched anchors on each level.

Works on the P first-matched anchors of a batch as flat lists (image, anchor, GT, score), grouped by
(image, GT, level) with sorts on int64 keys, and returns padded per-GT rows for the GMM.
"""
from __future__ import annotations

import torch
from torch import Tensor

from detector.assigners.paa_score import AnchorScorer

INF = float("inf")
BOUND_MARGIN = 1e-4  # relative and absolute slack for float rounding in `needed_scores`; no effect on results


def _rank_in_group(group: Tensor) -> Tensor:
    """(P,) sorted group keys -> 0, 1, 2, ... within each run of equal keys."""
    pos = torch.arange(len(group), device=group.device)
    new_run = torch.ones_like(group, dtype=torch.bool)
    new_run[1:] = group[1:] != group[:-1]
    run_start = torch.where(new_run, pos, 0).cummax(0).values
    return pos - run_start


def _sort_by(group: Tensor, score: Tensor) -> tuple[Tensor, Tensor]:
    """Sort by (group, score) in one pass: (sorted groups, permutation). Ties keep their order.

    score must be >= 0 (+inf allowed): the bit patterns of non-negative floats order like the floats.
    """
    key = (group << 32) | score.float().view(torch.int32).long()
    key, order = key.sort(stable=True)
    return key >> 32, order


def level_groups(image: Tensor, anchor: Tensor, gt: Tensor, num_gts: int, num_per_level: list[int]) -> Tensor:
    """(P,) key of each first-matched anchor's (image, GT, level)."""
    starts = torch.tensor(num_per_level, device=anchor.device).cumsum(0)
    return (image * num_gts + gt) * len(num_per_level) + torch.bucketize(anchor, starts, right=True)


def _clean(score: Tensor) -> Tensor:
    """Scores are losses: >= 0 (float rounding can give -1e-9), and NaN (a NaN prediction) is never a candidate."""
    return score.clamp_(min=0).nan_to_num_(nan=INF)


def needed_scores(scorer: AnchorScorer, group: Tensor, topk: int) -> tuple[Tensor, Tensor]:
    """Indices (into P) of the anchors that can be among the `topk` lowest scores of their group, and their scores.

    An exact score costs C (classes) operations, its lower bound (`AnchorScorer.lower_bound`) one. Per group,
    the `topk` lowest bounds are scored first; the largest of those scores is at least the group's k-th
    lowest, so only the other anchors whose bound does not exceed it (plus a rounding margin) are scored
    too. The `topk` lowest scores among the returned anchors are then those of the whole group.
    """
    bound = _clean(scorer.lower_bound())
    group_sorted, order = _sort_by(group, bound)
    rank = _rank_in_group(group_sorted)
    group_id = torch.empty_like(order).index_copy_(0, order, torch.unique_consecutive(group_sorted, return_inverse=True)[1])
    first = order[rank < topk]
    first_scores = _clean(scorer.scores(first))
    kth = first_scores.new_zeros(int(group_id.max()) + 1 if len(group_id) else 0).scatter_reduce_(
        0, group_id.index_select(0, first), first_scores, "amax")
    rest = order[rank >= topk]
    limit = kth.index_select(0, group_id.index_select(0, rest)).mul_(1 + BOUND_MARGIN).add_(BOUND_MARGIN)
    more = rest[bound.index_select(0, rest) <= limit]
    return torch.cat([first, more]), torch.cat([first_scores, _clean(scorer.scores(more))])


def candidate_rows(image: Tensor, anchor: Tensor, gt: Tensor, score: Tensor, num_gts: int,
                   num_per_level: list[int], topk: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Candidates of every GT (step 3) as padded rows sorted by score.

    Args:
        image, anchor, gt, score: (P,) the first-matched anchors, their GT and score (>= 0).
    Returns:
        rows (R,) = image * num_gts + GT of each GT with candidates; scores (R, N) ascending with +inf
        padding; validity (R, N); anchor index (R, N). N = sum over levels of min(topk, level size).
    """
    row_key = image * num_gts + gt
    group, order = _sort_by(level_groups(image, anchor, gt, num_gts, num_per_level), score)
    cand = order[_rank_in_group(group) < topk]  # the topk lowest scores of each (GT, level)

    row_key, order = _sort_by(row_key.index_select(0, cand), score.index_select(0, cand))
    cand = cand.index_select(0, order)
    rows, row_of = torch.unique_consecutive(row_key, return_inverse=True)
    width = sum(min(topk, n) for n in num_per_level)
    flat = row_of.mul_(width).add_(_rank_in_group(row_key))
    s = score.new_full((len(rows) * width,), INF).index_copy_(0, flat, score.index_select(0, cand))
    anchor_of = anchor.new_zeros(len(rows) * width).index_copy_(0, flat, anchor.index_select(0, cand))
    s, anchor_of = s.view(-1, width), anchor_of.view(-1, width)
    return rows, s, torch.isfinite(s), anchor_of
