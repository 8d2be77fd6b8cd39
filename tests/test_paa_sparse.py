"""PAA's sparse path equals the dense definitions: overlapping pairs, first matching, scores, candidates, labels."""
from __future__ import annotations

import pytest
import torch
from torchvision.ops import sigmoid_focal_loss

from detector.assigners.base import BG, IGNORE, AssignInputs
from detector.assigners.pairs import level_grids, overlapping_pairs
from detector.assigners.paa import assign_paa, candidate_rows, first_matching, split_candidates
from detector.assigners.paa_score import AnchorScorer, anchor_scores
from detector.boxes import batched_box_iou
from detector.config import AnchorConfig, PAAConfig
from detector.model.anchors import anchors_per_location, grid_anchors

SIZE = 256


def batch(seed: int, images: int = 6, m: int = 9, anchor_cfg: AnchorConfig | None = None,
          num_classes: int = 7) -> AssignInputs:
    """Random GTs on a real anchor grid, with the awkward cases: boxes past the border, tiny and huge
    boxes, a zero-width box, exact duplicates (IoU ties), padded rows that look like boxes."""
    g = torch.Generator().manual_seed(seed)
    cfg = anchor_cfg or AnchorConfig()
    anchors, counts = grid_anchors([(-(-SIZE // s), -(-SIZE // s)) for s in cfg.strides], cfg)
    wh = torch.exp(torch.empty(images, m, 2).uniform_(0.5, 6.0, generator=g))  # 1.6 .. 400 px
    xy = torch.rand(images, m, 2, generator=g) * SIZE * 1.1 - wh / 2
    boxes = torch.cat([xy, xy + wh], 2)
    boxes[0, 0] = boxes[0, 1] = torch.tensor([40.0, 50.0, 130.0, 110.0])  # duplicates: IoU ties, lower index wins
    boxes[1, 2, 2] = boxes[1, 2, 0]  # zero width
    valid = torch.rand(images, m, generator=g) > 0.15
    valid[0, :2] = True
    a = anchors.shape[0]
    logits = torch.randn(images, a, num_classes, generator=g) * 2 - 3
    pred = anchors[None] + torch.randn(images, a, 4, generator=g) * 6
    return AssignInputs(anchors=anchors, num_per_level=counts, strides=cfg.strides, gt_boxes=boxes,
                        gt_labels=torch.randint(0, num_classes, (images, m), generator=g), gt_valid=valid,
                        anchors_per_location=anchors_per_location(cfg), cls_logits=logits, pred_boxes=pred)


RETINANET = AnchorConfig(octave_base_scale=4.0, scales_per_octave=3, aspect_ratios=[0.5, 1.0, 2.0])


@pytest.mark.parametrize("anchor_cfg", [AnchorConfig(), RETINANET], ids=["1-per-location", "9-per-location"])
def test_pairs_are_exactly_the_positive_entries_of_the_dense_iou(anchor_cfg):
    inputs = batch(0, anchor_cfg=anchor_cfg)
    dense = batched_box_iou(inputs.gt_boxes, inputs.anchors).masked_fill(~inputs.gt_valid[:, :, None], 0)
    p = overlapping_pairs(inputs.gt_boxes, inputs.gt_valid, inputs.anchors, inputs.num_per_level,
                          inputs.anchors_per_location)
    sparse = torch.zeros_like(dense)
    sparse[p.image, p.gt, p.anchor] = p.iou
    assert len(p.iou) == int((dense > 0).sum()) > 0  # no pair twice, none missing
    assert torch.equal(sparse, dense)  # bit-identical values


def test_anchors_that_are_not_a_grid_fall_back_to_the_whole_level():
    anchors = torch.tensor([[0, 0, 10, 10], [30, 5, 40, 12], [2, 2, 6, 6.0], [100, 100, 120, 130]])
    assert [g.rows for g in level_grids(anchors, [4], 1)] == [0]
    gt = torch.tensor([[[0, 0, 8, 8], [28, 0, 41, 11], [0, 0, 0, 0.0]]])
    valid = torch.tensor([[True, True, False]])
    dense = batched_box_iou(gt, anchors).masked_fill(~valid[:, :, None], 0)
    for per_location in (1, 3):  # 3 does not divide the level: still every anchor
        p = overlapping_pairs(gt, valid, anchors, [4], per_location)
        assert sorted(zip(p.gt.tolist(), p.anchor.tolist())) == sorted(map(tuple, (dense[0] > 0).nonzero().tolist()))


def dense_first_matching(inputs: AssignInputs, cfg: PAAConfig) -> torch.Tensor:
    """The rule on the (B, M, A) matrix, as the maskrcnn-benchmark Matcher (GT best IoU 0 restores nothing)."""
    iou = batched_box_iou(inputs.gt_boxes, inputs.anchors).masked_fill(~inputs.gt_valid[:, :, None], -1)
    best, best_gt = iou.max(1)
    matched = torch.where(best >= cfg.iou_thresh, best_gt, -1)
    if cfg.low_quality:
        gt_best = iou.amax(2, keepdim=True)
        matched = torch.where(((iou == gt_best) & (gt_best > 0)).any(1), best_gt, matched)
    return matched


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("low_quality", [True, False])
def test_sparse_first_matching_equals_the_dense_rule(seed, low_quality):
    inputs = batch(seed)
    cfg = PAAConfig(low_quality=low_quality)
    b, m = inputs.gt_labels.shape
    p = overlapping_pairs(inputs.gt_boxes, inputs.gt_valid, inputs.anchors, inputs.num_per_level)
    matched, _ = first_matching(p, b, m, inputs.anchors.shape[0], cfg)
    expected = dense_first_matching(inputs, cfg)
    assert torch.equal(matched, expected)
    assert (expected[0] == 1).sum() == 0 < (expected[0] == 0).sum()  # the duplicate GT 1 loses every tie


@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (0.5, 1.5), (0.0, 0.0)])
def test_focal_over_classes_equals_torchvision(alpha, gamma):
    # The score's focal part (AnchorScorer with GIoU weight 0): torchvision's focal loss summed over classes.
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(300, 11, generator=g) * 6
    logits[0, :] = torch.tensor([-60, 60, -30, 30, 0, 15, -15, 88, -88, 5, -5.0])  # extremes: no inf/NaN
    rows = torch.randint(0, 300, (5000,), generator=g)  # more than one chunk, with repeats
    labels = torch.randint(0, 11, (5000,), generator=g)
    rows[0], labels[0] = 0, 8
    target = torch.nn.functional.one_hot(labels, 11).float()
    expected = sigmoid_focal_loss(logits[rows], target, alpha, gamma, reduction="none").sum(1)
    box = torch.tensor([0.0, 0.0, 10.0, 10.0])
    inputs = AssignInputs(anchors=box.expand(300, 4), num_per_level=[300], strides=[8],
                          gt_boxes=box.expand(1, 5000, 4), gt_labels=labels[None], gt_valid=torch.ones(1, 5000, dtype=torch.bool),
                          cls_logits=logits[None], pred_boxes=box.expand(1, 300, 4))
    cfg = PAAConfig(score_focal_alpha=alpha, score_focal_gamma=gamma, score_giou_weight=0.0)
    got = AnchorScorer(inputs, rows, torch.arange(5000), cfg).scores(torch.arange(5000))
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("num_classes,gamma", [(11, 2.0), (80, 2.0), (80, 1.5)])
def test_a_pairs_score_does_not_depend_on_what_is_scored_with_it(num_classes, gamma):
    # Scored alone, in a subset of any size, in any order, across chunk boundaries: the same bits.
    g = torch.Generator().manual_seed(1)
    n_pairs = 2 * 2048 + 77
    logits = torch.randn(500, num_classes, generator=g) * 3 - 2
    rows, labels = torch.randint(0, 500, (n_pairs,), generator=g), torch.randint(0, num_classes, (n_pairs,), generator=g)
    box = torch.tensor([0.0, 0.0, 10.0, 10.0])
    inputs = AssignInputs(anchors=box.expand(500, 4), num_per_level=[500], strides=[8],
                          gt_boxes=box.expand(1, n_pairs, 4), gt_labels=labels[None],
                          gt_valid=torch.ones(1, n_pairs, dtype=torch.bool), cls_logits=logits[None],
                          pred_boxes=(box + torch.rand(500, 4, generator=g) * 3)[None])
    scorer = AnchorScorer(inputs, rows, torch.arange(n_pairs), PAAConfig(score_focal_gamma=gamma))
    full = scorer.scores(torch.arange(n_pairs))
    for size in (1, 2, 3, 5, 7, 17, 31, 33, 100, 2047, 2049, n_pairs):
        idx = torch.randperm(n_pairs, generator=g)[:size]
        assert torch.equal(scorer.scores(idx), full[idx]), size
    assert torch.equal(scorer.scores(torch.arange(n_pairs).flip(0)), full.flip(0))


def dense_reference_labels(inputs: AssignInputs, cfg: PAAConfig):
    """Steps 1-3 on dense tensors (per GT and level topk over the whole level), then the same split."""
    b, m = inputs.gt_labels.shape
    a = inputs.anchors.shape[0]
    matched = dense_first_matching(inputs, cfg)
    img, anc = (matched >= 0).nonzero(as_tuple=True)
    scores = torch.full((b, a), float("inf"))
    scores[img, anc] = anchor_scores(inputs, img * a + anc, img * m + matched[img, anc], cfg)
    rows, cand_sets = [], {}
    for i in range(b):
        for j in range(m):
            picked, start = [], 0
            for n in inputs.num_per_level:
                lvl = torch.where(matched[i, start:start + n] == j, scores[i, start:start + n], float("inf"))
                k = min(cfg.topk, int(torch.isfinite(lvl).sum()))
                picked += (lvl.topk(k, largest=False).indices + start).tolist()
                start += n
            if picked:
                cand_sets[(i, j)] = set(picked)
                rows.append((i, j, sorted(picked, key=lambda x: (float(scores[i, x]), x))))
    width = sum(min(cfg.topk, n) for n in inputs.num_per_level)
    s = torch.full((len(rows), width), float("inf"))
    for r, (i, _, picked) in enumerate(rows):
        s[r, :len(picked)] = scores[i, picked]
    pos, ignore, _ = split_candidates(s, torch.isfinite(s), cfg)
    out = torch.full((b, a), BG)
    for r, (i, j, picked) in enumerate(rows):
        for c, x in enumerate(picked):
            out[i, x] = j if pos[r, c] else IGNORE if ignore[r, c] else BG
    return out, cand_sets


@pytest.mark.parametrize("seed,cfg", [
    (1, PAAConfig()),
    (2, PAAConfig(separation="b", topk=4)),
    (3, PAAConfig(separation="d", edge_cases="mmdet")),
    (4, PAAConfig(fnp=3, low_quality=False)),
])
def test_sparse_assignment_equals_the_dense_definition(seed, cfg):
    inputs = batch(seed, images=4, m=6)
    expected, cand_sets = dense_reference_labels(inputs, cfg)
    result = assign_paa(inputs, cfg)
    assert torch.equal(result.matched_gt, expected)
    assert result.positive.any()

    b, m = inputs.gt_labels.shape
    matched = dense_first_matching(inputs, cfg)
    img, anc = (matched >= 0).nonzero(as_tuple=True)
    gt = matched[img, anc]
    score = anchor_scores(inputs, img * inputs.anchors.shape[0] + anc, img * m + gt, cfg)
    rows, s, v, anchor_of = candidate_rows(img, anc, gt, score, m, inputs.num_per_level, cfg.topk)
    got = {(int(r) // m, int(r) % m): set(anchor_of[k][v[k]].tolist()) for k, r in enumerate(rows)}
    assert got == cand_sets
    assert (s[:, 1:] >= s[:, :-1]).all()  # each row ascending, padding (+inf) last


@pytest.mark.parametrize("topk", [1, 3, 9])
@pytest.mark.parametrize("logit_scale", [0.5, 4.0])  # tight and loose lower bounds
def test_needed_scores_keep_every_groups_topk_lowest_and_their_exact_scores(topk, logit_scale):
    from detector.assigners.paa_candidates import level_groups, needed_scores

    inputs = batch(5, images=4, m=7)
    inputs.cls_logits = inputs.cls_logits * logit_scale
    cfg = PAAConfig(topk=topk)
    b, m = inputs.gt_labels.shape
    a = inputs.anchors.shape[0]
    matched = dense_first_matching(inputs, cfg)
    img, anc = (matched >= 0).nonzero(as_tuple=True)
    gt = matched[img, anc]
    full = anchor_scores(inputs, img * a + anc, img * m + gt, cfg)
    group = level_groups(img, anc, gt, m, inputs.num_per_level)
    idx, score = needed_scores(AnchorScorer(inputs, img * a + anc, img * m + gt, cfg), group, topk)
    assert len(set(idx.tolist())) == len(idx) < len(full)  # no anchor twice, and some were ruled out
    assert torch.equal(score, full[idx])  # exact scores, bit for bit
    for g in group.unique():
        members = (group == g).nonzero().squeeze(1)
        best = members[full[members].argsort(stable=True)[:topk]]
        assert set(best.tolist()) <= set(idx.tolist())
