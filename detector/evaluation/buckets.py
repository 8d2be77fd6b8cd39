"""COCO AP on a bucket of the GTs: square vs slender objects (FreeAnchor Fig. 5) and sparse vs crowded images (Fig. 6).

FreeAnchor (Zhang et al., NeurIPS 2019, Sec. 4.2): "hand-crafted anchor assignment often fails in two situations:
Firstly, slender objects with acentric features; and secondly when multiple objects are provided in crowded
scenes"; Fig. 5 is a "Performance comparison on square and slender objects", Fig. 6 a "Performance comparison on
object crowdedness" ("As the number of objects in each image increased, the FreeAnchor's advantage over RetinaNet
became more and more obvious"). The paper's text gives no bucket boundaries (its figures did not survive our
text extraction, and would name COCO categories anyway), so these are anchorlab's choices:

  * aspect ratio of a box (x, y, w, h): max(w / h, h / w) (inf when w or h is 0), so 1 is square whatever the
    orientation. `eval.aspect_edges` [e0, e1] (default [2, 4]) make three buckets: "AP_square" [1, e0),
    "AP_oblong" [e0, e1), "AP_slender" [e1, inf). On the embedded val set (500 images, 5,110 GTs) the defaults
    hold 4,311 / 264 / 535 GTs; the rods (drawn 1:3 to 1:8, then rotated) are the slender ones, median ratio 4.9.
  * crowdedness of an image: its number of non-crowd GTs in the GT file. `eval.crowd_edges` [e0, e1] (default
    [5, 15]) make three image sets: "AP_sparse" [0, e0) (images without GT included: their detections are
    false positives, as in COCO AP), "AP_moderate" [e0, e1), "AP_crowded" [e1, inf). On the embedded val set the
    defaults hold 174 / 187 / 139 images (358 / 1,773 / 2,979 GTs).

How, with pycocotools' `COCOeval` itself (no AP of our own), bbox, maxDets 100, IoU 0.50:0.05:0.95:
  * aspect: COCO's area ranges applied to the aspect ratio. Every GT's and every detection's "area" is replaced
    by its box's aspect ratio, and `params.areaRng` holds the three buckets, so `evaluateImg` gives them COCO's
    area-range semantics exactly: a GT outside the bucket is ignored (as a crowd GT is), a detection matched to
    an ignored GT is ignored, and an unmatched detection outside the bucket (by its own aspect ratio) is ignored;
    an unmatched one inside is a false positive. COCO's ranges are closed ([lo, hi]); the upper bound is moved
    to the next float below it so that a ratio of exactly e0 falls in one bucket only. A bucket holding every
    box (edges above every ratio) gives COCO's AP exactly.
  * crowdedness: one `COCOeval` per bucket with `params.imgIds` = the bucket's images (not `accumulate(p)` over
    one evaluation: pycocotools indexes `evalImgs` by the position in `p.imgIds`, wrong for a subset).
  * AP of a bucket: the mean of `eval["precision"]` over IoU thresholds, recall points and the categories with
    GT in the bucket (what `summarize` prints as AP); -1 when the bucket holds no GT (COCO's "no GT").

Cost on the embedded val set (500 images, 5,110 GTs, the 46,442 detections of the quick profile's RetinaNet run;
2 CPU cores held by another training): aspect 3.3 s, crowd 1.2 s, both 4.2 s (one GT load), against 1.0 s for the
12 COCO stats with faster-coco-eval (5.6 s with pycocotools). Values there: AP_square / AP_oblong / AP_slender
11.6 / 5.6 / 13.2, AP_sparse / AP_moderate / AP_crowded 30.0 / 15.9 / 9.9 (AP 13.0). A bucket averages over
the categories with GT in it: AP_slender is mostly the rods' AP, AP_square that of the seven other shapes.
"""
from __future__ import annotations

import contextlib
import io
import math
from pathlib import Path

import numpy as np

from detector.evaluation.coco_eval import _check_ids, _empty_results, _load_detections

ASPECT_NAMES = ("AP_square", "AP_oblong", "AP_slender")
CROWD_NAMES = ("AP_sparse", "AP_moderate", "AP_crowded")
MAX_DETS = 100  # COCO's AP (and `summarize`'s) maxDets


def aspect_ratio(bbox: list[float]) -> float:
    """max(w / h, h / w) of an (x, y, w, h) box; inf when w or h is 0."""
    w, h = float(bbox[2]), float(bbox[3])
    short = min(w, h)
    return max(w, h) / short if short > 0 else math.inf


def bucket_bounds(edges: list[float], low: float) -> list[tuple[float, float]]:
    """[low, e0), [e0, e1), ..., [e_last, inf) as closed ranges [lo, hi] with hi the float just below each edge."""
    bounds = [low, *edges]
    return [(lo, float(np.nextafter(hi, -np.inf))) for lo, hi in zip(bounds, edges)] + [(edges[-1], math.inf)]


def _coco_ap(gt, res, image_ids: list[int], area_ranges: list[tuple[float, float]]) -> list[float]:
    """COCO AP (maxDets 100) of `res` on `image_ids` for each area range, from one `COCOeval`."""
    from pycocotools.cocoeval import COCOeval

    ev = COCOeval(gt, res, "bbox")
    ev.params.imgIds = list(image_ids)
    ev.params.areaRng = [list(r) for r in area_ranges]
    ev.params.areaRngLbl = [f"bucket{i}" for i in range(len(area_ranges))]
    ev.params.maxDets = [MAX_DETS]
    ev.evaluate()
    ev.accumulate()
    aps = []
    for a in range(len(area_ranges)):
        precision = ev.eval["precision"][:, :, :, a, 0]  # (T, R, K)
        held = precision[precision > -1]
        aps.append(float(np.mean(held)) if held.size else -1.0)
    return aps


def bucket_aps(
    gt: str | Path,
    detections: list[dict] | str | Path,
    image_ids: list[int] | None = None,
    aspect_edges: list[float] | None = None,
    crowd_edges: list[int] | None = None,
) -> dict[str, float]:
    """COCO AP per aspect-ratio bucket of the boxes and per crowdedness bucket of the images (module doc).

    Args:
        gt: path of a COCO instances JSON; detections: COCO results (list or path), original image pixels;
        image_ids: the images evaluated (default: every image of the GT file);
        aspect_edges: [e0, e1], 1 < e0 < e1, or None for no aspect buckets;
        crowd_edges: [e0, e1], 1 <= e0 < e1 (GTs per image), or None for no crowdedness buckets.
    Returns:
        {name: AP in [0, 1], or -1 without GT} for `ASPECT_NAMES` and / or `CROWD_NAMES`.
    """
    from pycocotools.coco import COCO

    for name, edges, low in (("aspect_edges", aspect_edges, 1.0), ("crowd_edges", crowd_edges, 1.0)):
        if edges is not None and (len(edges) != 2 or not low <= edges[0] < edges[1]):
            raise ValueError(f"{name}: expected [e0, e1] with {low:g} <= e0 < e1, got {edges}")
    dets = _load_detections(detections)
    out: dict[str, float] = {}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        coco = COCO(str(gt))
        _check_ids(coco, dets, image_ids)
        res = coco.loadRes(dets) if dets else _empty_results(COCO, coco)
        ids = sorted(set(image_ids)) if image_ids is not None else sorted(coco.getImgIds())
        if crowd_edges is not None:
            objects = {i: sum(not a.get("iscrowd", 0) for a in coco.imgToAnns.get(i, [])) for i in ids}
            for name, (lo, hi) in zip(CROWD_NAMES, bucket_bounds([float(e) for e in crowd_edges], 0.0)):
                subset = [i for i in ids if lo <= objects[i] <= hi]
                out[name] = _coco_ap(coco, res, subset, [(0.0, math.inf)])[0] if subset else -1.0
        if aspect_edges is not None:
            for ann in [*coco.anns.values(), *res.anns.values()]:  # COCO's area ranges, on the aspect ratio
                ann["area"] = aspect_ratio(ann["bbox"])
            ranges = bucket_bounds([float(e) for e in aspect_edges], 1.0)
            out.update(zip(ASPECT_NAMES, _coco_ap(coco, res, ids, ranges)))
    return out


__all__ = ["ASPECT_NAMES", "CROWD_NAMES", "MAX_DETS", "aspect_ratio", "bucket_bounds", "bucket_aps"]
