"""VOC: the XML reader (1-based boxes, difficult objects, bad data), VOC07 mAP (hand-computed 11-point and area
APs, difficult GTs, duplicates, both IoU conventions, parity with the devkit's loop), and VOC mAP as a run's
metric and a study column."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from detector.config import ConfigError, build_config
from detector.data.build import build_datasets
from detector.data.errors import DataError
from detector.data.voc import VOC_CLASSES, to_coco
from detector.evaluation.coco_eval import evaluate_detections
from detector.evaluation.voc_eval import (ap_11point, ap_area, class_aps, evaluate_voc, match_class,
                                          voc_class_aps)
from detector.run_key import run_key
from tests.conftest import tiny_config

SIZES = {"data": {"min_size": [32], "max_size": 64, "test_min_size": 32}}


# ---------------------------------------------------------------- a hand-made VOC folder
def write_voc(root: Path, images: dict, splits: dict) -> Path:
    """images: {id: {"size": (w, h) | None, "objects": [(name, difficult, (xmin, ymin, xmax, ymax))],
    "image": True | False | bytes}}; splits: {name: [ids]}."""
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for voc_id, spec in images.items():
        w, h = spec.get("size") or spec["true_size"]
        image = spec.get("image", True)
        if image is True:
            Image.new("RGB", (w, h), (90, 120, 150)).save(root / "JPEGImages" / f"{voc_id}.jpg")
        elif isinstance(image, bytes):
            (root / "JPEGImages" / f"{voc_id}.jpg").write_bytes(image)
        size = (f"<size><width>{w}</width><height>{h}</height><depth>3</depth></size>" if spec.get("size") else "")
        objects = "".join(
            f"<object><name>{name}</name><pose>Unspecified</pose><truncated>0</truncated>"
            f"<difficult>{int(difficult)}</difficult><bndbox><xmin>{box[0]}</xmin><ymin>{box[1]}</ymin>"
            f"<xmax>{box[2]}</xmax><ymax>{box[3]}</ymax></bndbox></object>"
            for name, difficult, box in spec["objects"])
        (root / "Annotations" / f"{voc_id}.xml").write_text(
            f"<annotation><folder>VOC2007</folder><filename>{voc_id}.jpg</filename>{size}{objects}</annotation>")
    for name, ids in splits.items():
        (root / "ImageSets" / "Main" / f"{name}.txt").write_text("".join(f"{i}\n" for i in ids))
    return root


IMAGES = {
    "000001": {"size": (40, 30), "objects": [("dog", 0, (1, 1, 10, 20)), ("person", 1, (5, 5, 15, 15))]},
    "000002": {"size": (32, 24), "objects": [("car", 0, (1, 1, 32, 24)), ("unicorn", 0, (2, 2, 5, 5)),
                                             ("cat", 0, ("abc", 2, 5, 5))]},
}


@pytest.fixture
def voc_root(tmp_path) -> Path:
    both, last = ["000001", "000002"], ["000002"]
    return write_voc(tmp_path / "VOC2007", IMAGES, {"train": both, "val": last, "trainval": both, "test": last})


def voc_config(root: Path, **data) -> object:
    return build_config({"data": {**SIZES["data"], "dataset": "voc", "voc": {"root": str(root)}, **data}})


def test_reader_turns_1_based_inclusive_boxes_into_continuous_ones_and_difficult_into_crowd(voc_root):
    coco, report = to_coco(voc_root, "train", list(VOC_CLASSES))
    anns = coco["annotations"]
    # (1, 1, 10, 20) covers pixels 1..10 x 1..20 (1-based, inclusive): continuous x 0..10, y 0..20
    assert [a["bbox"] for a in anns] == [[0.0, 0.0, 10.0, 20.0], [4.0, 4.0, 11.0, 11.0], [0.0, 0.0, 32.0, 24.0]]
    assert [(a["iscrowd"], a["difficult"]) for a in anns] == [(0, 0), (1, 1), (0, 0)]
    assert [coco["categories"][a["category_id"] - 1]["name"] for a in anns] == ["dog", "person", "car"]
    assert [(i["id"], i["file_name"], i["width"], i["height"]) for i in coco["images"]] == [
        (1, "JPEGImages/000001.jpg", 40, 30), (2, "JPEGImages/000002.jpg", 32, 24)]
    assert (report.images, report.objects, report.difficult, report.dropped_unknown_class,
            report.dropped_malformed) == (2, 3, 1, 1, 1)
    names, _ = to_coco(voc_root, "train", ["car", "cat", "dog", "person", "unicorn"])
    assert len(names["annotations"]) == 4  # unicorn is a class now; the malformed cat is still left out


def test_datasets_read_voc_like_coco_with_difficult_as_ignore_regions(voc_root, tmp_path):
    train, val = build_datasets(voc_config(voc_root, voc={"root": str(voc_root), "train_split": "train",
                                                          "val_split": "val"}), tmp_path / "ws")
    assert [c["name"] for c in train.categories] == list(VOC_CLASSES) and val.categories == train.categories
    np.testing.assert_array_equal(train.boxes[0], [[0, 0, 10, 20]])
    np.testing.assert_array_equal(train.ignore[0], [[4, 4, 15, 15]])
    assert train.labels[0].tolist() == [VOC_CLASSES.index("dog")] and train.labels[1].tolist() == [6]
    assert (train.report.annotations_kept, train.report.crowd_ignored) == (2, 1)
    assert tuple(train.load(0)["image"].shape) == (3, 30, 40) and len(val) == 1
    assert len(list((tmp_path / "ws" / "data" / "voc").glob("*.json"))) == 2  # one converted file per split
    dropped, _ = build_datasets(voc_config(voc_root, crowd="drop", voc={"root": str(voc_root), "train_split": "train",
                                                                         "val_split": "val"}), tmp_path / "ws")
    assert dropped.report.crowd_dropped == 1 and len(dropped.ignore[0]) == 0


def test_classes_from_the_data_and_a_size_from_the_image_header(tmp_path):
    images = {"a": {"true_size": (20, 10), "objects": [("zebra", 0, (1, 1, 5, 5)), ("ant", 0, (2, 2, 6, 6))]},
              "b": {"true_size": (8, 8), "image": b"not an image", "objects": []}}
    root = write_voc(tmp_path / "custom", images, {"trainval": ["a", "b"], "test": ["a"]})
    train, _ = build_datasets(voc_config(root, voc={"root": str(root), "classes": "data"}), tmp_path / "ws")
    assert [c["name"] for c in train.categories] == ["ant", "zebra"] and train.sizes == [(10, 20)]
    _, report = to_coco(root, "trainval", ["ant", "zebra"])
    assert (report.images, report.images_unreadable) == (1, 1)  # no size anywhere: skipped and counted


@pytest.mark.parametrize("breakage, message", [
    ("xml", "malformed VOC annotation file: .*000003.xml"),
    ("no_xml", "missing VOC annotation file: .*000003.xml"),
    ("image", "missing image: .*000003.jpg"),
    ("image_no_size", "missing image: .*000003.jpg"),
    ("split", "missing VOC image set: .*trainval.txt"),
])
def test_bad_voc_data_is_one_line_naming_the_file(tmp_path, breakage, message):
    spec = {"size": None if breakage == "image_no_size" else (16, 16), "true_size": (16, 16),
            "image": breakage not in ("image", "image_no_size"), "objects": [("dog", 0, (1, 1, 8, 8))]}
    root = write_voc(tmp_path / "v", {"000003": spec}, {} if breakage == "split" else {"trainval": ["000003"],
                                                                                       "test": ["000003"]})
    if breakage == "xml":
        (root / "Annotations" / "000003.xml").write_text("<annotation><object>")
    if breakage == "no_xml":
        (root / "Annotations" / "000003.xml").unlink()
    with pytest.raises(DataError, match=message) as info:
        build_datasets(voc_config(root), tmp_path / "ws")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("delta, message", [
    ({"data": {"dataset": "voc"}}, "data.voc.root: required"),
    ({"data": {"dataset": "voc", "voc": {"root": "x", "val_split": "../test"}}}, "data.voc.val_split: expected"),
    ({"data": {"voc": {"classes": "coco"}}}, "data.voc.classes: 'coco' is not one of voc, data"),
    ({"eval": {"voc_metric": "07"}}, "eval.voc_metric: '07' is not one of none, 11point, area, both"),
    ({"eval": {"voc_iou": "plus_one"}}, "eval.voc_iou: 'plus_one' is not one of continuous, legacy"),
])
def test_config_errors_name_the_key(delta, message):
    with pytest.raises(ConfigError, match=message):
        build_config(delta)


def test_run_key_of_voc_data_is_its_content_not_its_folder(voc_root, tmp_path):
    key = run_key(voc_config(voc_root))
    moved = shutil.copytree(voc_root, tmp_path / "elsewhere")
    assert run_key(voc_config(moved)) == key
    xml = moved / "Annotations" / "000002.xml"
    xml.write_text(xml.read_text().replace("<xmax>32</xmax>", "<xmax>31</xmax>"))
    assert run_key(voc_config(moved)) != key
    with pytest.raises(ConfigError, match="missing VOC root folder"):
        run_key(voc_config(tmp_path / "nowhere"))
    # the VOC section and the VOC metric's IoU mean nothing when unused; the VOC metric is a result
    assert run_key(tiny_config(data={"voc": {"root": "x", "classes": "data"}}, eval={"voc_iou": "legacy"})) == \
        run_key(tiny_config())
    assert run_key(tiny_config(eval={"voc_metric": "both"})) != run_key(tiny_config())


# ---------------------------------------------------------------- VOC07 mAP by hand
def test_hand_computed_11_point_and_area_ap():
    # class 0: GTs a1, a2 (image 0), a3 and a difficult d (image 1); 5 detections, ranked by score:
    #   0.9 on a1 (IoU 1)         TP   tp=1 fp=0   R=1/3 P=1
    #   0.8 on a1 again (IoU .82)  FP   tp=1 fp=1   R=1/3 P=1/2   (duplicate of a taken GT)
    #   0.7 on d                   --   tp=1 fp=1   R=1/3 P=1/2   (difficult: neither TP nor FP)
    #   0.6 on a3                  TP   tp=2 fp=1   R=2/3 P=2/3
    #   0.5 on background          FP   tp=2 fp=2   R=2/3 P=1/2   (a2 is never found)
    # 11-point: t = 0, .1, .2, .3 -> max P at R >= t = 1; t = .4, .5, .6 -> 2/3; t = .7 .. 1 -> 0:
    #   AP = (4 * 1 + 3 * 2/3) / 11 = 6/11
    # area: envelope 1 on (0, 1/3], 2/3 on (1/3, 2/3], 0 beyond: AP = 1/3 + 2/9 = 5/9
    # class 1: one GT, one exact detection: AP 1 both ways. class 2: a detection but no GT: out of the mean.
    gt_boxes = [[0, 0, 10, 10], [20, 0, 30, 10], [0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]]
    gt_labels, gt_images, gt_difficult = [0, 0, 0, 0, 1], [0, 0, 1, 1, 1], [0, 0, 0, 1, 0]
    det_boxes = [[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30], [0, 0, 10, 10], [60, 60, 70, 70],
                 [40, 40, 50, 50], [0, 0, 5, 5]]
    det_scores, det_labels = [0.9, 0.8, 0.7, 0.6, 0.5, 0.3, 0.9], [0, 0, 0, 0, 0, 1, 2]
    det_images = [0, 0, 1, 1, 0, 1, 0]
    tp, fp, npos = match_class(np.array(det_boxes[:5]), det_scores[:5], det_images[:5], np.array(gt_boxes[:4]),
                               gt_images[:4], np.array(gt_difficult[:4], bool))
    assert (tp.tolist(), fp.tolist(), npos) == ([1, 0, 0, 1, 0], [0, 1, 0, 0, 1], 3)
    aps = class_aps(det_boxes, det_scores, det_labels, det_images, gt_boxes, gt_labels, gt_images,
                    np.array(gt_difficult, bool), num_classes=3)
    np.testing.assert_allclose(aps["ap_11point"][:2], [6 / 11, 1.0], atol=1e-12)
    np.testing.assert_allclose(aps["ap_area"][:2], [5 / 9, 1.0], atol=1e-12)
    assert np.isnan(aps["ap_11point"][2]) and aps["npos"].tolist() == [3, 1, 0]
    # the same case as COCO files: the mean skips the class without GT
    gt = {"images": [{"id": 1}, {"id": 2}], "categories": [{"id": c, "name": f"c{c}"} for c in (1, 2, 3)],
          "annotations": [{"id": i + 1, "image_id": img + 1, "category_id": lab + 1, "iscrowd": diff,
                           "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]]}
                          for i, (b, lab, img, diff) in enumerate(zip(gt_boxes, gt_labels, gt_images, gt_difficult))]}
    dets = [{"image_id": img + 1, "category_id": lab + 1, "score": s, "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]]}
            for b, s, lab, img in zip(det_boxes, det_scores, det_labels, det_images)]
    got = evaluate_voc(gt, dets)
    assert got == pytest.approx({"VOC07_mAP": (6 / 11 + 1) / 2, "VOC07_mAP_area": (5 / 9 + 1) / 2}, abs=1e-12)
    assert voc_class_aps(gt, dets)[3]["npos"] == 0
    assert evaluate_voc(gt, dets, metric="area").keys() == {"VOC07_mAP_area"}
    assert evaluate_voc(gt, [], image_ids=[1]) == {"VOC07_mAP": 0.0, "VOC07_mAP_area": 0.0}


def test_difficult_gts_are_neither_tp_nor_fp_however_often_hit():
    gt = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], float)
    dets = np.array([[20, 20, 30, 30], [21, 20, 30, 30], [0, 0, 10, 10]], float)
    tp, fp, npos = match_class(dets, [0.9, 0.8, 0.7], [0, 0, 0], gt, [0, 0], np.array([False, True]))
    assert (tp.tolist(), fp.tolist(), npos) == ([0, 0, 1], [0, 0, 0], 1)
    aps = class_aps(dets, [0.9, 0.8, 0.7], [0, 0, 0], [0, 0, 0], gt, [0, 0], [0, 0], [False, True], 1)
    assert aps["ap_11point"][0] == pytest.approx(1.0) and aps["ap_area"][0] == pytest.approx(1.0)


def test_a_duplicate_is_a_false_positive_even_when_another_gt_overlaps():
    # both detections' best GT is g0; the devkit never falls back to g1 (IoU 0.6 > 0.5) for the second one
    gt = np.array([[0, 0, 10, 10], [2, 0, 12, 10]], float)
    dets = np.array([[0, 0, 10, 10], [0.5, 0, 10.5, 10]], float)
    tp, fp, _ = match_class(dets, [0.9, 0.8], [0, 0], gt, [0, 0], np.zeros(2, bool))
    assert (tp.tolist(), fp.tolist()) == ([1, 0], [0, 1])


def test_legacy_iou_adds_one_pixel_to_every_side_length():
    # GT (0,0,1,1), detection (0,0,2,1): continuous IoU 1/2 (not > 0.5: FP); legacy 4/6 (TP), as the devkit
    gt, det = np.array([[0, 0, 1, 1]], float), np.array([[0, 0, 2, 1]], float)
    assert match_class(det, [1.0], [0], gt, [0], [False])[0].tolist() == [False]
    assert match_class(det, [1.0], [0], gt, [0], [False], iou="legacy")[0].tolist() == [True]


def test_11_point_thresholds_are_the_devkits_floats():
    # np.arange(0, 1.1, 0.1)[3] is 0.30000000000000004 > 3/10: a recall of exactly 0.3 misses t = 0.3 in the
    # devkit, so precision 1 up to recall 0.3 scores 3/11, not 4/11 (np.linspace's 0.3 would give 4/11)
    assert ap_11point(np.array([0.1, 0.2, 0.3]), np.ones(3)) == pytest.approx(3 / 11)
    assert ap_area(np.array([0.1, 0.2, 0.3]), np.ones(3)) == pytest.approx(0.3)
    assert ap_11point(np.zeros(0), np.zeros(0)) == 0.0 and ap_area(np.zeros(0), np.zeros(0)) == 0.0


# ---------------------------------------------------------------- parity with the devkit's loop
def devkit_ap(dets, gts, legacy=True, use_07_metric=True, ovthresh=0.5):
    """py-faster-rcnn's voc_eval.py for one class, loop for loop. dets: [(image, score, box)];
    gts: {image: (boxes (m, 4), difficult (m,))}. Sort made stable (the devkit's is not) to fix tie order."""
    one = 1.0 if legacy else 0.0
    recs = {img: {"bbox": np.asarray(b, float).reshape(-1, 4), "difficult": np.asarray(d, bool),
                  "det": [False] * len(d)} for img, (b, d) in gts.items()}
    npos = sum(int((~r["difficult"]).sum()) for r in recs.values())
    confidence = np.array([s for _, s, _ in dets], float)
    bbs = np.array([b for _, _, b in dets], float).reshape(-1, 4)
    order = np.argsort(-confidence, kind="stable")
    bbs, image_ids = bbs[order], [dets[i][0] for i in order]
    tp, fp = np.zeros(len(image_ids)), np.zeros(len(image_ids))
    for d, img in enumerate(image_ids):
        r = recs.get(img, {"bbox": np.zeros((0, 4)), "difficult": np.zeros(0, bool), "det": []})
        bb, ovmax, bbgt = bbs[d], -np.inf, r["bbox"]
        if bbgt.size > 0:
            iw = np.maximum(np.minimum(bbgt[:, 2], bb[2]) - np.maximum(bbgt[:, 0], bb[0]) + one, 0.0)
            ih = np.maximum(np.minimum(bbgt[:, 3], bb[3]) - np.maximum(bbgt[:, 1], bb[1]) + one, 0.0)
            inters = iw * ih
            uni = ((bb[2] - bb[0] + one) * (bb[3] - bb[1] + one)
                   + (bbgt[:, 2] - bbgt[:, 0] + one) * (bbgt[:, 3] - bbgt[:, 1] + one) - inters)
            overlaps = inters / uni
            ovmax, jmax = np.max(overlaps), np.argmax(overlaps)
        if ovmax > ovthresh:
            if not r["difficult"][jmax]:
                if not r["det"][jmax]:
                    tp[d], r["det"][jmax] = 1.0, True
                else:
                    fp[d] = 1.0
        else:
            fp[d] = 1.0
    fp, tp = np.cumsum(fp), np.cumsum(tp)
    rec, prec = tp / float(npos), tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    if use_07_metric:
        ap = 0.0
        for t in np.arange(0.0, 1.1, 0.1):
            p = 0.0 if np.sum(rec >= t) == 0 else np.max(prec[rec >= t])
            ap = ap + p / 11.0
        return ap
    mrec, mpre = np.concatenate(([0.0], rec, [1.0])), np.concatenate(([0.0], prec, [0.0]))
    for i in range(mpre.size - 1, 0, -1):
        mpre[i - 1] = np.maximum(mpre[i - 1], mpre[i])
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1])


def random_case(rng, images=8, classes=3):
    """Integer boxes (IoU ties happen), ~20% difficult GTs, detections jittered from GTs plus random ones; no
    empty box, where the devkit would divide 0 by 0 (the tested code says 0)."""
    gt_boxes, gt_labels, gt_images, gt_difficult, dets = [], [], [], [], []
    for img in range(images):
        for _ in range(rng.integers(0, 6)):
            x, y = rng.integers(0, 40, 2)
            box = [x, y, x + rng.integers(1, 30), y + rng.integers(1, 30)]
            gt_boxes.append(box), gt_labels.append(rng.integers(classes)), gt_images.append(img)
            gt_difficult.append(rng.random() < 0.2)
            for _ in range(rng.integers(0, 3)):
                label = gt_labels[-1] if rng.random() < 0.8 else rng.integers(classes)
                x1, y1, x2, y2 = (v + rng.integers(-3, 4) for v in box)
                dets.append((img, label, [x1, y1, max(x2, x1 + 1), max(y2, y1 + 1)]))  # no empty box: no 0/0
        for _ in range(rng.integers(0, 4)):
            x, y = rng.integers(0, 50, 2)
            dets.append((img, rng.integers(classes), [x, y, x + rng.integers(1, 25), y + rng.integers(1, 25)]))
    scores = rng.permutation(len(dets)) / max(len(dets), 1)  # distinct: the devkit's order is then defined
    return (np.array(gt_boxes, float).reshape(-1, 4), np.array(gt_labels, int), np.array(gt_images, int),
            np.array(gt_difficult, bool), dets, scores)


@pytest.mark.parametrize("iou", ["legacy", "continuous"])
def test_vectorised_matching_equals_the_devkit_loop_on_random_cases(iou):
    rng = np.random.default_rng(7)
    compared = 0
    for _ in range(40):
        gt_boxes, gt_labels, gt_images, gt_difficult, dets, scores = random_case(rng)
        det_boxes = np.array([b for *_, b in dets], float).reshape(-1, 4)
        det_labels, det_images = np.array([lab for _, lab, _ in dets], int), np.array([i for i, _, _ in dets], int)
        aps = class_aps(det_boxes, scores, det_labels, det_images, gt_boxes, gt_labels, gt_images, gt_difficult, 3,
                        iou=iou)
        for k in range(3):
            if aps["npos"][k] == 0:
                continue
            g = gt_labels == k
            gts = {img: (gt_boxes[g][gt_images[g] == img], gt_difficult[g][gt_images[g] == img])
                   for img in np.unique(gt_images[g])}
            mine = [(int(i), float(s), b) for (i, lab, b), s in zip(dets, scores) if lab == k]
            for use_07, key in ((True, "ap_11point"), (False, "ap_area")):
                assert aps[key][k] == pytest.approx(devkit_ap(mine, gts, iou == "legacy", use_07), abs=1e-12)
            compared += 1
    assert compared > 80


def test_voc_boxes_read_as_continuous_give_the_devkits_ap_on_the_raw_xml_values():
    rng = np.random.default_rng(3)
    gt_boxes, gt_labels, gt_images, gt_difficult, dets, scores = random_case(rng, images=12, classes=1)
    raw = gt_boxes + 1  # 1-based inclusive pixel indices, as in the XML
    det_raw = np.array([b for *_, b in dets], float) + 1
    shift = np.array([1.0, 1.0, 0.0, 0.0])  # the reader's conversion: (xmin - 1, ymin - 1, xmax, ymax)
    aps = class_aps(det_raw - shift, scores, [0] * len(dets), [i for i, _, _ in dets], raw - shift, gt_labels,
                    gt_images, gt_difficult, 1, iou="continuous")
    gts = {img: (raw[gt_images == img], gt_difficult[gt_images == img]) for img in np.unique(gt_images)}
    mine = [(i, float(s), b) for (i, _, _), s, b in zip(dets, scores, det_raw)]
    assert aps["ap_11point"][0] == pytest.approx(devkit_ap(mine, gts, legacy=True, use_07_metric=True), abs=1e-12)
    assert aps["ap_area"][0] == pytest.approx(devkit_ap(mine, gts, legacy=True, use_07_metric=False), abs=1e-12)


# ---------------------------------------------------------------- a run's metric and a study's column
def test_the_synthetic_benchmark_is_evaluated_both_ways(synth_data):
    from detector.engine.evaluate import _metrics

    gt_path = next(synth_data.glob("*/instances_val.json"))
    gt = json.loads(gt_path.read_text())
    perfect = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9}
               for a in gt["annotations"] if not a.get("iscrowd")]

    class Val:  # what `_metrics` reads of a dataset
        ann_file, image_ids = str(gt_path), [img["id"] for img in gt["images"]]

    plain = _metrics(perfect, torch.zeros(0, 2), Val, tiny_config())
    assert "VOC07_mAP" not in plain and plain["AP"] == pytest.approx(1.0)
    both = _metrics(perfect, torch.zeros(0, 2), Val, tiny_config(eval={"voc_metric": "both"}))
    assert both["VOC07_mAP"] == pytest.approx(1.0) and both["VOC07_mAP_area"] == pytest.approx(1.0)
    assert evaluate_detections(gt_path, perfect)["AP"] == pytest.approx(1.0)


def test_a_study_can_name_voc_map_as_its_metric_column(tmp_path):
    from ablation.study.expand import expand, load_study
    from ablation.study.source import StudyError
    from ablation.tables.build import build_table
    from ablation.tables.render import render
    from tests.test_study import write_study

    rows = [{"label": "Max IoU", "overrides": {"assign.name": "max_iou"}}]
    with pytest.raises(StudyError, match="metrics name VOC07_mAP, which eval.voc_metric='none' does not compute"):
        load_study(write_study(tmp_path, rows=rows, metrics=["AP", "VOC07_mAP"]))
    study = load_study(write_study(tmp_path, rows=rows, metrics=["AP", "VOC07_mAP"],
                                   overrides={"eval.voc_metric": "11point"}))
    (run,) = expand(study, "smoke")
    frame = pd.DataFrame([{"run_id": "r0", "experiment_id": "1", "run_name": run.run_name, "status": "FINISHED",
                           "start_time": 0, "end_time": 0, "tags.run_key": run.key, "tags.role": "row",
                           "metrics.val/AP": 0.3, "metrics.val/VOC07_mAP": 0.55}])
    md = render(build_table(study, "smoke", frame), "md")
    assert "| Method | AP | VOC07_mAP |" in md and "| Max IoU | 30.0† | 55.0† |" in md
