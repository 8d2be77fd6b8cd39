"""A COCO-format detection dataset: annotations parsed once, bad data counted instead of crashing.

Dimensions: n = kept GT boxes of one image, k = crowd regions kept as ignore regions.

Construction reads the annotation file with pycocotools, checks that every image file exists, and
turns each image's annotations into numpy arrays (boxes xyxy in original pixels, clipped to the
image; contiguous labels). Every annotation lands in exactly one bucket of `DataReport`, checked in
this order: unknown image id -> malformed (no 4 finite bbox numbers) -> unknown category ->
crowd dropped (when `DataConfig.crowd` is "drop") -> degenerate (width or height <= 0) -> outside
the image (no overlap; touching the border counts as outside) -> kept, clipped to the image (crowd
ones as ignore regions). A box that overlaps the image keeps a positive size after clipping, so
"degenerate after clipping" needs no separate check.

Sample keys: `dataset[i]` with an int, or `dataset[(i, aug_seed)]` with the per-draw augmentation
seed the training sampler supplies (`detector.data.sampler.AugSeedSampler`). An int key in training
mode uses `derive_seed(i)`, so it is reproducible but the same on every call. Evaluation ignores seeds.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import os
from dataclasses import asdict, dataclass

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from detector.config import DataConfig
from detector.data.transforms import EvalTransform, TrainTransform, derive_seed


class DataError(ValueError):
    """A data problem the user must fix, as one line naming the file."""


@dataclass
class DataReport:
    """What loading the annotations kept and dropped (each annotation is counted once)."""

    images: int = 0
    annotations_kept: int = 0
    crowd_ignored: int = 0
    crowd_dropped: int = 0
    dropped_degenerate: int = 0  # width or height <= 0 (after clipping to the image)
    dropped_outside: int = 0  # no overlap with the image at all
    dropped_unknown_category: int = 0
    dropped_unknown_image: int = 0  # image_id not among the file's images
    dropped_malformed: int = 0  # bbox missing, not 4 numbers, or not finite

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def summary(self) -> str:
        dropped = {k[len("dropped_"):]: v for k, v in self.as_dict().items() if k.startswith("dropped_") and v}
        text = (f"{self.images} images, {self.annotations_kept} boxes kept, "
                f"crowd {self.crowd_ignored} ignored / {self.crowd_dropped} dropped")
        if dropped:
            text += ", dropped " + ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in dropped.items())
        return text


def _load_coco(ann_file: str):
    """pycocotools COCO with its prints silenced and its failures turned into one-line DataErrors."""
    from pycocotools.coco import COCO

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
    for key in ("images", "annotations", "categories"):
        if not all(isinstance(x, dict) for x in data.get(key, [])):
            raise DataError(f"malformed annotation file: {ann_file} ('{key}' must hold objects)")
    for key, required in (("images", "id"), ("annotations", "image_id"), ("categories", "id")):
        for x in data.get(key, []):
            if required not in x:
                raise DataError(f"malformed annotation file: {ann_file} (an entry of '{key}' has no '{required}')")
    for i, ann in enumerate(data["annotations"]):
        ann.setdefault("id", -(i + 1))  # pycocotools indexes by id; the value is not used here
        ann.setdefault("category_id", None)
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _parse_bbox(ann: dict) -> tuple[float, float, float, float] | None:
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


class CocoDetection(Dataset):
    """COCO-format images and boxes, transformed for training or evaluation.

    Args:
        images_dir: folder that the `file_name` of each image is relative to.
        ann_file: COCO JSON (images, annotations, categories).
        cfg: sizes, flip probability, crowd handling, normalisation.
        train: random multi-scale + flip (`TrainTransform`) or fixed size (`EvalTransform`).
        categories: list of {"id", "name"} fixing the label order (label = position); pass the
            training set's `categories` to the validation set. Default: this file's, sorted by id.
    Attributes:
        categories, cat_id_to_label, label_to_cat_id, num_classes, report, image_ids (every image,
        including those without annotations), cfg, train, transform.
    """

    def __init__(self, images_dir: str, ann_file: str, cfg: DataConfig, train: bool,
                 categories: list[dict] | None = None):
        if cfg.crowd not in ("ignore", "drop"):
            raise DataError(f"data.crowd: '{cfg.crowd}' is not one of ignore, drop")
        self.images_dir, self.ann_file, self.cfg, self.train = str(images_dir), str(ann_file), cfg, train
        coco = _load_coco(self.ann_file)
        given = categories is not None
        if not given:
            categories = sorted(coco.dataset.get("categories", []), key=lambda c: c["id"])
        self.categories = [{"id": int(c["id"]), "name": str(c.get("name", c["id"]))} for c in categories]
        self.label_to_cat_id = [c["id"] for c in self.categories]
        self.cat_id_to_label = {cid: label for label, cid in enumerate(self.label_to_cat_id)}
        if len(self.cat_id_to_label) != len(self.label_to_cat_id):
            raise DataError(f"duplicate category ids in {'the given categories' if given else self.ann_file}")
        self.num_classes = len(self.categories)

        self.image_ids: list[int] = []
        self.paths: list[str] = []
        self.sizes: list[tuple[int, int]] = []  # (h, w) as recorded in the annotation file
        for img in coco.dataset["images"]:
            if not img.get("file_name"):
                raise DataError(f"image {img['id']}: no file_name in {self.ann_file}")
            path = os.path.join(self.images_dir, str(img["file_name"]))
            if not os.path.isfile(path):
                raise DataError(f"missing image: {path}")
            try:
                h, w = int(img["height"]), int(img["width"])
            except (KeyError, TypeError, ValueError):
                raise DataError(f"image {img['id']} ({path}): missing or invalid width/height in {self.ann_file}") from None
            if h <= 0 or w <= 0:
                raise DataError(f"image {img['id']} ({path}): non-positive width/height in {self.ann_file}")
            self.image_ids.append(int(img["id"]))
            self.paths.append(path)
            self.sizes.append((h, w))
        if len(set(self.image_ids)) != len(self.image_ids):
            raise DataError(f"duplicate image ids in {self.ann_file}")
        self.report = DataReport(images=len(self.image_ids))
        self._cache: dict[int, np.ndarray] | None = {} if cfg.cache_images else None
        self._parse(coco)
        if train:
            self.transform = TrainTransform(tuple(cfg.min_size), cfg.max_size, cfg.flip_prob, tuple(cfg.mean), tuple(cfg.std))
        else:
            self.transform = EvalTransform(cfg.test_min_size, cfg.max_size, tuple(cfg.mean), tuple(cfg.std))

    def _parse(self, coco) -> None:
        """Fill self.boxes (n,4) / self.labels (n,) / self.ignore (k,4) per image and self.report."""
        r = self.report
        known = set(self.image_ids)
        r.dropped_unknown_image = sum(1 for a in coco.dataset["annotations"] if a["image_id"] not in known)
        self.boxes, self.labels, self.ignore = [], [], []
        for image_id, (h, w) in zip(self.image_ids, self.sizes):
            boxes, labels, ignore = [], [], []
            for ann in coco.imgToAnns.get(image_id, []):
                bbox = _parse_bbox(ann)
                if bbox is None:
                    r.dropped_malformed += 1
                    continue
                if ann["category_id"] not in self.cat_id_to_label:
                    r.dropped_unknown_category += 1
                    continue
                crowd = bool(ann.get("iscrowd", 0))
                if crowd and self.cfg.crowd == "drop":
                    r.crowd_dropped += 1
                    continue
                x, y, bw, bh = bbox
                if bw <= 0 or bh <= 0:
                    r.dropped_degenerate += 1
                    continue
                x1, y1, x2, y2 = x, y, x + bw, y + bh
                if x1 >= w or y1 >= h or x2 <= 0 or y2 <= 0:
                    r.dropped_outside += 1
                    continue
                # overlap is positive here, so the clipped box keeps a positive width and height
                clipped = [max(x1, 0.0), max(y1, 0.0), min(x2, float(w)), min(y2, float(h))]
                if crowd:
                    ignore.append(clipped)
                    r.crowd_ignored += 1
                else:
                    boxes.append(clipped)
                    labels.append(self.cat_id_to_label[ann["category_id"]])
                    r.annotations_kept += 1
            self.boxes.append(np.asarray(boxes, dtype=np.float32).reshape(-1, 4))
            self.labels.append(np.asarray(labels, dtype=np.int64))
            self.ignore.append(np.asarray(ignore, dtype=np.float32).reshape(-1, 4))

    def __len__(self) -> int:
        return len(self.image_ids)

    def load(self, index: int) -> dict:
        """The untransformed sample: "image" uint8 (3, H, W), "boxes" float32 (n, 4) xyxy original
        pixels, "labels" long (n,), "ignore" float32 (k, 4), "image_id" int."""
        array = self._cache.get(index) if self._cache is not None else None
        if array is None:
            array = self._decode(index)
            if self._cache is not None:
                self._cache[index] = array
        return {
            "image": torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous(),
            "boxes": torch.from_numpy(self.boxes[index].copy()),
            "labels": torch.from_numpy(self.labels[index].copy()),
            "ignore": torch.from_numpy(self.ignore[index].copy()),
            "image_id": self.image_ids[index],
        }

    def _decode(self, index: int) -> np.ndarray:
        path, (h, w) = self.paths[index], self.sizes[index]
        try:
            with Image.open(path) as im:
                array = np.asarray(im.convert("RGB"))
        except OSError as exc:
            raise DataError(f"unreadable image: {path} ({exc})") from None
        if array.shape[:2] != (h, w):
            raise DataError(f"image size mismatch: {path} is {array.shape[1]}x{array.shape[0]}, "
                            f"{self.ann_file} says {w}x{h}")
        return array

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        """`load(index)` transformed: "image" float32 (3, h', w') normalised, "boxes"/"ignore" in
        resized pixels, plus "scale" (resized = original * scale) and "flipped"."""
        index, aug_seed = key if isinstance(key, tuple) else (key, None)
        index = int(index)
        generator = None
        if self.train:
            generator = torch.Generator().manual_seed(derive_seed(index) if aug_seed is None else int(aug_seed))
        return self.transform(self.load(index), generator)


__all__ = ["DataError", "DataReport", "CocoDetection"]
