"""Per-image COCO matching and the bootstrap over val images: parity with `evaluate_detections` (itself at
parity with pycocotools) on the fixtures of test_coco_eval, on subsets and on repeated images."""
from __future__ import annotations

import numpy as np
import pytest

from detector.evaluation.bootstrap import (RECALL_THRESHOLDS, _recall_counts, coco_ap, difference_interval,
                                           match_detections, paired_bootstrap, resample_counts, resampled_ap)
from detector.evaluation.coco_eval import evaluate_detections, write_json
from tests.test_coco_eval import make_gt, noisy_detections, perfect_detections

PARITY_ATOL = 1e-12  # measured: 2.2e-16 (summation order); the issue asks for 1e-6 or better
FIXTURES = [(0, 4, 6), (1, 4, 6), (2, 150, 6), (3, 4, 1), (4, 150, 1), (5, 0, 2)]  # seed, false per image, decimals


def assert_parity(got: dict, want: dict) -> None:
    for k in ("AP", "AP50", "AP75"):
        assert abs(got[k] - want[k]) <= PARITY_ATOL, (k, got[k], want[k])


@pytest.mark.parametrize("seed, false_per_image, score_decimals", FIXTURES)
def test_full_set_reproduces_evaluate_detections(tmp_path, seed, false_per_image, score_decimals):
    """Ties (1 decimal), > 100 detections per image (the maxDets cut), crowd hits, relabelled boxes."""
    gt = make_gt(num_images=6, seed=seed)
    gt_path = write_json(tmp_path / "gt.json", gt)
    dets = noisy_detections(gt, seed, false_per_image, score_decimals)
    want = evaluate_detections(gt_path, dets)
    assert 0.02 < want["AP"] < 0.95
    matches = match_detections(gt_path, dets)
    assert_parity(coco_ap(matches), want)
    ids = [2, 3, 5]  # a subset is the multiset with counts 0 / 1
    counts = np.isin(matches.image_ids, ids).astype(np.int64)
    assert_parity(coco_ap(matches, counts), evaluate_detections(gt_path, dets, image_ids=ids))


def test_repeated_images_equal_coco_on_the_copies(tmp_path):
    """An image drawn k times scores as k copies of it (new ids, adjacent) would under COCO."""
    gt = make_gt(seed=7)
    dets = noisy_detections(gt, 7, 150, 6)
    counts = np.array([2, 0, 1, 3, 1])
    copies = {"images": [], "annotations": [], "categories": gt["categories"]}
    copied_dets = []
    for img, k in zip(gt["images"], counts):
        for c in range(k):
            new_id = img["id"] * 10 + c
            copies["images"].append({**img, "id": new_id})
            copies["annotations"] += [{**a, "image_id": new_id} for a in gt["annotations"] if a["image_id"] == img["id"]]
            copied_dets += [{**d, "image_id": new_id} for d in dets if d["image_id"] == img["id"]]
    for i, a in enumerate(copies["annotations"], start=1):
        a["id"] = i
    want = evaluate_detections(write_json(tmp_path / "copies.json", copies), copied_dets)
    assert_parity(coco_ap(match_detections(gt, dets), counts), want)


def test_edge_cases(tmp_path):
    gt = make_gt()
    assert coco_ap(match_detections(gt, [])) == {"AP": 0.0, "AP50": 0.0, "AP75": 0.0}
    perfect = coco_ap(match_detections(gt, perfect_detections(gt)))
    assert all(v == pytest.approx(1.0, abs=1e-12) for v in perfect.values())
    no_gt = {**gt, "annotations": []}
    assert coco_ap(match_detections(no_gt, noisy_detections(gt)))["AP"] == -1.0  # as COCO: no category has GT
    unknown = [{**d, "category_id": 99} for d in noisy_detections(gt)]  # dropped, as COCOeval does
    assert coco_ap(match_detections(gt, unknown))["AP"] == 0.0
    with pytest.raises(ValueError, match="999"):
        match_detections(gt, [{"image_id": 999, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.5}])


def test_recall_counts_are_the_least_count_reaching_each_threshold():
    npig = np.arange(1, 3001)
    need = _recall_counts(npig)
    n = npig[:, None].astype(np.float64)
    assert (need / n >= RECALL_THRESHOLDS).all()
    assert ((need == 0) | ((need - 1) / n < RECALL_THRESHOLDS)).all()


def test_resample_counts_draw_with_replacement():
    counts = resample_counts(7, 50, seed=3)
    assert counts.shape == (50, 7) and (counts.sum(axis=1) == 7).all() and (counts >= 0).all()
    assert (counts == resample_counts(7, 50, seed=3)).all() and not (counts == resample_counts(7, 50, seed=4)).all()
    assert (counts.max(axis=1) > 1).any()  # some image drawn twice


def test_paired_bootstrap_of_a_run_against_itself_is_exactly_zero():
    gt = make_gt(num_images=8, seed=1)
    matches = match_detections(gt, noisy_detections(gt, 1))
    same = paired_bootstrap([matches], [matches], resamples=1000)
    assert (same.estimate, same.low, same.high, same.resamples) == (0.0, 0.0, 0.0, 1000)
    assert not same.significant
    other = match_detections(gt, noisy_detections(gt, 1))  # the same detections, matched again
    assert paired_bootstrap([other, matches], [matches, other], resamples=200) == same.__class__(0.0, 0.0, 0.0, 200)


def test_paired_bootstrap_difference_and_resample_agreement():
    gt = make_gt(num_images=8, seed=2)
    good = match_detections(gt, perfect_detections(gt))
    noisy = match_detections(gt, noisy_detections(gt, 2))
    diff = paired_bootstrap([good], [noisy], resamples=500, seed=5)
    assert diff.estimate == pytest.approx(1.0 - coco_ap(noisy)["AP"], abs=1e-12)
    assert 0.0 < diff.low <= diff.estimate <= diff.high and diff.significant
    counts = resample_counts(len(good.image_ids), 500, 5)
    aps = resampled_ap(noisy, counts)
    assert aps[3] == coco_ap(noisy, counts[3])["AP"]
    again = difference_interval([resampled_ap(good, counts)], [aps], diff.estimate)
    assert again == diff
    with pytest.raises(ValueError, match="different images"):
        paired_bootstrap([good], [match_detections(make_gt(num_images=3), [])])
