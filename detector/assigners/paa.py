"""PAA: probabilistic anchor assignment (Kim & Lee, ECCV 2020, Procedure 1), batched over images and GTs.

1. First matching: each anchor goes to its max-IoU GT when IoU >= `iou_thresh` (0.1); with
   `low_quality`, each GT's best anchors (ties included) are restored to *their own* best GT, as the
   official maskrcnn-benchmark Matcher does.
2. Anchor score (`paa_score`; lower is better; Eq. 1-5 read as losses) on detached predictions:
   focal loss summed over all classes + `score_giou_weight` x (1 - GIoU(decoded box, GT)).
3. Candidates of a GT (`paa_candidates`): on each level, the `topk` lowest-score anchors among those
   first-matched to it.
   Candidate sets of different GTs are disjoint, so GTs never compete for an anchor.
4. A 2-component 1-D GMM per GT by EM (`fit_gmm`, from `gmm`; all GTs at once), component 0 started at the
   lowest score (foreground), in float64 as the official code's scikit-learn 0.2x (`gmm_float64`).
5. Separation (Fig. 3), on candidates sorted by score; the fg (bg) peak is the fg (bg)-component
   candidate with the highest mixture log-density (the first of those within `gmm.LOG_TIE` of it: on
   near-identical scores both components coincide and only rounding would choose, REFERENCE_NOTES 1.6):
   a: positives = fg component (fg posterior >= bg posterior); other candidates negative;
   b: positives = prefix up to the fg peak; negatives from the bg peak on; ignore in between;
   c: positives = prefix up to the fg peak; other candidates negative (official default);
   d: positives = prefix up to the fg peak; other fg-component candidates ignored; bg component negative.
   Table 1 ablations replace the GMM: `fnp` n (the n lowest-score candidates) and `fsr` tau
   (candidates with exp(-score) > tau). Every non-candidate anchor is negative.
Edge cases (`edge_cases`): "official": 1 candidate -> positive; no candidate in the fg component ->
all candidates positive. "mmdet": no positive in both cases, and the prefix is cut on the fg-only
list (fg-component candidates up to the fg peak), as the mmdetection port (REFERENCE_NOTES 1.5).

Cost: steps 1-3 are sparse. Only overlapping (image, GT, anchor) pairs are built (`pairs`: a few
hundred per GT instead of every anchor); of the first-matched anchors, only those that a cheap lower
bound of the score cannot rule out of their level's top-k are scored over all classes (`needed_scores`,
about 1 in 10); candidates come from two sorts. No (B, M, A) tensor exists, and the labels equal the
dense definition's (tested). Scores are clamped at 0 (a loss; float rounding can give -1e-9) and NaN
scores become +inf (never a candidate); a NaN prediction also makes the training loss non-finite,
which fails the run.
"""
from __future__ import annotations

import torch
from torch import Tensor

from detector.assigners.base import BG, IGNORE, AssignInputs, AssignResult, empty_result
from detector.assigners.gmm import LOG_TIE, GMMFit, fit_gmm  # public here too: detector.assigners.paa.fit_gmm
from detector.assigners.paa_candidates import INF, level_groups, candidate_rows, needed_scores
from detector.assigners.paa_details import PAADetails
from detector.assigners.paa_score import AnchorScorer
from detector.assigners.pairs import Pairs, overlapping_pairs
from detector.config.assign_sections import PAAConfig  # public here too: its section


def first_matching(pairs: Pairs, batch: int, num_gts: int, num_anchors: int, cfg: PAAConfig) -> tuple[Tensor, Tensor]:
    """Overlapping pairs -> (matched GT (B, A), -1 for none; the anchor's best IoU (B, A), 0 for none).

    Equal to the dense rule on the (B, M, A) IoU matrix: argmax GT (first on ties) when IoU >= threshold;
    pairs that are absent have IoU 0, and IoU 0 never matches (`iou_thresh` > 0; see `low_quality`).
    """
    key = pairs.image * num_anchors + pairs.anchor
    best = pairs.iou.new_zeros(batch * num_anchors).scatter_reduce_(0, key, pairs.iou, "amax")
    # the first (lowest) GT index among those reaching the anchor's best IoU, as argmax does
    gt_or_none = torch.where(pairs.iou == best.index_select(0, key), pairs.gt, num_gts)
    best_gt = torch.full_like(best, num_gts, dtype=torch.long).scatter_reduce_(0, key, gt_or_none, "amin")
    matched = torch.where(best >= cfg.iou_thresh, best_gt, -1)
    if cfg.low_quality:
        # Each GT's best anchors (ties included) go to *their own* best GT, as the official Matcher does.
        # Unlike it, a GT overlapping no anchor (best IoU 0) restores nothing: otherwise every anchor touching
        # no GT at all would become a candidate of an arbitrary GT.
        gt_key = pairs.image * num_gts + pairs.gt
        gt_best = pairs.iou.new_zeros(batch * num_gts).scatter_reduce_(0, gt_key, pairs.iou, "amax")
        restored = key[pairs.iou == gt_best.index_select(0, gt_key)]
        matched.index_copy_(0, restored, best_gt.index_select(0, restored))
    return matched.view(batch, num_anchors), best.view(batch, num_anchors)


def first_matched_anchors(inputs: AssignInputs, cfg: PAAConfig) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Step 1 for a batch: the P first-matched anchors as image (P,), anchor (P,), GT (P,) (image-major,
    then anchor order), and every anchor's best IoU (B, A)."""
    b, m = inputs.gt_labels.shape
    a = inputs.anchors.shape[0]
    pairs = overlapping_pairs(inputs.gt_boxes, inputs.gt_valid, inputs.anchors, inputs.num_per_level,
                              inputs.anchors_per_location)
    matched, best_iou = first_matching(pairs, b, m, a, cfg)
    anchor_flat = (matched.view(-1) >= 0).nonzero().squeeze(1)  # image * A + anchor
    return anchor_flat // a, anchor_flat % a, matched.view(-1).index_select(0, anchor_flat), best_iou


def _first_argmax(values: Tensor, mask: Tensor) -> Tensor:
    """(G, N) log densities -> (G,) first position of their maximum where `mask`, values within `LOG_TIE`
    of it counting as the maximum (rounding ties); -1 for rows without any."""
    v = values.masked_fill(~mask, -INF)
    best = v.amax(dim=1, keepdim=True)
    hit = mask & (v >= best - LOG_TIE)
    pos = torch.arange(values.shape[1], device=values.device).expand_as(values)
    first = torch.where(hit, pos, values.shape[1]).amin(dim=1)
    return torch.where(mask.any(dim=1), first, torch.full_like(first, -1))


def separate(fit: GMMFit, sorted_valid: Tensor, cfg: PAAConfig) -> tuple[Tensor, Tensor]:
    """Positive and ignore masks (G, N) over score-sorted candidates from a GMM fit (Fig. 3 a-d)."""
    g, n = sorted_valid.shape
    comp = fit.predict()
    fg = (comp == 0) & sorted_valid
    bg = (comp == 1) & sorted_valid
    pos_idx = torch.arange(n, device=sorted_valid.device).expand(g, n)
    fg_peak = _first_argmax(fit.log_density, fg)[:, None]  # (G, 1); -1 if no fg candidate
    bg_peak = _first_argmax(fit.log_density, bg)[:, None]
    prefix = (pos_idx <= fg_peak) & sorted_valid
    if cfg.edge_cases == "mmdet":
        prefix &= fg
    ignore = torch.zeros_like(sorted_valid)
    if cfg.separation == "a":
        pos = fg
    elif cfg.separation == "b":
        pos = prefix
        has_bg = (bg_peak >= 0)
        ignore = sorted_valid & ~pos & has_bg & (pos_idx < bg_peak)
    elif cfg.separation == "c":
        pos = prefix
    else:  # "d"
        pos = prefix
        ignore = fg & ~pos
    n_valid = sorted_valid.sum(dim=1, keepdim=True)
    no_fg = ~fg.any(dim=1, keepdim=True) & (n_valid > 0)
    single = n_valid == 1
    if cfg.edge_cases == "official":
        pos = torch.where(no_fg | single, sorted_valid, pos)  # "treat all samples as positive for high recall"
    else:
        pos = pos & ~(no_fg | single)
    return pos, ignore & ~pos & ~(no_fg | single)  # edge-case rows: nothing ignored


def split_candidates(s: Tensor, v: Tensor, cfg: PAAConfig) -> tuple[Tensor, Tensor, GMMFit | None]:
    """Positive and ignore masks (G, N) over score-sorted candidates `s` (valid `v`), and the GMM fit if any.

    `fnp` / `fsr` (Table 1) replace the GMM by a fixed number / a fixed score range of positives.
    """
    if cfg.fnp > 0:
        rank = torch.arange(s.shape[1], device=s.device).expand_as(s)
        return v & (rank < cfg.fnp), torch.zeros_like(v), None
    if cfg.fsr > 0:
        return v & (torch.exp(-s.masked_fill(~v, INF)) > cfg.fsr), torch.zeros_like(v), None
    dtype = torch.float64 if cfg.gmm_float64 else torch.float32
    fit = fit_gmm(s.masked_fill(~v, 0.0), v, tol=cfg.gmm_tol, max_iter=cfg.gmm_max_iter,
                  reg_covar=cfg.gmm_reg_covar, dtype=dtype, init=cfg.gmm_init)
    pos, ignore = separate(fit, v, cfg)
    return pos, ignore, fit


@torch.no_grad()
def assign_paa(inputs: AssignInputs, cfg: PAAConfig) -> AssignResult:
    """PAA labels for a batch (steps in the module docstring).

    Needs `inputs.cls_logits` (B, A, C) and `inputs.pred_boxes` (B, A, 4), detached.
    Only overlapping (image, GT, anchor) pairs are visited (`pairs.overlapping_pairs`), and only the
    first-matched anchors a score bound cannot rule out are scored (`paa_candidates.needed_scores`), so no
    (B, M, A) tensor is built; labels equal the dense definition's.
    `result.details` (a `PAADetails`) holds one row per (image, GT) with candidates, for diagnostics: the
    image and GT indices and label, sorted candidate scores (R, N), their validity and positive flags, and
    the `GMMFit` of those rows (None under `fnp` / `fsr`).
    """
    if inputs.cls_logits is None or inputs.pred_boxes is None:
        raise ValueError("PAA needs detached predictions (cls_logits, pred_boxes) in AssignInputs")
    b, m = inputs.gt_labels.shape
    a = inputs.anchors.shape[0]
    device = inputs.anchors.device
    if m == 0 or a == 0:
        return empty_result(b, a, device)
    image, anchor, gt, best_iou = first_matched_anchors(inputs, cfg)
    scorer = AnchorScorer(inputs, image * a + anchor, image * m + gt, cfg)
    idx, score = needed_scores(scorer, level_groups(image, anchor, gt, m, inputs.num_per_level), cfg.topk)
    image, anchor, gt = image.index_select(0, idx), anchor.index_select(0, idx), gt.index_select(0, idx)
    rows, s, v, anchor_of = candidate_rows(image, anchor, gt, score, m, inputs.num_per_level, cfg.topk)
    img_of_row, gt_of_row = rows // m, rows % m
    pos, ignore, fit = split_candidates(s, v, cfg)

    key = (img_of_row * a)[:, None] + anchor_of  # (R, N) index into the flat (B * A) labels
    labels = torch.full((b * a,), BG, dtype=torch.long, device=device)
    labels.index_fill_(0, key[ignore], IGNORE)
    labels.index_copy_(0, key[pos], gt_of_row[:, None].expand_as(key)[pos])
    matched_gt = labels.view(b, a)
    return AssignResult(
        matched_gt=matched_gt,
        # a candidate is matched to its best-IoU GT, so its IoU with that GT is its best IoU
        iou=torch.where(matched_gt >= 0, best_iou, torch.zeros_like(best_iou)),
        weight=torch.ones(b, a, device=device),
        details=PAADetails(image=img_of_row, gt=gt_of_row, gt_labels=inputs.gt_labels[img_of_row, gt_of_row],
                           scores=s, valid=v, positive=pos, fit=fit),
    )


__all__ = ["assign_paa", "PAAConfig", "PAADetails", "fit_gmm", "GMMFit", "first_matching", "first_matched_anchors",
           "candidate_rows", "separate", "split_candidates"]
