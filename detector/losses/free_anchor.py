"""FreeAnchor (Zhang et al., NeurIPS 2019): the object-anchor matching *is* the loss, learnt with gradients.

Dimensions: B images, M padded objects per image, A anchors (all levels, level-major), C classes,
R valid objects of the batch, K anchors per bag (`bag_size`, fewer only when A < bag_size).

The loss (Eq. 7, Algorithm 1), step by step as the official code (zhangxiaosong18/FreeAnchor
`free_anchor_loss.py`; REFERENCE_NOTES 4), batched over images with padded objects:
1. Without gradient: decode every anchor's predicted box; IoU (B, M, A) of each object with every
   predicted box; P{a_j -> b_i} = saturated linear(IoU, t, max_j IoU) (Eq. 4's matching probability);
   per class c, P{a_j in A+} = max over the objects of class c (0 for a class without object), so
   P{a_j in A-} = 1 - that is class-wise.
2. Bags: the top-K anchors by *anchor* IoU with each object, over all levels jointly (static geometry).
3. Positive term: x_ij = P_cls (the object's class) x P_loc = exp(-bbox_reg_weight x sum of the smooth-L1 of
   the deltas), Mean-max over the bag, -log (BCE against 1, log clamped at -100 as `F.binary_cross_entropy`).
   The Mean-max weights keep their gradient; their clip at 1e-12 is straight-through, as the official `Clip`.
4. Negative term: focal FL(p) = p^gamma x -log(1 - p) of p = cls_prob x (1 - P{a_j in A+}) over every
   anchor and class, no alpha inside. Its only gradient path is cls_prob: P{a_j in A+} is detached.
5. alpha / max(1, R) on the positive sum, (1 - alpha) / max(1, R x bag_size) on the negative sum (R counted
   per process, as the official code, not all-reduced).

Deviations from the official code, and why:
* Boxes have no legacy "+1" (IoU and coder), as every method of anchorlab (`detector.box_coder`).
* A batch without objects: the official normaliser max(1, 0 x K) = 1 makes its negative term K x objects times
  larger than usual (a loss spike). `empty_batch: images` (default) divides it by K x images instead, as if
  each image held one object; `official` keeps the spike. Images without objects in a batch with objects
  are handled as the official code (no bag; every anchor negative).
* An object whose best predicted IoU is <= t: the official `t2.clamp(min=t + 1e-12)` is a no-op in float32
  (0/0 = NaN at IoU = t exactly); its intent, all P = 0, is what `saturated_linear` returns.
* The Mean-max likelihood is clamped (straight-through) into [0, 1]: float rounding can put it a few ulp
  above 1, where the BCE refuses it. Equal to the official value wherever that one runs.
* Crowd regions are not used (the official training drops crowd boxes; anchorlab passes them as ignore
  regions, which FreeAnchor's terms have no place for).
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import box_iou

from detector.boxes import box_area
from detector.config.assign_sections import EMPTY_BATCH_RULES, FreeAnchorConfig  # public here too: its section

if TYPE_CHECKING:  # annotation only: detector.methods imports this module
    from detector.box_coder import Coder

# The official clamps: t2 - t >= SATURATION_EPS (its t2.clamp(min=t + 1e-12)); Mean-max clip(1 - x, MEAN_MAX_EPS).
SATURATION_EPS = 1e-12
MEAN_MAX_EPS = 1e-12


class _StraightThroughClamp(torch.autograd.Function):
    """Clamp in the forward pass, identity in the backward pass (the official code's `Clip`)."""

    @staticmethod
    def forward(ctx, x: Tensor, low: float | None, high: float | None) -> Tensor:
        return x.clamp(low, high)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad, None, None


def saturated_linear(x: Tensor, t1: float, t2: Tensor) -> Tensor:
    """Saturated linear (Sec. 3.2): 0 at x <= t1, 1 at x >= t2, linear between. x [..., A], t2 [..., 1] -> [..., A].

    Where t2 <= t1 (an object whose best predicted IoU is <= t) every value is 0, the official code's intent.
    """
    return ((x - t1) / (t2 - t1).clamp(min=SATURATION_EPS)).clamp(0.0, 1.0)


def mean_max(x: Tensor, dim: int = -1) -> tuple[Tensor, Tensor]:
    """Mean-max (Sec. 3.3): sum_j w_j x_j with w_j = 1 / (1 - x_j) normalised over `dim`; the mean for small x, the
    max as one x_j -> 1. x [..., K] in [0, 1] -> (value [...], weights [..., K]). Gradients flow through the
    weights too; the clip of 1 - x at 1e-12 is straight-through (official `Clip`)."""
    weight = 1.0 / _StraightThroughClamp.apply(1.0 - x, MEAN_MAX_EPS, None)
    weight = weight / weight.sum(dim, keepdim=True)
    return (weight * x).sum(dim), weight


def smooth_l1(pred: Tensor, target: Tensor, beta: float) -> Tensor:
    """Smooth-L1 summed over the last dim (the 4 deltas): 0.5 / beta x d^2 if |d| < beta, else |d| - 0.5 beta.
    [..., 4] x [..., 4] -> [...]."""
    diff = (target - pred).abs()
    return torch.where(diff < beta, 0.5 / beta * diff ** 2, diff - 0.5 * beta).sum(-1)


@torch.no_grad()
def predicted_box_iou(gt_boxes: Tensor, boxes: Tensor) -> Tensor:
    """IoU of each image's objects with its own boxes, no gradient: [B, M, 4] x [B, A, 4] -> [B, M, A] (padding rows
    arbitrary)."""
    g, p = gt_boxes[:, :, None, :], boxes[:, None, :, :]  # in place on few (B, M, A) tensors, as `batched_box_iou`
    inter = torch.minimum(g[..., 2], p[..., 2]).sub_(torch.maximum(g[..., 0], p[..., 0])).clamp_(min=0)
    inter.mul_(torch.minimum(g[..., 3], p[..., 3]).sub_(torch.maximum(g[..., 1], p[..., 1])).clamp_(min=0))
    union = (box_area(gt_boxes)[:, :, None] + box_area(boxes)[:, None, :]).sub_(inter).clamp_(min=1e-9)
    return inter.div_(union)


@torch.no_grad()
def match_probability(pred_boxes: Tensor, gt_boxes: Tensor, gt_valid: Tensor, t: float) -> tuple[Tensor, Tensor]:
    """P{a_j -> b_i} (Eq. 4's saturated linear) of every object with every anchor's predicted box, no gradient.

    Args: pred_boxes (B, A, 4) decoded xyxy; gt_boxes (B, M, 4) xyxy; gt_valid (B, M) bool; t the IoU threshold.
    Returns: P (B, M, A) in [0, 1], 0 for padding rows; the IoU (B, M, A) it was computed from (0 for padding).
    t2 is each object's best predicted IoU over *all* anchors of its image, not only its bag.
    """
    iou = predicted_box_iou(gt_boxes, pred_boxes).masked_fill(~gt_valid[:, :, None], 0.0)
    t2 = iou.amax(dim=2, keepdim=True) if iou.shape[2] else iou.new_zeros(*iou.shape[:2], 1)
    return saturated_linear(iou, t, t2), iou


@torch.no_grad()
def positive_set_probability(match: Tensor, gt_labels: Tensor, gt_valid: Tensor, num_classes: int) -> Tensor:
    """P{a_j in A+} per class: the max of P{a_j -> b_i} over the objects of that class; 0 for a class without object.

    match (B, M, A), gt_labels (B, M) long (padding -1), gt_valid (B, M) -> (B, A, C), no gradient.
    """
    b, m, a = match.shape
    out = match.new_zeros(b, a, num_classes)
    if m == 0:
        return out
    labels = torch.where(gt_valid, gt_labels, 0)  # padding rows hold P = 0: a max with 0 changes nothing
    src = match.masked_fill(~gt_valid[:, :, None], 0.0).transpose(1, 2)  # (B, A, M)
    return out.scatter_reduce_(2, labels[:, None, :].expand(b, a, m), src, reduce="amax")


@torch.no_grad()
def build_bags(gt_boxes: Tensor, anchors: Tensor, bag_size: int) -> tuple[Tensor, Tensor]:
    """Each object's bag: its top `bag_size` anchors by anchor IoU over all levels (order within a bag arbitrary,
    as the official `topk(sorted=False)`). gt_boxes (R, 4), anchors (A, 4) -> indices (R, K) long, IoU (R, K)."""
    iou = box_iou(gt_boxes, anchors)  # (R, A)
    bag_iou, bag = iou.topk(min(bag_size, anchors.shape[0]), dim=1, sorted=False)
    return bag, bag_iou


def positive_bag_loss(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """-log Mean-max of each bag's likelihoods (Eq. 7, first term, unweighted). x (R, K) -> loss (R,), Mean-max (R,),
    its weights (R, K). As the official BCE against 1: the log is clamped at -100."""
    bag_prob, weight = mean_max(x, dim=1)
    bag_prob = _StraightThroughClamp.apply(bag_prob, 0.0, 1.0)
    return F.binary_cross_entropy(bag_prob, torch.ones_like(bag_prob), reduction="none"), bag_prob, weight


def negative_focal_loss(cls_prob: Tensor, box_prob: Tensor, gamma: float) -> Tensor:
    """Sum of FL(p) = p^gamma x -log(1 - p) over p = cls_prob x (1 - P{a in A+}) (Eq. 7, second term, unweighted;
    no alpha inside). cls_prob, box_prob (B, A, C) -> scalar. box_prob is detached: gradient reaches cls_prob only."""
    p = cls_prob * (1.0 - box_prob.detach())
    return (p ** gamma * F.binary_cross_entropy(p, torch.zeros_like(p), reduction="none")).sum()


@dataclass
class FreeAnchorBags:
    """What one loss evaluation matched, detached, for diagnostics. Rows: the R valid objects of the batch."""

    image: Tensor  # (R,) long, image index in the batch
    gt: Tensor  # (R,) long, object index in the padded M
    label: Tensor  # (R,) long
    anchor: Tensor  # (R, K) long, the bag's anchors
    anchor_iou: Tensor  # (R, K) IoU of those anchors (not the predicted boxes) with the object
    match: Tensor  # (R, K) P{a_j -> b_i} of the bag's anchors
    likelihood: Tensor  # (R, K) x_ij = P_cls x P_loc
    share: Tensor  # (R, K) w_ij x_ij / Mean-max: each anchor's part of the bag's Mean-max (sums to 1 per row)
    bag_prob: Tensor  # (R,) the Mean-max

    @classmethod
    def cat(cls, parts: list[FreeAnchorBags], image_offsets: list[int]) -> FreeAnchorBags:
        """Rows of consecutive chunks of images as one; chunk i's images start at `image_offsets[i]` (`Details`)."""
        joined = {f.name: torch.cat([getattr(p, f.name) for p in parts]) for f in fields(cls) if f.name != "image"}
        return cls(image=torch.cat([p.image + lo for p, lo in zip(parts, image_offsets)]), **joined)


def free_anchor_losses(
    cls_logits: Tensor, box_deltas: Tensor, anchors: Tensor, gt_boxes: Tensor, gt_labels: Tensor, gt_valid: Tensor,
    coder: Coder, cfg: FreeAnchorConfig,
) -> tuple[dict[str, Tensor], FreeAnchorBags]:
    """FreeAnchor's loss L'' (Eq. 7) of a batch: steps 1-5 of the module doc.

    Args:
        cls_logits (B, A, C), box_deltas (B, A, 4): the head's outputs, with gradients (computed in float32).
        anchors (A, 4) xyxy; gt_boxes (B, M, 4) xyxy; gt_labels (B, M) long; gt_valid (B, M) bool (padding False).
        coder: the "delta" box coder (weights 10, 10, 5, 5 as the official code); cfg: the method's section.
    Returns:
        {"loss_positive": alpha x sum_i -log Mean-max(X_i) / max(1, R), "loss_negative": (1 - alpha) x sum FL /
        max(1, R x bag_size) (see `empty_batch` for R = 0), "loss": their sum}, and the detached `FreeAnchorBags`.
    """
    with torch.autocast(cls_logits.device.type, enabled=False):  # the BCE is refused under autocast
        b, _, c = cls_logits.shape
        cls_prob = cls_logits.float().sigmoid()
        deltas = box_deltas.float()
        with torch.no_grad():
            match, _ = match_probability(coder.decode(deltas.detach(), anchors), gt_boxes, gt_valid, cfg.iou_threshold)
            box_prob = positive_set_probability(match, gt_labels, gt_valid, c)  # (B, A, C)

        image, gt = gt_valid.nonzero(as_tuple=True)  # (R,): the valid objects, image-major
        objects, labels = gt_boxes[image, gt], gt_labels[image, gt]
        bag, bag_iou = build_bags(objects, anchors, cfg.bag_size)  # (R, K)
        rows = image[:, None]
        p_cls = cls_prob[rows, bag, labels[:, None]]  # (R, K) P_ij^cls of the object's class
        targets = coder.encode(objects[:, None, :], anchors[bag])  # (R, K, 4)
        p_loc = torch.exp(-cfg.bbox_reg_weight * smooth_l1(deltas[rows, bag], targets, cfg.smooth_l1_beta))
        likelihood = p_cls * p_loc
        per_object, bag_prob, weight = positive_bag_loss(likelihood)

        num = image.numel()
        objects_for_negatives = num if num or cfg.empty_batch == "official" else b
        positive = per_object.sum() / max(1, num)
        negative = negative_focal_loss(cls_prob, box_prob, cfg.gamma) / max(1, objects_for_negatives * cfg.bag_size)
        losses = {"loss_positive": cfg.alpha * positive, "loss_negative": (1.0 - cfg.alpha) * negative}
        losses["loss"] = losses["loss_positive"] + losses["loss_negative"]

        with torch.no_grad():
            contribution = weight * likelihood
            share = contribution / contribution.sum(1, keepdim=True).clamp(min=torch.finfo(contribution.dtype).tiny)
            bags = FreeAnchorBags(image=image, gt=gt, label=labels, anchor=bag, anchor_iou=bag_iou,
                                  match=match[rows, gt[:, None], bag], likelihood=likelihood.detach(), share=share,
                                  bag_prob=bag_prob.detach())
    return losses, bags


__all__ = ["FreeAnchorConfig", "FreeAnchorBags", "EMPTY_BATCH_RULES", "saturated_linear", "mean_max", "smooth_l1",
           "predicted_box_iou", "match_probability", "positive_set_probability", "build_bags", "positive_bag_loss",
           "negative_focal_loss", "free_anchor_losses"]
