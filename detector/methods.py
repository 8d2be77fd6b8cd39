"""Label-assignment methods: one explicit dict from a method's name (config `assign.name`) to its record.

A method is more than an assigner: its spec (`detector.config.method_specs.METHOD_SPECS`: its config type,
which `detector.config` makes the section `assign.<name>`, its box coding, its default score fusion, whether
it reads the detached predictions; kept apart, without torch, so configs validate without loading this
module), its assign function (or none), its loss function, and the diagnostics only it can read from its
assignment result. The training step asks the method for (losses, assignment result); the
default loss assigns, then applies the dense losses. A method that matches inside its loss, with
gradients (FreeAnchor), brings its own loss function and reads the same `LossInputs`.

Adding a method = one module + its config section (`detector/config/assign_sections.py`) + one line in
`METHOD_SPECS` and one here + one config file + its tests.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import torch
from torch import Tensor

from detector.assigners import assign
from detector.assigners.atss import assign_atss
from detector.assigners.base import AssignFn, AssignInputs, AssignResult
from detector.assigners.centerness_threshold import assign_centerness_threshold
from detector.assigners.fcos import assign_fcos_inside
from detector.assigners.max_iou import assign_max_iou
from detector.assigners.paa import assign_paa
from detector.assigners.paa_details import paa_records, paa_summary
from detector.assigners.pseudo_iou import assign_pseudo_iou
from detector.assigners.scaled_box import assign_scaled_box
from detector.box_coder import BoxCoder, Coder, LTRBCoder
from detector.config.method_specs import BOX_CODINGS, METHOD_SPECS, SCORE_FUSIONS, MethodSpec, method_config
from detector.data.batch import Batch
from detector.losses.dense import dense_losses
from detector.losses.free_anchor import free_anchor_losses
from detector.losses.free_anchor_details import bags_result, free_anchor_records, free_anchor_summary
from detector.model.anchors import anchors_per_location

if TYPE_CHECKING:  # annotation only
    from detector.model.head import HeadOutput


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
    spec: MethodSpec  # config type, box coding, score fusion, reads predictions (`METHOD_SPECS[name]`)
    assign: AssignFn | None  # pure no-grad (AssignInputs, its config) -> AssignResult; None if the loss matches
    loss: Callable[[Method, LossInputs], LossOutput] = assign_then_dense
    # Diagnostics only this method can read from its own AssignResult (e.g. its `details`):
    summary: Callable[[AssignResult], dict[str, float]] = no_summary  # scalars, logged with the losses
    records: Callable[[AssignResult, int, int], dict[str, list]] = no_records  # (result, count, seed) -> {kind: records}

    def __post_init__(self):
        if self.assign is None and self.loss is assign_then_dense:
            raise ValueError("a method without an assign function needs a loss function of its own")

    @property
    def config(self) -> type | None:
        return self.spec.config

    @property
    def reads_predictions(self) -> bool:
        return self.spec.reads_predictions

    @property
    def box_coding(self) -> str:
        return self.spec.box_coding

    @property
    def score_fusion(self) -> str:
        return self.spec.score_fusion


METHODS: dict[str, Method] = {
    "max_iou": Method(METHOD_SPECS["max_iou"], assign_max_iou),
    "atss": Method(METHOD_SPECS["atss"], assign_atss),
    "paa": Method(METHOD_SPECS["paa"], assign_paa, summary=paa_summary, records=paa_records),
    "fcos_inside": Method(METHOD_SPECS["fcos_inside"], assign_fcos_inside),
    "pseudo_iou": Method(METHOD_SPECS["pseudo_iou"], assign_pseudo_iou),
    "scaled_box": Method(METHOD_SPECS["scaled_box"], assign_scaled_box),
    "centerness_threshold": Method(METHOD_SPECS["centerness_threshold"], assign_centerness_threshold),
    "free_anchor": Method(METHOD_SPECS["free_anchor"], None, loss=free_anchor_loss,
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
