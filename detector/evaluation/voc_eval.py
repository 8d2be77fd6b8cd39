"""PASCAL VOC detection AP at IoU 0.5, 11-point and area: the devkit's `voc_eval.py` loop, vectorised per class.

Reference: py-faster-rcnn's `lib/datasets/voc_eval.py` (B. Hariharan), which detectron2's PASCAL VOC evaluator
copies and which follows the MATLAB VOCdevkit's `VOCevaldet`. Per class:
  1. the class's detections sorted by score, descending;
  2. each detection's best-IoU GT of the class in its image, difficult ones included (first on ties, np.argmax);
  3. IoU > thr (strict): a difficult GT makes the detection neither TP nor FP (however many hit it); a GT not
     yet detected makes it TP and is taken; a taken GT makes it FP (the devkit never falls back to the
     next-best GT). IoU <= thr, or no GT of the class in the image: FP;
  4. recall = cumulative TP / npos (the non-difficult GTs), precision = cum TP / max(cum TP + cum FP, eps);
  5. AP, 11-point (the devkit's `use_07_metric=True`, VOC2007): the mean over t in np.arange(0, 1.1, 0.1) of
     the largest precision at recall >= t (0 if none); area (VOC2010+): the area under the precision
     envelope (made non-increasing from the right), summed where recall changes.
mAP: the mean over the classes with at least one non-difficult GT (mmdetection's `eval_map`; the devkit's 20
classes all have GT in VOC2007 test); -1 when no class has one, as COCO reports a stat without GT.

Vectorised: in step 3 only "taken" is sequential, and a detection takes its best GT exactly when it is the
highest-ranked detection whose best GT that is, with IoU > thr and not difficult: a first occurrence
(`np.unique(return_index=True)`) over the ranked detections instead of the devkit's loop.

Deviations: ties in score keep their input order (a stable sort; the devkit's `np.argsort` leaves them to
quicksort); an IoU with an empty union is 0 (the devkit divides by zero).

IoU convention (`iou`): "continuous" (w = x2 - x1) or "legacy" (w = x2 - x1 + 1, the devkit's on inclusive
pixel indices; mmdetection's `use_legacy_coordinate=True`). Boxes read by `detector.data.voc` are continuous
(xmin - 1, ymin - 1, xmax, ymax), on which "continuous" equals the devkit's IoU on the XML's values.

Dimensions: N detections, M GTs (of one class inside `match_class`), K classes, I images, G the most GTs of
the class in one image. Boxes are xyxy in original image pixels.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from detector.data.annotations import parse_bbox, read_annotations, screen_annotations

IOU_THRESHOLD = 0.5  # VOC's; a knob only of the array functions
IOU_CONVENTIONS = ("continuous", "legacy")
METRICS = {"11point": ("VOC07_mAP",), "area": ("VOC07_mAP_area",), "both": ("VOC07_mAP", "VOC07_mAP_area")}
METRIC_NAMES = ("VOC07_mAP", "VOC07_mAP_area")  # what evaluations report (`eval.voc_metric`), in [0, 1]
EPS = np.finfo(np.float64).eps  # the devkit's guard against 0 / 0 in precision


def metric_names(voc_metric: str) -> tuple[str, ...]:
    """The metric keys that `eval.voc_metric` = `voc_metric` makes an evaluation report ("none": none)."""
    return METRICS.get(voc_metric, ())


def _boxes(boxes) -> np.ndarray:
    return np.asarray(boxes, np.float64).reshape(-1, 4)


def _iou(det: np.ndarray, gt: np.ndarray, legacy: bool) -> np.ndarray:
    """IoU of det (N, 1, 4) with gt (N, G, 4) -> (N, G); the devkit's formula (areas unclipped), +1 if legacy."""
    one = 1.0 if legacy else 0.0
    iw = np.maximum(np.minimum(det[..., 2], gt[..., 2]) - np.maximum(det[..., 0], gt[..., 0]) + one, 0.0)
    ih = np.maximum(np.minimum(det[..., 3], gt[..., 3]) - np.maximum(det[..., 1], gt[..., 1]) + one, 0.0)
    inter = iw * ih
    union = ((det[..., 2] - det[..., 0] + one) * (det[..., 3] - det[..., 1] + one)
             + (gt[..., 2] - gt[..., 0] + one) * (gt[..., 3] - gt[..., 1] + one) - inter)
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def match_class(det_boxes: np.ndarray, det_scores: np.ndarray, det_images: np.ndarray, gt_boxes: np.ndarray,
                gt_images: np.ndarray, gt_difficult: np.ndarray, iou_thr: float = IOU_THRESHOLD,
                iou: str = "continuous") -> tuple[np.ndarray, np.ndarray, int]:
    """Steps 1-3 of the module doc for one class: TP / FP flags of the detections in ranked order.

    Args:
        det_boxes (N, 4) float xyxy, det_scores (N,), det_images (N,) int image index of each detection;
        gt_boxes (M, 4), gt_images (M,) int, gt_difficult (M,) bool, GTs of one image in their file order.
    Returns:
        tp (N,) bool, fp (N,) bool (both False for a detection on a difficult GT), ranked by descending score
        (stable); npos, the number of non-difficult GTs.
    """
    if iou not in IOU_CONVENTIONS:
        raise ValueError(f"iou: '{iou}' is not one of {', '.join(IOU_CONVENTIONS)}")
    det_boxes, gt_boxes = _boxes(det_boxes), _boxes(gt_boxes)
    det_images, gt_images = np.asarray(det_images, np.int64), np.asarray(gt_images, np.int64)
    gt_difficult = np.asarray(gt_difficult, bool)
    npos = int((~gt_difficult).sum())
    order = np.argsort(-np.asarray(det_scores, np.float64), kind="stable")
    n = len(order)
    if len(gt_boxes) == 0 or n == 0:
        return np.zeros(n, bool), np.ones(n, bool), npos
    # the GTs of each image in a padded (images, G) table of GT indices, file order kept (-1: padding)
    images, gt_slot_image = np.unique(np.concatenate([gt_images, det_images]), return_inverse=True)
    gt_slot_image = gt_slot_image[: len(gt_images)]
    by_image = np.argsort(gt_slot_image, kind="stable")
    counts = np.bincount(gt_slot_image, minlength=len(images))
    starts = np.cumsum(counts) - counts
    table = np.full((len(images), counts.max()), -1, np.int64)
    table[gt_slot_image[by_image], np.arange(len(by_image)) - starts[gt_slot_image[by_image]]] = by_image
    det_rows = table[np.searchsorted(images, det_images[order])]  # (N, G) GT indices of each detection's image
    valid = det_rows >= 0
    overlaps = _iou(det_boxes[order][:, None, :], gt_boxes[np.maximum(det_rows, 0)], iou == "legacy")
    overlaps = np.where(valid, overlaps, -np.inf)  # the devkit's ovmax = -inf for an image without GT
    best = overlaps.argmax(axis=1)
    ranked = np.arange(n)
    hit = overlaps[ranked, best] > iou_thr
    best_gt = det_rows[ranked, best]
    on_difficult = hit & gt_difficult[np.maximum(best_gt, 0)]
    takes = np.flatnonzero(hit & ~on_difficult)
    tp = np.zeros(n, bool)
    tp[takes[np.unique(best_gt[takes], return_index=True)[1]]] = True  # the first detection of each GT
    return tp, ~tp & ~on_difficult, npos


def precision_recall(tp: np.ndarray, fp: np.ndarray, npos: int) -> tuple[np.ndarray, np.ndarray]:
    """Step 4: recall and precision (N,) after each ranked detection (npos > 0)."""
    ctp, cfp = np.cumsum(tp, dtype=np.float64), np.cumsum(fp, dtype=np.float64)
    return ctp / npos, ctp / np.maximum(ctp + cfp, EPS)


def ap_11point(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC2007's AP: mean over 11 recall thresholds of the best precision at recall >= t (0 when none)."""
    thresholds = np.arange(0.0, 1.1, 0.1)  # the devkit's values, 0.30000000000000004 included
    reached = np.asarray(recall)[None, :] >= thresholds[:, None]  # (11, N)
    best = np.where(reached, np.asarray(precision)[None, :], 0.0).max(axis=1, initial=0.0)
    return float(best.sum() / len(thresholds))


def ap_area(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC2010+'s AP: the area under the precision envelope, over the points where recall changes."""
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.maximum.accumulate(np.concatenate([[0.0], precision, [0.0]])[::-1])[::-1]
    change = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[change + 1] - mrec[change]) * mpre[change + 1]))


def class_aps(det_boxes, det_scores, det_labels, det_images, gt_boxes, gt_labels, gt_images, gt_difficult,
              num_classes: int, iou_thr: float = IOU_THRESHOLD, iou: str = "continuous") -> dict[str, np.ndarray]:
    """Per class AP over any detections and GTs (labels 0..K-1, images any ints).

    Args: det_* (N, 4) / (N,); gt_* (M, 4) / (M,), gt_difficult (M,) bool.
    Returns: {"ap_11point": (K,), "ap_area": (K,), "npos": (K,) int}; AP is NaN for a class without npos.
    """
    det_labels, gt_labels = np.asarray(det_labels, np.int64), np.asarray(gt_labels, np.int64)
    det_boxes, gt_boxes = _boxes(det_boxes), _boxes(gt_boxes)
    det_scores, det_images = np.asarray(det_scores, np.float64), np.asarray(det_images, np.int64)
    gt_images, gt_difficult = np.asarray(gt_images, np.int64), np.asarray(gt_difficult, bool)
    out = {"ap_11point": np.full(num_classes, np.nan), "ap_area": np.full(num_classes, np.nan),
           "npos": np.zeros(num_classes, np.int64)}
    for k in range(num_classes):
        d, g = det_labels == k, gt_labels == k
        tp, fp, npos = match_class(det_boxes[d], det_scores[d], det_images[d], gt_boxes[g], gt_images[g],
                                   gt_difficult[g], iou_thr, iou)
        out["npos"][k] = npos
        if npos:
            recall, precision = precision_recall(tp, fp, npos)
            out["ap_11point"][k], out["ap_area"][k] = ap_11point(recall, precision), ap_area(recall, precision)
    return out


def _mean(aps: np.ndarray) -> float:
    """mAP over the classes with GT (NaN-free entries), -1.0 when there is none."""
    kept = aps[~np.isnan(aps)]
    return float(kept.mean()) if len(kept) else -1.0


def _arrays(gt: str | Path | dict, detections: list[dict] | str | Path, image_ids: list[int] | None):
    """COCO GT + results -> (categories, det arrays, GT arrays); crowd or "difficult" GTs are difficult."""
    data = read_annotations(str(gt)) if isinstance(gt, (str, Path)) else {"annotations": [], "categories": [], **gt}
    if isinstance(detections, (str, Path)):
        with open(detections) as f:
            detections = json.load(f)
    if not isinstance(detections, list):
        raise ValueError(f"detections: expected a list of COCO results, got {type(detections).__name__}")
    known = {int(img["id"]) for img in data["images"]}
    stray = {d["image_id"] for d in detections} - known
    if stray:
        raise ValueError(f"detections name image ids absent from the GT file: {sorted(stray)[:10]}")
    if image_ids is not None and (len(image_ids) == 0 or set(image_ids) - known):
        raise ValueError("image_ids: empty, or ids absent from the GT file: "
                         f"{sorted(set(image_ids) - known)[:10]}; pass None to evaluate every image")
    evaluated = known if image_ids is None else set(image_ids)
    categories = sorted(data.get("categories", []), key=lambda c: c["id"])
    label = {int(c["id"]): k for k, c in enumerate(categories)}
    by_image, _ = screen_annotations(data["annotations"], evaluated, label)  # malformed / unknown: left out
    gts = [(x, y, x + w, y + h, label[a["category_id"]], image,
            bool(a.get("iscrowd", 0)) or bool(a.get("difficult", 0)))
           for image, anns in by_image.items() for a, (x, y, w, h) in anns]
    dets = []
    for i, d in enumerate(detections):
        if d["image_id"] not in evaluated or d.get("category_id") not in label:
            continue  # as COCO evaluation: only the evaluated images and the GT file's categories
        box = parse_bbox(d)
        if box is None:
            raise ValueError(f"detections[{i}]: bbox must be 4 finite numbers, got {d.get('bbox')!r}")
        x, y, w, h = box
        dets.append((x, y, x + w, y + h, float(d["score"]), label[d["category_id"]], d["image_id"]))
    g, t = np.asarray(gts, np.float64).reshape(-1, 7), np.asarray(dets, np.float64).reshape(-1, 7)
    return (categories, (t[:, :4], t[:, 4], t[:, 5].astype(np.int64), t[:, 6].astype(np.int64)),
            (g[:, :4], g[:, 4].astype(np.int64), g[:, 5].astype(np.int64), g[:, 6].astype(bool)))


def voc_class_aps(gt: str | Path | dict, detections: list[dict] | str | Path, image_ids: list[int] | None = None,
                  iou: str = "continuous") -> dict[int, dict]:
    """Per category id of a COCO GT file: {"name", "npos", "ap_11point", "ap_area"} (AP NaN without npos).

    Args:
        gt: a COCO instances JSON (path or the loaded dict); crowd ("iscrowd": 1) or "difficult": 1
            annotations are VOC's difficult objects (`detector.data.voc` writes both).
        detections: COCO results ({"image_id", "category_id", "bbox": [x, y, w, h], "score"}), list or path.
        image_ids: evaluate only these images (default: every image of the GT file).
        iou: "continuous" or "legacy" (module doc).
    """
    categories, (db, ds, dl, di), (gb, gl, gi, gd) = _arrays(gt, detections, image_ids)
    aps = class_aps(db, ds, dl, di, gb, gl, gi, gd, len(categories), IOU_THRESHOLD, iou)
    return {int(c["id"]): {"name": str(c.get("name", c["id"])), "npos": int(aps["npos"][k]),
                           "ap_11point": float(aps["ap_11point"][k]), "ap_area": float(aps["ap_area"][k])}
            for k, c in enumerate(categories)}


def evaluate_voc(gt: str | Path | dict, detections: list[dict] | str | Path, image_ids: list[int] | None = None,
                 metric: str = "both", iou: str = "continuous") -> dict[str, float]:
    """VOC mAP at IoU 0.5 of COCO-format detections against a COCO GT file (args as `voc_class_aps`).

    Returns: {"VOC07_mAP": 11-point mAP, "VOC07_mAP_area": area mAP}, the keys `metric` (11point | area | both)
    asks for; in [0, 1], or -1.0 when no category has a non-difficult GT.
    """
    if metric not in METRICS:
        raise ValueError(f"metric: '{metric}' is not one of {', '.join(METRICS)}")
    per_class = voc_class_aps(gt, detections, image_ids, iou)
    values = {"VOC07_mAP": _mean(np.array([c["ap_11point"] for c in per_class.values()], np.float64)),
              "VOC07_mAP_area": _mean(np.array([c["ap_area"] for c in per_class.values()], np.float64))}
    return {name: values[name] for name in METRICS[metric]}


__all__ = ["IOU_THRESHOLD", "IOU_CONVENTIONS", "METRICS", "METRIC_NAMES", "metric_names", "match_class",
           "precision_recall", "ap_11point", "ap_area", "class_aps", "voc_class_aps", "evaluate_voc"]
