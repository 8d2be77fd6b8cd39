"""What a PAA assignment keeps for diagnostics, and what is read from it: batch means of the GMM fits
(`paa_summary`, logged every iteration) and sampled per-GT fits (`paa_records`, for figures).

Both read `AssignResult.details` (a `PAADetails`; anything else gives nothing), never the model.
Dimensions: R rows, one per (image, GT) with candidates; N padded candidates per row.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor

from detector.assigners.base import AssignResult
from detector.assigners.gmm import GMMFit


@dataclass
class PAADetails:
    image: Tensor  # (R,) long, image index in the batch
    gt: Tensor  # (R,) long, GT index in the padded M
    gt_labels: Tensor  # (R,) long, the GT's class
    scores: Tensor  # (R, N) float, candidate anchor scores ascending, +inf padding
    valid: Tensor  # (R, N) bool
    positive: Tensor  # (R, N) bool
    fit: GMMFit | None  # the GMM of each row (rows as above); None under `fnp` / `fsr`

    @classmethod
    def cat(cls, parts: list[PAADetails], image_offsets: list[int]) -> PAADetails:
        """Rows of consecutive chunks of images as one; chunk i's images start at `image_offsets[i]`."""
        fits = [p.fit for p in parts]
        fit = None if any(f is None for f in fits) else GMMFit(
            **{f.name: torch.cat([getattr(x, f.name) for x in fits]) for f in fields(GMMFit)})
        return cls(
            image=torch.cat([p.image + lo for p, lo in zip(parts, image_offsets)]),
            gt=torch.cat([p.gt for p in parts]), gt_labels=torch.cat([p.gt_labels for p in parts]),
            scores=torch.cat([p.scores for p in parts]), valid=torch.cat([p.valid for p in parts]),
            positive=torch.cat([p.positive for p in parts]), fit=fit,
        )


def _fitted(result: AssignResult) -> PAADetails | None:
    details = result.details
    return details if isinstance(details, PAADetails) and details.fit is not None else None


def paa_summary(result: AssignResult) -> dict[str, float]:
    """Batch means of the fitted GMM parameters over GTs with >= 2 candidates (empty without GMM fits).

    Whether the GMM separates anything is measured, not assumed: `paa/gmm_degenerate_share` is the share of
    fits whose two means lie closer than the smaller standard deviation (|mu_fg - mu_bg| < min(std), no
    separation: the positives are then a prefix up to the mixture's densest candidate, REFERENCE_NOTES 8.7),
    and `paa/gmm_em_iters` the mean number of EM iterations per fit.
    """
    paa = _fitted(result)
    if paa is None:
        return {}
    fit, valid = paa.fit, paa.valid
    rows = valid.sum(1) >= 2
    if not rows.any():
        return {}
    stds = fit.variances[rows].sqrt()
    means = fit.means[rows]
    degenerate = (means[:, 0] - means[:, 1]).abs() < stds.amin(1)
    n_pos = (paa.positive[rows]).sum(1).float()
    return {
        "paa/gmm_fg_mean": fit.means[rows, 0].mean().item(), "paa/gmm_bg_mean": fit.means[rows, 1].mean().item(),
        "paa/gmm_fg_std": stds[:, 0].mean().item(), "paa/gmm_bg_std": stds[:, 1].mean().item(),
        "paa/gmm_fg_weight": fit.weights[rows, 0].mean().item(),
        "paa/candidates_per_gt": valid[rows].sum(1).float().mean().item(),
        "paa/positives_per_fitted_gt": n_pos.mean().item(),
        "paa/gmm_converged": fit.converged[rows].float().mean().item(),
        "paa/gmm_degenerate_share": degenerate.float().mean().item(),
        "paa/gmm_em_iters": fit.n_iter[rows].float().mean().item(),
    }


def paa_records(result: AssignResult, count: int, seed: int) -> dict[str, list[dict]]:
    """{"gmm_fits": up to `count` GTs (with >= 2 candidates), drawn reproducibly, with their sorted candidate
    scores, positive flags, fitted means / standard deviations / weights and boundary (highest positive
    score)}; empty when there is no such GT."""
    paa = _fitted(result)
    if paa is None:
        return {}
    fit, valid, pos = paa.fit, paa.valid, paa.positive
    rows = (valid.sum(1) >= 2).nonzero().flatten()
    if rows.numel() == 0:
        return {}
    g = torch.Generator().manual_seed(seed)
    pick = rows.cpu()[torch.randperm(rows.numel(), generator=g)[:count]].sort().values
    out = []
    for r in pick.tolist():
        v = valid[r]
        scores, positive = paa.scores[r][v].tolist(), pos[r][v].tolist()
        pos_scores = [s for s, p in zip(scores, positive) if p]
        out.append({
            "image": int(paa.image[r]), "gt": int(paa.gt[r]), "label": int(paa.gt_labels[r]), "scores": scores, "positive": positive,
            "means": fit.means[r].tolist(), "stds": fit.variances[r].sqrt().tolist(), "weights": fit.weights[r].tolist(),
            "n_candidates": len(scores), "n_positives": len(pos_scores),
            "boundary": max(pos_scores) if pos_scores else None,
        })
    return {"gmm_fits": out}
