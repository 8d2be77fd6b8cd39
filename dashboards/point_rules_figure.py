"""The positive points each anchor-free rule picks for the GTs of one image, one panel per rule (the practical
counterpart of the Pseudo-IoU paper's Fig. 1, Li et al., CVPRW 2021).

The rules are geometry only, so no model is needed: each config's val transform resizes the image, and the
method's own assign function runs on the training forward's grid of points (`checkpoint_image.geometric_assign`).
Points are drawn in original pixels (input / scale): all configs share one image.

Dimensions: M GTs of the image (crowd regions are not GTs), N positive points of one rule, A points.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from dashboards.assign_figures import save_figure  # noqa: E402
from dashboards.checkpoint_image import MIN_GTS, geometric_assign, image_index  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from detector.assigners.fcos import FCOSConfig  # noqa: E402
from detector.boxes import box_centers  # noqa: E402
from detector.config import Config, ConfigError  # noqa: E402
from detector.data.build import dataset_paths  # noqa: E402
from detector.data.coco import CocoDetection  # noqa: E402
from detector.data.transforms import collate  # noqa: E402
from detector.methods import METHODS, method_config  # noqa: E402

PANEL_INCHES, MARKER_SIZE = 4.0, 5.0  # width of one panel; area (pt^2) of a point of the finest level
IMAGE_ALPHA = 0.5  # the image faded towards white, so that boxes and points stand out
# GT j and its points in colour j mod 20: tab10's ten, then their lighter tints
GT_COLOURS = plt.get_cmap("tab20").colors[0::2] + plt.get_cmap("tab20").colors[1::2]


@dataclass
class RulePositives:
    """One rule's positives on one image, in the original image's pixels."""

    rule: str  # method name, `assign.name`
    param: str  # its own settings, e.g. "threshold=0.4"
    points_xy: np.ndarray  # (N, 2) float: point centres (x, y)
    gt_index: np.ndarray  # (N,) int: the GT each point is positive for, a row of the image's gt_boxes
    strides: np.ndarray  # (N,) int: the stride of each point's level
    num_gts: int  # M

    @property
    def gts_without(self) -> int:
        return self.num_gts - len(np.unique(self.gt_index))

    @property
    def title(self) -> str:
        k = self.gts_without
        return (f"{self.rule} ({self.param}): {len(self.gt_index)} positives, "
                f"{k} GT{'' if k == 1 else 's'} without one")


@dataclass
class RulesImage:
    image_id: int
    image: np.ndarray  # (H, W, 3) uint8, as stored
    gt_boxes: np.ndarray  # (M, 4) float xyxy, original pixels
    rules: list[RulePositives]


def is_point_rule(name: str) -> bool:
    """A geometric rule over points: one point per location, predictions never read."""
    method = METHODS[name]
    return method.box_coding == "ltrb" and method.assign is not None and not method.reads_predictions


def rule_param(cfg: Config) -> str:
    """The settings a rule adds to the FCOS candidates, e.g. "threshold=0.4" ("all inside": `fcos_inside`)."""
    section = method_config(cfg.assign)
    base = {f.name for f in dataclasses.fields(FCOSConfig)}
    own = [f"{f.name}={getattr(section, f.name):g}" if isinstance(getattr(section, f.name), float)
           else f"{f.name}={getattr(section, f.name)}" for f in dataclasses.fields(section) if f.name not in base]
    if section.center_sampling:
        own.append(f"centre sampling r={section.center_radius:g}")
    return ", ".join(own) or "all inside"


def _positives(cfg: Config, sample: dict, num_classes: int) -> RulePositives:
    """Assign the points of one transformed val sample with the config's method (`geometric_assign`)."""
    batch = collate([sample], cfg.data.size_divisibility)
    result, anchors, counts = geometric_assign(cfg, batch, num_classes)
    matched = result.matched_gt[0]  # (A,)
    pos = torch.nonzero(matched >= 0).squeeze(1)
    centres = box_centers(anchors[pos]) / float(batch.scales[0])  # (N, 2), original pixels
    point_strides = torch.tensor(cfg.model.anchors.strides).repeat_interleave(torch.tensor(counts))[pos]  # (N,)
    return RulePositives(cfg.assign.name, rule_param(cfg), centres.numpy(), matched[pos].numpy(),
                         point_strides.numpy(), int(batch.gt_valid.sum()))


def point_rule_positives(configs: Sequence[Config], workspace: Path, image_id: int | None = None) -> RulesImage:
    """The positives of each config's point rule on one val image of the dataset the configs name.

    Args:
        configs: resolved configs of point-rule methods (`is_point_rule`), all naming one dataset.
        workspace: where a synthetic benchmark lives (generated on first use, as `anchorlab train` does).
        image_id: a val image id; None: the first val image with at least `MIN_GTS` GTs.
    Returns:
        RulesImage: the image (H, W, 3) uint8, its GTs (M, 4) and one `RulePositives` per config, in order.
    Raises:
        ConfigError for a method that is not a point rule or a config naming another dataset; DataError for an
        unknown image id or unusable data.
    """
    if not configs:
        raise ConfigError("no configs to draw")
    for cfg in configs:
        if not is_point_rule(cfg.assign.name):
            rules = ", ".join(n for n in METHODS if is_point_rule(n))
            raise ConfigError(f"config '{cfg.name}': method '{cfg.assign.name}' is not a point rule (one of {rules})")
    paths = [dataset_paths(cfg, workspace) for cfg in configs]
    if any((p["val_images"], p["val_json"]) != (paths[0]["val_images"], paths[0]["val_json"]) for p in paths):
        raise ConfigError("the configs name different val sets; one figure draws one image")
    datasets: dict[str, CocoDetection] = {}  # one per data section (its transform), usually one for all
    for cfg, p in zip(configs, paths):
        if repr(cfg.data) not in datasets:
            datasets[repr(cfg.data)] = CocoDetection(p["val_images"], p["val_json"], cfg.data, train=False)
    first = datasets[repr(configs[0].data)]
    index = image_index(first, image_id, "val")
    rules = [_positives(cfg, datasets[repr(cfg.data)][index], first.num_classes) for cfg in configs]
    raw = first.load(index)
    return RulesImage(first.image_ids[index], raw["image"].permute(1, 2, 0).numpy(), raw["boxes"].numpy(), rules)


def draw_point_rules(image: np.ndarray, gt_boxes: np.ndarray, rules: Sequence[RulePositives], path: str | Path,
                     title: str = "") -> Path:
    """One panel per rule: the image, its GT boxes, each rule's positive points coloured by their GT.

    Args:
        image: (H, W, 3) uint8.  gt_boxes: (M, 4) float xyxy in the image's pixels.
        rules: per rule, its positives' `points_xy` (N, 2) in the image's pixels and `gt_index` (N,) rows of
            gt_boxes (`strides` (N,) sets the marker size: a point of a coarser level is drawn larger).
        path: the PNG to write.
    Returns:
        path. A GT without a positive point in a panel is drawn dashed there.
    """
    cols = min(4, max(1, len(rules)))
    rows = math.ceil(max(1, len(rules)) / cols)
    h, w = image.shape[:2]
    size = (PANEL_INCHES * cols, PANEL_INCHES * rows * h / w + 0.4)  # + room for the titles
    fig, axes = plt.subplots(rows, cols, figsize=size, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")  # also the panels left empty
    finest = min((int(r.strides.min()) for r in rules if len(r.strides)), default=1)
    for ax, rule in zip(axes.flat, rules):
        ax.imshow(image, alpha=IMAGE_ALPHA)
        covered = set(rule.gt_index.tolist())
        for j, (x1, y1, x2, y2) in enumerate(np.asarray(gt_boxes, dtype=float).reshape(-1, 4)):
            ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, lw=1.2, ls="-" if j in covered else "--",
                                   color=GT_COLOURS[j % len(GT_COLOURS)]))
        if len(rule.gt_index):
            colours = [GT_COLOURS[j % len(GT_COLOURS)] for j in rule.gt_index]
            sizes = MARKER_SIZE * rule.strides / finest
            ax.scatter(rule.points_xy[:, 0], rule.points_xy[:, 1], s=sizes, c=colours, edgecolors="k", linewidths=0.3)
        ax.set(xlim=(0, w), ylim=(h, 0))  # the image's frame, whatever the points
        ax.set_title(rule.title, fontsize=8)
    return save_figure(fig, path, title, dpi=120)


__all__ = ["MIN_GTS", "RulePositives", "RulesImage", "draw_point_rules", "is_point_rule", "point_rule_positives",
           "rule_param"]
