"""Label-assignment methods: one explicit dict from a method's name (config `assign.name`) to its record.

A method is more than an assigner: its config type (defined beside its code; `detector.config` gives it
the section `assign.<name>`), its assign function (or none), its loss function, whether it reads the
detached predictions, its box coding and its default score fusion, and the diagnostics only it can read
from its assignment result. The training step asks the method for (losses, assignment result); the
default loss assigns, then applies the dense losses. A method that matches inside its loss, with
gradients (FreeAnchor), brings its own loss function and reads the same `LossInputs`.

Adding a method = one module + one line in `METHODS` + one config file + its tests.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import torch
from torch import Tensor

from detector.assigners import assign
from detector.assigners.atss import ATSSConfig, assign_atss
from detector.assigners.base import AssignFn, AssignInputs, AssignResult
from detector.assigners.centerness_threshold import CenternessThresholdConfig, assign_centerness_threshold
from detector.assigners.fcos import FCOSConfig, assign_fcos_inside
from detector.assigners.max_iou import MaxIoUConfig, assign_max_iou
from detector.assigners.paa import PAAConfig, assign_paa
from detector.assigners.paa_details import paa_records, paa_summary
from detector.assigners.pseudo_iou import PseudoIoUConfig, assign_pseudo_iou
from detector.assigners.scaled_box import ScaledBoxConfig, assign_scaled_box
from detector.box_coder import BoxCoder, Coder, LTRBCoder
from detector.data.batch import Batch
from detector.losses.dense import dense_losses
from detector.losses.free_anchor import FreeAnchorConfig, free_anchor_losses
from detector.losses.free_anchor_details import bags_result, free_anchor_records, free_anchor_summary
from detector.model.anchors import anchors_per_location

if TYPE_CHECKING:  # annotation only: the head imports detector.config, which imports this module
    from detector.model.head import HeadOutput

# "delta": (dx, dy, dw, dh) w.r.t. the anchors (`BoxCoder`); "ltrb": FCOS distances from the anchors' centres (the
# points, one per location) to the box's sides, divided by the stride (`LTRBCoder`)
BOX_CODINGS = ("delta", "ltrb")
SCORE_FUSIONS = ("none", "product", "sqrt_product")  # detection score: cls, cls x aux, sqrt(cls x aux)


@dataclass
class LossInputs:
    """What a method's loss function reads for one batch."""

    out: HeadOutput  # cls_logits (B, A, C), box_deltas (B, A, 4), aux_logits (B, A) or None; with gradients
    anchors: Tensor  # (A, 4) xyxy anchors of all levels, level-major (points: one per location, at its centre)
    num_per_level: list[int]  # anchors (points) of each level, sums to A
    batch: Batch  # images and padded GTs: gt_boxes (B, M, 4) xyxy, gt_labels, gt_valid, crowd regions
    box_coder: Coder  # the method's coder, from `build_box_coder`
    cfg: Any  # the run's `detector.config.Config`: its loss, model and assign.<method> sections


@dataclass
class LossOutput:
    """What a method's loss function returns: the losses and the assignment that diagnostics read."""

    losses: dict[str, Tensor]  # scalar losses; "loss" is their sum, the one backpropagated
    result: AssignResult  # the assignment (a method matching inside its loss: the matching it chose)
    assign_seconds: float = 0.0  # wall time of the assignment (CPU-accurate; asynchronous on CUDA)


def method_config(assign_cfg: Any) -> Any:
    """The active method's config section `assign.<name>` of an `AssignConfig`; None for a method without one."""
    return getattr(assign_cfg, assign_cfg.name) if METHODS[assign_cfg.name].config is not None else None


def assign_then_dense(method: Method, inputs: LossInputs) -> LossOutput:
    """The default loss: assign with `method.assign` (no gradients; on detached predictions only when the method
    reads them), then the dense losses given that assignment (`losses.dense.dense_losses`)."""
    cfg, batch, out, anchors = inputs.cfg, inputs.batch, inputs.out, inputs.anchors
    pred_boxes = cls_logits = None
    if method.reads_predictions:  # geometric assigners never read them: no decoding of every anchor
        with torch.no_grad():
            pred_boxes = inputs.box_coder.decode(out.box_deltas.detach().float(), anchors)
        cls_logits = out.cls_logits.detach()
    assign_inputs = AssignInputs(
        anchors=anchors, num_per_level=inputs.num_per_level, strides=cfg.model.anchors.strides,
        gt_boxes=batch.gt_boxes, gt_labels=batch.gt_labels, gt_valid=batch.gt_valid,
        anchors_per_location=anchors_per_location(cfg.model.anchors),
        ignore_boxes=batch.ignore_boxes, ignore_valid=batch.ignore_valid,
        cls_logits=cls_logits, pred_boxes=pred_boxes,
    )
    t = time.perf_counter()
    result = assign(assign_inputs, method.assign, method_config(cfg.assign), cfg.assign.ignore_iof)
    seconds = time.perf_counter() - t
    losses = dense_losses(out, anchors, result, batch.gt_boxes, batch.gt_labels, inputs.box_coder, cfg.loss,
                          cfg.model.head.aux)
    return LossOutput(losses, result, seconds)


def free_anchor_loss(method: Method, inputs: LossInputs) -> LossOutput:
    """FreeAnchor: the bag likelihood, which matches with gradients (`losses.free_anchor`); its assignment result
    holds the bags, with the anchors holding most of each bag's Mean-max as positives (`free_anchor_details`)."""
    out, batch = inputs.out, inputs.batch
    t = time.perf_counter()
    losses, bags = free_anchor_losses(out.cls_logits, out.box_deltas, inputs.anchors, batch.gt_boxes, batch.gt_labels,
                                      batch.gt_valid, inputs.box_coder, method_config(inputs.cfg.assign))
    seconds = time.perf_counter() - t  # the matching is the loss: its whole forward time
    return LossOutput(losses, bags_result(bags, *out.cls_logits.shape[:2]), seconds)


def no_summary(result: AssignResult) -> dict[str, float]:
    return {}


def no_records(result: AssignResult, count: int, seed: int) -> dict[str, list]:
    return {}


@dataclass(frozen=True)
class Method:
    config: type | None  # dataclass of its section `assign.<name>` (defined beside its code), or None
    assign: AssignFn | None  # pure no-grad (AssignInputs, its config) -> AssignResult; None if the loss matches
    loss: Callable[[Method, LossInputs], LossOutput] = assign_then_dense
    reads_predictions: bool = False  # `assign` (or a matching loss) reads the predictions (`assign`: detached)
    box_coding: str = "delta"  # one of BOX_CODINGS; `build_box_coder` makes its coder
    score_fusion: str = "none"  # one of SCORE_FUSIONS: what inference.score_fusion "auto" means with an aux branch
    # Diagnostics only this method can read from its own AssignResult (e.g. its `details`):
    summary: Callable[[AssignResult], dict[str, float]] = no_summary  # scalars, logged with the losses
    records: Callable[[AssignResult, int, int], dict[str, list]] = no_records  # (result, count, seed) -> {kind: records}

    def __post_init__(self):
        if self.box_coding not in BOX_CODINGS:
            raise ValueError(f"box_coding '{self.box_coding}' is not one of {', '.join(BOX_CODINGS)}")
        if self.score_fusion not in SCORE_FUSIONS:
            raise ValueError(f"score_fusion '{self.score_fusion}' is not one of {', '.join(SCORE_FUSIONS)}")
        if self.assign is None and self.loss is assign_then_dense:
            raise ValueError("a method without an assign function needs a loss function of its own")


METHODS: dict[str, Method] = {
    "max_iou": Method(MaxIoUConfig, assign_max_iou),
    "atss": Method(ATSSConfig, assign_atss, score_fusion="product"),
    "paa": Method(PAAConfig, assign_paa, reads_predictions=True, score_fusion="sqrt_product",
                  summary=paa_summary, records=paa_records),
    # Points (Li et al., CVPRW 2021): FCOS candidates, then a rule; score = cls x centerness, as mmdetection's FCOS
    # and the official Pseudo-IoU head (`multiclass_nms(score_factors=centerness)`)
    "fcos_inside": Method(FCOSConfig, assign_fcos_inside, box_coding="ltrb", score_fusion="product"),
    "pseudo_iou": Method(PseudoIoUConfig, assign_pseudo_iou, box_coding="ltrb", score_fusion="product"),
    "scaled_box": Method(ScaledBoxConfig, assign_scaled_box, box_coding="ltrb", score_fusion="product"),
    "centerness_threshold": Method(CenternessThresholdConfig, assign_centerness_threshold, box_coding="ltrb",
                                   score_fusion="product"),
    # Zhang et al., NeurIPS 2019: no assign step, the loss matches (it reads the predictions, with gradients)
    "free_anchor": Method(FreeAnchorConfig, None, loss=free_anchor_loss, reads_predictions=True,
                          summary=free_anchor_summary, records=free_anchor_records),
}


def build_box_coder(cfg: Any) -> Coder:
    """The box coder of a run (`detector.config.Config`): its method's `box_coding`; "delta" with
    `model.box_coder`'s weights and clamp, "ltrb" reading each point's stride from its anchor (a square of side
    `model.anchors.octave_base_scale` x stride). Training and inference both build it here."""
    coding = METHODS[cfg.assign.name].box_coding
    if coding == "ltrb":
        return LTRBCoder(cfg.model.anchors.octave_base_scale)
    if coding != "delta":
        raise ValueError(f"box coding '{coding}' has no coder")
    return BoxCoder(cfg.model.box_coder.weights, cfg.model.box_coder.clamp)


__all__ = ["METHODS", "Method", "LossInputs", "LossOutput", "BOX_CODINGS", "SCORE_FUSIONS", "assign_then_dense",
           "build_box_coder", "method_config"]
