"""One dataset image and, when asked, a checkpoint's model: what the image figures (`assign_image`,
`detections_figure`, `point_rules_figure`) start from.

The image is read as evaluation reads it (the config's eval transform: test size, no flip), with labels in the
training set's order, so that a class index means what it meant to the model. A checkpoint is checked against the
config before any data is read (`checkpoint.check_trained_with`), so a wrong file is one line at once.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from detector.assigners import assign
from detector.assigners.base import AssignInputs, AssignResult
from detector.config import Config, ConfigError
from detector.data.batch import Batch
from detector.data.annotations import read_annotations
from detector.data.build import dataset_paths
from detector.data.coco import CocoDetection, DataError
from detector.data.transforms import collate
from detector.engine.checkpoint import check_trained_with, load_checkpoint, load_weights
from detector.engine.ema import ema_model_state
from detector.engine.train import resolve_device
from detector.methods import METHODS, method_config
from detector.model.anchors import anchors_per_location
from detector.model.detector import DenseDetector

SPLITS = ("val", "train")
MIN_GTS = 3  # the default image is the first of its split with at least this many GTs


@dataclass
class Trained:
    """A checkpoint's model, ready for a forward pass."""

    model: DenseDetector  # in eval mode, on `device`
    iteration: int  # the training iteration the checkpoint was saved at
    device: torch.device
    ema: bool  # holds the EMA weights (what the run's evaluations used) rather than the raw training weights


def read_checkpoint(cfg: Config, checkpoint: Path) -> dict:
    """The checkpoint's state, refused (`CheckpointError`, one line) when missing, damaged or trained with another
    model config than `cfg`'s. Read on the CPU; `build_trained` moves the weights."""
    state = load_checkpoint(Path(checkpoint), map_location="cpu")
    check_trained_with(state, cfg, Path(checkpoint))
    return state


def build_trained(cfg: Config, state: dict, checkpoint: Path, num_classes: int, ema: bool) -> Trained:
    """The model of `cfg` holding the checkpoint's weights: its EMA when `ema` and the run kept one (the weights
    its evaluations scored), else the raw training weights (those the training step assigned with).

    The backbone's initial-weights file is not read: the checkpoint replaces every weight, and the file may be
    absent on the machine drawing the figure.
    """
    no_init = dataclasses.replace(cfg.model, backbone=dataclasses.replace(cfg.model.backbone, weights=""))
    device = resolve_device(cfg.train.device)
    model = DenseDetector(no_init, cfg.model.num_classes or num_classes)
    use_ema = ema and "ema" in state
    load_weights(model, ema_model_state(state["ema"]) if use_ema else state["model"], Path(checkpoint))
    return Trained(model.to(device).eval(), int(state["iteration"]), device, use_ema)


def split_dataset(cfg: Config, workspace: Path, split: str) -> CocoDetection:
    """The images of `split` ("val" or "train") of the config's dataset, read with the eval transform, labels in
    training's order (the train file's categories sorted by id, as `build_datasets` gives both splits). Only the
    split drawn is built: the other's image files are not checked (a minute for COCO's train set)."""
    if split not in SPLITS:
        raise ConfigError(f"split '{split}' is not one of {', '.join(SPLITS)}")
    paths = dataset_paths(cfg, workspace)
    categories = None  # the train file's own, sorted by id
    if split != "train":
        categories = sorted(read_annotations(str(paths["train_json"]))["categories"], key=lambda c: c["id"])
    return CocoDetection(paths[f"{split}_images"], paths[f"{split}_json"], cfg.data, train=False,
                         categories=categories)


def image_index(dataset: CocoDetection, image_id: int | None, split: str = "val") -> int:
    """Index of `image_id` in `dataset`, or of its first image with >= MIN_GTS GTs (else the most GTs).
    Raises DataError naming the split's id range for an id it does not hold."""
    if image_id is None:
        counts = [len(b) for b in dataset.boxes]
        return next((i for i, n in enumerate(counts) if n >= MIN_GTS), int(np.argmax(counts)))
    if image_id not in dataset.image_ids:
        raise DataError(f"image id {image_id} is not among the {len(dataset)} {split} images of {dataset.ann_file} "
                        f"(ids {min(dataset.image_ids)}..{max(dataset.image_ids)})")
    return dataset.image_ids.index(image_id)


def one_image_batch(dataset: CocoDetection, index: int, cfg: Config) -> Batch:
    """The image at `index`, transformed and collated as a batch of one (resized pixels; `scales[0]` maps back)."""
    return collate([dataset[index]], cfg.data.size_divisibility)


def geometric_assign(cfg: Config, batch: Batch, num_classes: int) -> tuple[AssignResult, torch.Tensor, list[int]]:
    """The config's method's own assignment of a one-image `batch` without a model: for rules that read no
    predictions (every method but PAA and FreeAnchor).

    The anchors (points) come from the grid the training forward builds (`DenseDetector.anchors` over its
    feature-map sizes, taken on the meta device: no weights are made or read), and the assign function runs through
    `detector.assigners.assign` with the inputs of the training step's default loss (`methods.assign_then_dense`).
    Returns the result (matched_gt (1, A)), the anchors (A, 4) xyxy in resized pixels and the anchors per level.
    """
    method = METHODS[cfg.assign.name]
    if method.reads_predictions or method.assign is None:
        raise ConfigError(f"method '{cfg.assign.name}' assigns from the model's predictions: it needs a checkpoint")
    no_init = dataclasses.replace(cfg.model, backbone=dataclasses.replace(cfg.model.backbone, weights=""))
    with torch.device("meta"):  # shapes only: the feature-map sizes of the training forward
        model = DenseDetector(no_init, num_classes)
        sizes = [tuple(f.shape[-2:]) for f in model.features(torch.empty(batch.images.shape))]
    anchors, counts = model.anchors(sizes, torch.device("cpu"))
    inputs = AssignInputs(
        anchors=anchors, num_per_level=counts, strides=cfg.model.anchors.strides, gt_boxes=batch.gt_boxes,
        gt_labels=batch.gt_labels, gt_valid=batch.gt_valid, ignore_boxes=batch.ignore_boxes,
        ignore_valid=batch.ignore_valid, anchors_per_location=anchors_per_location(cfg.model.anchors))
    return assign(inputs, method.assign, method_config(cfg.assign), cfg.assign.ignore_iof), anchors, counts


def class_names(dataset: CocoDetection) -> list[str]:
    """Name of each class index (the dataset's categories, in label order)."""
    return [c["name"] for c in dataset.categories]


__all__ = ["MIN_GTS", "SPLITS", "Trained", "build_trained", "class_names", "geometric_assign", "image_index",
           "one_image_batch", "read_checkpoint", "split_dataset"]
