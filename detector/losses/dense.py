"""Training losses of a dense detector given an assignment.

- classification: sigmoid focal loss over every non-ignored anchor and class (Lin et al., 2017);
- regression: GIoU loss of the decoded box (or -log IoU, UnitBox's and mmdetection's `IoULoss`, or L1 on
  the encoded deltas) over positives, multiplied by the assignment's per-positive weight (PAA: also by the
  detached IoU target; FCOS: by the centerness target; each then normalised by the sum of those targets
  instead of the number of positives);
- auxiliary branch: BCE against the IoU of the detached decoded box with its GT (PAA) or the
  anchor centre's centerness (FCOS/ATSS), over positives.
All three are normalised by the batch's number of positives (at least 1), except a weighted regression.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import sigmoid_focal_loss

from detector.assigners.base import IGNORE, AssignResult
from detector.box_coder import Coder
from detector.boxes import aligned_giou, aligned_iou, box_centers, centerness, point_box_distances
from detector.distributed import reduce_mean

if TYPE_CHECKING:  # annotations only: detector.methods imports this module, and detector.config imports it
    from detector.config.sections import LossConfig
    from detector.model.head import HeadOutput


IOU_LOSS_EPS = 1e-6  # -log(IoU) clamps the IoU at this, as mmdetection's `IoULoss` (eps 1e-6): a finite loss


def centerness_target(points: Tensor, gt_boxes: Tensor) -> Tensor:
    """FCOS centerness of points [N, 2] in their GT boxes [N, 4] -> [N] in [0, 1]."""
    return centerness(point_box_distances(points, gt_boxes))


def dense_losses(
    out: HeadOutput,
    anchors: Tensor,
    result: AssignResult,
    gt_boxes: Tensor,
    gt_labels: Tensor,
    box_coder: Coder,
    cfg: LossConfig,
    aux: str,
) -> dict[str, Tensor]:
    """Args: head outputs (B, A, ·), anchors (A, 4), the assignment, GTs (B, M, 4) / (B, M).

    Returns a dict of scalar losses ("loss_cls", "loss_reg", optionally "loss_aux") and "loss".
    """
    b, a, c = out.cls_logits.shape
    labels = result.labels(gt_labels)  # (B, A)
    pos = labels >= 0
    # averaged over the processes of a data-parallel run, as the official codes do (identity in one process)
    num_pos = reduce_mean(pos.sum().float()).clamp(min=1)

    valid = labels != IGNORE
    target = torch.zeros_like(out.cls_logits)
    target[pos] = F.one_hot(labels[pos], c).to(target.dtype)
    loss_cls = sigmoid_focal_loss(
        out.cls_logits[valid].float(), target[valid], alpha=cfg.focal_alpha, gamma=cfg.focal_gamma, reduction="sum"
    ) / num_pos

    img_idx, anchor_idx = pos.nonzero(as_tuple=True)
    matched = result.matched_gt[img_idx, anchor_idx]
    gt = gt_boxes[img_idx, matched]  # (P, 4)
    pos_anchors = anchors[anchor_idx]
    deltas = out.box_deltas[img_idx, anchor_idx].float()
    weight = result.weight[img_idx, anchor_idx]
    pred_boxes = box_coder.decode(deltas, pos_anchors)
    if cfg.reg == "giou":
        per_pos = 1.0 - aligned_giou(pred_boxes, gt)
    elif cfg.reg == "iou":
        per_pos = -aligned_iou(pred_boxes, gt).clamp(min=IOU_LOSS_EPS).log()
    else:
        per_pos = F.l1_loss(deltas, box_coder.encode(gt, pos_anchors), reduction="none").sum(-1)
    iou_target = aligned_iou(pred_boxes.detach(), gt)
    # only what this run reads: the step's hot path computes no target it throws away
    needs_ctr = (cfg.reg_centerness_weighted and not cfg.reg_iou_weighted) or (out.aux_logits is not None and aux != "iou")
    ctr_target = centerness_target(box_centers(pos_anchors), gt) if needs_ctr else None
    # PAA: well-localised positives count more; FCOS: central points count more. Normalised by the weights' sum.
    reg_target = iou_target if cfg.reg_iou_weighted else ctr_target if cfg.reg_centerness_weighted else None
    if reg_target is not None:
        loss_reg = (per_pos * weight * reg_target).sum() / reduce_mean(reg_target.sum()).clamp(min=1e-6)
    else:
        loss_reg = (per_pos * weight).sum() / num_pos
    losses = {"loss_cls": loss_cls, "loss_reg": cfg.reg_weight * loss_reg}

    if out.aux_logits is not None:
        aux_target = iou_target if aux == "iou" else ctr_target
        aux_logits = out.aux_logits[img_idx, anchor_idx].float()
        losses["loss_aux"] = cfg.aux_weight * F.binary_cross_entropy_with_logits(
            aux_logits, aux_target, reduction="sum"
        ) / num_pos
    losses["loss"] = sum(losses.values())
    return losses
