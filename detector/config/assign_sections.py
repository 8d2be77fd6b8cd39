"""Each method's config section (`assign.<method>`): the paper's defaults, and `check` for what its code refuses.

They live here, not beside each method's code, so that a config can be read, validated and keyed without
importing torch: `anchorlab study status` / `study table` resolve every run of a study (a second, not the
~5-20 s of loading torch). Each method module imports its section from here and names it in its docstrings;
`detector.config.method_specs.METHOD_SPECS` says which section belongs to which method.

Constants that a section's `check` and its code share (`LOW_QUALITY_RULES`, `GMM_INITS`, `EMPTY_BATCH_RULES`)
live here too and are re-exported by the code modules.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

# ---------------------------------------------------------------- anchors (`detector/assigners/max_iou.py`, `atss.py`)
LOW_QUALITY_RULES = ("torchvision", "mmdet", "off")


@dataclass
class MaxIoUConfig:
    """RetinaNet's thresholds (Lin et al., 2017, Sec. 4) and the low-quality rule."""

    pos_iou: float = 0.5
    neg_iou: float = 0.4
    low_quality: str = "torchvision"  # one of LOW_QUALITY_RULES (step 3 of the module doc)


@dataclass
class ATSSConfig:
    """ATSS's one hyperparameter k (9 in the paper) and the centre test's margin."""

    topk: int = 9
    center_eps: float = 0.01  # anchor centre must lie more than this many pixels inside the GT


# ---------------------------------------------------------------- points (`detector/assigners/fcos.py` and its rules)
@dataclass
class FCOSConfig:
    """FCOS candidates (the AF-baseline's whole config; the other point rules extend it). Defaults: the
    official Pseudo-IoU head's (mmdetection FCOS without centre sampling)."""

    # The L - 1 bounds between the L levels' ranges of max(l, t, r, b), in pixels of the network input:
    # level 0 takes (-inf, b0], level l [b_{l-1}, b_l], the last [b_{L-2}, inf). The paper's at 800 px
    # ((-1, 64), (64, 128), (128, 256), (256, 512), (512, inf)) are 8 x the strides of P3-P6. Scale rule: for a
    # dataset's images scaled by f (same strides), f x these keep each object on its 800 px level. The quick
    # profile keeps them as they are: its 320 px benchmark sizes objects against the unscaled strides and anchors.
    size_bounds: list[float] = field(default_factory=lambda: [64.0, 128.0, 256.0, 512.0])
    center_sampling: bool = False  # mmdetection's centre sampling (step 2); off in the official Pseudo-IoU head
    center_radius: float = 1.5  # half-size of the centre box in strides (mmdetection's `center_sample_radius`)

    def check(self) -> None:
        """Raise ValueError (one line, naming the field) for settings the candidates cannot work with."""
        bounds = self.size_bounds
        if any(not (math.isfinite(b) and b > 0) for b in bounds) or any(b >= c for b, c in zip(bounds, bounds[1:])):
            raise ValueError(f"size_bounds must be positive and strictly increasing, got {bounds}")
        if not (math.isfinite(self.center_radius) and self.center_radius > 0):
            raise ValueError(f"center_radius must be > 0, got {self.center_radius}")


@dataclass
class PseudoIoUConfig(FCOSConfig):
    """The Pseudo-IoU threshold (0.4: the official COCO configs, and the paper's best on VOC, Table 1a) on top of
    the FCOS candidates."""

    threshold: float = 0.4

    def check(self) -> None:
        super().check()
        if not (math.isfinite(self.threshold) and 0.0 <= self.threshold < 1.0):
            raise ValueError(f"threshold must be in [0, 1) (1 keeps no point), got {self.threshold}")


@dataclass
class ScaledBoxConfig(FCOSConfig):
    """The box scale s (0.6: the paper's best on VOC, Table 2) on top of the FCOS candidates."""

    scale: float = 0.6

    def check(self) -> None:
        super().check()
        if not (math.isfinite(self.scale) and 0.0 < self.scale <= 1.0):
            raise ValueError(f"scale must be in (0, 1], got {self.scale}")


@dataclass
class CenternessThresholdConfig(FCOSConfig):
    """The centerness threshold c (0.35: the paper's best on VOC, Table 2) on top of the FCOS candidates."""

    threshold: float = 0.35

    def check(self) -> None:
        super().check()
        if not (math.isfinite(self.threshold) and 0.0 <= self.threshold < 1.0):
            raise ValueError(f"threshold must be in [0, 1) (1 keeps no point), got {self.threshold}")


# ---------------------------------------------------------------- PAA (`detector/assigners/paa.py`)
GMM_INITS = ("official", "data")  # the initial variances: 1, or from the scores (`gmm.py`, step 1)


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
    # EM in float64, as the official code's (scikit-learn 0.2x); in float32, rounding decides the fits of
    # near-identical scores (REFERENCE_NOTES 8.4)
    gmm_float64: bool = True
    gmm_init: str = "official"  # one of GMM_INITS: variances 1 (precisions_init 1) or from the scores (gmm.fit_gmm)

    def check(self) -> None:
        """Raise ValueError (one line, naming the field) for settings PAA cannot run with."""
        if self.separation not in ("a", "b", "c", "d"):
            raise ValueError(f"separation '{self.separation}' is not one of a, b, c, d")
        if self.edge_cases not in ("official", "mmdet"):
            raise ValueError(f"edge_cases '{self.edge_cases}' is not one of official, mmdet")
        if self.gmm_init not in GMM_INITS:
            raise ValueError(f"gmm_init '{self.gmm_init}' is not one of {', '.join(GMM_INITS)}")
        if not 0.0 < self.iou_thresh <= 1.0:  # an anchor overlapping no GT (IoU 0) is never first-matched
            raise ValueError(f"iou_thresh must be in (0, 1], got {self.iou_thresh}")
        if self.topk < 1 or self.gmm_max_iter < 1 or self.fnp < 0 or self.fsr < 0:
            raise ValueError("topk and gmm_max_iter must be >= 1, fnp and fsr >= 0")
        # the anchor score's lower bound (paa_score.AnchorScorer) needs non-negative focal terms
        if not 0.0 <= self.score_focal_alpha <= 1.0 or self.score_focal_gamma < 0 or self.score_giou_weight < 0:
            raise ValueError("score_focal_alpha must be in [0, 1], score_focal_gamma and score_giou_weight >= 0")


# ---------------------------------------------------------------- FreeAnchor (`detector/losses/free_anchor.py`)
EMPTY_BATCH_RULES = ("images", "official")


@dataclass
class FreeAnchorConfig:
    """FreeAnchor's loss (Zhang et al., NeurIPS 2019); defaults are the official `_C.FREEANCHOR` and config."""

    bag_size: int = 50  # PRE_ANCHOR_TOPK: anchors per object's bag, top anchor IoU over all levels
    iou_threshold: float = 0.6  # BBOX_THRESHOLD t: P{a_j -> b_i} is 0 at predicted IoU <= t
    bbox_reg_weight: float = 0.75  # BBOX_REG_WEIGHT: P_loc = exp(-this x sum of the smooth-L1 over the 4 deltas)
    smooth_l1_beta: float = 0.11  # BBOX_REG_BETA
    alpha: float = 0.5  # FOCAL_LOSS_ALPHA: weight of the positive term; the negative one gets 1 - alpha
    gamma: float = 2.0  # FOCAL_LOSS_GAMMA of the negative term
    empty_batch: str = "images"  # negative normaliser of a batch without objects: one of EMPTY_BATCH_RULES

    def check(self) -> None:
        """Raise ValueError (one line, naming the field) for settings the loss cannot run with."""
        numbers = ("iou_threshold", "bbox_reg_weight", "smooth_l1_beta", "alpha", "gamma")
        for name in numbers:
            if isinstance(getattr(self, name), bool) or not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be a finite number, got {getattr(self, name)}")
        if self.empty_batch not in EMPTY_BATCH_RULES:
            raise ValueError(f"empty_batch '{self.empty_batch}' is not one of {', '.join(EMPTY_BATCH_RULES)}")
        if isinstance(self.bag_size, bool) or self.bag_size < 1:
            raise ValueError(f"bag_size must be >= 1, got {self.bag_size}")
        if not 0.0 <= self.iou_threshold < 1.0:  # t = 1 leaves every P{a_j -> b_i} at 0
            raise ValueError(f"iou_threshold must be in [0, 1), got {self.iou_threshold}")
        if not self.bbox_reg_weight >= 0.0:
            raise ValueError(f"bbox_reg_weight must be >= 0, got {self.bbox_reg_weight}")
        if not self.smooth_l1_beta > 0.0:  # the smooth-L1 divides by it
            raise ValueError(f"smooth_l1_beta must be > 0, got {self.smooth_l1_beta}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")
        # d(p^gamma)/dp is infinite at p = 0 for 0 < gamma < 1, and p = 0 at each object's best anchor
        if not (self.gamma == 0.0 or self.gamma >= 1.0):
            raise ValueError(f"gamma must be 0 or >= 1, got {self.gamma}")


__all__ = ["MaxIoUConfig", "ATSSConfig", "FCOSConfig", "PseudoIoUConfig", "ScaledBoxConfig", "CenternessThresholdConfig",
           "PAAConfig", "FreeAnchorConfig", "LOW_QUALITY_RULES", "GMM_INITS", "EMPTY_BATCH_RULES"]
