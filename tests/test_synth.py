"""The embedded synthetic benchmark: determinism, COCO validity, distributions, knobs, metadata, stats."""
from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from detector.config import SynthConfig
from detector.data.stats import dataset_stats, format_stats
from detector.data.synth import (CATEGORIES, CATEGORY_SPECS, GENERATOR_VERSION, dataset_dir_name, ensure_dataset,
                                 generate, render_image)

TINY = SynthConfig(train=12, val=4, size=128)
MEDIUM = SynthConfig(train=60, val=0, size=320)


def _pixels(root: Path) -> dict[str, np.ndarray]:
    return {str(p.relative_to(root)): np.asarray(Image.open(p)) for p in sorted(root.glob("images/*/*.png"))}


def _json(root: Path, split: str) -> dict:
    return json.loads((root / f"instances_{split}.json").read_text())


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    calls = []
    out = tmp_path_factory.mktemp("tiny") / "ds"
    root = generate(out, TINY, workers=2, progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (16, 16) and [d for d, _ in calls] == list(range(1, 17))
    return root


@pytest.fixture(scope="module")
def medium(tmp_path_factory) -> dict:
    root = generate(tmp_path_factory.mktemp("medium") / "ds", MEDIUM, workers=2)
    return _json(root, "train")


def test_layout_and_no_leftovers(tiny):
    expected = ["images", "instances_train.json", "instances_val.json", "meta.json"]
    assert sorted(p.name for p in tiny.iterdir()) == expected
    assert len(list((tiny / "images" / "train").glob("*.png"))) == 12
    assert len(list((tiny / "images" / "val").glob("*.png"))) == 4
    assert [p.name for p in tiny.parent.iterdir()] == ["ds"]  # the temp dir was renamed, nothing left over
    image = Image.open(tiny / "images" / "train" / "000000.png")
    assert image.mode == "RGB" and image.size == (128, 128)


def test_deterministic_and_independent_of_workers(tiny, tmp_path):
    again = generate(tmp_path / "one_worker", TINY, workers=1)
    for split in ("train", "val"):
        assert (tiny / f"instances_{split}.json").read_bytes() == (again / f"instances_{split}.json").read_bytes()
    assert (tiny / "meta.json").read_bytes() == (again / "meta.json").read_bytes()
    a, b = _pixels(tiny), _pixels(again)
    assert a.keys() == b.keys() and len(a) == 16
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_render_image_is_a_pure_function():
    im1, anns1 = render_image(TINY, "train", 3)
    im2, anns2 = render_image(TINY, "train", 3)
    assert np.array_equal(im1, im2) and anns1 == anns2
    assert im1.shape == (128, 128, 3) and im1.dtype == np.uint8
    other, _ = render_image(TINY, "val", 3)  # the split is part of the seed
    assert not np.array_equal(im1, other)


def test_different_seed_differs():
    cfg = dataclasses.replace(TINY, seed=1)
    for i in range(3):
        (a, anns_a), (b, anns_b) = render_image(TINY, "train", i), render_image(cfg, "train", i)
        assert not np.array_equal(a, b) and anns_a != anns_b


def test_coco_json_is_valid(tiny):
    from pycocotools.coco import COCO

    for split, n_images in (("train", 12), ("val", 4)):
        coco = COCO(str(tiny / f"instances_{split}.json"))
        assert sorted(coco.getImgIds()) == list(range(1, n_images + 1))
        assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == CATEGORIES
        for img in coco.loadImgs(coco.getImgIds()):
            assert (tiny / "images" / split / img["file_name"]).is_file()
            assert (img["width"], img["height"]) == (128, 128)
            anns = coco.loadAnns(coco.getAnnIds(imgIds=img["id"]))
            assert 1 <= len(anns) <= TINY.max_objects
            for a in anns:
                x, y, w, h = a["bbox"]
                assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= 128 and y + h <= 128
                assert 1 <= a["category_id"] <= len(CATEGORIES) and a["iscrowd"] == 0
                assert 0 < a["area"] <= w * h  # visible pixels lie inside their tight box
                assert TINY.min_visible <= a["visible"] <= 1
        ids = coco.getAnnIds()
        assert len(set(ids)) == len(ids)


def test_distributions_on_medium_set(medium):
    side = MEDIUM.size
    boxes = np.array([a["bbox"] for a in medium["annotations"]], dtype=float)
    sizes = np.sqrt(boxes[:, 2] * boxes[:, 3])
    aspect = boxes[:, 2] / boxes[:, 3]
    per_image = np.bincount([a["image_id"] for a in medium["annotations"]], minlength=61)[1:]
    assert per_image.min() >= 1 and per_image.max() <= MEDIUM.max_objects
    assert (per_image >= 10).sum() >= 5
    assert ((aspect >= 4) | (aspect <= 1 / 4)).sum() >= 10
    assert (aspect >= 4).any() and (aspect <= 1 / 4).any()  # rods lie both ways
    assert (sizes < 2 * MEDIUM.min_object_size).sum() >= 20 and (sizes > 0.4 * side).sum() >= 5
    assert sizes.max() <= 0.95 * side
    assert {a["category_id"] for a in medium["annotations"]} == set(range(1, len(CATEGORIES) + 1))
    visible = np.array([a["visible"] for a in medium["annotations"]])
    assert visible.min() >= MEDIUM.min_visible and (visible < 0.8).mean() > 0.05  # occlusion happens, within bounds


def _objects(cfg: SynthConfig, n: int = 10) -> list[dict]:
    return [a for i in range(n) for a in render_image(cfg, "train", i)[1]]


def test_family_knobs_act():
    base = dataclasses.replace(TINY, max_objects=15)
    families = {i + 1: CATEGORY_SPECS[name][0] for i, name in enumerate(CATEGORIES)}
    only_compact = _objects(dataclasses.replace(base, slender_share=0.0, acentric_share=0.0))
    assert only_compact and {families[a["category_id"]] for a in only_compact} == {"compact"}
    only_rods = _objects(dataclasses.replace(base, slender_share=1.0, acentric_share=0.0))
    assert {families[a["category_id"]] for a in only_rods} == {"slender"}
    whole = np.array([a["bbox"][2] / a["bbox"][3] for a in only_rods if a["visible"] == 1])
    assert len(whole) >= 10 and np.all(np.maximum(whole, 1 / whole) >= 2.5)  # drawn 1:3..1:8, less pixel rounding
    only_acentric = _objects(dataclasses.replace(base, slender_share=0.0, acentric_share=1.0))
    assert {families[a["category_id"]] for a in only_acentric} == {"acentric"}


def test_acentric_shapes_leave_the_box_centre_empty():
    from detector.data.synth import _render_object

    rng = np.random.default_rng(0)
    for name, (family, _) in CATEGORY_SPECS.items():
        on_centre = []
        for size in np.linspace(20, 100, 40):
            mask, rgb = _render_object(rng, name, float(size), 300.0)
            assert mask.shape == rgb.shape[:2] and mask[0].any() and mask[:, -1].any()  # cropped tight
            on_centre.append(mask[mask.shape[0] // 2, mask.shape[1] // 2])
        if family == "acentric":
            assert np.mean(on_centre) <= 0.1, name
        else:
            assert all(on_centre), name


def test_crowding_and_clutter_knobs_act():
    calm = dataclasses.replace(TINY, crowding=0.0, max_objects=4)
    crowded = dataclasses.replace(TINY, crowding=1.0, max_objects=4)
    assert np.mean([a["visible"] for a in _objects(crowded)]) < np.mean([a["visible"] for a in _objects(calm)])
    assert len(_objects(crowded)) > len(_objects(calm))

    def roughness(cfg: SynthConfig) -> float:  # mean |horizontal gradient| of the background, outside every box
        values = []
        for i in range(8):
            image, anns = render_image(cfg, "train", i)
            grad = np.abs(np.diff(image.astype(float), axis=1)).sum(-1)
            free = np.ones(image.shape[:2], bool)
            for x, y, w, h in (a["bbox"] for a in anns):
                free[max(y - 1, 0):y + h + 1, max(x - 1, 0):x + w + 1] = False
            values.append(grad[free[:, 1:] & free[:, :-1]])
        return float(np.concatenate(values).mean())

    assert roughness(dataclasses.replace(TINY, clutter=1.0)) > 1.3 * roughness(dataclasses.replace(TINY, clutter=0.0))


def test_meta_and_info_record_the_knobs(tiny):
    meta = json.loads((tiny / "meta.json").read_text())
    assert meta["generator_version"] == GENERATOR_VERSION
    assert meta["synth"] == dataclasses.asdict(TINY)
    for knob in ("size", "train", "val", "slender_share", "acentric_share", "crowding", "clutter", "max_objects"):
        assert meta["synth"][knob] == getattr(TINY, knob)
    assert [c["name"] for c in meta["categories"]] == CATEGORIES
    coco = _json(tiny, "val")
    assert meta["splits"]["train"]["objects"] == len(_json(tiny, "train")["annotations"])
    assert meta["splits"]["val"] == {"images": 4, "objects": len(coco["annotations"]),
                                     "annotations": "instances_val.json", "image_dir": "images/val"}
    assert coco["info"]["synth"] == dataclasses.asdict(TINY) and coco["info"]["split"] == "val"


def test_dataset_dir_name():
    name = dataset_dir_name(TINY)
    assert re.fullmatch(r"shapes-[0-9a-f]{12}", name)
    assert dataset_dir_name(SynthConfig(**dataclasses.asdict(TINY))) == name
    changed = {"train": 13, "val": 5, "size": 160, "seed": 1, "slender_share": 0.2, "acentric_share": 0.3,
               "crowding": 0.4, "clutter": 0.6, "max_objects": 20, "min_object_size": 10.0,
               "max_object_frac": 0.5, "min_visible": 0.5}
    assert set(changed) == {f.name for f in dataclasses.fields(SynthConfig)}  # a new field needs a line here
    names = {dataset_dir_name(dataclasses.replace(TINY, **{k: v})) for k, v in changed.items()}
    assert len(names) == len(changed) and name not in names


def test_ensure_dataset_generates_once(tmp_path, monkeypatch):
    cfg = dataclasses.replace(TINY, train=2, val=1)
    path = ensure_dataset(tmp_path, cfg, workers=1)
    assert path == tmp_path / dataset_dir_name(cfg) and (path / "meta.json").is_file()
    import detector.data.synth as synth

    monkeypatch.setattr(synth, "generate", lambda *a, **k: pytest.fail("regenerated a complete dataset"))
    assert ensure_dataset(tmp_path, cfg, workers=1) == path
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_generate_replaces_an_existing_dir_only_when_forced(tmp_path):
    out = tmp_path / "ds"
    (out / "images").mkdir(parents=True)
    (out / "stale.txt").write_text("half-written")
    with pytest.raises(ValueError, match="not a dataset written by anchorlab"):  # not ours: kept
        generate(out, dataclasses.replace(TINY, train=1, val=1), workers=1)
    assert (out / "stale.txt").is_file() and [p.name for p in tmp_path.iterdir()] == ["ds"]
    generate(out, dataclasses.replace(TINY, train=1, val=1), workers=1, force=True)
    assert not (out / "stale.txt").exists() and (out / "meta.json").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]


@pytest.mark.parametrize("bad", [{"slender_share": 0.6, "acentric_share": 0.5}, {"crowding": 1.5},
                                 {"min_object_size": 100.0}, {"max_objects": 0}])
def test_invalid_config_is_rejected(tmp_path, bad):
    with pytest.raises(ValueError):
        generate(tmp_path / "ds", dataclasses.replace(TINY, **bad), workers=1)
    assert list(tmp_path.iterdir()) == []


def test_stats_are_consistent(tiny):
    stats = dataset_stats(tiny)
    assert set(stats["splits"]) == {"train", "val"}
    for split, n_images in (("train", 12), ("val", 4)):
        s, coco = stats["splits"][split], _json(tiny, split)
        n = len(coco["annotations"])
        assert s["images"] == n_images and s["objects"] == n and s["images_without_objects"] == 0
        assert sum(s["objects_per_image"]["hist"].values()) == n_images
        assert sum(s["size_hist"].values()) == n and sum(s["aspect_hist"].values()) == n
        assert sum(s["per_category"].values()) == n and list(s["per_category"]) == CATEGORIES
        assert s["objects_per_image"]["mean"] == pytest.approx(n / n_images)
        per_image = np.bincount([a["image_id"] for a in coco["annotations"]], minlength=n_images + 1)[1:]
        assert (s["objects_per_image"]["min"], s["objects_per_image"]["max"]) == (per_image.min(), per_image.max())
        assert sum(s["coco_area_share"].values()) == pytest.approx(1.0)
    single = dataset_stats(tiny / "instances_val.json")
    assert single["splits"] == {"val": stats["splits"]["val"]}
    text = format_stats(stats)
    assert "== train: 12 images" in text and "== val: 4 images" in text
    assert f"{stats['splits']['train']['objects']} objects" in text


def test_stats_bins_by_hand(tmp_path):
    coco = {"images": [{"id": 1}, {"id": 2}], "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
            "annotations": [
                {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 4, 4], "area": 16, "iscrowd": 0},
                {"id": 2, "image_id": 1, "category_id": 1, "bbox": [0, 0, 60, 10], "area": 600, "iscrowd": 0},
                {"id": 3, "image_id": 1, "category_id": 2, "bbox": [0, 0, 100, 100], "area": 10000, "iscrowd": 0},
                {"id": 4, "image_id": 1, "category_id": 2, "bbox": [0, 0, 50, 50], "area": 2500, "iscrowd": 1}]}
    path = tmp_path / "instances_x.json"
    path.write_text(json.dumps(coco))
    s = dataset_stats(path)["splits"]["x"]
    assert (s["objects"], s["crowd"], s["images_without_objects"]) == (3, 1, 1)
    assert s["objects_per_image"]["hist"]["0"] == 1 and s["objects_per_image"]["hist"]["2-3"] == 1
    assert s["size_hist"]["0-8"] == 1 and s["size_hist"]["16-32"] == 1 and s["size_hist"]["64-128"] == 1
    assert s["aspect_hist"]["2/3-3/2"] == 2 and s["aspect_hist"]["4-8"] == 1
    assert s["slender_share"] == pytest.approx(1 / 3)
    assert s["coco_area_share"] == pytest.approx({"small": 2 / 3, "medium": 0.0, "large": 1 / 3})
    assert s["per_category"] == {"a": 2, "b": 1} and s["occluded_share"] is None


def test_small_images_with_large_clusters_render():
    # a cluster scale above half the side once made the centre draw fail (numpy: high - low < 0)
    cfg = SynthConfig(train=1, val=0, size=64, min_object_size=16.0, crowding=1.0)
    for i in range(20):
        image, anns = render_image(cfg, "train", i)
        assert image.shape == (64, 64, 3) and all(a["bbox"][2] > 0 and a["bbox"][3] > 0 for a in anns)
