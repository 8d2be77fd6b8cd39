"""The names of the optional metrics (`extra.py`'s table), apart from their computation: a study's columns are
checked against them without loading torch, which `nms_recall.py` needs (`anchorlab study status` / `study
table` answer in a second)."""
from __future__ import annotations

from detector.evaluation.buckets import ASPECT_NAMES, CROWD_NAMES

# NMS recall's IoU thresholds tau and its names (`nms_recall.py` imports them from here)
NR_THRESHOLDS = tuple(round(0.50 + 0.05 * i, 2) for i in range(9))  # 0.50, 0.55, ..., 0.90
NR_NAMES = ("NR", *(f"NR{round(100 * t)}" for t in NR_THRESHOLDS))
SWITCHES: dict[str, tuple[str, ...]] = {"nms_recall": NR_NAMES, "aspect_ap": ASPECT_NAMES, "crowd_ap": CROWD_NAMES}
METRIC_NAMES = tuple(name for names in SWITCHES.values() for name in names)


def metric_names(eval_cfg) -> tuple[str, ...]:
    """The optional metric names that an `EvalConfig` makes an evaluation report."""
    return tuple(name for switch, names in SWITCHES.items() if getattr(eval_cfg, switch) for name in names)


def switch_of(metric: str) -> str:
    """The `eval` field that computes the optional `metric` (e.g. "aspect_ap" for "AP_slender")."""
    return next(switch for switch, names in SWITCHES.items() if metric in names)


__all__ = ["NR_THRESHOLDS", "NR_NAMES", "SWITCHES", "METRIC_NAMES", "metric_names", "switch_of"]
