"""The numeric range every number of the shared config sections must lie in, checked once at the edge.

A value outside its range would pass the type check and fail later, deep inside a run (a negative learning
rate in the optimizer, a negative width in a conv layer) or, worse, train something meaningless. Ranges
are keyed like `CHOICES` in `detector.config.io` (dotted keys); a list field's range holds for each item.
Method sections (`assign.<method>`) check their own fields (`check()` beside their code).

Errors are plain `ValueError`s naming the key ("train.base_lr: must be > 0, got -0.1"); `build_config`
turns them into one-line `ConfigError`s. This module imports nothing from `detector` so that
`detector.config.io` can import it.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class Range:
    """An interval of valid values; a bound of None is no bound. NaN and infinities are never valid."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def __str__(self) -> str:
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"


POSITIVE = Range(0.0, low_open=True)
NON_NEGATIVE = Range(0.0)
AT_LEAST_ONE = Range(1.0)
UNIT = Range(0.0, 1.0)  # a probability, share or IoU
UNIT_POSITIVE = Range(0.0, 1.0, low_open=True)

RANGES: dict[str, Range] = {
    "data.synth.train": NON_NEGATIVE,
    "data.synth.val": NON_NEGATIVE,
    "data.synth.seed": NON_NEGATIVE,
    "data.synth.size": Range(32.0),  # smaller images leave no room between the object size bounds
    "data.synth.slender_share": UNIT,
    "data.synth.acentric_share": UNIT,
    "data.synth.crowding": UNIT,
    "data.synth.clutter": UNIT,
    "data.synth.max_objects": AT_LEAST_ONE,
    "data.synth.min_object_size": POSITIVE,
    "data.synth.max_object_frac": UNIT_POSITIVE,
    "data.synth.min_visible": UNIT_POSITIVE,
    "data.min_size": AT_LEAST_ONE,
    "data.max_size": AT_LEAST_ONE,
    "data.test_min_size": AT_LEAST_ONE,
    "data.flip_prob": UNIT,
    "data.size_divisibility": NON_NEGATIVE,  # 0 or 1: no rounding
    "data.num_workers": NON_NEGATIVE,
    "data.std": POSITIVE,
    "model.num_classes": NON_NEGATIVE,  # 0: from the dataset
    "model.backbone.tiny_width": AT_LEAST_ONE,
    "model.backbone.tiny_depth": AT_LEAST_ONE,
    "model.anchors.strides": AT_LEAST_ONE,
    "model.anchors.octave_base_scale": POSITIVE,
    "model.anchors.scales_per_octave": AT_LEAST_ONE,
    "model.anchors.aspect_ratios": POSITIVE,
    "model.head.num_convs": NON_NEGATIVE,  # 0: the heads read the FPN features directly
    "model.head.width": AT_LEAST_ONE,
    "model.head.fpn_width": AT_LEAST_ONE,
    "model.head.gn_groups": AT_LEAST_ONE,
    "model.head.prior_prob": Range(0.0, 1.0, low_open=True, high_open=True),  # its logit initialises the bias
    "model.box_coder.weights": POSITIVE,
    "model.box_coder.clamp": POSITIVE,
    "loss.focal_gamma": NON_NEGATIVE,
    "loss.reg_weight": NON_NEGATIVE,
    "loss.aux_weight": NON_NEGATIVE,
    "train.iterations": AT_LEAST_ONE,
    "train.batch_size": AT_LEAST_ONE,
    "train.nproc": AT_LEAST_ONE,
    "train.base_lr": POSITIVE,
    "train.momentum": Range(0.0, 1.0, high_open=True),
    "train.weight_decay": NON_NEGATIVE,
    "train.warmup_iters": NON_NEGATIVE,
    "train.warmup_factor": UNIT,
    "train.gamma": POSITIVE,
    "train.grad_clip": NON_NEGATIVE,  # 0: off
    "train.fail_without_positives": NON_NEGATIVE,  # 0: never
    "train.seed": NON_NEGATIVE,
    "train.num_threads": NON_NEGATIVE,  # 0: torch's default
    "train.checkpoint_every": NON_NEGATIVE,  # 0: only the last
    "train.log_every": AT_LEAST_ONE,
    "train.record_every": NON_NEGATIVE,  # 0: never
    "train.record_gts": AT_LEAST_ONE,
    "train.eval_every": NON_NEGATIVE,  # 0: only at the end
    "inference.pre_nms_topk": AT_LEAST_ONE,
    "inference.score_thresh": UNIT,
    "inference.nms_thresh": UNIT,
    "inference.max_detections": AT_LEAST_ONE,
    "inference.voting.sigma": POSITIVE,
    "inference.voting.iou_thresh": UNIT,
    "assign.ignore_iof": UNIT,
    "eval.aspect_edges": Range(1.0, low_open=True),  # aspect ratios max(w/h, h/w); two, increasing (io._check)
    "eval.crowd_edges": AT_LEAST_ONE,  # GTs per image; two, increasing (io._check)
}

SYNTH_PREFIX = "data.synth."


def _check_value(label: str, value: Any, valid: Range) -> None:
    items = value if isinstance(value, (list, tuple)) else [value]
    for i, item in enumerate(items):
        if item not in valid:
            where = f"{label}[{i}]" if isinstance(value, (list, tuple)) else label
            raise ValueError(f"{where}: must be {valid}, got {item!r}")


def check_key(key: str, value: Any) -> None:
    """Raise ValueError if `key` (dotted) has a range and `value` lies outside it: for partial configs."""
    if key in RANGES and isinstance(value, (int, float, list, tuple)) and not isinstance(value, bool):
        _check_value(key, value, RANGES[key])


def check_ranges(cfg: Any) -> None:
    """Raise ValueError naming the first key of `cfg` (a whole `Config`) outside its range."""
    for key, valid in RANGES.items():
        _check_value(key, functools.reduce(getattr, key.split("."), cfg), valid)
    check_synth(cfg.data.synth)


def check_synth(synth: Any, label: Callable[[str], str] | None = None) -> None:
    """Ranges of a `SynthConfig` and the rules between its fields; ValueError naming the key.

    `label(field)` names a field in messages (default `data.synth.<field>`; the CLI names its options).
    """
    label = label or (lambda name: SYNTH_PREFIX + name)
    for key, valid in RANGES.items():
        if key.startswith(SYNTH_PREFIX):
            name = key[len(SYNTH_PREFIX):]
            _check_value(label(name), getattr(synth, name), valid)
    if synth.slender_share + synth.acentric_share > 1:
        raise ValueError(f"{label('slender_share')} + {label('acentric_share')}: shares of one object population, "
                         f"must sum to <= 1, got {synth.slender_share + synth.acentric_share:g}")
    largest = synth.max_object_frac * synth.size
    if synth.min_object_size >= largest:
        raise ValueError(f"{label('min_object_size')}: must be < {label('max_object_frac')} x {label('size')} "
                         f"= {largest:g}, got {synth.min_object_size:g}")


__all__ = ["Range", "RANGES", "check_key", "check_ranges", "check_synth"]
