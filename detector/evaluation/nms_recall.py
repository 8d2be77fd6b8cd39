"""FreeAnchor's NMS recall (Zhang et al., NeurIPS 2019, Sec. 4.2 "Compatibility with NMS", Table 1), for any method.

The paper: "we defined the NMS Recall (NR_tau) as the ratio of the recall rates after and before NMS for a given
IoU threshold tau. Following the COCO-style AP metric, NR was defined as the averaged NR_tau when tau changes from
0.50 to 0.90 with an interval of 0.05". It leaves open what "before NMS" holds, when a GT counts as recalled and
how recall is pooled; the official code settles all three (zhangxiaosong18/FreeAnchor: `tools/eval_NR.py`, which
swaps in `nms_recall/without_nms_postprocessor.py` and evaluates with `nms_recall/inference_for_NR.py`), and
anchorlab follows it:
  1. before NMS: every (anchor, class) pair whose score is > the run's `inference.score_thresh` (0.05 there and
     by default here), decoded and clipped, with NO per-level top-k (the official sets pre_nms_top_n to 1e14, so
     `inference.pre_nms_topk` is not applied);
  2. after NMS: the same pairs after the run's class-wise NMS at `inference.nms_thresh`, with NO per-image cap
     (official fpn_post_nms_top_n 1e15: `inference.max_detections` is not applied) and no score voting (it moves
     boxes, it removes none);
  3. per GT, its best IoU with any box of each set, of ANY class (the official `boxlist_iou(output, target)
     .max(dim=0)` reads no label). The GTs are the non-crowd GTs that the val dataset loads (`Batch.gt_valid`;
     maskrcnn-benchmark's COCODataset also drops crowd annotations); an image without GT contributes nothing;
  4. recall_tau: the share of GTs whose best IoU is > tau (strict, as the official `overlaps > iouThrs`),
     pooled over every GT of the val set (not averaged per class or per image);
  5. NR_tau = recall_after / recall_before, i.e. count_after / max(count_before, 1) (the official's
     `clip(min=1)`: 0 when no GT is recalled before NMS at that tau); NR = the mean over the 9 thresholds
     0.50, 0.55, ..., 0.90 (the official `np.arange(0.5, 0.95, 0.05)`; Table 1 prints every other one).
Everything else is the run's own inference: score fusion, `threshold_on`, `clip`, test image size. NMS keeps a
subset of the candidates, so count_after <= count_before and NR_tau is in [0, 1].

Reported (values in [0, 1], as the COCO stats): "NR" and "NR50", "NR55", ..., "NR90" (tau x 100, as AP50).

Deviations from the official code: IoU on continuous coordinates (w = x2 - x1; maskrcnn-benchmark adds 1); a val
set without any GT reports -1 for every NR (COCO's "no GT"; the official code fails on an empty concatenation).

Cost: a second class-wise NMS, over every pair above the threshold, and the (GTs x pairs) IoU, per val batch
inside `engine.evaluate.predict`. With no top-k it grows with the number of pairs above the threshold, which is
large for a briefly trained model: 9,000 to 18,000 per image (of 19,206 anchors x 8 classes) for the quick
profile's 800-iteration RetinaNet checkpoint, against at most 5 x 1,000 for the detections. Measured on the
500-image embedded val set (320 px, batch 8, 2 CPU threads, while another training held both cores, so slow in
absolute terms): `predict` 79 s -> 147 s (+86%) for that RetinaNet checkpoint, 80 s -> 175 s (+119%) for the
quick ATSS one; the ratios then take no time. (NR there: RetinaNet 77.5, NR50 98.5, NR90 36.6; ATSS 82.4, 98.5, 48.9.)

Dimensions: B images, N candidates above the threshold in the batch, G valid GTs of one image.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import batched_nms, box_iou

from detector.box_coder import Coder
from detector.config import InferenceConfig
from detector.model.head import HeadOutput
from detector.evaluation.extra_names import NR_NAMES as METRIC_NAMES, NR_THRESHOLDS as THRESHOLDS  # public here too
from detector.postprocess import candidates



@torch.no_grad()
def gt_overlaps(out: HeadOutput, anchors: Tensor, num_per_level: list[int], image_sizes: Tensor, gt_boxes: Tensor,
                gt_valid: Tensor, box_coder: Coder, cfg: InferenceConfig, method_fusion: str) -> Tensor:
    """Per valid GT of a batch, its best IoU with the boxes before NMS and with those that survive it (steps 1-3).

    Args:
        out, anchors, num_per_level, image_sizes, box_coder, cfg, method_fusion: as `postprocess.postprocess`;
        gt_boxes: (B, M, 4) xyxy in resized pixels; gt_valid: (B, M) bool (the non-crowd GTs; padding False).
    Returns:
        (G_total, 2) float32 on the outputs' device: [best IoU before NMS, best IoU after NMS] per valid GT,
        images in batch order, GTs in their order; 0 where the set has no box.
    """
    image, _, boxes, scores, labels = candidates(out, anchors, num_per_level, image_sizes, box_coder, cfg,
                                                 method_fusion, topk=None)
    num_classes = out.cls_logits.shape[2]
    survives = torch.zeros(len(boxes), dtype=torch.bool, device=boxes.device)
    survives[batched_nms(boxes, scores, image * num_classes + labels, cfg.nms_thresh)] = True
    rows = []
    for i in range(gt_boxes.shape[0]):
        gts = gt_boxes[i][gt_valid[i]].to(boxes)  # (G, 4)
        if not len(gts):
            continue
        mine = image == i
        iou = box_iou(gts, boxes[mine])  # (G, N_i)
        best = torch.zeros(len(gts), 2, device=boxes.device)
        if iou.shape[1]:
            best[:, 0] = iou.amax(dim=1)
            kept = iou[:, survives[mine]]
            if kept.shape[1]:
                best[:, 1] = kept.amax(dim=1)
        rows.append(best)
    return torch.cat(rows) if rows else torch.zeros(0, 2, device=boxes.device)


def nms_recall(overlaps: Tensor) -> dict[str, float]:
    """NR and NR50 ... NR90 from the (G, 2) [before, after] best IoUs of every GT of the val set (steps 4-5).

    Returns:
        {name: value} for `METRIC_NAMES`, in [0, 1]; -1.0 for each when there is no GT.
    """
    if overlaps.ndim != 2 or overlaps.shape[1] != 2:
        raise ValueError(f"overlaps: expected (G, 2) [before, after] IoUs, got shape {tuple(overlaps.shape)}")
    if not len(overlaps):
        return dict.fromkeys(METRIC_NAMES, -1.0)
    thresholds = torch.tensor(THRESHOLDS, dtype=torch.float64)
    recalled = (overlaps.double().cpu()[:, :, None] > thresholds).sum(dim=0)  # (2, T): GT counts before, after
    ratio = recalled[1] / recalled[0].clamp(min=1)
    out = {"NR": ratio.mean().item()}
    out.update({name: r.item() for name, r in zip(METRIC_NAMES[1:], ratio)})
    return out


__all__ = ["THRESHOLDS", "METRIC_NAMES", "gt_overlaps", "nms_recall"]
