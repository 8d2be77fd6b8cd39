"""Inference post-processing: scores -> per-level top-k -> decode -> class-wise NMS -> top detections.

Batched over images: the top-k runs on (B, ·) tensors, and one `batched_nms` call handles every
image and class at once by giving each (image, class) pair its own NMS group.
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


def fused_scores(out: HeadOutput, fusion: str) -> Tensor:
    """(B, A, C) detection scores: the class probability, optionally fused with the aux branch."""
    scores = out.cls_logits.float().sigmoid()
    if fusion == "none" or out.aux_logits is None:
        return scores
    fused = scores * out.aux_logits.float().sigmoid()[..., None]
    return fused.sqrt() if fusion == "sqrt_product" else fused


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
def postprocess(
    out: HeadOutput,
    anchors: Tensor,
    num_per_level: list[int],
    image_sizes: Tensor,
    box_coder: Coder,
    cfg: InferenceConfig,
    method_fusion: str,
) -> list[dict[str, Tensor]]:
    """Returns, per image, {"boxes": (n, 4) xyxy in resized pixels, "scores": (n,), "labels": (n,)}
    plus "aux": (n,) the aux branch's probability (predicted IoU or centerness) when the head has one.
    `method_fusion` is the run's method's `score_fusion`, what `cfg.score_fusion` "auto" stands for.
    """
    fusion = resolve_score_fusion(cfg.score_fusion, method_fusion, has_aux=out.aux_logits is not None)
    scores = fused_scores(out, fusion)  # (B, A, C)
    b, _, c = scores.shape
    device = scores.device
    cand_scores, cand_anchor, cand_label = [], [], []
    start = 0
    for n in num_per_level:
        level = scores[:, start:start + n].reshape(b, -1)  # (B, n*C)
        k = min(cfg.pre_nms_topk, level.shape[1])
        top, idx = level.topk(k, dim=1)
        cand_scores.append(top)
        cand_anchor.append(idx // c + start)
        cand_label.append(idx % c)
        start += n
    cand_scores = torch.cat(cand_scores, 1)  # (B, K)
    cand_anchor = torch.cat(cand_anchor, 1)
    cand_label = torch.cat(cand_label, 1)

    img_idx, k_idx = (cand_scores > cfg.score_thresh).nonzero(as_tuple=True)
    anchor_idx = cand_anchor[img_idx, k_idx]
    labels = cand_label[img_idx, k_idx]
    kept_scores = cand_scores[img_idx, k_idx]
    boxes = box_coder.decode(out.box_deltas[img_idx, anchor_idx].float(), anchors[anchor_idx])
    hw = image_sizes.to(device)[img_idx].to(boxes.dtype)  # (N, 2) = (h, w)
    boxes = torch.stack(
        [boxes[:, 0].clamp(min=0), boxes[:, 1].clamp(min=0),
         torch.minimum(boxes[:, 2], hw[:, 1]), torch.minimum(boxes[:, 3], hw[:, 0])], dim=1
    )
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
