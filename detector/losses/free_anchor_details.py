"""What a FreeAnchor loss evaluation matched, read for diagnostics: its assignment result (`bags_result`), batch
means (`free_anchor_summary`, logged every iteration) and sampled bags (`free_anchor_records`, for figures).

FreeAnchor has no hard assignment: every anchor of an object's bag is a soft positive. Its counterpart of
"positives per GT" is the number of bag anchors holding `HOLD_SHARE` (80 %) of the bag's Mean-max likelihood,
each anchor's part being w_ij x_ij / Mean-max(X_i): close to the bag size early in training, when Mean-max is
near the mean, and 1 once it has become the max (Sec. 3.3). Those anchors are the `AssignResult`'s positives, so
`assign/pos_per_gt_*` and the positives-per-GT records of a FreeAnchor run sit on one plot with PAA's. Besides,
per object: the bag's matching confidence P{a_j -> b_i} (max and mean over the bag) and the number of anchors
holding `HOLD_SHARE` of its sum (0 when the object's best predicted IoU is <= t: nothing protects it then).

Everything reads `AssignResult.details` (a `FreeAnchorBags`; anything else gives nothing), never the model.
Dimensions: R objects of the batch, K anchors per bag, B images, A anchors.
"""
from __future__ import annotations

import torch
from torch import Tensor

from detector.assigners.base import BG, AssignResult
from detector.losses.free_anchor import FreeAnchorBags

# The share of a bag's confidence that "most of it" means. A diagnostic only: it changes no loss, no gradient.
HOLD_SHARE = 0.8


def holding(values: Tensor, share: float = HOLD_SHARE) -> Tensor:
    """(R, K) bool: the fewest anchors of each row, largest values first, whose sum reaches `share` of the row's sum
    (none for a row summing to 0). values (R, K) >= 0."""
    ordered, order = values.sort(dim=1, descending=True)
    total = ordered.sum(1, keepdim=True)
    before = ordered.cumsum(1) - ordered  # what the larger values already hold
    keep = (before < share * total) & (total > 0)
    return torch.zeros_like(keep).scatter_(1, order, keep)


def bags_result(bags: FreeAnchorBags, batch: int, num_anchors: int) -> AssignResult:
    """The assignment diagnostics read: positives = the anchors holding `HOLD_SHARE` of their bag's Mean-max (an
    anchor in several bags goes to the one it holds the larger part of); iou = the *anchor*'s IoU with that object
    (as the geometric methods report it); weight 1. matched_gt (B, A) long, iou / weight (B, A) float."""
    device = bags.share.device
    matched = torch.full((batch * num_anchors,), BG, dtype=torch.long, device=device)
    iou = torch.zeros(batch * num_anchors, device=device)
    keep = holding(bags.share)
    flat = (bags.image[:, None] * num_anchors + bags.anchor)[keep]
    part = bags.share[keep]
    best = torch.full_like(iou, -1.0).scatter_reduce_(0, flat, part, reduce="amax")
    win = part == best[flat]
    matched[flat[win]] = bags.gt[:, None].expand_as(keep)[keep][win]
    iou[flat[win]] = bags.anchor_iou[keep][win].float()
    return AssignResult(matched_gt=matched.view(batch, num_anchors), iou=iou.view(batch, num_anchors),
                        weight=torch.ones(batch, num_anchors, device=device), details=bags)


def _bags(result: AssignResult) -> FreeAnchorBags | None:
    details = result.details
    return details if isinstance(details, FreeAnchorBags) and details.image.numel() else None


def free_anchor_summary(result: AssignResult) -> dict[str, float]:
    """Batch means over objects: the bag's matching confidence P{a_j -> b_i} (`match_max`, `match_mean`), the
    anchors holding `HOLD_SHARE` of it (`match_holders`, over objects with any) and the share of objects with none
    (`unmatched_share`); the Mean-max likelihood (`bag_prob`), the bag's best likelihood (`likelihood_max`) and
    the anchors holding `HOLD_SHARE` of the Mean-max (`bag_holders`). Empty without objects."""
    bags = _bags(result)
    if bags is None:
        return {}
    matched = bags.match.sum(1) > 0
    out = {
        "free_anchor/match_max": bags.match.amax(1).mean().item(),
        "free_anchor/match_mean": bags.match.mean(1).mean().item(),
        "free_anchor/unmatched_share": (~matched).float().mean().item(),
        "free_anchor/bag_prob": bags.bag_prob.mean().item(),
        "free_anchor/likelihood_max": bags.likelihood.amax(1).mean().item(),
        "free_anchor/bag_holders": holding(bags.share).sum(1).float().mean().item(),
    }
    if matched.any():
        out["free_anchor/match_holders"] = holding(bags.match)[matched].sum(1).float().mean().item()
    return out


def free_anchor_records(result: AssignResult, count: int, seed: int) -> dict[str, list[dict]]:
    """{"bag_confidence": up to `count` objects, drawn reproducibly, each with its bag's P{a_j -> b_i}, Mean-max
    parts and likelihoods sorted largest first, their summaries and the anchors holding `HOLD_SHARE` of each};
    empty without objects."""
    bags = _bags(result)
    if bags is None:
        return {}
    g = torch.Generator().manual_seed(seed)
    pick = torch.randperm(bags.image.numel(), generator=g)[:count].sort().values.tolist()
    match_holders, bag_holders = holding(bags.match).sum(1).tolist(), holding(bags.share).sum(1).tolist()
    match_max, match_mean = bags.match.amax(1).tolist(), bags.match.mean(1).tolist()
    out = []
    for r in pick:
        out.append({
            "image": int(bags.image[r]), "gt": int(bags.gt[r]), "label": int(bags.label[r]),
            "bag_size": int(bags.match.shape[1]), "hold_share": HOLD_SHARE,
            "match": bags.match[r].sort(descending=True).values.tolist(),
            "share": bags.share[r].sort(descending=True).values.tolist(),
            "likelihood": bags.likelihood[r].sort(descending=True).values.tolist(),
            "match_max": match_max[r], "match_mean": match_mean[r], "bag_prob": float(bags.bag_prob[r]),
            "match_holders": int(match_holders[r]), "bag_holders": int(bag_holders[r]),
        })
    return {"bag_confidence": out}


__all__ = ["HOLD_SHARE", "holding", "bags_result", "free_anchor_summary", "free_anchor_records"]
