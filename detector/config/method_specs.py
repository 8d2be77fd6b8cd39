"""What a config knows of each method, without its code: `METHOD_SPECS`, from a method name to its `MethodSpec`.

A method (`detector.methods.METHODS`) is its spec plus its code (assign, loss, diagnostics). The spec is the
part that validating and keying a config needs: the config section type, the box coding, the default score
fusion, whether it reads predictions. It lives here, importing no torch, so that a study resolves every run
(`build_config`, `run_key`) in a second: `anchorlab study status` / `study table` never load the models.
`METHODS` has one entry per key of `METHOD_SPECS` (tested), built from these records.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from detector.config.assign_sections import (ATSSConfig, CenternessThresholdConfig, FCOSConfig, FreeAnchorConfig,
                                             MaxIoUConfig, PAAConfig, PseudoIoUConfig, ScaledBoxConfig)

# "delta": (dx, dy, dw, dh) w.r.t. the anchors (`BoxCoder`); "ltrb": FCOS distances from the anchors' centres (the
# points, one per location) to the box's sides, divided by the stride (`LTRBCoder`)
BOX_CODINGS = ("delta", "ltrb")
SCORE_FUSIONS = ("none", "product", "sqrt_product")  # detection score: cls, cls x aux, sqrt(cls x aux)


@dataclass(frozen=True)
class MethodSpec:
    config: type | None  # dataclass of its section `assign.<name>` (`assign_sections.py`), or None
    reads_predictions: bool = False  # its assign (or its matching loss) reads the predictions (`assign`: detached)
    box_coding: str = "delta"  # one of BOX_CODINGS; `detector.methods.build_box_coder` makes its coder
    score_fusion: str = "none"  # one of SCORE_FUSIONS: what inference.score_fusion "auto" means with an aux branch

    def __post_init__(self):
        if self.box_coding not in BOX_CODINGS:
            raise ValueError(f"box_coding '{self.box_coding}' is not one of {', '.join(BOX_CODINGS)}")
        if self.score_fusion not in SCORE_FUSIONS:
            raise ValueError(f"score_fusion '{self.score_fusion}' is not one of {', '.join(SCORE_FUSIONS)}")


METHOD_SPECS: dict[str, MethodSpec] = {
    "max_iou": MethodSpec(MaxIoUConfig),
    "atss": MethodSpec(ATSSConfig, score_fusion="product"),
    "paa": MethodSpec(PAAConfig, reads_predictions=True, score_fusion="sqrt_product"),
    # Points (Li et al., CVPRW 2021): FCOS candidates, then a rule; score = cls x centerness, as mmdetection's FCOS
    # and the official Pseudo-IoU head (`multiclass_nms(score_factors=centerness)`)
    "fcos_inside": MethodSpec(FCOSConfig, box_coding="ltrb", score_fusion="product"),
    "pseudo_iou": MethodSpec(PseudoIoUConfig, box_coding="ltrb", score_fusion="product"),
    "scaled_box": MethodSpec(ScaledBoxConfig, box_coding="ltrb", score_fusion="product"),
    "centerness_threshold": MethodSpec(CenternessThresholdConfig, box_coding="ltrb", score_fusion="product"),
    # Zhang et al., NeurIPS 2019: no assign step, the loss matches (it reads the predictions, with gradients)
    "free_anchor": MethodSpec(FreeAnchorConfig, reads_predictions=True),
}


def method_config(assign_cfg: Any) -> Any:
    """The active method's config section `assign.<name>` of an `AssignConfig`; None for a method without one."""
    return getattr(assign_cfg, assign_cfg.name) if METHOD_SPECS[assign_cfg.name].config is not None else None


__all__ = ["METHOD_SPECS", "MethodSpec", "BOX_CODINGS", "SCORE_FUSIONS", "method_config"]
