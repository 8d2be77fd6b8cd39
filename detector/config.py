"""Typed run configuration: dataclasses with the papers' defaults, one strict validator.

A run is fully described by a `Config`. YAML files and `--set a.b=c` overrides are merged as plain
dicts and validated once by `build_config`, which rejects unknown keys (naming the valid siblings)
and wrong types with a one-line `ConfigError`.

Defaults are the papers' settings (ResNet-50, 800 px, 1x schedule at 16 images per batch); the CPU
profile lives in `studies/configs/quick.yaml`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A configuration problem, reported as one line naming the offending key."""


@dataclass
class SynthConfig:
    """Options of the embedded synthetic benchmark (see `detector.data.synth`)."""

    train: int = 2000
    val: int = 500
    size: int = 320
    seed: int = 0
    slender_share: float = 0.15  # share of objects with aspect ratio between 1:3 and 1:8
    acentric_share: float = 0.25  # share of rings, L-shapes and crescents
    crowding: float = 0.3  # probability that an image holds a cluster of overlapping objects
    clutter: float = 0.5  # 0..1, density of unannotated distractor shapes and background texture
    max_objects: int = 30
    min_object_size: float = 8.0  # px, smallest sqrt(w*h) of an object's drawn extent
    max_object_frac: float = 0.6  # largest sqrt(w*h) as a fraction of the image side
    min_visible: float = 0.4  # every annotated object keeps at least this share of its pixels visible


@dataclass
class DataConfig:
    """Where the images come from and how they are batched."""

    dataset: str = "synth"  # "synth" (generated into the workspace) or "coco" (paths below)
    synth: SynthConfig = field(default_factory=SynthConfig)
    train_images: str = ""
    train_json: str = ""
    val_images: str = ""
    val_json: str = ""
    min_size: list[int] = field(default_factory=lambda: [800])  # shorter side; several = multi-scale
    max_size: int = 1333
    test_min_size: int = 800
    flip_prob: float = 0.5
    crowd: str = "ignore"  # "ignore": crowd boxes become ignore regions; "drop": removed
    size_divisibility: int = 32
    num_workers: int = 0
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])


@dataclass
class BackboneConfig:
    name: str = "resnet50"  # resnet18 | resnet34 | resnet50 | resnet101 | tiny
    weights: str = ""  # local state-dict path; empty = random init (nothing is ever downloaded)
    frozen_bn: bool = False
    tiny_width: int = 32  # base width of the `tiny` CPU backbone


@dataclass
class AnchorConfig:
    strides: list[int] = field(default_factory=lambda: [8, 16, 32, 64, 128])
    octave_base_scale: float = 8.0
    scales_per_octave: int = 1
    aspect_ratios: list[float] = field(default_factory=lambda: [1.0])
    center_offset: float = 0.5  # anchor centre at (i + offset) * stride


@dataclass
class HeadConfig:
    num_convs: int = 4
    width: int = 256
    fpn_width: int = 256
    norm: str = "gn"  # gn | none
    gn_groups: int = 32
    prior_prob: float = 0.01
    aux: str = "none"  # none | iou | centerness  (extra 1-channel branch on the box tower)


@dataclass
class BoxCoderConfig:
    weights: list[float] = field(default_factory=lambda: [10.0, 10.0, 5.0, 5.0])
    clamp: float = 4.135166556742356  # log(1000 / 16), as maskrcnn-benchmark and torchvision


@dataclass
class ModelConfig:
    num_classes: int = 0  # 0 = taken from the dataset
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    anchors: AnchorConfig = field(default_factory=AnchorConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    box_coder: BoxCoderConfig = field(default_factory=BoxCoderConfig)


@dataclass
class MaxIoUConfig:
    pos_iou: float = 0.5
    neg_iou: float = 0.4
    low_quality: bool = True


@dataclass
class ATSSConfig:
    topk: int = 9
    center_eps: float = 0.01  # anchor centre must lie more than this many pixels inside the GT


@dataclass
class PAAConfig:
    """Probabilistic anchor assignment (Kim & Lee, ECCV 2020); defaults are the official code's."""

    iou_thresh: float = 0.1  # first matching: anchor -> its max-IoU GT when IoU >= this
    low_quality: bool = True  # first matching keeps each GT's best anchors whatever their IoU
    topk: int = 9  # candidates per pyramid level per GT (lowest anchor scores)
    score_giou_weight: float = 1.0  # anchor score = focal + w * (1 - GIoU); mmdet effectively uses 1.3
    score_focal_alpha: float = 0.25
    score_focal_gamma: float = 2.0
    separation: str = "c"  # Fig. 3: a | b | c | d
    edge_cases: str = "official"  # official | mmdet (1 candidate, no fg component, fg-only prefix)
    fnp: int = 0  # > 0: Table 1 FNP, the n lowest-score candidates of each GT are positive
    fsr: float = 0.0  # > 0: Table 1 FSR, candidates with exp(-score) > tau are positive
    gmm_tol: float = 1e-3
    gmm_max_iter: int = 100
    gmm_reg_covar: float = 1e-6
    gmm_float64: bool = False


@dataclass
class AssignConfig:
    name: str = "max_iou"  # a key of detector.assigners.ASSIGNERS
    max_iou: MaxIoUConfig = field(default_factory=MaxIoUConfig)
    atss: ATSSConfig = field(default_factory=ATSSConfig)
    paa: PAAConfig = field(default_factory=PAAConfig)
    ignore_iof: float = 0.5  # anchors covered more than this by a crowd region are ignored


@dataclass
class LossConfig:
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    reg: str = "giou"  # giou | l1
    reg_weight: float = 1.0
    reg_iou_weighted: bool = False  # PAA: weight each positive's GIoU loss by its IoU target, normalise by their sum
    aux_weight: float = 1.0


@dataclass
class TrainConfig:
    iterations: int = 90000
    batch_size: int = 16
    base_lr: float = 0.01  # learning rate per 16 images (linear scaling rule)
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_iters: int = 500
    warmup_factor: float = 0.001
    steps: list[float] = field(default_factory=lambda: [0.667, 0.889])  # fractions of `iterations`
    gamma: float = 0.1
    grad_clip: float = 0.0  # max L2 norm; 0 = off
    # The run FAILS when the assigner gives no positive anchor for this many iterations in a row whose
    # batches hold GTs (0 = never): training without positives learns nothing (PAA's FSR 0.3, Table 1).
    fail_without_positives: int = 100
    amp: bool = True  # only on CUDA
    seed: int = 0
    deterministic: bool = False
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    num_threads: int = 0  # torch CPU threads; 0 = torch's default
    flush_denormal: bool = True  # CPU: denormal floats slow convolutions several-fold
    checkpoint_every: int = 5000
    log_every: int = 1
    record_every: int = 100  # iterations between records for figures: positives-per-GT, GMM fits (0 = never)
    record_gts: int = 8  # GTs sampled per GMM-fit record
    eval_at_end: bool = True


@dataclass
class VotingConfig:
    """Score voting (PAA, Sec. 3.4): kept boxes become score- and IoU-weighted averages of their neighbours."""

    enabled: bool = False
    sigma: float = 0.025  # both reference codes; one paper version prints 0.0025
    iou_thresh: float = 0.01  # neighbours: same-class pre-NMS boxes with IoU above this


@dataclass
class InferenceConfig:
    pre_nms_topk: int = 1000
    score_thresh: float = 0.05
    nms_thresh: float = 0.5
    max_detections: int = 100
    score_fusion: str = "none"  # none | product | sqrt_product  (cls score with the aux branch)
    voting: VotingConfig = field(default_factory=VotingConfig)


@dataclass
class Config:
    name: str = "run"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    assign: AssignConfig = field(default_factory=AssignConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)


# Choices a string field may take; checked once in `build_config`.
CHOICES: dict[str, tuple[str, ...]] = {
    "data.dataset": ("synth", "coco"),
    "data.crowd": ("ignore", "drop"),
    "model.backbone.name": ("resnet18", "resnet34", "resnet50", "resnet101", "tiny"),
    "model.head.norm": ("gn", "none"),
    "model.head.aux": ("none", "iou", "centerness"),
    "loss.reg": ("giou", "l1"),
    "inference.score_fusion": ("none", "product", "sqrt_product"),
    "assign.paa.separation": ("a", "b", "c", "d"),
    "assign.paa.edge_cases": ("official", "mmdet"),
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
            raise ConfigError(f"{key}: expected a string, got {value!r}")
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


def _check(cfg: Config) -> None:
    from detector.assigners import ASSIGNERS  # local: config must import without torch work

    if cfg.assign.name not in ASSIGNERS:
        raise ConfigError(f"assign.name: '{cfg.assign.name}' is not one of {', '.join(ASSIGNERS)}")
    if cfg.data.dataset == "coco":
        for key in ("train_images", "train_json", "val_images", "val_json"):
            if not getattr(cfg.data, key):
                raise ConfigError(f"data.{key}: required when data.dataset is 'coco'")
    if cfg.model.head.norm == "gn" and cfg.model.head.width % cfg.model.head.gn_groups:
        raise ConfigError("model.head.width: must be divisible by model.head.gn_groups")
    if len(cfg.model.box_coder.weights) != 4:
        raise ConfigError("model.box_coder.weights: expected 4 numbers")
    if not cfg.data.min_size:
        raise ConfigError("data.min_size: needs at least one size")
    if cfg.train.batch_size < 1 or cfg.train.iterations < 1:
        raise ConfigError("train.batch_size and train.iterations must be >= 1")
    if any(not 0.0 < s < 1.0 for s in cfg.train.steps):
        raise ConfigError("train.steps: fractions of train.iterations, each in (0, 1)")
    paa = cfg.assign.paa
    if not 0.0 < paa.iou_thresh <= 1.0:  # an anchor overlapping no GT (IoU 0) is never first-matched
        raise ConfigError(f"assign.paa.iou_thresh: must be in (0, 1], got {paa.iou_thresh}")
    if paa.topk < 1 or paa.gmm_max_iter < 1 or paa.fnp < 0 or paa.fsr < 0:
        raise ConfigError("assign.paa: topk and gmm_max_iter must be >= 1, fnp and fsr >= 0")
    # the anchor score's lower bound (paa_score.AnchorScorer) needs non-negative focal terms
    if not 0.0 <= paa.score_focal_alpha <= 1.0 or paa.score_focal_gamma < 0 or paa.score_giou_weight < 0:
        raise ConfigError("assign.paa: score_focal_alpha must be in [0, 1], score_focal_gamma and "
                          "score_giou_weight >= 0")


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


def config_hash(cfg: Config, extra: dict | None = None) -> str:
    """Stable short hash of the resolved config (plus e.g. seed, code version)."""
    payload = {"config": config_to_dict(cfg), "extra": extra or {}}
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def dump_yaml(cfg: Config) -> str:
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)


__all__ = [
    "Config", "ConfigError", "SynthConfig", "DataConfig", "ModelConfig", "AssignConfig", "LossConfig",
    "TrainConfig", "InferenceConfig", "build_config", "load_config", "config_to_dict", "flatten",
    "config_hash", "dump_yaml", "deep_merge", "parse_override", "load_yaml",
]
