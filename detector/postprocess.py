"""Inference post-processing: scores -> per-level top-k -> threshold -> decode -> class-wise NMS -> top detections.

Batched over images: the top-k runs on (B, ·) tensors, and one `batched_nms` call handles every
image and class at once by giving each (image, class) pair its own NMS group.

Two conventions, chosen in `inference` (defaults: anchorlab's original, torchvision-like; the point methods'
configs take mmdetection's FCOS head's, which its ATSS head shares):
  - `pre_nms_candidates`: the per-level top `pre_nms_topk` ranks (anchor, class) "pairs" by fused score, or
    "points" (mmdet): anchors by their best fused score over the classes, each kept with all its classes;
  - `threshold_on`: `score_thresh` (strict `>`) applies to the "fused" score, or to the "cls" probability
    before the fusion (mmdet);
  - `clip`: "one_sided" (x1, y1 >= 0, x2 <= w, y2 <= h), or "two_sided" (mmdet: every coordinate into the image).

What mmdetection does, read in `mmdet/models/dense_heads/fcos_head.py` (`FCOSHead.get_bboxes` -> `_get_bboxes`, the
batched v2.11 form that the official Pseudo-IoU `PIOUHead` copies; the earlier v2.x `_get_bboxes_single` does the
same per image) and `mmdet/core/post_processing/bbox_nms.py::multiclass_nms`, with mmcv's `batched_nms` / `nms`:
  1. per level: scores = sigmoid(cls) (n, C), centerness = sigmoid(ctr) (n,); the box output is already
     relu(Scale(x)) x stride at test time (`forward_single`, `norm_on_bbox`), as `LTRBCoder.decode`;
  2. when n > `nms_pre` (1000): `(scores * centerness[:, None]).max(-1)` then `.topk(nms_pre)` keeps POINTS, all C
     classes each (no threshold yet; with n <= nms_pre every point stays: the same set as a top-n);
  3. `distance2bbox(points, pred, max_shape=img_shape)`: x1 = px - l ... x2 = px + r, then every coordinate into
     [0, w] / [0, h] of the resized, unpadded image (both sides: a point in the padding gets x1 = w, not x1 > w);
  4. levels concatenated; with `rescale` the boxes are divided by the scale factor BEFORE the NMS (here the NMS
     runs in resized pixels and `evaluate.to_coco_results` rescales after; IoU is scale-free up to rounding);
  5. per image `multiclass_nms(boxes, scores, score_thr, nms, max_per_img, score_factors=centerness)`:
     `valid = scores > score_thr` on the RAW class probability (strict), then `scores * score_factors` ("multiply
     score_factor after threshold to preserve more bboxes"), the valid (point, class) pairs go to mmcv
     `batched_nms(boxes, scores, labels, dict(iou_threshold=0.5))`: class-aware by adding label x (max coordinate
     + 1) to the boxes (a per-class loop from 10000 boxes on), `nms` with offset 0 (no +1 widths), suppressing
     IoU > thr (CUDA kernel; mmcv's CPU kernel uses >=), kept in descending score; then `dets[:max_per_img]`.
Here the NMS groups are (image, class) pairs of torchvision's `batched_nms` (per-class NMS, suppressing IoU > thr):
the same as mmcv's per-image class offsets except for float rounding of offset coordinates and an IoU exactly at
the threshold. Ties in the top-k follow torch's `topk`, in both codes. Points: mmdet's i x s + s // 2 equals the
anchor centres (i + 0.5) x s for the even strides used.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import batched_nms, box_iou

from detector.box_coder import Coder
from detector.config import InferenceConfig
from detector.model.head import HeadOutput


def resolve_score_fusion(fusion: str, method_fusion: str, has_aux: bool) -> str:
    """The score fusion applied: `inference.score_fusion` as given, except "auto", which means the method's
    own (`Method.score_fusion`) when the head has an aux branch and "none" without one."""
    if fusion != "auto":
        return fusion
    return method_fusion if has_aux else "none"


def fused_scores(out: HeadOutput, fusion: str, cls_prob: Tensor | None = None) -> Tensor:
    """(B, A, C) detection scores: the class probability (`cls_prob`, computed when not given), optionally fused
    with the aux branch."""
    scores = out.cls_logits.float().sigmoid() if cls_prob is None else cls_prob
    if fusion == "none" or out.aux_logits is None:
        return scores
    fused = scores * out.aux_logits.float().sigmoid()[..., None]
    return fused.sqrt() if fusion == "sqrt_product" else fused


def level_candidates(fused: Tensor, cls_prob: Tensor | None, topk: int, by: str) -> tuple[Tensor, ...]:
    """One level's pre-NMS candidates, batched over images.

    Args:
        fused: (B, n, C) fused scores of the level's n anchors; cls_prob: (B, n, C) class probabilities, or None
            when not needed (`threshold_on: fused`); topk: `pre_nms_topk`; by: `pre_nms_candidates`,
            "pairs" (the top (anchor, class) pairs by fused score) or "points" (the top anchors by their best
            fused score over the classes, each with all its C classes).
    Returns:
        (fused, cls_prob or None, anchor, label), each (B, K): K = min(topk, n x C) pairs, or min(topk, n) x C;
        anchor indexes the level (0..n-1).
    """
    b, n, c = fused.shape
    if by == "pairs":
        top, idx = fused.reshape(b, n * c).topk(min(topk, n * c), dim=1)
        cls = cls_prob.reshape(b, n * c).gather(1, idx) if cls_prob is not None else None
        return top, cls, idx // c, idx % c
    if by != "points":
        raise ValueError(f"inference.pre_nms_candidates: '{by}' is not one of pairs, points")
    k = min(topk, n)
    point = fused.amax(dim=2).topk(k, dim=1).indices  # (B, k)
    rows = point[:, :, None].expand(b, k, c)
    top = fused.gather(1, rows).reshape(b, k * c)
    cls = cls_prob.gather(1, rows).reshape(b, k * c) if cls_prob is not None else None
    label = torch.arange(c, device=fused.device).expand(b, k, c).reshape(b, k * c)
    return top, cls, rows.reshape(b, k * c), label


def clip_boxes(boxes: Tensor, hw: Tensor, clip: str) -> Tensor:
    """Boxes [N, 4] xyxy into their images of (h, w) [N, 2]: "one_sided" clamps x1, y1 at 0 and x2, y2 at w, h;
    "two_sided" clamps every coordinate into [0, w] / [0, h] (mmdetection's `distance2bbox(max_shape)`)."""
    upper = hw.flip(1).repeat(1, 2)  # (w, h, w, h)
    if clip == "one_sided":
        return torch.cat([boxes[:, :2].clamp(min=0), torch.minimum(boxes[:, 2:], upper[:, 2:])], dim=1)
    if clip == "two_sided":
        return torch.minimum(boxes.clamp(min=0), upper)
    raise ValueError(f"inference.clip: '{clip}' is not one of one_sided, two_sided")


def score_voting(kept_boxes: Tensor, kept_labels: Tensor, boxes: Tensor, scores: Tensor, labels: Tensor,
                 sigma: float, iou_thresh: float) -> Tensor:
    """Score voting (PAA Sec. 3.4): each kept box [K, 4] becomes the average of the same-class pre-NMS
    boxes [N, 4] with IoU > `iou_thresh`, weighted by exp(-(1 - IoU)^2 / sigma) x score. Scores unchanged.
    """
    iou = box_iou(kept_boxes, boxes)  # [K, N]
    near = (iou > iou_thresh) & (kept_labels[:, None] == labels[None, :])
    w = torch.exp(-(1.0 - iou) ** 2 / sigma) * scores[None, :] * near
    voted = (w @ boxes) / w.sum(dim=1, keepdim=True).clamp(min=1e-12)
    return torch.where(w.sum(dim=1, keepdim=True) > 0, voted, kept_boxes)


@torch.no_grad()
def candidates(
    out: HeadOutput,
    anchors: Tensor,
    num_per_level: list[int],
    image_sizes: Tensor,
    box_coder: Coder,
    cfg: InferenceConfig,
    method_fusion: str,
    topk: int | None,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The pre-NMS detections of every image: steps 1-4 of `postprocess`, with the per-level top-k given apart.

    Args:
        as `postprocess`; topk: the per-level top-k (`cfg.pre_nms_topk` for detections), or None for every
            (anchor, class) pair (FreeAnchor's NMS recall: `detector.evaluation.nms_recall`).
    Returns:
        (image, anchor, boxes, scores, labels) of the N pairs above `cfg.score_thresh`: image (N,) index into the
        batch, anchor (N,) into `anchors`, boxes (N, 4) xyxy in resized pixels (decoded, clipped), scores (N,)
        fused, labels (N,) class index.
    """
    fusion = resolve_score_fusion(cfg.score_fusion, method_fusion, has_aux=out.aux_logits is not None)
    if cfg.threshold_on not in ("fused", "cls"):
        raise ValueError(f"inference.threshold_on: '{cfg.threshold_on}' is not one of fused, cls")
    cls_prob = out.cls_logits.float().sigmoid()  # (B, A, C)
    scores = fused_scores(out, fusion, cls_prob)
    on_cls = cfg.threshold_on == "cls"
    if topk is None:  # every (anchor, class) pair, in (image, anchor, class) order
        img_idx, anchor_idx, labels = ((cls_prob if on_cls else scores) > cfg.score_thresh).nonzero(as_tuple=True)
        kept_scores = scores[img_idx, anchor_idx, labels]
    else:
        levels, start = [], 0
        for n in num_per_level:
            top, cls, anchor, label = level_candidates(scores[:, start:start + n],
                                                       cls_prob[:, start:start + n] if on_cls else None,
                                                       topk, cfg.pre_nms_candidates)
            levels.append((top, cls, anchor + start, label))
            start += n
        level_scores, level_cls, level_anchor, level_label = zip(*levels)
        cand_scores = torch.cat(level_scores, 1)  # (B, K)
        cand_anchor = torch.cat(level_anchor, 1)
        cand_label = torch.cat(level_label, 1)
        thresholded = torch.cat(level_cls, 1) if on_cls else cand_scores
        img_idx, k_idx = (thresholded > cfg.score_thresh).nonzero(as_tuple=True)
        anchor_idx, labels = cand_anchor[img_idx, k_idx], cand_label[img_idx, k_idx]
        kept_scores = cand_scores[img_idx, k_idx]
    boxes = box_coder.decode(out.box_deltas[img_idx, anchor_idx].float(), anchors[anchor_idx])
    hw = image_sizes.to(scores.device)[img_idx].to(boxes.dtype)  # (N, 2) = (h, w)
    boxes = clip_boxes(boxes, hw, cfg.clip)
    return img_idx, anchor_idx, boxes, kept_scores, labels


@torch.no_grad()
def postprocess(
    out: HeadOutput,
    anchors: Tensor,
    num_per_level: list[int],
    image_sizes: Tensor,
    box_coder: Coder,
    cfg: InferenceConfig,
    method_fusion: str,
) -> list[dict[str, Tensor]]:
    """Detections per image from the head's outputs (see the module doc for the two conventions).

    Steps: 1. class probabilities and fused scores (B, A, C); 2. per level, the top `pre_nms_topk` candidates
    (`pre_nms_candidates`); 3. keep those whose fused score (or class probability, `threshold_on: cls`) is
    > `score_thresh`; 4. decode and clip (`clip`) (1-4: `candidates`); 5. class-wise NMS per image at
    `nms_thresh`; 6. the first `max_detections` by fused score; 7. optional score voting.

    Args:
        out: cls logits (B, A, C), box codes (B, A, 4), aux logits (B, A) or None; anchors: (A, 4) xyxy, level-major;
        num_per_level: anchors per level (sums to A); image_sizes: (B, 2) (h, w) of the resized, unpadded images;
        method_fusion: the run's method's `score_fusion`, what `cfg.score_fusion` "auto" stands for.
    Returns:
        per image, {"boxes": (n, 4) xyxy in resized pixels, "scores": (n,) fused, "labels": (n,)} plus "aux": (n,)
        the aux branch's probability (predicted IoU or centerness) when the head has one.
    """
    img_idx, anchor_idx, boxes, kept_scores, labels = candidates(
        out, anchors, num_per_level, image_sizes, box_coder, cfg, method_fusion, cfg.pre_nms_topk)
    b, c = out.cls_logits.shape[0], out.cls_logits.shape[2]
    keep = batched_nms(boxes, kept_scores, img_idx * c + labels, cfg.nms_thresh)  # sorted by score
    aux = out.aux_logits[img_idx, anchor_idx].float().sigmoid() if out.aux_logits is not None else None
    results = []
    for i in range(b):
        mine = keep[img_idx[keep] == i][: cfg.max_detections]
        det = {"boxes": boxes[mine], "scores": kept_scores[mine], "labels": labels[mine]}
        if cfg.voting.enabled and len(mine):
            pool = img_idx == i
            det["boxes"] = score_voting(det["boxes"], det["labels"], boxes[pool], kept_scores[pool], labels[pool],
                                        cfg.voting.sigma, cfg.voting.iou_thresh)
        if aux is not None:
            det["aux"] = aux[mine]
        results.append(det)
    return results
