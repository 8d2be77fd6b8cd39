"""COCO evaluation: faster-coco-eval against pycocotools run independently, plus edge cases."""
from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest

from detector.evaluation.coco_eval import STAT_NAMES, evaluate_detections, write_json

# faster-coco-eval 1.8.0 is not bit-identical to pycocotools 2.0.11: over 400 random fixtures of this
# file (ties, >100 detections per image included) the largest |diff| of any stat was 2.2e-16, i.e.
# one or two ulps of floating-point summation order. The bound is far below any reported digit.
PARITY_ATOL = 1e-12

IMAGE_W, IMAGE_H = 640, 480
# (w, h) per COCO area range: small < 32^2 <= medium < 96^2 <= large
SIZES = {"small": (20, 24), "medium": (50, 60), "large": (150, 200)}


def make_gt(num_images: int = 5, seed: int = 0) -> dict:
    """Images with boxes of every size and category, and one crowd box in image 1."""
    rng = np.random.RandomState(seed)
    images = [{"id": i, "width": IMAGE_W, "height": IMAGE_H, "file_name": f"{i}.png"}
              for i in range(1, num_images + 1)]
    categories = [{"id": c, "name": f"cat{c}"} for c in (1, 2, 5)]  # non-contiguous ids on purpose
    anns = []
    for img in images:
        for size, (w, h) in SIZES.items():
            for cat in rng.choice([1, 2, 5], size=2):
                x, y = rng.uniform(0, IMAGE_W - w), rng.uniform(0, IMAGE_H - h)
                anns.append({"image_id": img["id"], "category_id": int(cat), "bbox": [x, y, w, h],
                             "area": float(w * h), "iscrowd": 0})
    anns.append({"image_id": 1, "category_id": 2, "bbox": [300.0, 200.0, 200.0, 150.0], "area": 30000.0,
                 "iscrowd": 1})
    for i, a in enumerate(anns, start=1):
        a["id"] = i
    return {"info": {}, "images": images, "categories": categories, "annotations": anns}


def noisy_detections(gt: dict, seed: int = 0, false_per_image: int = 4, score_decimals: int = 6) -> list[dict]:
    """Jittered GT boxes (some missed, some relabelled), false positives, hits on the crowd box.

    More than 100 `false_per_image` exercises the maxDets=100 cut; few `score_decimals` make ties.
    """
    rng = np.random.RandomState(seed)
    dets = []
    for a in gt["annotations"]:
        x, y, w, h = a["bbox"]
        if a["iscrowd"]:
            dets.append({"image_id": a["image_id"], "category_id": a["category_id"],
                         "bbox": [x + 10, y + 10, 60.0, 50.0], "score": 0.7})
            continue
        if rng.rand() < 0.2:  # missed
            continue
        jitter = rng.normal(0, 0.05, size=4) * [w, h, w, h]
        cat = a["category_id"] if rng.rand() > 0.1 else 1 + (a["category_id"] % 2)
        dets.append({"image_id": a["image_id"], "category_id": int(cat),
                     "bbox": [x + jitter[0], y + jitter[1], max(w + jitter[2], 1.0), max(h + jitter[3], 1.0)],
                     "score": float(rng.uniform(0.3, 1.0))})
    for img in gt["images"]:
        for _ in range(false_per_image):
            w, h = rng.uniform(10, 200, size=2)
            dets.append({"image_id": img["id"], "category_id": int(rng.choice([1, 2, 5])),
                         "bbox": [float(rng.uniform(0, IMAGE_W - w)), float(rng.uniform(0, IMAGE_H - h)), w, h],
                         "score": float(rng.uniform(0.0, 0.8))})
    return [{**d, "bbox": [float(v) for v in d["bbox"]], "score": round(d["score"], score_decimals)} for d in dets]


def perfect_detections(gt: dict) -> list[dict]:
    return [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": list(a["bbox"]), "score": 0.9}
            for a in gt["annotations"] if not a["iscrowd"]]


def oracle(gt_path, dets_path, image_ids=None) -> dict[str, float]:
    """pycocotools' COCOeval, called directly as its README does."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(gt_path))
        coco_dt = coco_gt.loadRes(str(dets_path))
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        if image_ids is not None:
            ev.params.imgIds = image_ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return dict(zip(STAT_NAMES, (float(s) for s in ev.stats)))


@pytest.fixture
def gt_file(tmp_path):
    gt = make_gt()
    return gt, write_json(tmp_path / "gt.json", gt)


def assert_close(got: dict, want: dict, atol: float = PARITY_ATOL):
    assert list(got) == list(STAT_NAMES)
    diffs = {k: abs(got[k] - want[k]) for k in STAT_NAMES}
    assert max(diffs.values()) <= atol, diffs


@pytest.mark.parametrize("seed, false_per_image, score_decimals",
                         [(0, 4, 6), (1, 4, 6), (2, 150, 6), (3, 4, 1), (4, 150, 1)])
def test_faster_matches_pycocotools(tmp_path, seed, false_per_image, score_decimals):
    gt = make_gt(seed=seed)
    gt_path = write_json(tmp_path / "gt.json", gt)
    dets_path = write_json(tmp_path / "dets.json", noisy_detections(gt, seed, false_per_image, score_decimals))
    want = oracle(gt_path, dets_path)
    assert 0.02 < want["AP"] < 0.95  # the fixture is neither trivial nor hopeless
    assert len({want[k] for k in STAT_NAMES}) > 6  # and the stats differ from one another
    assert_close(evaluate_detections(gt_path, dets_path, backend="faster"), want)
    assert_close(evaluate_detections(gt_path, dets_path, backend="pycocotools"), want, atol=0.0)


def test_list_input_equals_file_input_and_is_not_mutated(gt_file, tmp_path):
    gt, gt_path = gt_file
    dets = noisy_detections(gt)
    before = json.dumps(dets)
    dets_path = write_json(tmp_path / "dets.json", dets)
    assert evaluate_detections(gt_path, dets) == evaluate_detections(gt_path, dets_path)
    assert json.dumps(dets) == before


def test_empty_detections_give_zero(gt_file):
    _, gt_path = gt_file
    for backend in ("faster", "pycocotools"):
        stats = evaluate_detections(gt_path, [], backend=backend)
        assert stats == {k: 0.0 for k in STAT_NAMES}, backend


def test_empty_detections_keep_minus_one_for_empty_area_range(tmp_path):
    gt = make_gt()
    gt["annotations"] = [a for a in gt["annotations"] if a["area"] < 96**2]  # no large GT, no crowd
    gt_path = write_json(tmp_path / "gt.json", gt)
    for backend in ("faster", "pycocotools"):
        stats = evaluate_detections(gt_path, [], backend=backend)
        assert stats["APl"] == -1.0 and stats["ARl"] == -1.0, backend
        assert all(v == 0.0 for k, v in stats.items() if k not in ("APl", "ARl")), backend


def test_perfect_detections_give_ap_one(gt_file):
    gt, gt_path = gt_file
    for backend in ("faster", "pycocotools"):
        stats = evaluate_detections(gt_path, perfect_detections(gt), backend=backend)
        for k in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100", "ARs", "ARm", "ARl"):
            assert stats[k] == pytest.approx(1.0, abs=1e-12), (backend, k)


def test_image_ids_restrict_evaluation(gt_file, tmp_path):
    gt, gt_path = gt_file
    dets = noisy_detections(gt)
    # image 2 becomes perfect, every other image gets only false positives
    dets = [d for d in dets if d["image_id"] != 2] + [d for d in perfect_detections(gt) if d["image_id"] == 2]
    dets_path = write_json(tmp_path / "dets.json", dets)
    only2 = evaluate_detections(gt_path, dets_path, image_ids=[2])
    assert only2["AP"] == pytest.approx(1.0, abs=1e-12)
    assert evaluate_detections(gt_path, dets_path)["AP"] < 1.0
    for ids in ([2], [1, 3]):
        assert_close(evaluate_detections(gt_path, dets_path, image_ids=ids), oracle(gt_path, dets_path, ids))


def test_bad_inputs_fail_loudly(gt_file):
    gt, gt_path = gt_file
    with pytest.raises(ValueError, match="backend"):
        evaluate_detections(gt_path, [], backend="nope")
    with pytest.raises(ValueError, match="image_ids"):
        evaluate_detections(gt_path, [], image_ids=[999])
    stray = [{"image_id": 999, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.5}]
    with pytest.raises(ValueError, match="999"):
        evaluate_detections(gt_path, stray)


def test_no_stdout_chatter(gt_file, capfd):
    gt, gt_path = gt_file
    for backend in ("faster", "pycocotools"):
        evaluate_detections(gt_path, noisy_detections(gt), backend=backend)
        evaluate_detections(gt_path, [], backend=backend)
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_write_json_is_atomic_and_leaves_no_temp(tmp_path):
    path = write_json(tmp_path / "sub" / "x.json", {"a": [1, 2]})
    assert json.loads(path.read_text()) == {"a": [1, 2]}
    with pytest.raises(TypeError):
        write_json(path, {"a": object()})  # not serialisable: the old file must survive intact
    assert json.loads(path.read_text()) == {"a": [1, 2]}
    assert [p.name for p in path.parent.iterdir()] == ["x.json"]
