"""PAA: probabilistic anchor assignment (Kim & Lee, ECCV 2020, Procedure 1), batched over images and GTs.

1. First matching: each anchor goes to its max-IoU GT when IoU >= `iou_thresh` (0.1); with
   `low_quality`, each GT's best anchors (ties included) are restored to *their own* best GT, as the
   official maskrcnn-benchmark Matcher does.
2. Anchor score (lower is better; Eq. 1-5 read as losses) on detached predictions:
   focal loss summed over all classes + `score_giou_weight` x (1 - GIoU(decoded box, GT)).
3. Candidates of a GT: on each level, the `topk` lowest-score anchors among those first-matched to it.
   Candidate sets of different GTs are disjoint, so GTs never compete for an anchor.
4. A 2-component 1-D GMM per GT by EM (`gmm.fit_gmm`, all GTs at once), component 0 started at the
   lowest score (foreground).
5. Separation (Fig. 3), on candidates sorted by score; the fg (bg) peak is the fg (bg)-component
   candidate with the highest mixture log-density:
   a: positives = fg component (fg posterior >= bg posterior); other candidates negative;
   b: positives = prefix up to the fg peak; negatives from the bg peak on; ignore in between;
   c: positives = prefix up to the fg peak; other candidates negative (official default);
   d: positives = prefix up to the fg peak; other fg-component candidates ignored; bg component negative.
   Table 1 ablations replace the GMM: `fnp` n (the n lowest-score candidates) and `fsr` tau
   (candidates with exp(-score) > tau). Every non-candidate anchor is negative.
Edge cases (`edge_cases`): "official": 1 candidate -> positive; no candidate in the fg component ->
all candidates positive. "mmdet": no positive in both cases, and the prefix is cut on the fg-only
list (fg-component candidates up to the fg peak), as the mmdetection port (REFERENCE_NOTES 1.5).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor
from torchvision.ops import sigmoid_focal_loss

from detector.assigners.base import BG, IGNORE, AssignInputs, AssignResult, empty_result
from detector.boxes import aligned_giou, batched_box_iou
from detector.config import PAAConfig

if TYPE_CHECKING:
    from detector.assigners.gmm import GMMFit

INF = float("inf")


def first_matching(iou: Tensor, gt_valid: Tensor, cfg: PAAConfig) -> tuple[Tensor, Tensor]:
    """IoU (B, M, A) -> (matched GT (B, A) with -1 for none, its IoU (B, A))."""
    iou = iou.masked_fill(~gt_valid[:, :, None], -1.0)  # a copy: callers keep the unmasked IoU
    best_iou, best_gt = iou.max(dim=1)
    matched = torch.where(best_iou >= cfg.iou_thresh, best_gt, torch.full_like(best_gt, -1))
    if cfg.low_quality:
        gt_best = iou.amax(dim=2, keepdim=True)
        # Unlike the official Matcher, a GT whose best IoU is 0 restores nothing: otherwise every anchor
        # touching no GT at all would become a candidate of its (arbitrary) argmax GT.
        is_best = ((iou == gt_best) & gt_valid[:, :, None] & (gt_best > 0)).any(dim=1)
        matched = torch.where(is_best, best_gt, matched)
    return matched, best_iou.clamp(min=0)


def anchor_scores(inputs: AssignInputs, matched: Tensor, cfg: PAAConfig) -> Tensor:
    """(B, A) anchor score of first-matched anchors (+inf elsewhere): focal over classes + w (1 - GIoU)."""
    scores = torch.full(matched.shape, INF, device=matched.device)
    img, anc = (matched >= 0).nonzero(as_tuple=True)
    if img.numel() == 0:
        return scores
    gt = matched[img, anc]
    logits = inputs.cls_logits[img, anc].float()  # (P, C)
    target = torch.zeros_like(logits)
    target[torch.arange(len(gt), device=gt.device), inputs.gt_labels[img, gt]] = 1.0
    focal = sigmoid_focal_loss(logits, target, cfg.score_focal_alpha, cfg.score_focal_gamma, reduction="none").sum(1)
    giou = aligned_giou(inputs.pred_boxes[img, anc].float(), inputs.gt_boxes[img, gt].float())
    scores[img, anc] = focal + cfg.score_giou_weight * (1.0 - giou)
    return scores


def select_candidates(scores: Tensor, matched: Tensor, m: int, num_per_level: list[int], topk: int):
    """Per level and GT, the `topk` lowest-score anchors first-matched to that GT.

    Returns anchor indices (B, M, K), their scores (B, M, K) and validity (B, M, K), K = sum of per-level k.
    """
    gt_ids = torch.arange(m, device=scores.device)[None, :, None]
    idx, val, start = [], [], 0
    for n in num_per_level:
        k = min(topk, n)
        if k > 0:
            lvl = torch.where(matched[:, None, start:start + n] == gt_ids, scores[:, None, start:start + n], INF)
            top, i = lvl.topk(k, dim=2, largest=False)  # (B, M, k)
            idx.append(i + start)
            val.append(top)
        start += n
    cand_scores = torch.cat(val, dim=2)
    return torch.cat(idx, dim=2), cand_scores, torch.isfinite(cand_scores)


def _first_argmax(values: Tensor, mask: Tensor) -> Tensor:
    """(G, N) -> (G,) first position of the maximum of `values` where `mask`; -1 for rows without any."""
    v = values.masked_fill(~mask, -INF)
    best = v.amax(dim=1, keepdim=True)
    hit = mask & (v == best)
    pos = torch.arange(values.shape[1], device=values.device).expand_as(values)
    first = torch.where(hit, pos, values.shape[1]).amin(dim=1)
    return torch.where(mask.any(dim=1), first, torch.full_like(first, -1))


def separate(fit: "GMMFit", sorted_valid: Tensor, cfg: PAAConfig) -> tuple[Tensor, Tensor]:
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


def split_candidates(s: Tensor, v: Tensor, cfg: PAAConfig) -> tuple[Tensor, Tensor, "GMMFit | None"]:
    """Positive and ignore masks (G, N) over score-sorted candidates `s` (valid `v`), and the GMM fit if any.

    `fnp` / `fsr` (Table 1) replace the GMM by a fixed number / a fixed score range of positives.
    """
    if cfg.fnp > 0:
        rank = torch.arange(s.shape[1], device=s.device).expand_as(s)
        return v & (rank < cfg.fnp), torch.zeros_like(v), None
    if cfg.fsr > 0:
        return v & (torch.exp(-s.masked_fill(~v, INF)) > cfg.fsr), torch.zeros_like(v), None
    from detector.assigners.gmm import fit_gmm

    dtype = torch.float64 if cfg.gmm_float64 else torch.float32
    fit = fit_gmm(s.masked_fill(~v, 0.0), v, tol=cfg.gmm_tol, max_iter=cfg.gmm_max_iter,
                  reg_covar=cfg.gmm_reg_covar, dtype=dtype)
    pos, ignore = separate(fit, v, cfg)
    return pos, ignore, fit


@torch.no_grad()
def assign_paa(inputs: AssignInputs, cfg: PAAConfig) -> AssignResult:
    """PAA labels for a batch (steps in the module docstring).

    Needs `inputs.cls_logits` (B, A, C) and `inputs.pred_boxes` (B, A, 4), detached.
    `result.extras["paa"]` holds one row per (image, GT) with candidates, for diagnostics: the image and
    GT indices and label, sorted candidate scores (R, N), their validity and positive flags, and the
    `GMMFit` of those rows (None under `fnp` / `fsr`).
    """
    if inputs.cls_logits is None or inputs.pred_boxes is None:
        raise ValueError("PAA needs detached predictions (cls_logits, pred_boxes) in AssignInputs")
    b, m = inputs.gt_labels.shape
    a = inputs.anchors.shape[0]
    device = inputs.anchors.device
    if m == 0 or a == 0:
        return empty_result(b, a, device)
    iou = batched_box_iou(inputs.gt_boxes, inputs.anchors)  # (B, M, A)
    matched, _ = first_matching(iou, inputs.gt_valid, cfg)
    scores = anchor_scores(inputs, matched, cfg)
    cand, cand_scores, cand_valid = select_candidates(scores, matched, m, inputs.num_per_level, cfg.topk)
    cand_valid &= inputs.gt_valid[:, :, None]

    # One row per (image, GT) that has candidates (padding and candidate-less GTs cost nothing below),
    # candidates sorted by score with the invalid ones last.
    img_of_row, gt_of_row = cand_valid.any(dim=2).nonzero(as_tuple=True)
    order = cand_scores[img_of_row, gt_of_row].masked_fill(~cand_valid[img_of_row, gt_of_row], INF).argsort(
        dim=1, stable=True)
    cand = cand[img_of_row, gt_of_row].gather(1, order)
    s = cand_scores[img_of_row, gt_of_row].gather(1, order)
    v = cand_valid[img_of_row, gt_of_row].gather(1, order)
    pos, ignore, fit = split_candidates(s, v, cfg)

    gt_index = gt_of_row[:, None].expand_as(cand)
    img_index = img_of_row[:, None].expand_as(cand)
    matched_gt = torch.full((b, a), BG, dtype=torch.long, device=device)
    matched_gt[img_index[ignore], cand[ignore]] = IGNORE
    matched_gt[img_index[pos], cand[pos]] = gt_index[pos]
    pos_mask = matched_gt >= 0
    anchor_iou = iou.gather(1, matched_gt.clamp(min=0)[:, None, :])[:, 0]
    result = AssignResult(
        matched_gt=matched_gt,
        iou=torch.where(pos_mask, anchor_iou, torch.zeros_like(anchor_iou)),
        weight=torch.ones(b, a, device=device),
    )
    result.extras["paa"] = {
        "image": img_of_row, "gt": gt_of_row, "gt_labels": inputs.gt_labels[img_of_row, gt_of_row],
        "scores": s, "valid": v, "positive": pos, "fit": fit,
    }
    return result
