"""Figures of what an assigner did during training: PAA GMM fits (paper Fig. 1), FreeAnchor bags, positives per GT."""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def save_figure(fig, path: str | Path, title: str = "", dpi: int = 90) -> Path:
    """Title, lay out, write and close a figure (every figure here ends this way)."""
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return Path(path)


def plot_gmm_fits(records: list[dict], path: str | Path, title: str = "") -> Path:
    """One panel per GT: candidate-score histogram, the two fitted weighted Gaussians, the boundary."""
    n = max(1, len(records))
    cols = min(4, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    for ax, rec in zip(axes.flat, records):
        scores = np.asarray(rec["scores"], dtype=float)
        pos = np.asarray(rec["positive"], dtype=bool)
        lo, hi = scores.min(), scores.max()
        pad = 0.1 * (hi - lo) + 1e-3
        bins = np.linspace(lo - pad, hi + pad, 16)
        ax.hist([scores[pos], scores[~pos]], bins=bins, stacked=True, density=True,
                color=["tab:blue", "tab:gray"], label=["positive", "not positive"])
        xs = np.linspace(lo - pad, hi + pad, 200)
        for k, color in ((0, "tab:blue"), (1, "tab:red")):
            mu, sd, w = rec["means"][k], max(rec["stds"][k], 1e-6), rec["weights"][k]
            ax.plot(xs, w * np.exp(-0.5 * ((xs - mu) / sd) ** 2) / (sd * math.sqrt(2 * math.pi)), color=color, lw=1.2)
        if rec.get("boundary") is not None:
            ax.axvline(rec["boundary"], color="k", ls="--", lw=1)
        ax.set_title(f"img {rec['image']} GT {rec['gt']} cls {rec['label']}: {rec['n_positives']}/{rec['n_candidates']} pos", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_xlabel("anchor score (lower = better)", fontsize=7)
    axes.flat[0].legend(fontsize=6)
    return save_figure(fig, path, title)


def plot_positives_histogram(counts: list[int], path: str | Path, title: str = "") -> Path:
    """Histogram of the number of positive anchors per GT."""
    fig, ax = plt.subplots(figsize=(4, 2.8))
    top = max(counts) if counts else 0
    ax.hist(counts, bins=np.arange(-0.5, top + 1.5, 1), color="tab:blue")
    ax.set_xlabel("positives per GT")
    ax.set_ylabel("GTs")
    if counts:
        ax.set_title(f"{title} mean {np.mean(counts):.2f}, none {np.mean(np.asarray(counts) == 0):.0%}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return Path(path)


def plot_bag_confidence(records: list[dict], path: str | Path, title: str = "") -> Path:
    """FreeAnchor, one panel per object: its bag's matching confidence P{a_j -> b_i} and each anchor's part of the
    Mean-max likelihood, both sorted largest first, with the number of anchors holding most (hold_share) of each."""
    n = max(1, len(records))
    cols = min(4, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    for ax, rec in zip(axes.flat, records):
        ranks = np.arange(1, rec["bag_size"] + 1)
        ax.plot(ranks, rec["match"], color="tab:blue", lw=1.2, label="P{a→b}")
        ax.plot(ranks, rec["share"], color="tab:orange", lw=1.2, label="Mean-max part")
        for key, color in (("match_holders", "tab:blue"), ("bag_holders", "tab:orange")):
            if rec[key]:
                ax.axvline(rec[key] + 0.5, color=color, ls="--", lw=0.8)
        share = f"{rec['hold_share']:.0%}"
        ax.set_title(f"img {rec['image']} GT {rec['gt']} cls {rec['label']}: P max {rec['match_max']:.2f} mean "
                     f"{rec['match_mean']:.2f}\n{share} of P in {rec['match_holders']}, of Mean-max in "
                     f"{rec['bag_holders']}", fontsize=7)
        ax.set_ylim(0, 1.02)
        ax.tick_params(labelsize=7)
        ax.set_xlabel("bag anchors, largest first", fontsize=7)
    axes.flat[0].legend(fontsize=6)
    return save_figure(fig, path, title)
