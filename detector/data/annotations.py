"""Reading a COCO annotation file and sorting out the annotations no reader can use, in one place.

Training (`coco.CocoDetection`) and `anchorlab data stats` read annotation files through here, so both
refuse the same broken files (one-line `DataError`) and skip, and count, the same annotations: the first
three buckets of `coco.DataReport`, checked in this order: unknown image id -> malformed (no 4 finite bbox
numbers) -> unknown category. What depends on an image's size or the crowd rule stays with the dataset.
"""
from __future__ import annotations

import json
import math
import os
from collections import Counter

from detector.data.errors import DataError

Bbox = tuple[float, float, float, float]  # x, y, w, h in original pixels (COCO's order)
SCREENED = ("unknown_image", "malformed", "unknown_category")  # the buckets `screen_annotations` counts


def read_annotations(ann_file: str) -> dict:
    """The file's JSON, checked to hold an 'images' list and objects with their ids; DataError otherwise."""
    if not os.path.isfile(ann_file):
        raise DataError(f"missing annotation file: {ann_file}")
    try:
        with open(ann_file) as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"malformed annotation file: {ann_file} ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DataError(f"malformed annotation file: {ann_file} (no 'images' list)")
    data.setdefault("annotations", [])
    data.setdefault("categories", [])
    for key in ("images", "annotations", "categories"):
        if not isinstance(data[key], list) or not all(isinstance(x, dict) for x in data[key]):
            raise DataError(f"malformed annotation file: {ann_file} ('{key}' must be a list of objects)")
    for key, required in (("images", "id"), ("annotations", "image_id"), ("categories", "id")):
        for x in data[key]:
            if required not in x:
                raise DataError(f"malformed annotation file: {ann_file} (an entry of '{key}' has no '{required}')")
    return data


def parse_bbox(ann: dict) -> Bbox | None:
    """The annotation's bbox as 4 finite floats, or None when it is missing or malformed."""
    bbox = ann.get("bbox")
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
        return None
    try:
        x, y, w, h = (float(v) for v in bbox)
    except (TypeError, ValueError):
        return None
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        return None
    return x, y, w, h


def screen_annotations(annotations: list[dict], image_ids, category_ids) -> tuple[dict, Counter]:
    """Usable annotations grouped by image, and a count per bucket of `SCREENED` of those left out.

    Returns ({image_id: [(annotation, bbox)]} in file order, Counter). An id is known when it is among
    `image_ids` / `category_ids` (any containers); every annotation is either returned or counted once.
    """
    known_images, known_cats = set(image_ids), set(category_ids)
    by_image: dict = {}
    dropped: Counter = Counter({k: 0 for k in SCREENED})
    for ann in annotations:
        if ann["image_id"] not in known_images:
            dropped["unknown_image"] += 1
            continue
        bbox = parse_bbox(ann)
        if bbox is None:
            dropped["malformed"] += 1
        elif ann.get("category_id") not in known_cats:
            dropped["unknown_category"] += 1
        else:
            by_image.setdefault(ann["image_id"], []).append((ann, bbox))
    return by_image, dropped


__all__ = ["Bbox", "SCREENED", "read_annotations", "parse_bbox", "screen_annotations"]
