"""What a method assigns on one dataset image, drawn (`anchorlab viz assign -c CONFIG --image ID`; PAA Fig. 4a / 6).

`draw_assignment` computes the assignment (`image_assignment`: the method's own, as the training step computes
it) and draws it. The figure: the image faded, its GT boxes named by class, every positive anchor as a marker at
its centre in its GT's colour (larger on coarser levels), ignored anchors as crosses, negatives as faint dots (or
only counted, when too many to draw), and a legend beside the image with each GT's positives.

Several anchors of one location (RetinaNet's 9) share a centre, so their markers coincide; the counts are of
anchors. A GT without a positive is drawn dashed.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from dashboards.image_assignment import ImageAssignment, image_assignment, positives_note  # noqa: E402
from dashboards.point_rules_figure import GT_COLOURS  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch, Rectangle  # noqa: E402

from detector.assigners.base import BG, IGNORE  # noqa: E402
from detector.config import Config, ConfigError  # noqa: E402
from detector.engine.checkpoint import CheckpointError  # noqa: E402

BOX_CHOICES = ("none", "anchors", "predicted")  # boxes drawn around the positives, besides their centres
DPI = 150
IMAGE_INCHES, LEGEND_INCHES = 6.0, 2.8  # width of the image panel; of the legend column beside it
IMAGE_ALPHA = 0.4  # the image faded towards white, so that boxes and markers stand out
MARKER_SIZE, LEVEL_GROWTH = 10.0, 1.8  # area (pt^2) of a marker on the finest level; factor per coarser level
NEGATIVES_DRAWN_MAX = 6000  # more negative locations than this are counted, not drawn (a grey haze otherwise)
LABEL_INSIDE = 0.05  # a box whose top is this close to the image's top (share of its height) is labelled inside
LEGEND_GTS_MAX = 24  # GTs named one by one in the legend; the rest are summed in one line


def label_side(y1: float, height: int) -> str:
    """Vertical alignment of a box's label at its top-left corner: above the box, or inside it when the box
    touches the image's top (a label above would cover the panel's title)."""
    return "top" if y1 < LABEL_INSIDE * height else "bottom"


def _marker_sizes(level: np.ndarray) -> np.ndarray:
    return MARKER_SIZE * LEVEL_GROWTH ** level.astype(float)


def _centres(boxes: np.ndarray) -> np.ndarray:
    """(N, 4) xyxy -> (N, 2) centres."""
    return (boxes[:, :2] + boxes[:, 2:]) / 2


def _title(a: ImageAssignment) -> str:
    h, w = a.image.shape[:2]
    ckpt = "no checkpoint (geometry only)" if a.iteration is None else f"checkpoint at iteration {a.iteration}"
    c = a.counts
    size = f"{w}x{h} px" + ("" if a.scale == 1 else f" (input {round(w * a.scale)}x{round(h * a.scale)})")
    lines = [f"{a.method} ({a.config_name}): {a.split} image {a.image_id}, {size}, {len(a.gt_boxes)} GTs; {ckpt}",
             f"{c['positives']} positive, {c['ignored']} ignored, {c['negatives']} negative {a.unit}; "
             f"{c['gts_without']} GT{'' if c['gts_without'] == 1 else 's'} without a positive"]
    if positives_note(a):
        lines.append(positives_note(a))
    return "\n".join(lines)


def _draw_gts(ax, a: ImageAssignment, per_gt: np.ndarray) -> list:
    """GT boxes with "j name" labels; returns their legend handles (at most LEGEND_GTS_MAX)."""
    handles = []
    for j, (x1, y1, x2, y2) in enumerate(a.gt_boxes):
        colour = GT_COLOURS[j % len(GT_COLOURS)]
        style = "-" if per_gt[j] else "--"
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, lw=1.6, ls=style, color=colour))
        ax.text(x1, y1, f"{j} {a.gt_names[j]}", fontsize=6, color="k", va=label_side(y1, a.image.shape[0]), ha="left",
                bbox={"facecolor": colour, "alpha": 0.7, "pad": 0.8, "lw": 0})
        if j < LEGEND_GTS_MAX:
            handles.append(Line2D([], [], color=colour, ls=style, marker="o", markersize=5, markeredgecolor="k",
                                  markeredgewidth=0.3, label=f"GT {j} {a.gt_names[j]}: {per_gt[j]} positive"))
    if len(a.gt_boxes) > LEGEND_GTS_MAX:
        rest = per_gt[LEGEND_GTS_MAX:]
        handles.append(Patch(color="none", label=f"{len(rest)} more GTs: {int(rest.sum())} positive"))
    return handles


def _draw_negatives(ax, a: ImageAssignment, label: str) -> Line2D:
    """Faint dots at the centres of negative anchors (each location once), or only their count."""
    xy = np.unique(np.round(_centres(a.anchors[a.matched_gt == BG]), 2), axis=0)
    drawn = len(xy) <= NEGATIVES_DRAWN_MAX
    if drawn and len(xy):
        ax.scatter(xy[:, 0], xy[:, 1], s=1.5, c="0.35", alpha=0.35, linewidths=0, gid="negative")
    return Line2D([], [], ls="", marker=".", color="0.35", alpha=0.6,
                  label=label if drawn else f"{label} (not drawn)")


def _draw_boxes(ax, a: ImageAssignment, pos: np.ndarray, boxes: str) -> list:
    """Around each positive: its anchor box, or the box the model predicts from it."""
    if boxes == "none" or not len(pos):
        return []
    source = a.anchors if boxes == "anchors" else a.pred_boxes
    style = "-" if boxes == "anchors" else ":"
    for k in pos:
        x1, y1, x2, y2 = source[k]
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, lw=0.8, alpha=0.7, ls=style,
                               color=GT_COLOURS[a.matched_gt[k] % len(GT_COLOURS)]))
    what = "anchor boxes" if boxes == "anchors" else "predicted boxes"
    return [Line2D([], [], color="0.3", lw=0.8, ls=style, label=f"{what} of positives")]


def assignment_figure(a: ImageAssignment, boxes: str = "none"):
    """The figure (matplotlib Figure, not yet saved). Positive markers form one scatter whose gid is "positive"
    (one offset per positive anchor), ignored ones one with gid "ignored": tests count what was drawn."""
    h, w = a.image.shape[:2]
    fig_h = max(IMAGE_INCHES * h / w, 3.2) + 0.5  # + the title
    fig, ax = plt.subplots(figsize=(IMAGE_INCHES + LEGEND_INCHES, fig_h), layout="constrained")
    ax.imshow(a.image, alpha=IMAGE_ALPHA)
    per_gt = a.positives_per_gt
    c = a.counts
    handles = _draw_gts(ax, a, per_gt)
    handles.append(_draw_negatives(ax, a, f"negative: {c['negatives']} {a.unit}"))
    ignored = np.flatnonzero(a.matched_gt == IGNORE)
    if len(ignored):
        xy = _centres(a.anchors[ignored])
        ax.scatter(xy[:, 0], xy[:, 1], s=_marker_sizes(a.level[ignored]), marker="x", c="0.15", linewidths=0.8,
                   gid="ignored")
    handles.append(Line2D([], [], ls="", marker="x", color="0.15", label=f"ignored: {c['ignored']} {a.unit}"))
    pos = np.flatnonzero(a.matched_gt >= 0)
    handles += _draw_boxes(ax, a, pos, boxes)
    if len(pos):
        xy = _centres(a.anchors[pos])
        colours = [GT_COLOURS[j % len(GT_COLOURS)] for j in a.matched_gt[pos]]
        ax.scatter(xy[:, 0], xy[:, 1], s=_marker_sizes(a.level[pos]), c=colours, edgecolors="k", linewidths=0.4,
                   gid="positive", zorder=3)
    handles.append(Patch(color="none", label=f"positive: {c['positives']} {a.unit}; by level (marker size):"))
    per_level = np.bincount(a.level[pos], minlength=len(a.strides))
    for lvl, stride in enumerate(a.strides):
        handles.append(Line2D([], [], ls="", marker="o", markersize=float(np.sqrt(_marker_sizes(np.array([lvl]))[0])),
                              markerfacecolor="white", markeredgecolor="k", markeredgewidth=0.5,
                              label=f"  P{lvl + 3} (stride {stride}): {per_level[lvl]}"))
    if a.anchors_per_location > 1:
        handles.append(Patch(color="none", label=f"{a.anchors_per_location} anchors per location share a marker"))
    ax.set(xlim=(0, w), ylim=(h, 0))
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7, frameon=False,
              borderaxespad=0.0, handlelength=1.6)
    fig.suptitle(_title(a), fontsize=8.5)
    return fig


def plot_assignment(a: ImageAssignment, path: str | Path, boxes: str = "none") -> Path:
    """`assignment_figure` written to the PNG `path` at DPI (folders created)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig = assignment_figure(a, boxes)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")  # "tight": the legend sits outside the axes
    plt.close(fig)
    return Path(path)


def draw_assignment(cfg: Config, image_id: int | None, checkpoint: Path | None, out_path: str | Path, *,
                    workspace: Path, split: str = "val", boxes: str = "none") -> Path:
    """The assignment of the config's method on one image of its dataset (`image_assignment.image_assignment`:
    image_id None picks the split's first image with >= 3 GTs; a checkpoint is required by PAA and FreeAnchor)
    drawn to the PNG `out_path` (`plot_assignment`; boxes "none", "anchors" or "predicted" around the positives).
    Returns out_path. Raises CheckpointError, DataError or ConfigError (one line each) for bad input."""
    if boxes not in BOX_CHOICES:
        raise ConfigError(f"boxes '{boxes}' is not one of {', '.join(BOX_CHOICES)}")
    if boxes == "predicted" and checkpoint is None:
        raise CheckpointError("boxes 'predicted' needs --checkpoint: without a model there are no predicted boxes")
    return plot_assignment(image_assignment(cfg, workspace, image_id, checkpoint, split), out_path, boxes)


__all__ = ["BOX_CHOICES", "DPI", "assignment_figure", "draw_assignment", "label_side", "plot_assignment"]
