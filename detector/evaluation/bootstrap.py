"""Per-image COCO matching, and the AP of any multiset of val images: the paired bootstrap over images.

COCO's bbox evaluation (pycocotools `COCOeval.evaluateImg` then `accumulate`, area range "all",
maxDets 100) is split in two so that resampling images costs a re-accumulation, not an evaluation:

 1. `match_detections`, once per run: per image and category, the detections sorted by score (stable)
    and cut to `max_dets`, the GTs with ignored ones (crowd, area outside the range) last, and the
    greedy match at each IoU threshold 0.50:0.05:0.95 (the highest IoU wins, the last GT among equal
    IoUs; a regular GT once, a crowd GT any number of times; a match to an ignored GT ignores the
    detection). Kept per detection: image, category, score, TP and ignore flags per threshold; per image
    and category: the number of GTs that are not ignored.
 2. `resampled_ap`, per resample: the AP (101-point interpolated precision, averaged over thresholds
    and the categories that have GT) of the multiset in which image i appears `counts[i]` times, from
    weighted cumulative sums over the fixed accumulation order. On counts of 0 and 1 (any subset of
    images, the full set included) this is COCO's accumulation exactly; for a repeated image, the copies
    of each detection are taken as adjacent in the score order (COCO defines no order for copies).

`paired_bootstrap` resamples the val images with replacement and reports the percentile interval of
the difference in AP between two sets of runs on the same resamples (a run against itself: exactly 0).
Detections are COCO results (`[{"image_id", "category_id", "bbox": [x, y, w, h], "score"}]`), as
`coco_eval.evaluate_detections` reads them.
"""
from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Sequence

import numpy as np

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)  # as pycocotools' Params: 0.50:0.05:0.95
RECALL_THRESHOLDS = np.linspace(0.0, 1.0, 101)
AREA_ALL = (0.0, 1e5**2)
MAX_DETS = 100
IOU_CAP = 1 - 1e-10  # pycocotools matches at min(threshold, 1 - 1e-10)
EPS = np.spacing(1)  # pycocotools' precision tp / (tp + fp + eps)
AP50, AP75 = 0, 5  # indices of IoU 0.50 and 0.75 in IOU_THRESHOLDS


# ---------------------------------------------------------------- 1. matching, once per run
@dataclass(eq=False)
class ImageMatches:
    """One run's detections matched to the GT, per image, in COCO's accumulation order.

    I images (sorted ids), K categories (sorted ids), N kept detections, T = len(IOU_THRESHOLDS).
    Detections are ordered category by category, by score (highest first), ties by image order and
    then by the order within the image (as `accumulate` concatenates and merge-sorts them).
    """

    image_ids: np.ndarray  # (I,) int64
    category_ids: np.ndarray  # (K,) int64
    num_gt: np.ndarray  # (I, K) int64, GTs that are not ignored
    det_image: np.ndarray  # (N,) int64 index into image_ids
    det_category: np.ndarray  # (N,) int64 index into category_ids, non-decreasing
    det_score: np.ndarray  # (N,) float64
    tp: np.ndarray  # (T, N) bool: matched to a GT that is not ignored
    ignored: np.ndarray  # (T, N) bool: matched to an ignored GT, or unmatched outside the area range

    @cached_property
    def _plan(self) -> "_Plan":
        return _Plan(self)


def load_gt(gt: dict | str | Path) -> dict:
    """A COCO instances dict, read from a path if given one."""
    if isinstance(gt, dict):
        return gt
    with open(gt) as f:
        return json.load(f)


def box_iou_xywh(dets: np.ndarray, gts: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """[D,4] x [G,4] xywh -> [D,G] IoU as pycocotools' `bbIou` computes it (a crowd GT: over the detection's
    area), operation for operation in float64."""
    dx, dy, dw, dh = (dets[:, i, None] for i in range(4))
    gx, gy, gw, gh = (gts[None, :, i] for i in range(4))
    w = np.minimum(dw + dx, gw + gx) - np.maximum(dx, gx)
    h = np.minimum(dh + dy, gh + gy) - np.maximum(dy, gy)
    inter = w * h
    union = np.where(crowd[None, :], dw * dh, dw * dh + gw * gh - inter)
    return np.where((w > 0) & (h > 0), inter / np.where(union > 0, union, 1.0), 0.0)


def _gt_flags(gts: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """(ignored (G,), crowd (G,)) of one image and category's GTs: crowd, or area outside the range."""
    crowd = np.array([bool(g.get("iscrowd", 0)) for g in gts], dtype=bool)
    area = np.array([float(g["area"]) for g in gts])
    return crowd | (area < AREA_ALL[0]) | (area > AREA_ALL[1]), crowd


def _match_group(boxes: np.ndarray, outside: np.ndarray, gts: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """One image and category with GT: (tp (D,T), ignored (D,T)) of its kept detections `boxes` (D,4) xywh,
    sorted by score, as `COCOeval.evaluateImg` decides them; `outside` (D,): area outside the range."""
    t_count = len(IOU_THRESHOLDS)
    gt_ignore, crowd = _gt_flags(gts)
    gorder = np.argsort(gt_ignore, kind="mergesort")  # ignored GTs last
    gt_ignore, crowd = gt_ignore[gorder], crowd[gorder]
    iou = box_iou_xywh(boxes, np.array([gts[i]["bbox"] for i in gorder], dtype=np.float64).reshape(-1, 4), crowd)
    thresholds = np.minimum(IOU_THRESHOLDS, IOU_CAP)[:, None]  # (T, 1)
    tp = np.zeros((len(boxes), t_count), dtype=bool)
    ignored = np.repeat(outside[:, None], t_count, axis=1)
    taken = np.zeros((t_count, len(gts)), dtype=bool)
    regular = ~gt_ignore
    rows = np.arange(t_count)
    for d in np.flatnonzero(iou.max(axis=1) >= thresholds.min()):  # the others match nothing
        eligible = (~taken | crowd) & (iou[d] >= thresholds)  # (T, G)
        match = np.full(t_count, -1)
        for part in (regular, gt_ignore):  # a regular GT first; an ignored one only when none matched
            ok = eligible & part & (match < 0)[:, None]
            values = np.where(ok, iou[d], -1.0)[:, ::-1]
            last_best = len(gts) - 1 - np.argmax(values, axis=1)  # the last GT among equal IoUs
            match = np.where(ok.any(axis=1), last_best, match)
        hit = match >= 0
        taken[rows[hit], match[hit]] = True
        tp[d] = hit & regular[np.maximum(match, 0)]
        ignored[d] = np.where(hit, gt_ignore[np.maximum(match, 0)], outside[d])
    return tp, ignored


def match_detections(gt: dict | str | Path, detections: list[dict], max_dets: int = MAX_DETS) -> ImageMatches:
    """Match `detections` (COCO results) to the GT of every image of `gt` (a COCO instances dict or
    path), COCO's way; see the module doc. Detections of a category absent from the GT are dropped (as
    COCOeval does); detections of an image absent from it are an error (as in `evaluate_detections`)."""
    gt = load_gt(gt)
    image_ids = np.array(sorted(int(i["id"]) for i in gt["images"]), dtype=np.int64)
    category_ids = np.array(sorted(int(c["id"]) for c in gt.get("categories", [])), dtype=np.int64)
    image_index = {int(i): n for n, i in enumerate(image_ids)}
    cat_index = {int(c): n for n, c in enumerate(category_ids)}
    stray = sorted({int(d["image_id"]) for d in detections} - set(image_index))
    if stray:
        raise ValueError(f"detections name image ids absent from the GT file: {stray[:10]}")
    gts: dict[tuple[int, int], list[dict]] = defaultdict(list)
    for a in gt.get("annotations", []):
        if int(a["image_id"]) in image_index and int(a["category_id"]) in cat_index:
            gts[image_index[int(a["image_id"])], cat_index[int(a["category_id"])]].append(a)
    num_gt = np.zeros((len(image_ids), len(category_ids)), dtype=np.int64)
    for (i, k), group in gts.items():
        num_gt[i, k] = int((~_gt_flags(group)[0]).sum())
    dets = [d for d in detections if int(d["category_id"]) in cat_index]
    image = np.array([image_index[int(d["image_id"])] for d in dets], dtype=np.int64)
    cat = np.array([cat_index[int(d["category_id"])] for d in dets], dtype=np.int64)
    score = np.array([float(d["score"]) for d in dets], dtype=np.float64)
    boxes = np.array([d["bbox"] for d in dets], dtype=np.float64).reshape(-1, 4)
    # per image and category by score (stable: input order among ties), cut to max_dets; image-major
    order = np.lexsort((np.arange(len(dets)), -score, cat, image))
    group = image[order] * len(category_ids) + cat[order]
    starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]]) if len(order) else np.zeros(0, np.int64)
    rank = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    order = order[rank < max_dets]
    image, cat, score, boxes = image[order], cat[order], score[order], boxes[order]
    area = boxes[:, 2] * boxes[:, 3]
    outside = (area < AREA_ALL[0]) | (area > AREA_ALL[1])
    tp = np.zeros((len(order), len(IOU_THRESHOLDS)), dtype=bool)
    ignored = np.repeat(outside[:, None], len(IOU_THRESHOLDS), axis=1)  # unmatched: ignored when outside
    group = image * len(category_ids) + cat
    starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]]) if len(order) else np.zeros(0, np.int64)
    for a, b in zip(starts, np.r_[starts[1:], len(order)]):
        key = (int(image[a]), int(cat[a]))
        if key in gts:
            tp[a:b], ignored[a:b] = _match_group(boxes[a:b], outside[a:b], gts[key])
    final = np.lexsort((-score, cat))  # category, then score; stable, so ties keep the image order
    return ImageMatches(image_ids, category_ids, num_gt, image[final], cat[final], score[final],
                        tp[final].T.copy(), ignored[final].T.copy())


# ---------------------------------------------------------------- 2. re-accumulation, per resample
class _Plan:
    """Index arrays fixed by a run's matching, so that each resample is a few gathers and cumulative sums.

    A segment s = k * T + t holds the TP detections of category k at threshold t, in accumulation order
    (P points in all). Only TP points can carry the interpolated precision (precision drops at a false
    or ignored detection), so a recall threshold reads the highest precision from the first TP point
    whose recall reaches it to the end of its segment, and a segment's sum over the R thresholds is
    sum_j (highest precision from point j on) x (thresholds first reached at point j).
    """

    def __init__(self, m: ImageMatches):
        t_count, n = m.tp.shape
        k_count = len(m.category_ids)
        self.t_count, self.k_count, self.segments = t_count, k_count, k_count * t_count
        t_idx, pos = np.nonzero(m.tp)
        seg = m.det_category[pos] * t_count + t_idx
        order = np.lexsort((pos, seg))
        self.point_det, self.point_seg = pos[order], seg[order]
        self.point_cat = self.point_seg // t_count
        self.seg_start = np.searchsorted(self.point_seg, np.arange(self.segments + 1))
        self.first = np.zeros(len(pos), dtype=bool)  # the first point of its segment
        self.first[self.seg_start[:-1][self.seg_start[:-1] < self.seg_start[1:]]] = True
        self.cat_start = np.searchsorted(m.det_category, np.arange(k_count + 1))
        longest = int(np.diff(self.seg_start).max(initial=0))
        steps = [1 << s for s in range(max(longest - 1, 0).bit_length())]
        self.same = [(st, self.point_seg[:-st] == self.point_seg[st:]) for st in steps]  # suffix-max doubling
        ti, ipos = np.nonzero(m.ignored)
        ikey = np.sort((m.det_category[ipos] * t_count + ti) * (n + 1) + ipos)
        self.ign_det = ikey % (n + 1)
        self.has_ignored = len(ikey) > 0
        if self.has_ignored:  # per TP point: ignored detections of its segment before it
            self.ign_before = np.searchsorted(ikey, self.point_seg * (n + 1) + self.point_det)
            self.ign_start = np.searchsorted(ikey, self.point_seg * (n + 1))

    def precision_sums(self, m: ImageMatches, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(K, T) interpolated precision summed over the R recall thresholds, and (K,) "has GT", of the
        multiset of images `counts` (I,) int64."""
        w = counts[m.det_image]
        all_cum = np.concatenate(([0], np.cumsum(w)))
        seen = all_cum[self.point_det + 1] - all_cum[self.cat_start[self.point_cat]]
        tp_cum = np.concatenate(([0], np.cumsum(w[self.point_det])))
        tp = tp_cum[1:] - tp_cum[self.seg_start[self.point_seg]]
        fp = seen - tp
        if self.has_ignored:
            ign_cum = np.concatenate(([0], np.cumsum(w[self.ign_det])))
            fp = fp - (ign_cum[self.ign_before] - ign_cum[self.ign_start])
        best = tp / ((fp + tp) + EPS)  # becomes: the highest precision from each point to its segment's end
        for step, same in self.same:
            np.maximum(best[:-step], np.where(same, best[step:], 0.0), out=best[:-step])
        npig = counts @ m.num_gt  # (K,)
        need = _recall_counts(npig)  # (K, R) non-decreasing rows: TP count that reaches each threshold
        big = int(npig.max(initial=0)) + 1  # above any TP count or need: keeps categories apart
        flat = (need + np.arange(self.k_count)[:, None] * big).ravel()
        offset = self.point_cat * need.shape[1]
        reached = np.searchsorted(flat, tp + self.point_cat * big, side="right") - offset  # thresholds with need <= TP
        before = np.where(self.first, 0, np.concatenate(([0], reached[:-1])))
        sums = np.bincount(self.point_seg, weights=best * (reached - before), minlength=self.segments)
        return sums.reshape(self.k_count, self.t_count), npig > 0


def _recall_counts(npig: np.ndarray) -> np.ndarray:
    """(K,) GT counts -> (K, R) the least integer m with float64 m / npig >= each recall threshold (as
    pycocotools compares tp / npig against recThrs)."""
    n = np.maximum(npig, 1).astype(np.float64)[:, None]
    r = RECALL_THRESHOLDS[None, :]
    m = np.ceil(r * n).astype(np.int64)
    m = np.where((m > 0) & ((m - 1) / n >= r), m - 1, m)
    return np.where(m / n < r, m + 1, m)


def coco_ap(matches: ImageMatches, counts: np.ndarray | None = None) -> dict[str, float]:
    """AP, AP50 and AP75 (fractions; -1.0 when no category has GT) of the multiset of images `counts`
    (I,) (default: every image once, which is COCO's evaluation of the run)."""
    counts = np.ones(len(matches.image_ids), dtype=np.int64) if counts is None else np.asarray(counts, np.int64)
    sums, valid = matches._plan.precision_sums(matches, counts)
    if not valid.any():
        return {"AP": -1.0, "AP50": -1.0, "AP75": -1.0}
    sums, r = sums[valid], len(RECALL_THRESHOLDS)
    return {"AP": float(sums.sum() / (sums.size * r)), "AP50": float(sums[:, AP50].sum() / (len(sums) * r)),
            "AP75": float(sums[:, AP75].sum() / (len(sums) * r))}


def resample_counts(num_images: int, resamples: int, seed: int) -> np.ndarray:
    """(resamples, I) int64: how often each image is drawn in each bootstrap resample (I draws with
    replacement)."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, num_images, size=(resamples, num_images)) + np.arange(resamples)[:, None] * num_images
    return np.bincount(draws.ravel(), minlength=resamples * num_images).reshape(resamples, num_images)


def resampled_ap(matches: ImageMatches, counts: np.ndarray) -> np.ndarray:
    """(B,) AP of the run on each resample of `counts` (B, I); -1.0 where no category has GT."""
    out = np.empty(len(counts))
    for b, row in enumerate(counts):
        sums, valid = matches._plan.precision_sums(matches, row)
        out[b] = sums[valid].sum() / (sums[valid].size * len(RECALL_THRESHOLDS)) if valid.any() else -1.0
    return out


@dataclass(frozen=True)
class BootstrapInterval:
    """A difference in AP (fraction) on the full image set, and its percentile interval over resamples."""

    estimate: float
    low: float
    high: float
    resamples: int

    @property
    def significant(self) -> bool:
        return not self.low <= 0.0 <= self.high


def same_images(runs: Sequence[ImageMatches]) -> bool:
    """True when every run was evaluated on the same images and categories."""
    first = runs[0]
    return all(np.array_equal(r.image_ids, first.image_ids) and np.array_equal(r.category_ids, first.category_ids)
               for r in runs[1:])


def difference_interval(a: Sequence[np.ndarray], b: Sequence[np.ndarray], estimate: float,
                        level: float = 0.95) -> BootstrapInterval | None:
    """The `level` percentile interval of mean(a) - mean(b) over resamples, from each run's `resampled_ap`
    (B,) on the same resamples; a resample in which some run has no GT (-1) is left out. None when every
    resample is."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    keep = (a >= 0).all(axis=0) & (b >= 0).all(axis=0)
    if not keep.any():
        return None
    diffs = a[:, keep].mean(axis=0) - b[:, keep].mean(axis=0)
    low, high = np.percentile(diffs, [50 * (1 - level), 50 * (1 + level)])
    return BootstrapInterval(float(estimate), float(low), float(high), int(keep.sum()))


def paired_bootstrap(a: Sequence[ImageMatches], b: Sequence[ImageMatches], resamples: int = 1000, seed: int = 0,
                     level: float = 0.95) -> BootstrapInterval | None:
    """Mean AP of runs `a` minus mean AP of runs `b` (e.g. the seeds of two rows) on the full image set,
    with its `level` interval from `resamples` resamples of the val images, the same ones for every run."""
    runs = [*a, *b]
    if not a or not b:
        raise ValueError("paired_bootstrap: needs at least one run on each side")
    if not same_images(runs):
        raise ValueError("paired_bootstrap: the runs were evaluated on different images or categories")
    counts = resample_counts(len(runs[0].image_ids), resamples, seed)
    estimate = np.mean([coco_ap(r)["AP"] for r in a]) - np.mean([coco_ap(r)["AP"] for r in b])
    return difference_interval([resampled_ap(r, counts) for r in a], [resampled_ap(r, counts) for r in b],
                               float(estimate), level)


__all__ = ["ImageMatches", "BootstrapInterval", "IOU_THRESHOLDS", "RECALL_THRESHOLDS", "MAX_DETS", "load_gt",
           "box_iou_xywh", "match_detections", "coco_ap", "resample_counts", "resampled_ap", "same_images",
           "difference_interval", "paired_bootstrap"]
