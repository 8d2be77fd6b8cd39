"""Periodic records of what an assignment did, for figures: PAA's GMM fits and positives-per-GT counts.

Built from `AssignResult` (never by re-running the model) as plain lists/dicts, handed to
`TrainHooks.on_records`; the tracker decides how to store and draw them.
"""
from __future__ import annotations

import torch

from detector.assigners.base import AssignResult
from detector.engine.diagnostics import positives_per_gt


def positives_histogram(result: AssignResult, gt_valid) -> dict:
    """{"counts": positives of every valid GT of the batch} (a histogram's raw data)."""
    return {"counts": positives_per_gt(result, gt_valid)[gt_valid].tolist()}


def gmm_summary(result: AssignResult) -> dict[str, float]:
    """Batch means of the fitted GMM parameters over GTs with >= 2 candidates (empty when not PAA/GMM)."""
    paa = result.extras.get("paa")
    if not isinstance(paa, dict) or paa.get("fit") is None:
        return {}
    fit, valid = paa["fit"], paa["valid"]
    rows = valid.sum(1) >= 2
    if not rows.any():
        return {}
    stds = fit.variances[rows].sqrt()
    n_pos = (paa["positive"][rows]).sum(1).float()
    return {
        "paa/gmm_fg_mean": fit.means[rows, 0].mean().item(), "paa/gmm_bg_mean": fit.means[rows, 1].mean().item(),
        "paa/gmm_fg_std": stds[:, 0].mean().item(), "paa/gmm_bg_std": stds[:, 1].mean().item(),
        "paa/gmm_fg_weight": fit.weights[rows, 0].mean().item(),
        "paa/candidates_per_gt": valid[rows].sum(1).float().mean().item(),
        "paa/positives_per_fitted_gt": n_pos.mean().item(),
        "paa/gmm_converged": fit.converged[rows].float().mean().item(),
    }


def gmm_records(result: AssignResult, count: int, seed: int) -> list[dict]:
    """Up to `count` GTs (with >= 2 candidates), drawn reproducibly, with their sorted candidate scores,
    positive flags, fitted means / standard deviations / weights and boundary (highest positive score)."""
    paa = result.extras.get("paa")
    if not isinstance(paa, dict) or paa.get("fit") is None:
        return []
    fit, valid, pos = paa["fit"], paa["valid"], paa["positive"]
    rows = (valid.sum(1) >= 2).nonzero().flatten()
    if rows.numel() == 0:
        return []
    g = torch.Generator().manual_seed(seed)
    pick = rows.cpu()[torch.randperm(rows.numel(), generator=g)[:count]].sort().values
    out = []
    for r in pick.tolist():
        v = valid[r]
        scores, positive = paa["scores"][r][v].tolist(), pos[r][v].tolist()
        pos_scores = [s for s, p in zip(scores, positive) if p]
        out.append({
            "image": int(paa["image"][r]), "gt": int(paa["gt"][r]), "label": int(paa["gt_labels"][r]), "scores": scores, "positive": positive,
            "means": fit.means[r].tolist(), "stds": fit.variances[r].sqrt().tolist(), "weights": fit.weights[r].tolist(),
            "n_candidates": len(scores), "n_positives": len(pos_scores),
            "boundary": max(pos_scores) if pos_scores else None,
        })
    return out
