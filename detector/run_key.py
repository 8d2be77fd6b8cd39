"""A run's identity: one key over everything that can change what the run computes.

The key hashes, as JSON:
  1. `KEY_VERSION`, bumped by hand whenever a default changes behaviour (new code, same config);
  2. the dataset's fingerprint: the synthetic generator's version for `synth` (its options are config
     fields), the content hash of both annotation files for `coco`, of both converted splits for `voc`
     (not their paths: a moved dataset is the same dataset);
  3. the seed;
  4. every config field whose value differs from its default, as `dotted.key: value`, leaving out
     fields that cannot change a result (`NOT_RESULT`: name, device, threads, log/checkpoint/record
     cadence) and the sections of the methods that are not active (`assign.<other method>.*`).

Because only non-default values enter (4), adding a field whose default keeps the old behaviour, or a
new method's config section, leaves every existing key unchanged; changing a default does not, so
such a change must bump `KEY_VERSION`. Studies, `anchorlab train` and the checkpoint folders all key
runs by `run_key`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from detector.config import Config, ConfigError

KEY_VERSION = 3  # 2: ATSS exact centre distances; PAA: order-free anchor scores, float64 GMM, rounding ties resolved; 3: synth defaults min_object_size 16, clutter 0.2

# Fields that cannot change a run's result: what it is called, where it runs, how often it reports.
# `eval.voc_metric` is not among them: it changes which metrics a run reports, and a run reused by another
# study copies its metrics, so a key without it would fill a VOC column from a run that never computed it.
# The same holds for `eval.nms_recall`, `eval.aspect_ap` and `eval.crowd_ap` (`detector.evaluation.extra`).
NOT_RESULT = frozenset({
    "name", "data.num_workers", "data.cache_images", "model.channels_last", "train.device", "train.num_threads", "train.log_every",
    "train.checkpoint_every", "train.record_every", "train.record_gts", "train.eval_every", "train.seed",
    # like the device: where a run trains. The global batch and the normalisers are the same over any number of
    # processes (`detector.distributed`); what differs is float order and, with trainable BatchNorm, per-process
    # statistics, as between two GPU models. So a study row keeps its key under `study run --gpus-per-run K`.
    "train.nproc",
})
COCO_PATHS = ("data.train_images", "data.train_json", "data.val_images", "data.val_json")


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def changed_fields(obj: Any, prefix: str = "") -> dict[str, Any]:
    """{dotted.key: value} of the fields of dataclass `obj` (recursively) that differ from their defaults.

    A nested section is compared field by field against its own type's defaults.
    """
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            out.update(changed_fields(value, f"{key}."))
        elif value != _field_default(f):
            out[key] = value
    return out


def _inactive_sections(cfg: Config) -> list[str]:
    """`assign.<name>.` prefixes of the method sections other than the active method's."""
    return [f"assign.{f.name}." for f in dataclasses.fields(cfg.assign)
            if dataclasses.is_dataclass(getattr(cfg.assign, f.name)) and f.name != cfg.assign.name]


_file_hashes: dict[tuple[str, int, int], str] = {}


def file_fingerprint(path: str | Path) -> str:
    """sha256 of a file's bytes (cached per path, size and mtime within the process)."""
    path = Path(path).expanduser()
    try:
        st = path.stat()
    except OSError:
        raise ConfigError(f"annotation file not found: {path}") from None
    cache_key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if cache_key not in _file_hashes:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        _file_hashes[cache_key] = digest.hexdigest()
    return _file_hashes[cache_key]


def dataset_fingerprint(cfg: Config) -> dict[str, Any]:
    """What the data is, independent of where it lies (see the module doc, item 2)."""
    if cfg.data.dataset == "synth":
        from detector.data.synth import GENERATOR_VERSION

        return {"synth_generator": GENERATOR_VERSION}
    if cfg.data.dataset == "voc":
        from detector.data.errors import DataError
        from detector.data.voc import fingerprint

        try:
            return fingerprint(cfg.data.voc)
        except DataError as exc:
            raise ConfigError(str(exc)) from None
    return {"train_json": file_fingerprint(cfg.data.train_json), "val_json": file_fingerprint(cfg.data.val_json)}


def key_payload(cfg: Config) -> dict[str, Any]:
    """The JSON-able content the key hashes (useful to see why two keys differ)."""
    skip = _inactive_sections(cfg)
    if cfg.data.dataset != "synth":
        skip.append("data.synth.")
    # a VOC set is its fingerprint (not its folder); the VOC section means nothing for other datasets
    skip.append("data.voc.root" if cfg.data.dataset == "voc" else "data.voc.")
    if cfg.eval.voc_metric == "none":
        skip.append("eval.voc_iou")  # the IoU of a metric that is not computed
    if not cfg.eval.aspect_ap:
        skip.append("eval.aspect_edges")  # the buckets of metrics that are not computed
    if not cfg.eval.crowd_ap:
        skip.append("eval.crowd_edges")
    fields = {}
    for key, value in changed_fields(cfg).items():
        if key in NOT_RESULT or any(key.startswith(p) for p in skip):
            continue
        if cfg.data.dataset != "synth" and key in COCO_PATHS:
            continue
        fields[key] = value
    return {"version": KEY_VERSION, "data": dataset_fingerprint(cfg), "seed": cfg.train.seed,
            "fields": dict(sorted(fields.items()))}


def run_key(cfg: Config) -> str:
    """A 16-hex-digit key: equal for two configs exactly when their results must be equal (module doc)."""
    blob = json.dumps(key_payload(cfg), sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def run_dir(workspace: str | Path, key: str, run_id: str = "") -> Path:
    """`<workspace>/checkpoints/<key>[/<run id>]`: every tracked run has a folder of its own."""
    base = Path(os.fspath(workspace)) / "checkpoints" / key
    return base / run_id if run_id else base


__all__ = ["KEY_VERSION", "NOT_RESULT", "run_key", "key_payload", "changed_fields", "dataset_fingerprint",
           "file_fingerprint", "run_dir"]
