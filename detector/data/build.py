"""Build the train and val datasets a config names: the embedded benchmark, a COCO-format or a VOC-style set
(converted into COCO JSON in the workspace, `detector.data.voc`)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from detector.config import Config

if TYPE_CHECKING:  # `dataset_paths` needs no torch (a study's table reads its val file)
    from detector.data.coco import CocoDetection


def dataset_paths(cfg: Config, workspace: Path, progress=None) -> dict[str, Path]:
    """Image folders and annotation files; generates the synthetic benchmark on first use."""
    d = cfg.data
    if d.dataset == "synth":
        from detector.data.synth import ensure_dataset

        root = ensure_dataset(Path(workspace) / "data", d.synth, progress=progress)
        return {
            "train_images": root / "images" / "train", "train_json": root / "instances_train.json",
            "val_images": root / "images" / "val", "val_json": root / "instances_val.json",
        }
    if d.dataset == "voc":
        from detector.data.voc import dataset_paths as voc_paths

        return voc_paths(d.voc, Path(workspace) / "data")
    return {k: Path(getattr(d, k)).expanduser() for k in ("train_images", "train_json", "val_images", "val_json")}


def build_datasets(cfg: Config, workspace: Path, progress=None) -> tuple[CocoDetection, CocoDetection]:
    from detector.data.coco import CocoDetection

    paths = dataset_paths(cfg, workspace, progress)
    train = CocoDetection(paths["train_images"], paths["train_json"], cfg.data, train=True)
    val = CocoDetection(paths["val_images"], paths["val_json"], cfg.data, train=False, categories=train.categories)
    return train, val
