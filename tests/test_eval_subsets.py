"""The optional metrics of `detector.evaluation.extra`: FreeAnchor's NMS recall on a hand-made case, COCO AP per
aspect-ratio and crowdedness bucket on hand-made GT files (with real pycocotools), their config switches and
edges, the study column check, and the wiring through `engine.evaluate`."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from detector.box_coder import BoxCoder
from detector.config import ConfigError, InferenceConfig
from detector.evaluation.buckets import aspect_ratio, bucket_aps, bucket_bounds
from detector.evaluation.coco_eval import evaluate_detections
from detector.evaluation.nms_recall import METRIC_NAMES as NR_NAMES, gt_overlaps, nms_recall
from detector.model.head import HeadOutput
from tests.conftest import TINY, tiny_config


# ---------------------------------------------------------------- NMS recall by hand
def _logit(p: float) -> float:
    return math.log(p / (1 - p))


# (anchor box xyxy, class, score): zero deltas decode every box to its anchor; the other class scores ~0
CANDIDATES = [
    ([0, 0, 40, 33], 0, 0.9),  # A at IoU 0.825, outscores and suppresses (IoU 0.825 > 0.5) ...
    ([0, 0, 40, 40], 0, 0.5),  # ... A's exact box
    ([60, 60, 100, 85], 0, 0.7),  # B at IoU 0.625, alone
    ([100, 100, 120, 120], 1, 0.3),  # C exactly, of the other class (NR reads no label)
    ([100, 100, 120, 120], 0, 0.04),  # C exactly again, below score_thresh 0.05: never a candidate
    ([80, 0, 120, 20], 0, 0.6),  # D at IoU exactly 0.5: not recalled at 0.50 (strict >)
    ([0, 60, 40, 100], 0, 0.8),  # E1 exactly; suppresses ...
    ([8, 60, 48, 100], 0, 0.75),  # ... E2's exact box (IoU 2/3 between them); E2 keeps IoU 2/3 with E1's box
]
GTS = [[0, 0, 40, 40], [60, 60, 100, 100], [100, 100, 120, 120], [80, 0, 120, 40], [0, 60, 40, 100],
       [8, 60, 48, 100]]  # A, B, C, D, E1, E2
# best IoU per GT (before NMS, after NMS)
EXPECTED = [(1.0, 0.825), (0.625, 0.625), (1.0, 1.0), (0.5, 0.5), (1.0, 1.0), (1.0, 2 / 3)]


def _hand_made(inference: InferenceConfig) -> torch.Tensor:
    anchors = torch.tensor([box for box, _, _ in CANDIDATES], dtype=torch.float32)
    logits = torch.full((1, len(CANDIDATES), 2), -20.0)
    for j, (_, cls, score) in enumerate(CANDIDATES):
        logits[0, j, cls] = _logit(score)
    out = HeadOutput(logits, torch.zeros(1, len(CANDIDATES), 4), None)
    gt_boxes = torch.tensor([GTS + [[0, 0, 0, 0]]], dtype=torch.float32)  # one padding row
    gt_valid = torch.tensor([[True] * len(GTS) + [False]])
    return gt_overlaps(out, anchors, [len(CANDIDATES)], torch.tensor([[128, 128]]), gt_boxes, gt_valid,
                       BoxCoder(), inference, "none")


def test_nms_recall_on_a_hand_made_case():
    overlaps = _hand_made(InferenceConfig())
    torch.testing.assert_close(overlaps, torch.tensor(EXPECTED), rtol=0, atol=1e-6)
    assert overlaps[3].tolist() == [0.5, 0.5]  # exactly: D must not count at 0.50
    # GTs recalled (IoU > tau) before / after NMS: 5/5 at 0.50-0.60 (D's 0.5 is not > 0.5); 4/4 at 0.65 (B out);
    # 4/3 at 0.70-0.80 (E2 at 2/3 after); 4/2 at 0.85-0.90 (A at 0.825 after)
    nr = nms_recall(overlaps)
    assert list(nr) == list(NR_NAMES) == ["NR", "NR50", "NR55", "NR60", "NR65", "NR70", "NR75", "NR80", "NR85",
                                          "NR90"]
    assert nr["NR50"] == 1.0 and nr["NR65"] == 1.0 and nr["NR70"] == 0.75 and nr["NR90"] == 0.5
    assert nr["NR"] == pytest.approx((4 * 1.0 + 3 * 0.75 + 2 * 0.5) / 9)


def test_nms_recall_ignores_the_top_k_and_the_detection_cap():
    """The official evaluation lifts pre_nms_top_n and the per-image cap: only the threshold and the NMS IoU count."""
    capped = _hand_made(InferenceConfig(pre_nms_topk=1, max_detections=1))
    assert torch.equal(capped, _hand_made(InferenceConfig()))
    loose = _hand_made(InferenceConfig(nms_thresh=0.9))  # nothing overlaps by more than 0.825: NMS keeps all
    assert torch.equal(loose[:, 0], loose[:, 1])
    none = _hand_made(InferenceConfig(score_thresh=0.95))  # no candidate: nothing recalled, before or after
    assert not none.any() and nms_recall(none)["NR"] == 0.0  # the official's count / max(count, 1)


@pytest.mark.parametrize("threshold_on", ["fused", "cls"])
def test_every_pair_above_the_threshold_is_a_candidate(threshold_on):
    """`candidates(topk=None)` (NR's before-NMS set) = a per-level top-k as large as the level, as a set."""
    from detector.postprocess import candidates

    torch.manual_seed(0)
    a, c = 50, 3
    anchors = torch.cat([torch.rand(a, 2) * 50, torch.rand(a, 2) * 50 + 60], 1)
    out = HeadOutput(torch.randn(2, a, c), torch.randn(2, a, 4) * 0.2, torch.randn(2, a))
    cfg = InferenceConfig(score_thresh=0.4, score_fusion="product", threshold_on=threshold_on)
    sizes = torch.tensor([[128, 128], [100, 120]])
    every = candidates(out, anchors, [30, 20], sizes, BoxCoder(), cfg, "product", topk=None)
    top = candidates(out, anchors, [30, 20], sizes, BoxCoder(), cfg, "product", topk=30 * c)

    def as_set(cands):
        image, anchor, boxes, scores, labels = cands
        return {(i, j, k, tuple(b), s) for i, j, k, b, s in zip(image.tolist(), anchor.tolist(), labels.tolist(),
                                                                  boxes.tolist(), scores.tolist())}

    assert len(every[0]) > 0 and as_set(every) == as_set(top)


def test_nms_recall_without_ground_truth_is_minus_one():
    assert nms_recall(torch.zeros(0, 2)) == dict.fromkeys(NR_NAMES, -1.0)
    with pytest.raises(ValueError, match="overlaps"):
        nms_recall(torch.zeros(3))


# ---------------------------------------------------------------- AP per bucket, hand-made GT files
def _write_gt(path: Path, images: dict[int, list[list[float]]], crowd: dict[int, list[list[float]]] | None = None):
    """A COCO GT file: images {id: [xywh boxes]} of one category (64 x 64 px; crowd boxes apart)."""
    anns = []
    for img, boxes in images.items():
        for box, is_crowd in [(b, 0) for b in boxes] + [(b, 1) for b in (crowd or {}).get(img, [])]:
            anns.append({"id": len(anns) + 1, "image_id": img, "category_id": 1, "bbox": box,
                         "area": box[2] * box[3], "iscrowd": is_crowd})
    gt = {"images": [{"id": i, "width": 64, "height": 64, "file_name": f"{i}.png"} for i in images],
          "categories": [{"id": 1, "name": "thing"}], "annotations": anns}
    path.write_text(json.dumps(gt))
    return path


def _dets(boxes_scores, image_id=1):
    return [{"image_id": image_id, "category_id": 1, "bbox": b, "score": s} for b, s in boxes_scores]


SQUARE = [[2, 2, 10, 10], [20, 2, 12, 10]]  # aspect 1, 1.2
SLENDER = [[2, 30, 40, 8], [50, 10, 6, 30]]  # aspect 5, 5


def test_aspect_buckets_score_square_and_slender_objects_apart(tmp_path):
    gt = _write_gt(tmp_path / "gt.json", {1: SQUARE + SLENDER})
    square_only = _dets([(b, 0.9) for b in SQUARE])
    got = bucket_aps(gt, square_only, aspect_edges=[2.0, 4.0])
    assert got == {"AP_square": 1.0, "AP_oblong": -1.0, "AP_slender": 0.0}  # no GT in [2, 4): COCO's -1
    # an unmatched square false positive is outside the slender bucket (ignored there, as COCO's area ranges);
    # an unmatched slender one is a false positive there
    perfect = _dets([(b, 0.8) for b in SQUARE + SLENDER])
    square_fp, slender_fp = _dets([([40, 40, 10, 10], 0.95)]), _dets([([40, 40, 20, 4], 0.95)])
    assert bucket_aps(gt, perfect + square_fp, aspect_edges=[2.0, 4.0])["AP_slender"] == 1.0
    # ranked FP, TP, TP on the 2 slender GTs: precision 2/3 at recall 1, the envelope at every recall point
    assert bucket_aps(gt, perfect + slender_fp, aspect_edges=[2.0, 4.0])["AP_slender"] == pytest.approx(2 / 3)


def test_one_bucket_holding_every_box_is_coco_ap(tmp_path):
    gt = _write_gt(tmp_path / "gt.json", {1: SQUARE + SLENDER, 2: [[5, 5, 20, 30]], 3: []},
                   crowd={2: [[30, 30, 30, 30]]})
    dets = (_dets([([2, 3, 10, 9], 0.9), ([20, 2, 12, 14], 0.3), ([2, 30, 30, 8], 0.6), ([40, 40, 9, 9], 0.7)])
            + _dets([([6, 5, 20, 28], 0.5), ([31, 31, 20, 20], 0.8)], image_id=2)
            + _dets([([1, 1, 8, 8], 0.4)], image_id=3))
    coco = evaluate_detections(gt, dets, backend="pycocotools")["AP"]
    assert 0 < coco < 1
    got = bucket_aps(gt, dets, aspect_edges=[50.0, 100.0], crowd_edges=[50, 100])
    assert got["AP_square"] == coco and got["AP_sparse"] == coco
    assert got["AP_oblong"] == got["AP_slender"] == got["AP_moderate"] == got["AP_crowded"] == -1.0


def test_bucket_edges_are_half_open():
    assert aspect_ratio([0, 0, 20, 10]) == aspect_ratio([0, 0, 10, 20]) == 2.0
    assert aspect_ratio([0, 0, 0, 10]) == math.inf
    (sq_lo, sq_hi), (ob_lo, _), (sl_lo, sl_hi) = bucket_bounds([2.0, 4.0], 1.0)
    assert sq_lo == 1.0 and sq_hi < 2.0 == ob_lo and sl_lo == 4.0 and sl_hi == math.inf


def test_crowd_buckets_split_images_by_their_number_of_objects(tmp_path):
    grid = [[8 * (i % 8), 8 * (i // 8), 6, 6] for i in range(24)]
    # image 1: 2 objects (a crowd box does not count), image 2: 6, image 3: 20
    gt = _write_gt(tmp_path / "gt.json", {1: grid[:2], 2: grid[:6], 3: grid[:20]}, crowd={1: [[0, 40, 20, 20]] * 4})
    dets = (_dets([(b, 0.9) for b in grid[:2]], 1) + _dets([(b, 0.9 - 0.1 * i) for i, b in enumerate(grid[:3])], 2)
            + _dets([([b[0] + 1, b[1], 6, 6], 0.5) for b in grid[3:6]], 2))
    got = bucket_aps(gt, dets, crowd_edges=[5, 15])
    assert got["AP_sparse"] == 1.0 and got["AP_crowded"] == 0.0
    assert got["AP_moderate"] == evaluate_detections(gt, dets, backend="pycocotools", image_ids=[2])["AP"]
    assert set(got) == {"AP_sparse", "AP_moderate", "AP_crowded"}
    with pytest.raises(ValueError, match=r"crowd_edges: expected \[e0, e1\]"):
        bucket_aps(gt, dets, crowd_edges=[15, 5])


# ---------------------------------------------------------------- config and study columns
@pytest.mark.parametrize("delta, message", [
    ({"nms_recall": "yes"}, "eval.nms_recall: expected true/false, got 'yes'"),
    ({"aspect_edges": [4.0, 2.0]}, "eval.aspect_edges: expected two increasing edges [e0, e1] (three buckets), "
                                   "got [4.0, 2.0]"),
    ({"aspect_edges": [1.0, 2.0]}, "eval.aspect_edges[0]: must be > 1, got 1.0"),
    ({"crowd_edges": [5]}, "eval.crowd_edges: expected two increasing edges [e0, e1] (three buckets), got [5]"),
])
def test_a_bad_eval_value_is_one_line_naming_the_key(delta, message):
    with pytest.raises(ConfigError) as info:
        tiny_config(eval=delta)
    assert str(info.value) == message


def test_bucket_edges_enter_the_run_key_only_when_their_metric_is_on():
    from detector.run_key import run_key

    assert run_key(tiny_config(eval={"aspect_edges": [3.0, 5.0]})) == run_key(tiny_config())
    on = tiny_config(eval={"aspect_ap": True})
    assert run_key(on) != run_key(tiny_config())
    assert run_key(tiny_config(eval={"aspect_ap": True, "aspect_edges": [3.0, 5.0]})) != run_key(on)


def _study(folder: Path, metrics: list[str], overrides: dict | None = None) -> Path:
    body = {"name": "demo", "description": "d", "paper": {"title": "T", "table": "Fig. 5", "file": "x.txt"},
            "base": TINY, "seeds": [0], "metrics": metrics, "overrides": overrides or {},
            "profiles": {"smoke": {"overrides": {"train.iterations": 4}}},
            "rows": [{"label": "Max IoU", "overrides": {"assign.name": "max_iou"}}]}
    path = folder / "demo.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


def test_a_study_names_an_extra_column_only_when_its_runs_compute_it(tmp_path):
    from ablation.study.expand import expand, load_study
    from ablation.study.source import StudyError
    from ablation.tables.build import build_table
    from ablation.tables.render import render

    with pytest.raises(StudyError) as info:
        load_study(_study(tmp_path, ["AP", "AP_slender", "NR"]))
    message = str(info.value)
    assert "\n" not in message and message.endswith(
        "metrics name AP_slender, NR, which eval.aspect_ap, eval.nms_recall=false does not compute; set "
        "eval.aspect_ap: true, eval.nms_recall: true")
    study = load_study(_study(tmp_path, ["AP", "AP_slender", "NR"], {"eval": {"aspect_ap": True, "nms_recall": True}}))
    (run,) = expand(study, "smoke")
    frame = pd.DataFrame([{"run_id": "r0", "experiment_id": "1", "run_name": run.run_name, "status": "FINISHED",
                           "start_time": 0, "end_time": 0, "tags.run_key": run.key, "tags.role": "row",
                           "metrics.val/AP": 0.3, "metrics.val/AP_slender": 0.25, "metrics.val/NR": 0.8}])
    table = build_table(study, "smoke", frame)
    md = render(table, "md")
    assert "| Method | AP | AP_slender | NR |" in md and "| Max IoU | 30.0† | 25.0† | 80.0† |" in md
    assert r"AP\_slender" in render(table, "latex")


# ---------------------------------------------------------------- wiring: a run's evaluation reports them
def test_an_evaluation_reports_the_metrics_its_config_turns_on(workspace, one_thread):
    from detector.data.build import build_datasets
    from detector.engine.evaluate import evaluate_metrics
    from detector.model.detector import DenseDetector

    cfg = tiny_config(eval={"nms_recall": True, "aspect_ap": True, "crowd_ap": True},
                      inference={"score_thresh": 0.0})  # an untrained head scores ~0.01: let candidates through
    _, val_set = build_datasets(cfg, workspace)
    torch.manual_seed(0)
    model = DenseDetector(cfg.model, val_set.num_classes).eval()
    got = evaluate_metrics(model, val_set, cfg, torch.device("cpu"))
    for name in [*NR_NAMES, "AP_square", "AP_oblong", "AP_slender", "AP_sparse", "AP_moderate", "AP_crowded"]:
        assert name in got and (got[name] == -1.0 or 0.0 <= got[name] <= 1.0), name
    assert got["NR50"] > 0  # every anchor is a candidate: some GT is recalled before NMS, and NMS keeps some
    plain = evaluate_metrics(model, val_set, tiny_config(inference={"score_thresh": 0.0}), torch.device("cpu"))
    assert plain == {k: v for k, v in got.items() if k in plain} and "NR" not in plain
