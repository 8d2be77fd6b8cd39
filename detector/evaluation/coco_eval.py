"""COCO bbox evaluation: the 12 standard stats from faster-coco-eval, with pycocotools as the oracle.

Both backends read the same inputs and return the same dict; `tests/test_coco_eval.py` checks that
they agree. Detections are the COCO results format: `[{"image_id", "category_id",
"bbox": [x, y, w, h], "score"}]` in the pixel frame of the original image.

Deviations from calling the libraries directly:
  * an empty detection list is evaluated as an empty result set (pycocotools' `loadRes` crashes on
    it), so every stat whose area range holds GT is 0.0 and one whose range holds none stays -1;
  * the caller's detection dicts are copied first (both `loadRes` implementations add keys in place);
  * the libraries' progress prints are swallowed.
"""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

from detector.files import atomic_write

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
BACKENDS = ("faster", "pycocotools")


def _silent(*args: Any, **kwargs: Any) -> None:
    """print_function for faster-coco-eval: drop its progress lines."""


def _load_detections(detections: list[dict] | str | Path) -> list[dict]:
    if isinstance(detections, (str, Path)):
        with open(detections) as f:
            detections = json.load(f)
    if not isinstance(detections, list):
        raise ValueError(f"detections: expected a list of COCO results, got {type(detections).__name__}")
    return [dict(d) for d in detections]


def _empty_results(coco_cls: type, gt: Any) -> Any:
    """A results object with the GT's images and categories and no annotations."""
    res = coco_cls()
    res.dataset = {"images": list(gt.dataset["images"]), "categories": list(gt.dataset.get("categories", [])),
                   "annotations": []}
    res.createIndex()
    return res


def _check_ids(gt: Any, dets: list[dict], image_ids: list[int] | None) -> None:
    known = set(gt.getImgIds())
    stray = {d["image_id"] for d in dets} - known
    if stray:
        raise ValueError(f"detections name image ids absent from the GT file: {sorted(stray)[:10]}")
    if image_ids is not None and set(image_ids) - known:
        raise ValueError(f"image_ids absent from the GT file: {sorted(set(image_ids) - known)[:10]}")


def _run(backend: str, gt_path: str, dets: list[dict], image_ids: list[int] | None) -> list[float]:
    if backend == "faster":
        from faster_coco_eval import COCO, COCOeval_faster

        gt = COCO(gt_path, print_function=_silent)
        _check_ids(gt, dets, image_ids)
        res = gt.loadRes(dets) if dets else _empty_results(COCO, gt)
        ev = COCOeval_faster(gt, res, "bbox", print_function=_silent)
    else:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        gt = COCO(gt_path)
        _check_ids(gt, dets, image_ids)
        res = gt.loadRes(dets) if dets else _empty_results(COCO, gt)
        ev = COCOeval(gt, res, "bbox")
    if image_ids is not None:
        ev.params.imgIds = sorted(set(image_ids))
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return [float(s) for s in ev.stats[: len(STAT_NAMES)]]


def evaluate_detections(
    gt: str | Path,
    detections: list[dict] | str | Path,
    backend: str = "faster",
    image_ids: list[int] | None = None,
) -> dict[str, float]:
    """COCO bbox evaluation of `detections` against the GT annotation file `gt`.

    Args:
        gt: path of a COCO instances JSON.
        detections: COCO results list, or a path to such a JSON.
        backend: "faster" (faster-coco-eval) or "pycocotools" (the reference implementation).
        image_ids: evaluate only these images (default: every image of the GT file); an empty list
            is an error rather than a silent "evaluate nothing".

    Returns:
        {name: value} for the 12 names of `STAT_NAMES`, floats; -1.0 where COCO reports that no GT
        falls in the stat's area range.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend: '{backend}' is not one of {', '.join(BACKENDS)}")
    if image_ids is not None and len(image_ids) == 0:
        raise ValueError("image_ids: empty list; pass None to evaluate every image")
    dets = _load_detections(detections)
    # faster-coco-eval takes a print function; pycocotools prints, so its stdout is redirected.
    quiet = contextlib.redirect_stdout(io.StringIO()) if backend == "pycocotools" else contextlib.nullcontext()
    with quiet:
        stats = _run(backend, str(gt), dets, image_ids)
    return dict(zip(STAT_NAMES, stats))


def write_json(path: str | Path, obj: Any) -> Path:
    """Write `obj` as JSON atomically (`files.atomic_write`)."""
    path = Path(path)
    with atomic_write(path) as f:
        json.dump(obj, f)
    return path


__all__ = ["STAT_NAMES", "BACKENDS", "evaluate_detections", "write_json"]
