"""What a method assigns on one dataset image, as data: the GT boxes, and every anchor's matched GT, BG or IGNORE
(drawn by `assign_image`: PAA Fig. 4a / 6, `anchorlab viz assign -c CONFIG --image ID`).

The assignment is the method's own, computed as the training step computes it, never re-implemented here:
  - geometric rules (max_iou, atss, the point rules) without a checkpoint: the assign function on the training
    forward's anchor grid, no model (`checkpoint_image.geometric_assign`);
  - with a checkpoint (any method): the checkpoint's model forward on the image, then the method's loss function
    (`Method.loss`), which assigns exactly as `TrainStep` does (PAA on the detached predictions; FreeAnchor's
    positives are the anchors holding most of their bag's Mean-max, `free_anchor_details.bags_result`). The raw
    training weights are used (not the EMA, which never assigned anything), in eval mode (a backbone with
    trainable BatchNorm uses its running statistics, where the training step used the batch's).
PAA and FreeAnchor without a checkpoint are refused with one line: their assignment of a randomly initialised
model is noise that a figure would present as the method's behaviour.

Dimensions: A anchors (all levels, level-major), M GTs of the image, L pyramid levels.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from dashboards.checkpoint_image import (build_trained, class_names, geometric_assign, image_index, one_image_batch,
                                         read_checkpoint, split_dataset)

from detector.assigners.base import BG, IGNORE
from detector.config import Config
from detector.engine.checkpoint import CheckpointError
from detector.losses.free_anchor_details import HOLD_SHARE
from detector.methods import METHODS, LossInputs, build_box_coder
from detector.model.anchors import anchors_per_location

# Why a method cannot be drawn without a model: the error says it
READS = {"paa": "PAA scores candidates by the focal loss and GIoU of the model's predicted boxes",
         "free_anchor": "FreeAnchor matches inside its loss, on the predicted boxes' IoU and class probabilities"}


@dataclass
class ImageAssignment:
    """One method's assignment of one image, in the image's original pixels."""

    method: str  # `assign.name`
    config_name: str
    split: str  # "val" or "train"
    image_id: int
    image: np.ndarray  # (H, W, 3) uint8, as stored
    scale: float  # the model's input is the image resized by this factor (the config's eval transform)
    gt_boxes: np.ndarray  # (M, 4) float xyxy
    gt_names: list[str]  # (M,) class name of each GT
    anchors: np.ndarray  # (A, 4) float xyxy (points: the square anchor whose centre is the point)
    level: np.ndarray  # (A,) int: pyramid level index 0..L-1 of each anchor
    strides: list[int]  # (L,) stride of each level
    matched_gt: np.ndarray  # (A,) int: GT index (row of gt_boxes), BG or IGNORE
    iteration: int | None  # the checkpoint's training iteration; None: no checkpoint (geometry only)
    pred_boxes: np.ndarray | None  # (A, 4) float xyxy decoded predictions; None without a checkpoint
    anchors_per_location: int
    points: bool  # a point method (one anchor per location, whose centre is the point)

    @property
    def positives_per_gt(self) -> np.ndarray:
        """(M,) int: positive anchors of each GT."""
        pos = self.matched_gt[self.matched_gt >= 0]
        return np.bincount(pos, minlength=len(self.gt_boxes))

    @property
    def counts(self) -> dict[str, int]:
        """positives, ignored and negatives (anchors), and GTs without a positive."""
        m = self.matched_gt
        return {"positives": int((m >= 0).sum()), "ignored": int((m == IGNORE).sum()),
                "negatives": int((m == BG).sum()), "gts_without": int((self.positives_per_gt == 0).sum())}

    @property
    def unit(self) -> str:
        return "points" if self.points else "anchors"


def image_assignment(cfg: Config, workspace: Path, image_id: int | None = None, checkpoint: Path | None = None,
                     split: str = "val") -> ImageAssignment:
    """The config's method's assignment of one image of its dataset.

    Args:
        cfg: a resolved config (any method of `METHODS`); with a checkpoint, the config it was trained with.
        workspace: where a synthetic benchmark lives (generated on first use, as `anchorlab train` does).
        image_id: an image id of `split`; None: its first image with at least `checkpoint_image.MIN_GTS` GTs.
        checkpoint: a checkpoint trained with `cfg`'s model; required by methods that read predictions.
        split: "val" or "train" (read with the eval transform either way: test size, no flip).
    Raises:
        CheckpointError: a prediction-reading method without a checkpoint; a missing, damaged or foreign one.
        DataError: an image id the split does not hold; ConfigError: an unknown split.
    """
    name = cfg.assign.name
    method = METHODS[name]
    if checkpoint is None and method.reads_predictions:
        raise CheckpointError(f"method '{name}' needs --checkpoint: {READS.get(name, 'it reads the predictions')}, "
                              "so its assignment depends on a trained model")
    state = read_checkpoint(cfg, checkpoint) if checkpoint is not None else None  # refused before data is read
    dataset = split_dataset(cfg, workspace, split)
    index = image_index(dataset, image_id, split)
    batch = one_image_batch(dataset, index, cfg)
    iteration = pred_boxes = None
    if state is None:
        result, anchors, counts = geometric_assign(cfg, batch, dataset.num_classes)
    else:
        trained = build_trained(cfg, state, checkpoint, dataset.num_classes, ema=False)
        coder, batch = build_box_coder(cfg), batch.to(trained.device)
        with torch.no_grad():
            out, anchors, counts = trained.model(batch.images)
            result = method.loss(method, LossInputs(out, anchors, counts, batch, coder, cfg)).result
            pred_boxes = (coder.decode(out.box_deltas[0].float(), anchors).cpu() / batch.scales[0].cpu()).numpy()
        iteration, anchors, batch = trained.iteration, anchors.cpu(), batch.to("cpu")
    scale = float(batch.scales[0])
    valid = batch.gt_valid[0]
    names = class_names(dataset)
    return ImageAssignment(
        method=name, config_name=cfg.name, split=split, image_id=dataset.image_ids[index],
        image=dataset.load(index)["image"].permute(1, 2, 0).numpy(), scale=scale,
        gt_boxes=(batch.gt_boxes[0][valid] / scale).numpy(),
        gt_names=[names[c] for c in batch.gt_labels[0][valid].tolist()],
        anchors=(anchors / scale).numpy(), level=np.repeat(np.arange(len(counts)), counts),
        strides=list(cfg.model.anchors.strides), matched_gt=result.matched_gt[0].cpu().numpy(), iteration=iteration,
        pred_boxes=pred_boxes, anchors_per_location=anchors_per_location(cfg.model.anchors),
        points=method.box_coding == "ltrb")


def positives_note(a: ImageAssignment) -> str:
    """What "positive" means for a method whose assignment is soft ("" for the others)."""
    if a.method == "free_anchor":
        return f"FreeAnchor positives: the anchors holding {HOLD_SHARE:.0%} of their bag's Mean-max likelihood"
    return ""


__all__ = ["READS", "ImageAssignment", "image_assignment", "positives_note"]
