"""A COCO-format detection dataset: annotations parsed once, bad data counted instead of crashing.

Dimensions: n = kept GT boxes of one image, k = crowd regions kept as ignore regions.

Construction reads the annotation file (`annotations.read_annotations`), checks that every image file
exists and can be used (`verify.image_problem`: a missing file aborts, since it usually means a wrong
folder; a corrupt one, or one whose size disagrees with the file, is skipped and counted, so that one
bad val image cannot fail a run after its training), and turns each image's annotations into numpy
arrays (boxes xyxy in original pixels, clipped to the image; contiguous labels). Every annotation lands
in exactly one bucket of `DataReport`, checked in this order: unknown image id -> malformed (no 4 finite
bbox numbers) -> unknown category (these three shared with `anchorlab data stats` through
`annotations.screen_annotations`) -> on a skipped image file -> crowd dropped (when `DataConfig.crowd` is "drop") ->
degenerate (width or height <= 0) -> outside the image (no overlap; touching the border counts as
outside) -> kept, clipped to the image (crowd ones as ignore regions). A box that overlaps the image
keeps a positive size after clipping, so "degenerate after clipping" needs no separate check.

Sample keys: `dataset[i]` with an int, or `dataset[(i, aug_seed)]` with the per-draw augmentation
seed the training sampler supplies (`detector.data.sampler.AugSeedSampler`). An int key in training
mode uses `derive_seed(i)`, so it is reproducible but the same on every call. Evaluation ignores seeds.
"""
from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from detector.config import DataConfig
from detector.data.annotations import read_annotations, screen_annotations
from detector.data.errors import DataError
from detector.data.transforms import EvalTransform, TrainTransform, derive_seed
from detector.data.verify import UNREADABLE, image_problem

log = logging.getLogger("anchorlab")
SKIPPED_NAMED = 3  # skipped image files named in the log; the rest are counted


@dataclass
class DataReport:
    """What loading kept and dropped: image files, then annotations (each annotation is counted once)."""

    images: int = 0  # usable images (the dataset's length)
    images_unreadable: int = 0  # skipped: the file is corrupt (truncated, not an image, bad checksum)
    images_wrong_size: int = 0  # skipped: the file's size is not the annotation file's width x height
    annotations_kept: int = 0
    crowd_ignored: int = 0
    crowd_dropped: int = 0
    dropped_degenerate: int = 0  # width or height <= 0 (after clipping to the image)
    dropped_outside: int = 0  # no overlap with the image at all
    dropped_unknown_category: int = 0
    dropped_unknown_image: int = 0  # image_id not among the file's images
    dropped_malformed: int = 0  # bbox missing, not 4 numbers, or not finite
    dropped_skipped_image: int = 0  # on an image file skipped as unreadable or of the wrong size

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def summary(self) -> str:
        dropped = {k[len("dropped_"):]: v for k, v in self.as_dict().items() if k.startswith("dropped_") and v}
        text = f"{self.images} images"
        skipped = {"unreadable": self.images_unreadable, "wrong size": self.images_wrong_size}
        if any(skipped.values()):
            text += " (skipped " + ", ".join(f"{v} {k}" for k, v in skipped.items() if v) + ")"
        text += (f", {self.annotations_kept} boxes kept, "
                 f"crowd {self.crowd_ignored} ignored / {self.crowd_dropped} dropped")
        if dropped:
            text += ", dropped " + ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in dropped.items())
        return text


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
        categories, cat_id_to_label, label_to_cat_id, num_classes, report, image_ids (every usable image,
        including those without annotations), skipped ([(path, reason)] of the image files left out), cfg,
        train, transform.
    """

    def __init__(self, images_dir: str, ann_file: str, cfg: DataConfig, train: bool,
                 categories: list[dict] | None = None):
        if cfg.crowd not in ("ignore", "drop"):
            raise DataError(f"data.crowd: '{cfg.crowd}' is not one of ignore, drop")
        self.images_dir, self.ann_file, self.cfg, self.train = str(images_dir), str(ann_file), cfg, train
        data = read_annotations(self.ann_file)
        given = categories is not None
        if not given:
            categories = sorted(data["categories"], key=lambda c: c["id"])
        self.categories = [{"id": int(c["id"]), "name": str(c.get("name", c["id"]))} for c in categories]
        self.label_to_cat_id = [c["id"] for c in self.categories]
        self.cat_id_to_label = {cid: label for label, cid in enumerate(self.label_to_cat_id)}
        if len(self.cat_id_to_label) != len(self.label_to_cat_id):
            raise DataError(f"duplicate category ids in {'the given categories' if given else self.ann_file}")
        if not self.categories:  # a detector needs at least one class (a head with 0 outputs fails in torch)
            raise DataError(f"no categories in {self.ann_file}: its 'categories' list must name at least one")
        self.num_classes = len(self.categories)
        self.report = DataReport()
        self._read_images(data["images"])
        self._parse(data["annotations"])
        self._cache: dict[int, np.ndarray] | None = {} if cfg.cache_images else None
        if train:
            self.transform = TrainTransform(tuple(cfg.min_size), cfg.max_size, cfg.flip_prob, tuple(cfg.mean), tuple(cfg.std))
        else:
            self.transform = EvalTransform(cfg.test_min_size, cfg.max_size, tuple(cfg.mean), tuple(cfg.std))

    def _read_images(self, images: list[dict]) -> None:
        """Fill self.image_ids / paths / sizes with the usable image files, self.skipped with the others."""
        self.image_ids: list[int] = []
        self.paths: list[str] = []
        self.sizes: list[tuple[int, int]] = []  # (h, w) as recorded in the annotation file
        self.skipped: list[tuple[str, str]] = []
        self._all_image_ids: set[int] = set()
        for img in images:
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
            if int(img["id"]) in self._all_image_ids:
                raise DataError(f"duplicate image ids in {self.ann_file}")
            self._all_image_ids.add(int(img["id"]))
            problem = image_problem(path, h, w)
            if problem is not None:
                self.skipped.append((path, problem))
                continue
            self.image_ids.append(int(img["id"]))
            self.paths.append(path)
            self.sizes.append((h, w))
        r = self.report
        r.images = len(self.image_ids)
        r.images_unreadable = sum(reason == UNREADABLE for _, reason in self.skipped)
        r.images_wrong_size = len(self.skipped) - r.images_unreadable
        if self.skipped:
            named = ", ".join(f"{p} ({why.replace('_', ' ')})" for p, why in self.skipped[:SKIPPED_NAMED])
            more = len(self.skipped) - SKIPPED_NAMED
            log.warning("%s: skipped %d image file(s): %s%s", self.ann_file, len(self.skipped), named,
                        f" and {more} more" if more > 0 else "")
        if not self.image_ids:
            why = f" ({len(self.skipped)} skipped as unreadable or of the wrong size)" if self.skipped else ""
            raise DataError(f"no usable images in {self.ann_file}{why}")

    def _parse(self, annotations: list[dict]) -> None:
        """Fill self.boxes (n,4) / self.labels (n,) / self.ignore (k,4) per image and self.report."""
        r = self.report
        by_image, dropped = screen_annotations(annotations, self._all_image_ids, self.cat_id_to_label)
        r.dropped_unknown_image, r.dropped_malformed = dropped["unknown_image"], dropped["malformed"]
        r.dropped_unknown_category = dropped["unknown_category"]
        usable = set(self.image_ids)
        r.dropped_skipped_image = sum(len(anns) for i, anns in by_image.items() if i not in usable)
        self.boxes, self.labels, self.ignore = [], [], []
        for image_id, (h, w) in zip(self.image_ids, self.sizes):
            boxes, labels, ignore = [], [], []
            for ann, bbox in by_image.get(image_id, []):
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
