"""Figures of what an assigner did during training: PAA GMM fits (paper Fig. 1), FreeAnchor bags, positives per GT.

Panels of per-GT records are titled by the dataset image id and class name (`detector.engine.records.with_names`);
records stored before those existed carry only the batch index and label number, and say so.
"""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

DPI = 150  # 8 pt text stays legible on a screen and in a report at this resolution
LEGEND_INCHES = 0.3  # room kept under the panels for each line of a figure-wide legend
LEGEND_ENTRY_INCHES = 2.3  # width of one legend entry (marker and an up to 30-character label at 8 pt)
PANEL_INCHES = (3.6, 2.9)  # one panel of a per-GT figure (width, height)
MAX_COLUMNS = 4
FG_COLOR, BG_COLOR, POS_COLOR, OTHER_COLOR = "tab:blue", "tab:red", "tab:cyan", "tab:gray"


def save_figure(fig, path: str | Path, title: str = "", dpi: int = DPI, legend: tuple[list, list] | None = None) -> Path:
    """Title, lay out, write and close a figure (every figure here ends this way); `legend`: (handles, labels) drawn
    once for the whole figure, under its panels."""
    if title:
        fig.suptitle(title, fontsize=10)
    bottom = 0.0
    if legend is not None:
        width, height = fig.get_size_inches()
        columns = max(1, min(len(legend[0]), int(width // LEGEND_ENTRY_INCHES)))
        bottom = min(0.3, LEGEND_INCHES * math.ceil(len(legend[0]) / columns) / height)
        fig.legend(*legend, loc="lower center", ncol=columns, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, bottom, 1, 1))
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return Path(path)


def panel_title(rec: dict) -> str:
    """"image 123 · circle" from a named record; the batch index and label number of an older one."""
    if "image_id" in rec:
        return f"image {rec['image_id']} · {rec.get('class_name', rec['label'])}"
    return f"batch image {rec['image']} · class {rec['label']}"


def _panels(n: int, columns: int):
    """A grid for `n` panels, `columns` wide at most, unused cells hidden: (figure, axes)."""
    n = max(1, n)
    cols = min(columns, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(PANEL_INCHES[0] * cols, PANEL_INCHES[1] * rows + LEGEND_INCHES),
                             squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    return fig, axes


def _gaussian(xs: np.ndarray, mean: float, std: float, weight: float) -> np.ndarray:
    std = max(std, 1e-6)
    return weight * np.exp(-0.5 * ((xs - mean) / std) ** 2) / (std * math.sqrt(2 * math.pi))


def plot_gmm_fits(records: list[dict], path: str | Path, title: str = "", columns: int = MAX_COLUMNS) -> Path:
    """One panel per GT (PAA Fig. 1): the density histogram of its candidates' scores (positives stacked on the
    others), the two fitted weighted Gaussians (foreground: the lower mean) and the boundary (the highest positive
    score); one legend for the figure."""
    fig, axes = _panels(len(records), columns)
    for i, (ax, rec) in enumerate(zip(axes.flat, records)):
        scores = np.asarray(rec["scores"], dtype=float)
        pos = np.asarray(rec["positive"], dtype=bool)
        lo, hi = scores.min(), scores.max()
        pad = 0.1 * (hi - lo) + 1e-3
        bins = np.linspace(lo - pad, hi + pad, 16)
        ax.hist([scores[pos], scores[~pos]], bins=bins, stacked=True, density=True, color=[POS_COLOR, OTHER_COLOR])
        xs = np.linspace(lo - pad, hi + pad, 200)
        for k, color in ((0, FG_COLOR), (1, BG_COLOR)):
            ax.plot(xs, _gaussian(xs, rec["means"][k], rec["stds"][k], rec["weights"][k]), color=color, lw=1.5)
        if rec.get("boundary") is not None:
            ax.axvline(rec["boundary"], color="k", ls="--", lw=1)
        ax.set_title(f"{panel_title(rec)}\nGT {rec['gt']}: {rec['n_positives']} of {rec['n_candidates']} candidates "
                     "positive", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_xlabel("anchor score (cls + box loss, lower = better)", fontsize=7)
        if i % columns == 0:
            ax.set_ylabel("density", fontsize=8)
    handles = [Patch(color=POS_COLOR), Patch(color=OTHER_COLOR), Line2D([], [], color=FG_COLOR, lw=1.5),
               Line2D([], [], color=BG_COLOR, lw=1.5), Line2D([], [], color="k", ls="--", lw=1)]
    labels = ["positive candidates", "other candidates", "foreground component", "background component",
              "boundary"]
    return save_figure(fig, path, title, legend=(handles, labels))


def plot_positives_histogram(counts: list[int], path: str | Path, title: str = "") -> Path:
    """Histogram of the number of positive anchors per GT."""
    fig, ax = plt.subplots(figsize=(4, 2.8))
    top = max(counts) if counts else 0
    ax.hist(counts, bins=np.arange(-0.5, top + 1.5, 1), color="tab:blue")
    ax.set_xlabel("positives per GT")
    ax.set_ylabel("GTs")
    if counts:
        ax.set_title(f"{title} mean {np.mean(counts):.2f}, none {np.mean(np.asarray(counts) == 0):.0%}", fontsize=9)
    return save_figure(fig, path)


def plot_bag_confidence(records: list[dict], path: str | Path, title: str = "", columns: int = MAX_COLUMNS) -> Path:
    """FreeAnchor, one panel per object: its bag's matching confidence P{a_j -> b_i} and each anchor's part of the
    Mean-max likelihood, both sorted largest first, with the number of anchors holding most (hold_share) of each."""
    fig, axes = _panels(len(records), columns)
    for i, (ax, rec) in enumerate(zip(axes.flat, records)):
        ranks = np.arange(1, rec["bag_size"] + 1)
        ax.plot(ranks, rec["match"], color="tab:blue", lw=1.2)
        ax.plot(ranks, rec["share"], color="tab:orange", lw=1.2)
        for key, color in (("match_holders", "tab:blue"), ("bag_holders", "tab:orange")):
            if rec[key]:
                ax.axvline(rec[key] + 0.5, color=color, ls="--", lw=0.8)
        share = f"{rec['hold_share']:.0%}"
        ax.set_title(f"{panel_title(rec)} (GT {rec['gt']})\nP max {rec['match_max']:.2f} mean {rec['match_mean']:.2f}; "
                     f"{share} of P in {rec['match_holders']}, of Mean-max in {rec['bag_holders']}", fontsize=7)
        ax.set_ylim(0, 1.02)
        ax.tick_params(labelsize=7)
        ax.set_xlabel("bag anchors, largest first", fontsize=7)
        if i % columns == 0:
            ax.set_ylabel("probability / part", fontsize=8)
    handles = [Line2D([], [], color="tab:blue", lw=1.2), Line2D([], [], color="tab:orange", lw=1.2),
               Line2D([], [], color="gray", ls="--", lw=0.8)]
    labels = ["matching confidence P{a→b}", "part of the Mean-max likelihood",
              f"anchors holding {records[0]['hold_share']:.0%} of it" if records else "anchors holding most of it"]
    return save_figure(fig, path, title, legend=(handles, labels))
