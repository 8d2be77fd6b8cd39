"""COCO-format data pipeline: parsing and bad data, transforms, collate, samplers, reproducibility."""
from __future__ import annotations

import json
import os
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from detector.config import DataConfig
from detector.data.batch import Batch
from detector.data.coco import CocoDetection, DataError
from detector.data.sampler import InfiniteSampler, build_eval_loader, build_train_loader
from detector.data.transforms import collate, hflip, normalize, resize

W, H = 64, 48  # every test image is 64 wide, 48 high
CATS = [{"id": 11, "name": "c"}, {"id": 3, "name": "a"}, {"id": 7, "name": "b"}]  # unsorted, non-contiguous


def small_cfg(**kw) -> DataConfig:
    base = DataConfig(min_size=[48], max_size=64, test_min_size=48, flip_prob=0.0, size_divisibility=32)
    return replace(base, **kw)


def ann(image_id, bbox, cat=3, iscrowd=0):
    return {"image_id": image_id, "bbox": bbox, "category_id": cat, "iscrowd": iscrowd, "area": 1.0}


def write_coco(root, anns, n_images=4, cats=CATS, name="ann.json", skip_file=None):
    """Write n_images random PNGs (W x H) and a COCO JSON; returns (images_dir, json_path)."""
    img_dir = root / "images"
    img_dir.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    images = []
    for i in range(1, n_images + 1):
        fname = f"img{i}.png"
        if fname != skip_file:
            Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(img_dir / fname)
        images.append({"id": i, "file_name": fname, "width": W, "height": H})
    for k, a in enumerate(anns):
        a.setdefault("id", k + 1)
    path = root / name
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return str(img_dir), str(path)


# ---------------------------------------------------------------- parsing and bad data


def test_contiguous_mapping_from_sorted_ids(tmp_path):
    img_dir, js = write_coco(tmp_path, [ann(1, [0, 0, 10, 10], cat=c) for c in (3, 7, 11)])
    ds = CocoDetection(img_dir, js, small_cfg(), train=False)
    assert ds.num_classes == 3
    assert ds.label_to_cat_id == [3, 7, 11]
    assert ds.cat_id_to_label == {3: 0, 7: 1, 11: 2}
    assert [c["name"] for c in ds.categories] == ["a", "b", "c"]
    assert ds[0]["labels"].tolist() == [0, 1, 2]


def test_val_uses_train_categories(tmp_path):
    img_dir, js = write_coco(tmp_path, [ann(1, [0, 0, 10, 10], cat=3)])
    train = CocoDetection(img_dir, js, small_cfg(), train=True)
    # val file knows only 7 and an extra id 99 that train does not have
    val_js = tmp_path / "val.json"
    data = json.loads(open(js).read())
    data["categories"] = [{"id": 7, "name": "b"}, {"id": 99, "name": "z"}]
    data["annotations"] = [ann(1, [0, 0, 10, 10], cat=7) | {"id": 1}, ann(2, [0, 0, 10, 10], cat=99) | {"id": 2}]
    val_js.write_text(json.dumps(data))
    val = CocoDetection(img_dir, str(val_js), small_cfg(), train=False, categories=train.categories)
    assert val.label_to_cat_id == [3, 7, 11] and val.num_classes == 3
    assert val[0]["labels"].tolist() == [1]
    assert val.report.dropped_unknown_category == 1


def test_bad_boxes_counted_exactly(tmp_path):
    anns = [
        ann(1, [5, 5, 10, 10]),  # kept
        ann(1, [5, 5, 0, 10]),  # w = 0 -> degenerate
        ann(1, [5, 5, 10, -3]),  # h < 0 -> degenerate
        ann(2, [100, 5, 10, 10]),  # fully right of the image -> outside
        ann(2, [-20, -20, 10, 10]),  # fully above-left -> outside
        ann(2, [W, 0, 5, 5]),  # touching the right border: zero overlap -> outside
        ann(3, [-5, 40, 20, 20]),  # partly outside -> clipped to [0, 40, 15, 48]
        ann(3, [5, 5, 10, 10], cat=42),  # unknown category
        ann(3, [5, 5, 10]),  # malformed bbox
        ann(77, [5, 5, 10, 10]),  # unknown image id
    ]
    img_dir, js = write_coco(tmp_path, anns)
    ds = CocoDetection(img_dir, js, small_cfg(), train=False)
    assert ds.report.as_dict() == {
        "images": 4, "images_unreadable": 0, "images_wrong_size": 0, "annotations_kept": 2, "crowd_ignored": 0,
        "crowd_dropped": 0, "dropped_degenerate": 2, "dropped_outside": 3, "dropped_unknown_category": 1,
        "dropped_unknown_image": 1, "dropped_malformed": 1, "dropped_skipped_image": 0,
    }
    assert "2 boxes kept" in ds.report.summary() and "\n" not in ds.report.summary()
    np.testing.assert_allclose(ds.boxes[2], [[0, 40, 15, 48]])
    np.testing.assert_allclose(ds.load(0)["boxes"].numpy(), [[5, 5, 15, 15]])


def test_missing_image_raises_one_line_error(tmp_path):
    img_dir, js = write_coco(tmp_path, [], skip_file="img3.png")
    with pytest.raises(DataError, match="missing image") as info:
        CocoDetection(img_dir, js, small_cfg(), train=False)
    assert os.path.join(img_dir, "img3.png") in str(info.value)


def test_missing_or_malformed_annotation_file(tmp_path):
    img_dir, _ = write_coco(tmp_path, [])
    with pytest.raises(DataError, match="missing annotation file"):
        CocoDetection(img_dir, str(tmp_path / "nope.json"), small_cfg(), train=False)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="malformed annotation file"):
        CocoDetection(img_dir, str(bad), small_cfg(), train=False)


@pytest.mark.parametrize("mode", ["ignore", "drop"])
def test_crowd_ignore_vs_drop(tmp_path, mode):
    anns = [ann(1, [2, 2, 10, 10]), ann(1, [20, 20, 30, 20], iscrowd=1), ann(2, [60, 0, 30, 30], iscrowd=1)]
    img_dir, js = write_coco(tmp_path, anns)
    ds = CocoDetection(img_dir, js, small_cfg(crowd=mode), train=False)
    raw = ds.load(0)
    assert raw["boxes"].shape == (1, 4)
    if mode == "ignore":
        assert (ds.report.crowd_ignored, ds.report.crowd_dropped) == (2, 0)
        np.testing.assert_allclose(raw["ignore"].numpy(), [[20, 20, 50, 40]])
        np.testing.assert_allclose(ds.load(1)["ignore"].numpy(), [[60, 0, 64, 30]])  # clipped
    else:
        assert (ds.report.crowd_ignored, ds.report.crowd_dropped) == (0, 2)
        assert raw["ignore"].shape == (0, 4)


def test_images_without_annotations_are_kept(tmp_path):
    img_dir, js = write_coco(tmp_path, [ann(2, [1, 2, 3, 4])])
    ds = CocoDetection(img_dir, js, small_cfg(), train=False)
    assert len(ds) == 4 and ds.image_ids == [1, 2, 3, 4]
    item = ds[0]
    assert item["boxes"].shape == (0, 4) and item["labels"].shape == (0,) and item["ignore"].shape == (0, 4)
    assert item["image"].dtype == torch.float32 and item["image"].shape == (3, H, W)
    batch = collate([ds[0], ds[2]], 32)
    assert batch.gt_boxes.shape == (2, 0, 4) and batch.gt_valid.shape == (2, 0)
    assert batch.ignore_boxes.shape == (2, 0, 4)


def test_cached_images_are_decoded_once_and_equal_the_uncached(tmp_path):
    img_dir, js = write_coco(tmp_path, [ann(2, [1, 2, 3, 4])])
    plain = CocoDetection(img_dir, js, small_cfg(), train=False)
    cached = CocoDetection(img_dir, js, small_cfg(cache_images=True), train=False)
    first = cached.load(1)
    os.remove(os.path.join(img_dir, "img2.png"))  # a second read would fail: the cache must serve it
    again = cached.load(1)
    assert torch.equal(first["image"], again["image"])
    again["image"].zero_()  # a caller's in-place edit must not reach the cache
    assert torch.equal(cached.load(1)["image"], first["image"])
    assert torch.equal(plain.load(0)["image"], cached.load(0)["image"])
    with pytest.raises(DataError, match="unreadable image"):
        plain.load(1)


# ---------------------------------------------------------------- transforms


def test_resize_rule_and_box_scaling():
    img = torch.randint(0, 256, (3, 48, 64), dtype=torch.uint8)
    boxes = torch.tensor([[4.0, 6.0, 20.0, 30.0]])
    ign = torch.zeros((0, 4))
    out, b, i, s = resize(img, boxes, ign, min_size=96, max_size=1000)  # shorter side rules
    assert s == 2.0 and out.shape == (3, 96, 128) and out.dtype == torch.float32
    torch.testing.assert_close(b, boxes * 2)
    assert i.shape == (0, 4)
    out, b, _, s = resize(img, boxes, ign, min_size=96, max_size=96)  # longer side capped
    assert s == 1.5 and out.shape == (3, 72, 96)
    torch.testing.assert_close(b, boxes * 1.5)
    out, _, _, s = resize(img, boxes, ign, min_size=24, max_size=1000)  # downscale, antialiased
    assert s == 0.5 and out.shape == (3, 24, 32) and 0.0 <= out.min() and out.max() <= 1.0
    out, _, _, s = resize(img, boxes, ign, min_size=48, max_size=1000)  # identity size
    assert s == 1.0 and torch.equal(out, img.float() / 255)


def test_hflip_mirror_formula_and_involution():
    img = torch.arange(2 * 3 * 5, dtype=torch.float32).view(3, 2, 5)
    boxes = torch.tensor([[0.0, 0.0, 1.0, 2.0], [1.5, 0.5, 4.0, 1.0]])
    ign = torch.tensor([[2.0, 0.0, 3.0, 1.0]])
    fi, fb, fg = hflip(img, boxes, ign)
    assert torch.equal(fi[..., 0], img[..., -1])
    torch.testing.assert_close(fb, torch.tensor([[4.0, 0.0, 5.0, 2.0], [1.0, 0.5, 3.5, 1.0]]))
    torch.testing.assert_close(fg, torch.tensor([[2.0, 0.0, 3.0, 1.0]]))
    ii, bb, gg = hflip(fi, fb, fg)
    assert torch.equal(ii, img) and torch.equal(bb, boxes) and torch.equal(gg, ign)
    e = torch.zeros((0, 4))
    assert hflip(img, e, e)[1].shape == (0, 4)


def test_normalize():
    img = torch.full((3, 2, 2), 0.5)
    out = normalize(img, [0.5, 0.25, 0.0], [1.0, 0.5, 2.0])
    torch.testing.assert_close(out[:, 0, 0], torch.tensor([0.0, 0.5, 0.25]))


def test_train_transform_flip_is_applied_to_boxes(tmp_path):
    img_dir, js = write_coco(tmp_path, [ann(1, [4, 6, 10, 20])])
    ds = CocoDetection(img_dir, js, small_cfg(flip_prob=1.0), train=True)
    item = ds[(0, 123)]
    assert item["flipped"] and item["scale"] == 1.0
    torch.testing.assert_close(item["boxes"], torch.tensor([[W - 14.0, 6.0, W - 4.0, 26.0]]))
    raw = ds.load(0)["image"].float() / 255
    expect = normalize(raw.flip(-1), ds.cfg.mean, ds.cfg.std)
    torch.testing.assert_close(item["image"], expect)


# ---------------------------------------------------------------- collate


def _item(h, w, n, k, image_id, fill=1.0):
    return {
        "image": torch.full((3, h, w), fill), "boxes": torch.arange(n * 4, dtype=torch.float32).view(n, 4) + 1,
        "labels": torch.arange(n), "ignore": torch.ones((k, 4)), "image_id": image_id, "scale": 0.5,
    }


def test_collate_padding_and_masks():
    batch = collate([_item(30, 40, 0, 0, 7), _item(20, 50, 3, 2, 9)], size_divisibility=32)
    assert isinstance(batch, Batch) and len(batch) == 2
    assert batch.images.shape == (2, 3, 32, 64)
    assert batch.image_sizes.tolist() == [[30, 40], [20, 50]]
    assert batch.images[0, :, :30, :40].eq(1).all() and batch.images[0, :, 30:].eq(0).all()
    assert batch.images[0, :, :, 40:].eq(0).all() and batch.images[1, :, 20:].eq(0).all()
    assert batch.images[1, :, :, 50:].eq(0).all()
    assert batch.gt_boxes.shape == (2, 3, 4) and batch.gt_labels.shape == (2, 3)
    assert batch.gt_valid.tolist() == [[False] * 3, [True] * 3]
    assert batch.gt_labels[0].tolist() == [-1, -1, -1] and batch.gt_labels[1].tolist() == [0, 1, 2]
    assert batch.gt_boxes[0].eq(0).all()
    torch.testing.assert_close(batch.gt_boxes[1], torch.arange(12, dtype=torch.float32).view(3, 4) + 1)
    assert batch.ignore_boxes.shape == (2, 2, 4) and batch.ignore_valid.tolist() == [[False, False], [True, True]]
    assert batch.image_ids.tolist() == [7, 9] and batch.image_ids.dtype == torch.long
    assert batch.scales.dtype == torch.float32 and batch.scales.tolist() == [0.5, 0.5]
    assert batch.gt_boxes.dtype == torch.float32 and batch.gt_labels.dtype == torch.long
    assert collate([_item(30, 40, 1, 0, 1)], size_divisibility=0).images.shape == (1, 3, 30, 40)
    assert collate([_item(64, 32, 1, 0, 1)], size_divisibility=32).images.shape == (1, 3, 64, 32)


def test_padding_is_zero_after_normalisation(tmp_path):
    img_dir, js = write_coco(tmp_path, [ann(1, [1, 1, 5, 5])])
    ds = CocoDetection(img_dir, js, small_cfg(size_divisibility=40), train=False)
    batch = collate([ds[0], ds[1]], ds.cfg.size_divisibility)
    assert batch.images.shape == (2, 3, 80, 80)
    assert batch.images[:, :, H:].eq(0).all() and batch.images[:, :, :, W:].eq(0).all()
    assert batch.images[:, :, :H, :W].ne(0).any()


# ---------------------------------------------------------------- samplers and loaders


def _take(it, n):
    return [next(it) for _ in range(n)]


def test_infinite_sampler_deterministic_passes_and_resume():
    s = InfiniteSampler(5, seed=3)
    stream = _take(iter(s), 20)
    assert stream == _take(iter(InfiniteSampler(5, seed=3)), 20)
    for p in range(4):
        assert sorted(stream[5 * p:5 * p + 5]) == list(range(5))  # each pass is a permutation
    assert stream[:5] != stream[5:10] or stream[5:10] != stream[10:15]  # fresh permutation per pass
    assert stream != _take(iter(InfiniteSampler(5, seed=4)), 20)
    for i, b in [(1, 2), (3, 2), (2, 4)]:  # resume at iteration i with batch b
        assert _take(iter(InfiniteSampler(5, seed=3, start=i * b)), 20 - i * b) == stream[i * b:]
    assert _take(iter(InfiniteSampler(4, seed=0, shuffle=False, start=2)), 6) == [2, 3, 0, 1, 2, 3]
    with pytest.raises(ValueError):
        InfiniteSampler(0, seed=0)


def _batches_equal(a: Batch, b: Batch) -> bool:
    return all(torch.equal(getattr(a, f), getattr(b, f)) for f in a.__dataclass_fields__)


@pytest.fixture
def train_set(tmp_path):
    anns = [ann(i, [4 * i, 3, 10 + i, 12], cat=(3, 7, 11)[i % 3]) for i in range(1, 7) for _ in range(i % 3)]
    img_dir, js = write_coco(tmp_path, anns, n_images=6)
    cfg = small_cfg(min_size=[32, 40, 48], max_size=80, flip_prob=0.5, size_divisibility=16)
    return CocoDetection(img_dir, js, cfg, train=True)


def test_train_loader_yields_batches_and_resumes(train_set):
    full = _take(iter(build_train_loader(train_set, batch_size=2, seed=5)), 6)
    assert all(isinstance(b, Batch) and len(b) == 2 for b in full)
    assert {int(b.images.shape[-1]) % 16 for b in full} == {0}
    assert len({tuple(b.image_sizes[:, 0].tolist()) for b in full}) > 1  # multi-scale happened
    resumed = _take(iter(build_train_loader(train_set, batch_size=2, seed=5, start_iteration=2)), 4)
    assert all(_batches_equal(a, b) for a, b in zip(full[2:], resumed))
    other = _take(iter(build_train_loader(train_set, batch_size=2, seed=6)), 6)
    assert not all(_batches_equal(a, b) for a, b in zip(full, other))


def test_augmentation_reproducible_across_num_workers(train_set):
    state = torch.get_rng_state()
    a = _take(iter(build_train_loader(train_set, batch_size=2, seed=1, num_workers=0)), 4)
    loader = build_train_loader(train_set, batch_size=2, seed=1, num_workers=2)
    assert loader.persistent_workers
    b = _take(iter(loader), 4)
    assert all(_batches_equal(x, y) for x, y in zip(a, b))
    assert torch.equal(state, torch.get_rng_state())  # the global RNG is never touched


def test_eval_loader_sequential_and_finite(train_set):
    ds = CocoDetection(train_set.images_dir, train_set.ann_file, train_set.cfg, train=False)
    batches = list(build_eval_loader(ds, batch_size=4))
    assert [len(b) for b in batches] == [4, 2]
    assert torch.cat([b.image_ids for b in batches]).tolist() == ds.image_ids
    assert all(b.images.shape[-2:] == (48, 64) for b in batches)
    again = list(build_eval_loader(ds, batch_size=4))
    assert all(_batches_equal(x, y) for x, y in zip(batches, again))
