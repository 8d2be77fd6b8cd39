"""A checkpoint's detections on sample images beside their GT boxes, one panel per image (PAA Fig. 8).

The detections are evaluation's: the checkpoint's EMA weights when the run kept them (what its val AP scored), the
config's inference (score fusion, top-k, NMS, voting) through `postprocess`, then only those scoring at least
`score_thresh`, so that a panel shows what the detector is confident about. Boxes are drawn in original pixels,
coloured by class and labelled with the class name and score; GTs dashed in black.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from dashboards.assign_image import label_side  # noqa: E402
from dashboards.checkpoint_image import (MIN_GTS, build_trained, class_names, image_index,  # noqa: E402
                                         one_image_batch, read_checkpoint, split_dataset)
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from detector.config import Config, ConfigError  # noqa: E402
from detector.methods import METHODS, build_box_coder  # noqa: E402
from detector.postprocess import postprocess  # noqa: E402

DPI = 150
PANEL_INCHES, COLUMNS = 4.2, 3  # width of one panel; panels per row
SAMPLES = 4  # images drawn when none are named: the first ones with >= MIN_GTS GTs
CLASS_COLOURS = plt.get_cmap("tab10").colors
IMAGE_ALPHA = 0.6  # the image faded towards white, so that the boxes stand out


def default_image_ids(dataset, count: int = SAMPLES) -> list[int]:
    """The first `count` image ids with at least MIN_GTS GTs (topped up with the next images when too few)."""
    rich = [i for i, b in zip(dataset.image_ids, dataset.boxes) if len(b) >= MIN_GTS]
    rest = [i for i in dataset.image_ids if i not in rich]
    return (rich + rest)[:count]


@torch.no_grad()
def image_detections(cfg: Config, trained, dataset, index: int) -> dict[str, np.ndarray]:
    """The detections of one image in original pixels: "boxes" (n, 4) xyxy, "scores" (n,), "labels" (n,)."""
    batch = one_image_batch(dataset, index, cfg).to(trained.device)
    out, anchors, counts = trained.model(batch.images)
    det = postprocess(out, anchors, counts, batch.image_sizes, build_box_coder(cfg), cfg.inference,
                      METHODS[cfg.assign.name].score_fusion)[0]
    return {"boxes": (det["boxes"] / batch.scales[0]).cpu().numpy(), "scores": det["scores"].cpu().numpy(),
            "labels": det["labels"].cpu().numpy()}


def _panel(ax, image: np.ndarray, gt_boxes: np.ndarray, det: dict, names: list[str], title: str) -> set[int]:
    """One image with its GTs (dashed) and detections (solid, "name score"); returns the classes drawn."""
    ax.imshow(image, alpha=IMAGE_ALPHA)
    for x1, y1, x2, y2 in gt_boxes:  # black dashes on a white line: visible on any image
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, lw=2.2, color="w"))
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, lw=1.0, ls="--", color="k"))
    for (x1, y1, x2, y2), score, label in zip(det["boxes"], det["scores"], det["labels"]):
        colour = CLASS_COLOURS[label % len(CLASS_COLOURS)]
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, lw=1.4, color=colour))
        ax.text(x1, y1, f"{names[label]} {score:.2f}", fontsize=6, va=label_side(y1, image.shape[0]), ha="left",
                color="k", bbox={"facecolor": colour, "alpha": 0.75, "pad": 0.8, "lw": 0})
    h, w = image.shape[:2]
    ax.set(xlim=(0, w), ylim=(h, 0), xticks=[], yticks=[])
    ax.set_title(title, fontsize=8)
    return {int(c) for c in det["labels"]}


def draw_detections(cfg: Config, checkpoint: Path, image_ids: Sequence[int] | None, out_path: str | Path,
                    score_thresh: float = 0.3, *, workspace: Path, split: str = "val", ema: bool = True) -> Path:
    """The checkpoint's detections scoring >= `score_thresh` and the GT boxes on each image, one panel per image.

    Args:
        cfg: the config the checkpoint was trained with (its `inference` section decides the detections).
        checkpoint: a checkpoint of `cfg`'s model (else `CheckpointError`, one line).
        image_ids: ids of `split`'s images; None or empty: the first `SAMPLES` with >= MIN_GTS GTs.
        out_path: the PNG to write (folders created).
        score_thresh: the least fused score drawn (the config's `inference.score_thresh` applies first).
        workspace: where a synthetic benchmark lives.  split: "val" or "train".
        ema: the run's EMA weights when it kept them (its evaluations'), else the raw training weights.
    Returns:
        out_path. Raises DataError for an id the split does not hold.
    """
    if not 0.0 <= score_thresh <= 1.0:
        raise ConfigError(f"score threshold must be in [0, 1], got {score_thresh}")
    state = read_checkpoint(cfg, checkpoint)  # refused before the data is read
    dataset = split_dataset(cfg, workspace, split)
    indices = [image_index(dataset, i, split) for i in (image_ids or default_image_ids(dataset))]
    trained = build_trained(cfg, state, checkpoint, dataset.num_classes, ema)
    names = class_names(dataset)
    cols = min(COLUMNS, len(indices))
    rows = math.ceil(len(indices) / cols)
    h, w = dataset.sizes[indices[0]]
    fig, axes = plt.subplots(rows, cols, figsize=(PANEL_INCHES * cols, PANEL_INCHES * rows * h / w + 0.9),
                             squeeze=False, layout="constrained")
    for ax in axes.flat[len(indices):]:
        ax.axis("off")
    drawn: set[int] = set()
    for ax, index in zip(axes.flat, indices):
        det = image_detections(cfg, trained, dataset, index)
        keep = det["scores"] >= score_thresh
        det = {k: v[keep] for k, v in det.items()}
        raw = dataset.load(index)
        drawn |= _panel(ax, raw["image"].permute(1, 2, 0).numpy(), raw["boxes"].numpy(), det, names,
                        f"{split} image {dataset.image_ids[index]}: {int(keep.sum())} detections, "
                        f"{len(raw['boxes'])} GTs")
    handles = [Line2D([], [], color="k", ls="--", lw=1.0, label="GT box")]
    handles += [Line2D([], [], color=CLASS_COLOURS[c % len(CLASS_COLOURS)], lw=1.4, label=names[c])
                for c in sorted(drawn)]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 6), fontsize=7, frameon=False)
    weights = "EMA weights" if trained.ema else "weights"
    fig.suptitle(f"{cfg.assign.name} ({cfg.name}), checkpoint at iteration {trained.iteration} ({weights}): "
                 f"detections with score >= {score_thresh:g}", fontsize=9)
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=DPI)
    plt.close(fig)
    return Path(out_path)


__all__ = ["DPI", "SAMPLES", "default_image_ids", "draw_detections", "image_detections"]
