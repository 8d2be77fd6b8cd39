"""Figures of a study as a whole, from plain data (no tracking here): a metric per row with its interval over
seeds, the assignment statistics over training for every row with seed bands (PAA Fig. 4b), and FreeAnchor's
NMS recall and AP per object shape and image crowdedness.

`study_report.py` reads the runs and hands these functions numbers; each writes one PNG and returns its path.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from dashboards.assign_figures import save_figure  # noqa: E402

CURVE_BINS = 100  # a training curve is averaged in this many equal iteration windows: one point per window
ROW_COLORS = plt.get_cmap("tab10").colors


@dataclass
class RowValue:
    """One row's value of a metric (percent): the mean over seeds, its 95% half-width, each seed's value, the
    paper's value (drawn only when given)."""

    label: str
    mean: float | None
    half: float | None
    by_seed: dict[int, float] = field(default_factory=dict)
    paper: float | None = None


Curve = list[tuple[int, float]]  # (iteration, value) of one run


def plot_metric_per_row(values: list[RowValue], metric: str, path: str | Path, title: str = "") -> Path:
    """The metric per row: the mean with its 95% interval bar over seeds, each seed as a dot, the paper's value as a
    red cross where given. Rows without a finished run keep their place, empty."""
    fig, ax = plt.subplots(figsize=(max(4.5, 1.1 * len(values) + 2), 3.6))
    xs = np.arange(len(values))
    for x, v in zip(xs, values):
        if v.mean is not None:
            ax.errorbar([x], [v.mean], yerr=None if v.half is None else [[v.half], [v.half]], fmt="o", color="tab:blue",
                        ms=7, capsize=6, lw=1.5, zorder=3)
        seeds = list(v.by_seed.values())
        if seeds:
            ax.scatter(x + np.linspace(-0.12, 0.12, len(seeds)) if len(seeds) > 1 else [x + 0.12], seeds, s=14,
                       color="tab:gray", zorder=2)
        if v.paper is not None:
            ax.scatter([x], [v.paper], marker="x", s=60, color="tab:red", zorder=4)
    ax.set_xticks(xs, [v.label for v in values], rotation=20 if len(values) > 4 else 0, ha="right" if
                  len(values) > 4 else "center", fontsize=8)
    ax.set_xlim(-0.6, len(values) - 0.4)
    percent_axis(ax)
    ax.set_ylabel(f"{metric} (%)")
    ax.grid(axis="y", alpha=0.3)
    handles = [ax.errorbar([], [], yerr=[], fmt="o", color="tab:blue", capsize=6),
               ax.scatter([], [], s=14, color="tab:gray")]
    labels = ["mean, 95% interval over seeds (Student t)", "one seed"]
    if any(v.paper is not None for v in values):
        handles.append(ax.scatter([], [], marker="x", s=60, color="tab:red"))
        labels.append("paper")
    return save_figure(fig, path, title, legend=(handles, labels))


def percent_axis(ax) -> None:
    """Keep a percent axis within [0, 100]: an interval over 2 or 3 seeds can reach far past both (t = 12.7 for
    2), and would squeeze every mean into a line; a bar cut at the frame still shows it reaches beyond."""
    low, high = ax.get_ylim()
    ax.set_ylim(max(low, 0.0), min(high, 100.0))


def binned(curve: Curve, edges: np.ndarray) -> np.ndarray:
    """The mean value of `curve` in each iteration window [edges[i], edges[i+1]) (NaN where it logged nothing)."""
    if not curve:
        return np.full(len(edges) - 1, np.nan)
    steps, values = np.array(curve, dtype=float).T
    which = np.clip(np.searchsorted(edges, steps, side="right") - 1, 0, len(edges) - 2)
    sums = np.bincount(which, weights=values, minlength=len(edges) - 1)
    counts = np.bincount(which, minlength=len(edges) - 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def _band(ax, curves: dict[int, Curve], edges: np.ndarray, color, label: str, scale: float = 1.0) -> bool:
    """The mean over seeds of the windowed curves, and their min-max band; False when no seed has a point."""
    per_seed = np.array([binned(c, edges) for c in curves.values() if c]) * scale
    if per_seed.size == 0:
        return False
    centres = (edges[:-1] + edges[1:]) / 2
    with warnings.catch_warnings():  # a window no seed logged in is all-NaN: NaN is the answer there
        warnings.simplefilter("ignore", RuntimeWarning)
        mean, low, high = np.nanmean(per_seed, 0), np.nanmin(per_seed, 0), np.nanmax(per_seed, 0)
    keep = ~np.isnan(mean)
    ax.plot(centres[keep], mean[keep], color=color, lw=1.6, label=f"{label} ({len(per_seed)} seeds)"
            if len(per_seed) > 1 else f"{label} (1 seed)")
    if len(per_seed) > 1:
        ax.fill_between(centres[keep], low[keep], high[keep], color=color, alpha=0.2, lw=0)
    return True


def plot_assignment_over_training(positives: dict[str, dict[int, Curve]], without: dict[str, dict[int, Curve]],
                                  path: str | Path, title: str = "") -> Path:
    """Two panels over training iterations, one line per row (PAA Fig. 4b): the mean number of positive anchors
    per GT, and the share (%) of GTs without any. Each seed's logged values are averaged in `CURVE_BINS` windows;
    the line is the mean over seeds, the band their min-max."""
    last = max((s for runs in (*positives.values(), *without.values()) for c in runs.values() for s, _ in c),
               default=1)
    edges = np.linspace(0, last + 1, min(CURVE_BINS, last + 1) + 1)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    labels = list(dict.fromkeys([*positives, *without]))
    for i, label in enumerate(labels):
        color = ROW_COLORS[i % len(ROW_COLORS)]
        _band(left, positives.get(label, {}), edges, color, label)
        _band(right, without.get(label, {}), edges, color, label, scale=100.0)
    left.set_ylabel("positive anchors per GT (mean)")
    right.set_ylabel("GTs without a positive anchor (%)")
    for ax in (left, right):
        ax.set_xlabel("training iteration")
        ax.grid(alpha=0.3)
    handles, names = left.get_legend_handles_labels()
    if not handles:
        handles, names = right.get_legend_handles_labels()
    band = [plt.Rectangle((0, 0), 1, 1, color="gray", alpha=0.2)]
    return save_figure(fig, path, title, legend=(handles + band, names + ["min-max over seeds"]))


def plot_recall_by_iou(rows: list[tuple[str, dict[float, RowValue]]], path: str | Path, title: str = "") -> Path:
    """NMS recall (FreeAnchor Table 1) against the IoU threshold, one line per row with its 95% interval over seeds."""
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for i, (label, by_iou) in enumerate(rows):
        ious = sorted(t for t, v in by_iou.items() if v.mean is not None)
        if not ious:
            continue
        means = [by_iou[t].mean for t in ious]
        halves = [by_iou[t].half or 0.0 for t in ious]
        ax.errorbar(ious, means, yerr=halves, marker="o", capsize=3, lw=1.4, color=ROW_COLORS[i % len(ROW_COLORS)],
                    label=label)
    percent_axis(ax)
    ax.set_xlabel("IoU threshold")
    ax.set_ylabel("NMS recall (%)")
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    return save_figure(fig, path, title, legend=(handles, labels) if handles else None)


def plot_grouped(rows: list[tuple[str, dict[str, RowValue]]], metrics: list[str], path: str | Path, ylabel: str,
                 title: str = "") -> Path:
    """Bars of several metrics (e.g. AP_square, AP_oblong, AP_slender) per row, each with its 95% interval."""
    fig, ax = plt.subplots(figsize=(max(5.0, 1.4 * len(metrics) * max(1, len(rows)) / 2 + 2), 3.8))
    width = 0.8 / max(1, len(rows))
    xs = np.arange(len(metrics))
    for i, (label, values) in enumerate(rows):
        means = [values[m].mean if m in values and values[m].mean is not None else np.nan for m in metrics]
        halves = [values[m].half or 0.0 if m in values and values[m].mean is not None else 0.0 for m in metrics]
        ax.bar(xs + (i - (len(rows) - 1) / 2) * width, means, width, yerr=halves, capsize=3,
               color=ROW_COLORS[i % len(ROW_COLORS)], label=label)
    ax.set_xticks(xs, metrics, fontsize=8)
    percent_axis(ax)
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    return save_figure(fig, path, title, legend=(handles, labels) if handles else None)


__all__ = ["RowValue", "Curve", "CURVE_BINS", "plot_metric_per_row", "binned", "plot_assignment_over_training",
           "plot_recall_by_iou", "plot_grouped", "percent_axis"]
