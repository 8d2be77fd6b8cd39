"""Summary statistics of a COCO-format detection dataset (the synthetic benchmark or any other).

Per split: image and object counts, objects per image, box sizes (sqrt(w*h) of the bbox, bins
matching FPN strides 8..128), box aspect ratios (w/h, log-symmetric bins), per-category counts and
the COCO small/medium/large shares (by the annotation `area`, thresholds 32^2 and 96^2 as in
pycocotools). Crowd annotations are counted separately and left out of every histogram. Files are read,
and annotations training cannot use (unknown image or category, no valid bbox) left out and counted, by
the code training uses (`detector.data.annotations`), so both tell the same story about one file.
"""
from __future__ import annotations

import math
from pathlib import Path

from detector.data.annotations import SCREENED, read_annotations, screen_annotations

COUNT_EDGES = [0, 1, 2, 4, 8, 16, 32, 64]  # objects per image: bin i holds [edge_i, edge_i+1)
SIZE_EDGES = [0, 8, 16, 32, 64, 128, 256]  # sqrt(w*h) px; the last bin is open
ASPECT_EDGES = [1 / 8, 1 / 4, 1 / 2, 2 / 3, 3 / 2, 2, 4, 8]  # w/h; open bins below the first and above the last
ASPECT_LABELS = ["<1/8", "1/8-1/4", "1/4-1/2", "1/2-2/3", "2/3-3/2", "3/2-2", "2-4", "4-8", ">=8"]
COCO_AREA = (32 ** 2, 96 ** 2)  # small < 32^2 <= medium < 96^2 <= large
SLENDER_ASPECT = 4.0  # a box counts as slender when max(w/h, h/w) >= this
OCCLUDED = 0.95  # an annotation with a `visible` share (synthetic set) below this counts as occluded


def _bin(value: float, edges: list[float]) -> int:
    """Number of edges <= value: 0 for (-inf, e0), i for [e_(i-1), e_i), len(edges) for [e_last, inf)."""
    i = 0
    while i < len(edges) and value >= edges[i]:
        i += 1
    return i


def _range_labels(edges: list[float], integer: bool) -> list[str]:
    """'2-3' for integer bins [2, 4), '8-16' for continuous ones; the last bin is 'e+'."""
    if integer:
        labels = [f"{a}-{b - 1}" if b - a > 1 else f"{a}" for a, b in zip(edges, edges[1:])]
    else:
        labels = [f"{a:g}-{b:g}" for a, b in zip(edges, edges[1:])]
    return labels + [f"{edges[-1]:g}+"]


def _split_stats(coco: dict) -> dict:
    images = coco["images"]
    names = {c["id"]: str(c.get("name", c["id"])) for c in coco["categories"]}
    by_image, dropped = screen_annotations(coco["annotations"], (img["id"] for img in images), names)
    usable = [pair for pairs in by_image.values() for pair in pairs]
    objects = [(a, bbox) for a, bbox in usable if not a.get("iscrowd", 0)]
    anns = [a for a, _ in objects]
    counts = [sum(not a.get("iscrowd", 0) for a, _ in by_image.get(img["id"], [])) for img in images]

    count_hist = [0] * len(COUNT_EDGES)
    for n in counts:
        count_hist[_bin(n, COUNT_EDGES) - 1] += 1
    size_hist = [0] * len(SIZE_EDGES)
    aspect_hist = [0] * (len(ASPECT_EDGES) + 1)
    area_split = [0, 0, 0]
    per_category = {name: 0 for name in names.values()}
    slender = 0
    occluded = [a["visible"] < OCCLUDED for a in anns if "visible" in a]
    for a, (_, _, w, h) in objects:
        size_hist[_bin(math.sqrt(max(w * h, 0.0)), SIZE_EDGES) - 1] += 1
        if w > 0 and h > 0:
            ar = w / h
            aspect_hist[_bin(ar, ASPECT_EDGES)] += 1
            slender += max(ar, 1 / ar) >= SLENDER_ASPECT
        area = a.get("area")
        area = float(area) if isinstance(area, (int, float)) else w * h  # not read by training: no reason to fail
        area_split[_bin(area, list(COCO_AREA))] += 1
        per_category[names[a["category_id"]]] += 1
    n_obj = len(anns)

    def share(k: int) -> float:
        return k / n_obj if n_obj else 0.0

    return {
        "images": len(images),
        "objects": n_obj,
        "crowd": len(usable) - n_obj,
        "skipped": dict(dropped),  # annotations left out, per bucket of `annotations.SCREENED`
        "images_without_objects": sum(n == 0 for n in counts),
        "objects_per_image": {
            "mean": n_obj / len(images) if images else 0.0,
            "min": min(counts, default=0),
            "max": max(counts, default=0),
            "hist": dict(zip(_range_labels(COUNT_EDGES, integer=True), count_hist)),
        },
        "size_hist": dict(zip(_range_labels(SIZE_EDGES, integer=False), size_hist)),
        "aspect_hist": dict(zip(ASPECT_LABELS, aspect_hist)),
        "slender_share": share(slender),
        "occluded_share": sum(occluded) / len(occluded) if occluded else None,
        "per_category": per_category,
        "coco_area_share": {"small": share(area_split[0]), "medium": share(area_split[1]),
                            "large": share(area_split[2])},
    }


def dataset_stats(path: str | Path) -> dict:
    """Statistics of a dataset dir holding instances_<split>.json, or of one COCO JSON file.

    Returns {'path': str, 'splits': {split: {...}}}; see `_split_stats` for the per-split keys. A missing
    folder or file raises FileNotFoundError, a malformed file `DataError`, both one line naming it.
    """
    path = Path(path)
    if path.is_file():
        files = {path.stem.removeprefix("instances_"): path}
    else:
        files = {p.stem.removeprefix("instances_"): p for p in sorted(path.glob("instances_*.json"))}
        if not files:
            raise FileNotFoundError(f"no instances_*.json in {path}")
    return {"path": str(path), "splits": {s: _split_stats(read_annotations(str(p))) for s, p in files.items()}}


def _table(title: str, hist: dict, total: int) -> list[str]:
    width = max([len(title)] + [len(k) for k in hist])
    lines = [f"  {title:<{width}}  {'count':>7}  {'share':>6}"]
    for label, n in hist.items():
        pct = 100.0 * n / total if total else 0.0
        lines.append(f"  {label:<{width}}  {n:>7}  {pct:>5.1f}%")
    return lines


def _skipped_text(skipped: dict[str, int]) -> str:
    parts = [f"{skipped[k]} {k.replace('_', ' ')}" for k in SCREENED if skipped.get(k)]
    return f"; skipped as training does: {', '.join(parts)} annotation(s)" if parts else ""


def format_stats(stats: dict) -> str:
    """Plain-text tables, one block per split."""
    blocks = []
    for split, s in stats["splits"].items():
        opi = s["objects_per_image"]
        area = s["coco_area_share"]
        lines = [
            f"== {split}: {s['images']} images, {s['objects']} objects"
            + (f" (+{s['crowd']} crowd)" if s["crowd"] else "")
            + _skipped_text(s["skipped"]),
            f"  objects/image mean {opi['mean']:.2f}  min {opi['min']}  max {opi['max']}"
            f"  images without objects {s['images_without_objects']}",
            f"  COCO area: small {100 * area['small']:.1f}%  medium {100 * area['medium']:.1f}%"
            f"  large {100 * area['large']:.1f}%"
            f"   slender (aspect >= {SLENDER_ASPECT:g}:1) {100 * s['slender_share']:.1f}%"
            + ("" if s["occluded_share"] is None else
               f"   occluded (< {100 * OCCLUDED:g}% visible) {100 * s['occluded_share']:.1f}%"),
        ]
        lines += _table("objects/image", opi["hist"], s["images"])
        lines += _table("size sqrt(wh)", s["size_hist"], s["objects"])
        lines += _table("aspect w/h", s["aspect_hist"], s["objects"])
        lines += _table("category", s["per_category"], s["objects"])
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


__all__ = ["dataset_stats", "format_stats"]
