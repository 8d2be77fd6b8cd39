"""Reading, validating and writing a `Config`: YAML files, `--set a.b=c` overrides, one strict validator.

YAML files and overrides are merged as plain dicts and validated once by `build_config`, which rejects
unknown keys (naming the valid siblings) and wrong types with a one-line `ConfigError`.
"""
from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path
from typing import Any

import yaml

from detector.config.assign_sections import LOW_QUALITY_RULES
from detector.config.method_specs import METHOD_SPECS, SCORE_FUSIONS, method_config
from detector.config.ranges import check_ranges
from detector.config.schema import Config
from detector.config.sections import anchors_per_location


class ConfigError(ValueError):
    """A configuration problem, reported as one line naming the offending key."""


# Choices a string field may take; checked once in `build_config`.
CHOICES: dict[str, tuple[str, ...]] = {
    "data.dataset": ("synth", "coco", "voc"),
    "data.voc.classes": ("voc", "data"),
    "data.crowd": ("ignore", "drop"),
    "model.backbone.name": ("resnet18", "resnet34", "resnet50", "resnet101", "tiny"),
    "model.head.norm": ("gn", "none"),
    "model.head.aux": ("none", "iou", "centerness"),
    "loss.reg": ("giou", "iou", "l1"),
    "train.optimizer": ("sgd", "adamw"),
    "train.schedule": ("step", "cosine"),
    "train.amp_dtype": ("float16", "bfloat16"),
    "inference.score_fusion": ("auto", *SCORE_FUSIONS),
    "inference.pre_nms_candidates": ("pairs", "points"),
    "inference.threshold_on": ("fused", "cls"),
    "inference.clip": ("one_sided", "two_sided"),
    "assign.max_iou.low_quality": LOW_QUALITY_RULES,
    "eval.voc_metric": ("none", "11point", "area", "both"),
    "eval.voc_iou": ("continuous", "legacy"),
}
# Choice fields that were booleans once: YAML 1.1 also reads a bare `off` (and `no`) as false, so a boolean
# keeps its old meaning rather than failing.
BOOLEAN_CHOICES: dict[str, dict[bool, str]] = {
    "assign.max_iou.low_quality": {True: "torchvision", False: "off"},
}


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check (and lightly coerce) one leaf value against its annotated type."""
    origin = typing.get_origin(tp)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            expected = f"one of {', '.join(CHOICES[key])}" if key in CHOICES else "a string"
            raise ConfigError(f"{key}: expected {expected}, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported type {tp}")


def _from_dict(cls: type, data: Any, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            raise ConfigError(f"unknown key '{full}'; valid keys here: {', '.join(names)}")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = _from_dict(tp, value, full)
        else:
            if isinstance(value, bool) and full in BOOLEAN_CHOICES:
                value = BOOLEAN_CHOICES[full][value]
            kwargs[key] = _coerce(value, tp, full)
            if full in CHOICES and kwargs[key] not in CHOICES[full]:
                raise ConfigError(f"{full}: '{value}' is not one of {', '.join(CHOICES[full])}")
    return cls(**kwargs)


def deep_merge(base: dict, delta: dict) -> dict:
    """Return `base` updated recursively by `delta` (neither is modified)."""
    out = dict(base)
    for key, value in delta.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_override(text: str) -> dict:
    """Turn 'a.b.c=VALUE' into {'a': {'b': {'c': VALUE}}}; VALUE is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' is not of the form key.path=value")
    path, raw = text.split("=", 1)
    try:
        value = yaml.load(raw, Loader=YamlLoader) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    node: dict = {}
    root = node
    keys = path.strip().split(".")
    for k in keys[:-1]:
        node[k] = {}
        node = node[k]
    node[keys[-1]] = value
    return root


class YamlLoader(yaml.SafeLoader):
    """SafeLoader that also reads YAML 1.2 exponent floats (1e-4, 1.0e12), which PyYAML leaves as strings."""


YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789")
)


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.load(path.read_text(), Loader=YamlLoader) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{where}: malformed YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    return data


def build_config(data: dict | None = None) -> Config:
    """Validate a plain dict against `Config`, with cross-field checks."""
    cfg = _from_dict(Config, data or {}, "")
    _check(cfg)
    return cfg


def check_delta(data: dict) -> None:
    """Keys, types, choices and numeric ranges of a partial config (a delta over the defaults), on its own.

    For deltas that a later layer may replace (a study row under a profile): their values never reach
    `build_config`. Ranges are per field, so the defaults filling the rest pass them; the rules between
    fields need a whole config and are left to `build_config`.
    """
    try:
        check_ranges(_from_dict(Config, data, ""))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _check(cfg: Config) -> None:
    if cfg.assign.name not in METHOD_SPECS:  # read now, not at import: a test may add a method
        raise ConfigError(f"assign.name: '{cfg.assign.name}' is not one of {', '.join(METHOD_SPECS)}")
    try:
        check_ranges(cfg)  # every number of the shared sections (`ranges.RANGES`), before the rules between them
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    for f in dataclasses.fields(cfg.assign):  # every method section, active or not: each is logged with the run
        section = getattr(cfg.assign, f.name)
        if dataclasses.is_dataclass(section) and hasattr(section, "check"):  # a method config's own checks
            try:
                section.check()
            except ValueError as exc:
                raise ConfigError(f"assign.{f.name}: {exc}") from None
    if cfg.data.dataset == "coco":
        for key in ("train_images", "train_json", "val_images", "val_json"):
            if not getattr(cfg.data, key):
                raise ConfigError(f"data.{key}: required when data.dataset is 'coco'")
    if cfg.data.dataset == "voc":
        if not cfg.data.voc.root:
            raise ConfigError("data.voc.root: required when data.dataset is 'voc' (the folder holding Annotations/)")
        for key in ("train_split", "val_split"):  # a name of ImageSets/Main/<split>.txt, not a path
            split = getattr(cfg.data.voc, key)
            if not split or "/" in split or "\\" in split or split.startswith("."):
                raise ConfigError(f"data.voc.{key}: expected a split name such as trainval or test, got {split!r}")
    if cfg.model.head.norm == "gn" and cfg.model.head.width % cfg.model.head.gn_groups:
        raise ConfigError("model.head.width: must be divisible by model.head.gn_groups")
    if len(cfg.model.box_coder.weights) != 4:
        raise ConfigError("model.box_coder.weights: expected 4 numbers")
    if not cfg.data.min_size:
        raise ConfigError("data.min_size: needs at least one size")
    if any(not 0.0 < s < 1.0 for s in cfg.train.steps):
        raise ConfigError("train.steps: fractions of train.iterations, each in (0, 1)")
    if not 0.0 <= cfg.train.ema_decay < 1.0:
        raise ConfigError(f"train.ema_decay: must be in [0, 1) (0 = no EMA), got {cfg.train.ema_decay}")
    if cfg.loss.reg_iou_weighted and cfg.loss.reg_centerness_weighted:
        raise ConfigError("loss.reg_centerness_weighted: the regression loss is weighted by one target, and "
                          "loss.reg_iou_weighted is on too")
    for key in ("aspect_edges", "crowd_edges"):  # the bucket edges of the optional AP metrics
        edges = getattr(cfg.eval, key)
        if len(edges) != 2 or edges[0] >= edges[1]:
            raise ConfigError(f"eval.{key}: expected two increasing edges [e0, e1] (three buckets), got {edges}")
    if METHOD_SPECS[cfg.assign.name].box_coding == "ltrb":
        _check_points(cfg)


def _check_points(cfg: Config) -> None:
    """A point method reads one square anchor per location: its centre is the point, its side / the anchor
    scale is the stride (`box_coder.LTRBCoder`); its size bounds separate the levels."""
    anchors = cfg.model.anchors
    if anchors_per_location(anchors) != 1 or anchors.aspect_ratios != [1.0]:
        raise ConfigError(f"model.anchors: method '{cfg.assign.name}' predicts from points, one per location: needs "
                          f"aspect_ratios [1.0] and scales_per_octave 1, got {anchors.aspect_ratios} and "
                          f"{anchors.scales_per_octave}")
    bounds = method_config(cfg.assign).size_bounds
    if len(bounds) != len(anchors.strides) - 1:
        raise ConfigError(f"assign.{cfg.assign.name}.size_bounds: {len(anchors.strides)} levels need "
                          f"{len(anchors.strides) - 1} bounds, got {bounds}")


def load_config(paths: list[str | Path] | None = None, overrides: list[str] | None = None) -> Config:
    """Merge YAML files (later ones win) and `key=value` overrides, then validate."""
    data: dict = {}
    for p in paths or []:
        data = deep_merge(data, load_yaml(p))
    for text in overrides or []:
        data = deep_merge(data, parse_override(text))
    return build_config(data)


def config_to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def flatten(data: dict, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists are kept as values."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        full = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict):
            out.update(flatten(value, full))
        else:
            out[full] = value
    return out


def dump_yaml(cfg: Config) -> str:
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)


__all__ = [
    "CHOICES", "ConfigError", "YamlLoader", "build_config", "load_config", "load_yaml", "parse_override", "deep_merge",
    "config_to_dict", "flatten", "dump_yaml",
]
