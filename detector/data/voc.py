"""A VOC-style dataset, converted once per split into a COCO JSON that every reader of COCO data then uses.

Layout under `data.voc.root`: `ImageSets/Main/<split>.txt` (one image id a line), `Annotations/<id>.xml`,
`JPEGImages/<file>`. The conversion writes `<workspace>/data/voc/<split>-<content hash>.json`, so training
(`coco.CocoDetection`), COCO AP, VOC mAP (`evaluation.voc_eval`) and the paired bootstrap read VOC data
exactly as they read any COCO set, and a run's key holds the content hash, not the path.

Conventions (each with the reference it follows):
  * boxes: VOC's xmin..xmax, ymin..ymax are 1-based pixel indices, both ends inclusive (the devkit computes
    widths as xmax - xmin + 1). The continuous box covering those pixels is (xmin - 1, ymin - 1, xmax, ymax),
    as detectron2's `load_voc_instances` reads them; its continuous IoU equals the devkit's +1 IoU on the XML
    values, so `voc_eval` with `iou="continuous"` reproduces the devkit. (mmdetection 3.x subtracts 1 from all
    four and evaluates with w = x2 - x1 by default: every box 1 px smaller than the devkit's, unless
    `use_legacy_coordinate=True`.) Written as COCO's [x, y, w, h] = [xmin - 1, ymin - 1, xmax - xmin + 1,
    ymax - ymin + 1].
  * difficult objects: written as crowd boxes (`"iscrowd": 1`, and `"difficult": 1` for the record). In
    training `data.crowd` then decides: "ignore" (default) makes them ignore regions, as mmdetection keeps
    them in `gt_bboxes_ignore` and as the evaluation treats them (a detection on one is neither TP nor FP);
    "drop" removes them, as py-faster-rcnn (`use_diff=False`) does. The VOC metric reads every crowd box of
    the file as difficult, whatever `data.crowd` says; COCO AP ignores them by its crowd rule.
  * image file: `JPEGImages/<the XML's filename>`, or `JPEGImages/<id>.jpg` when it has none (the devkit,
    mmdetection and detectron2 use `<id>.jpg`, which VOC's own XMLs name too).
  * image size: the XML's `<size>`; without a valid one, the image header (as mmdetection does).
  * image ids: 1..N in the order of the split file (COCO needs integers); the VOC id is kept as "voc_id".
  * classes (`data.voc.classes`): "voc": the 20 classes in the devkit's order; "data": the sorted names found
    in the train split. Names are compared after stripping whitespace, case kept (the devkit compares them
    exactly). Category ids are 1..K in that order, for both splits.

Bad data, as `coco.py` treats the same situation: a missing split file, XML file or image, or an XML that
does not parse, is a one-line `DataError` naming the file; an object without a usable name or box, or of a
class outside the list, is left out and counted (`VocReport`); an image without a size in its XML whose
header cannot be read is left out and counted (`coco.py` skips unreadable images). A wrong image size is
caught later, by `CocoDetection`, which skips and counts that image.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image

from detector.config import VocConfig
from detector.data.errors import DataError

log = logging.getLogger("anchorlab")

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable", "dog",
    "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
BOX_TAGS = ("xmin", "ymin", "xmax", "ymax")


@dataclass
class VocReport:
    """What the conversion of one split kept and left out (the box-level buckets are `coco.DataReport`'s)."""

    images: int = 0  # written to the JSON
    images_unreadable: int = 0  # no valid <size> in the XML and an image header that cannot be read
    objects: int = 0  # written (difficult ones included)
    difficult: int = 0  # of those, written as crowd boxes
    dropped_unknown_class: int = 0  # name not in the class list
    dropped_malformed: int = 0  # no name, no bndbox, or not 4 finite numbers

    def summary(self) -> str:
        text = f"{self.images} images, {self.objects} objects ({self.difficult} difficult, as crowd boxes)"
        left = {"unreadable images without a size": self.images_unreadable,
                "objects of other classes": self.dropped_unknown_class, "malformed objects": self.dropped_malformed}
        if any(left.values()):
            text += ", left out " + ", ".join(f"{v} {k}" for k, v in left.items() if v)
        return text


def split_ids(root: Path, split: str) -> list[str]:
    """The image ids of `ImageSets/Main/<split>.txt` in file order (first column; blank lines skipped)."""
    path = root / "ImageSets" / "Main" / f"{split}.txt"
    if not path.is_file():
        raise DataError(f"missing VOC image set: {path}")
    ids = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    if not ids:
        raise DataError(f"empty VOC image set: {path}")
    if len(set(ids)) != len(ids):
        repeated = next(i for i in ids if ids.count(i) > 1)
        raise DataError(f"VOC image set lists '{repeated}' twice: {path}")
    return ids


def _text(node: ET.Element | None, tag: str) -> str | None:
    child = node.find(tag) if node is not None else None
    return child.text.strip() if child is not None and child.text and child.text.strip() else None


def _number(text: str | None) -> float | None:
    try:
        value = float(text) if text is not None else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


def read_xml(path: Path) -> dict:
    """One annotation file -> {"filename": str | None, "size": (w, h) | None, "objects": [(name, difficult,
    (xmin, ymin, xmax, ymax) as in the file) | None for a malformed object]}. DataError when it cannot be read."""
    if not path.is_file():
        raise DataError(f"missing VOC annotation file: {path}")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise DataError(f"malformed VOC annotation file: {path} ({exc})") from None
    size = root.find("size")
    w, h = _number(_text(size, "width")), _number(_text(size, "height"))
    objects = []
    for obj in root.findall("object"):
        name = _text(obj, "name")
        box = tuple(_number(_text(obj.find("bndbox"), tag)) for tag in BOX_TAGS)
        flag = _text(obj, "difficult")
        difficult = _number(flag) if flag is not None else 0.0  # absent: not difficult (as mmdetection reads it)
        if name is None or difficult is None or any(v is None for v in box):
            objects.append(None)
        else:
            objects.append((name, bool(difficult), box))
    valid_size = w is not None and h is not None and w > 0 and h > 0 and w == int(w) and h == int(h)
    return {"filename": _text(root, "filename"), "size": (int(w), int(h)) if valid_size else None, "objects": objects}


def _image_size(path: Path) -> tuple[int, int] | None:
    """(w, h) from the image header, or None when it cannot be read; DataError when the file is missing."""
    if not path.is_file():
        raise DataError(f"missing image: {path}")
    try:
        with Image.open(path) as im:
            return im.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None


# Parsed splits and converted JSONs, keyed by the root, the split, its ids and the (mtime, size) of each XML
# file: a study computes a run key per row and seed, and this keeps that to one parse per split and process
# while an edited XML still changes the key.
_parsed: dict[tuple, list[tuple[str, dict]]] = {}
_converted: dict[tuple, tuple[bytes, str, VocReport]] = {}


def _split_key(root: Path, split: str) -> tuple:
    """What a parsed split depends on (module doc of the caches above); DataError for a missing root."""
    if not root.is_dir():
        raise DataError(f"missing VOC root folder: {root}")
    ids = tuple(split_ids(root, split))
    stamps = []
    for voc_id in ids:
        path = root / "Annotations" / f"{voc_id}.xml"
        st = path.stat() if path.is_file() else None
        stamps.append((st.st_mtime_ns, st.st_size) if st else None)
    return str(root.resolve()), split, ids, tuple(stamps)


def read_split(root: str | Path, split: str) -> list[tuple[str, dict]]:
    """[(VOC id, `read_xml` record)] of every image of the split, in file order (cached per process)."""
    root = Path(root).expanduser()
    key = _split_key(root, split)
    if key not in _parsed:
        _parsed[key] = [(i, read_xml(root / "Annotations" / f"{i}.xml")) for i in key[2]]
    return _parsed[key]


def to_coco(root: str | Path, split: str, classes: list[str]) -> tuple[dict, VocReport]:
    """The split as a COCO instances dict (module doc: conventions) and what was left out.

    Returns ({"info", "images", "annotations", "categories"}, VocReport); bbox [x, y, w, h] continuous pixels.
    """
    root = Path(root).expanduser()
    label = {name: i + 1 for i, name in enumerate(classes)}
    report = VocReport()
    images, annotations = [], []
    for voc_id, record in read_split(root, split):
        file_name = f"JPEGImages/{record['filename'] or voc_id + '.jpg'}"
        size = record["size"] or _image_size(root / file_name)
        if size is None:
            report.images_unreadable += 1
            continue
        image_id = len(images) + 1
        images.append({"id": image_id, "file_name": file_name, "width": size[0], "height": size[1], "voc_id": voc_id})
        for obj in record["objects"]:
            if obj is None:
                report.dropped_malformed += 1
                continue
            name, difficult, (x1, y1, x2, y2) = obj
            if name not in label:
                report.dropped_unknown_class += 1
                continue
            # 1-based inclusive pixel indices -> the continuous box over those pixels (module doc)
            w, h = x2 - x1 + 1.0, y2 - y1 + 1.0
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": label[name],
                                "bbox": [x1 - 1.0, y1 - 1.0, w, h], "area": max(w, 0.0) * max(h, 0.0),
                                "iscrowd": int(difficult), "difficult": int(difficult)})
            report.difficult += int(difficult)
    report.images, report.objects = len(images), len(annotations)
    if not images:
        raise DataError(f"no usable images in VOC split '{split}' of {root}")
    info = {"description": f"VOC split '{split}' converted by anchorlab", "voc_report": asdict(report)}
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(classes)]
    return {"info": info, "images": images, "annotations": annotations, "categories": categories}, report


def _encode(coco: dict) -> bytes:
    return json.dumps(coco, sort_keys=True, separators=(",", ":")).encode()


def _convert(cfg: VocConfig, split: str, classes: list[str]) -> tuple[bytes, str, VocReport]:
    """(JSON bytes, their sha256, report) of one converted split (cached per process)."""
    root = Path(cfg.root).expanduser()
    key = (*_split_key(root, split), tuple(classes))
    if key not in _converted:
        coco, report = to_coco(root, split, classes)
        blob = _encode(coco)
        _converted[key] = (blob, hashlib.sha256(blob).hexdigest(), report)
    return _converted[key]


def class_names(cfg: VocConfig) -> list[str]:
    """The class list `cfg.classes` names (module doc); DataError when the train split holds no object."""
    if cfg.classes == "voc":
        return list(VOC_CLASSES)
    names = {obj[0] for _, record in read_split(cfg.root, cfg.train_split) for obj in record["objects"] if obj}
    if not names:
        raise DataError(f"no named objects in VOC split '{cfg.train_split}' of {cfg.root}: no classes to take")
    return sorted(names)


def fingerprint(cfg: VocConfig) -> dict[str, str]:
    """sha256 of both converted splits: what the data is, wherever it lies (for `detector.run_key`)."""
    classes = class_names(cfg)
    return {f"voc_{part}": _convert(cfg, split, classes)[1]
            for part, split in (("train", cfg.train_split), ("val", cfg.val_split))}


def ensure_split(cfg: VocConfig, split: str, classes: list[str], data_dir: str | Path) -> Path:
    """`<data_dir>/voc/<split>-<hash>.json`, written (atomically) when absent; logs what was left out."""
    blob, digest, report = _convert(cfg, split, classes)
    path = Path(data_dir) / "voc" / f"{split}-{digest[:16]}.json"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(blob)
        os.replace(tmp, path)
    (log.warning if report.images_unreadable or report.dropped_malformed else log.info)(
        "VOC %s (%s): %s", split, cfg.root, report.summary())
    return path


def dataset_paths(cfg: VocConfig, data_dir: str | Path) -> dict[str, Path]:
    """The keys of `detector.data.build.dataset_paths`: image folders (the VOC root) and converted JSONs."""
    classes = class_names(cfg)
    root = Path(cfg.root).expanduser()
    return {"train_images": root, "train_json": ensure_split(cfg, cfg.train_split, classes, data_dir),
            "val_images": root, "val_json": ensure_split(cfg, cfg.val_split, classes, data_dir)}


__all__ = ["VOC_CLASSES", "VocReport", "split_ids", "read_xml", "read_split", "to_coco", "class_names", "fingerprint",
           "ensure_split", "dataset_paths"]
