"""PAA's config section (`assign.paa`), with the settings the assigner cannot work with refused by `check`."""
from __future__ import annotations

from dataclasses import dataclass

from detector.assigners.gmm import GMM_INITS


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
