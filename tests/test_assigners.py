"""The assigner test matrix: hand-computed fixtures, edge cases, batching, padding, references."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from torchvision.models.detection._utils import Matcher
from torchvision.ops import box_iou

from detector.assigners import BG, IGNORE, AssignInputs, assign
from detector.assigners.atss import ATSSConfig, assign_atss
from detector.assigners.max_iou import MaxIoUConfig, assign_max_iou
from detector.config import AnchorConfig, AssignConfig
from detector.methods import METHODS, method_config
from detector.model.anchors import grid_anchors

ASSIGNERS = [name for name, method in METHODS.items() if method.assign is not None]  # the matrix's rows


def make_inputs(gt_list, anchors=None, counts=None, strides=(8, 16, 32, 64, 128), pad_to=None, junk_padding=False):
    """Pad a list of per-image (boxes [n,4], labels [n]) into AssignInputs."""
    if anchors is None:
        anchors, counts = grid_anchors([(8, 8), (4, 4), (2, 2), (1, 1), (1, 1)], AnchorConfig())
    m = max([len(b) for b, _ in gt_list] + [pad_to or 0])
    b = len(gt_list)
    boxes = torch.zeros(b, m, 4)
    labels = torch.full((b, m), -1, dtype=torch.long)
    valid = torch.zeros(b, m, dtype=torch.bool)
    if junk_padding:  # padding rows that look like real boxes: a mask, not zeros, must exclude them
        boxes[:] = torch.tensor([0.0, 0.0, 40.0, 40.0])
        labels[:] = 0
    for i, (bx, lb) in enumerate(gt_list):
        n = len(bx)
        if n:
            boxes[i, :n] = torch.as_tensor(bx, dtype=torch.float32)
            labels[i, :n] = torch.as_tensor(lb)
            valid[i, :n] = True
    # Predictions for prediction-dependent assigners (PAA): a fixed function of the anchor index, the
    # same in every image, so that batched and per-image runs see identical inputs.
    a = anchors.shape[0]
    idx = torch.arange(a, dtype=torch.float32)
    cls_logits = torch.stack([torch.sin(idx * (c + 1)) * 2 - 2 for c in range(5)], 1)[None].expand(b, -1, -1)
    jitter = torch.stack([torch.sin(idx * 0.7), torch.cos(idx * 1.3), torch.sin(idx * 2.1), torch.cos(idx)], 1)
    pred_boxes = (anchors + 4 * jitter)[None].expand(b, -1, -1)
    return AssignInputs(anchors=anchors, num_per_level=list(counts), strides=list(strides), gt_boxes=boxes,
                        gt_labels=labels, gt_valid=valid, cls_logits=cls_logits.contiguous(),
                        pred_boxes=pred_boxes.contiguous())


def random_gts(n_images, max_gt, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_images):
        n = int(torch.randint(0, max_gt + 1, (1,), generator=g))
        xy = torch.rand(n, 2, generator=g) * size * 0.8
        wh = torch.rand(n, 2, generator=g) * size * 0.5 + 4
        out.append((torch.cat([xy, xy + wh], 1), torch.randint(0, 5, (n,), generator=g)))
    return out


def run(name, inputs, **fields):
    """Assign with method `name` at its config defaults (but `fields`), as the training step does."""
    cfg = AssignConfig(name=name)
    section = method_config(cfg)
    return assign(inputs, METHODS[name].assign, dataclasses.replace(section, **fields) if fields else section,
                  cfg.ignore_iof)


# ---------------------------------------------------------------- hand-computed fixtures

def test_max_iou_hand_computed():
    anchors = torch.tensor([[0, 0, 10, 10], [5, 0, 15, 10], [20, 0, 30, 10], [100, 100, 110, 110.0]])
    gt = torch.tensor([[0, 0, 10, 10], [8, 0, 18, 10.0]])
    # IoU(a0,g0)=1; IoU(a1,g0)=50/150=1/3; IoU(a1,g1)=70/130=0.538; IoU(a2,g1)=0; a3 touches nothing.
    inputs = make_inputs([(gt, [0, 1])], anchors=anchors, counts=[4], strides=[8])
    r = assign_max_iou(inputs, MaxIoUConfig())
    assert r.matched_gt.tolist() == [[0, 1, BG, BG]]
    assert torch.allclose(r.iou[0, :2], torch.tensor([1.0, 70 / 130]))
    # Raise the positive threshold: a1 (0.538) falls between thresholds, but is g1's best anchor -> kept.
    r = assign_max_iou(inputs, MaxIoUConfig(pos_iou=0.6, neg_iou=0.4))
    assert r.matched_gt.tolist() == [[0, 1, BG, BG]]
    r = assign_max_iou(inputs, MaxIoUConfig(pos_iou=0.6, neg_iou=0.4, low_quality="off"))
    assert r.matched_gt.tolist() == [[0, IGNORE, BG, BG]]


def test_atss_hand_computed():
    # One level, 4x4 grid of 8x8 anchors (stride 8, scale 1 here): centres at 4, 12, 20, 28.
    cfg = AnchorConfig(strides=[8], octave_base_scale=1.0)
    anchors, counts = grid_anchors([(4, 4)], cfg)
    gt = torch.tensor([[0.0, 0.0, 16.0, 16.0]])  # covers exactly the 4 top-left anchors
    inputs = make_inputs([(gt, [3])], anchors=anchors, counts=counts, strides=[8])
    r = assign_atss(inputs, ATSSConfig(topk=4))
    # Candidates: the 4 anchors centred at (4|12, 4|12), IoU 64/256 = 0.25 each: std 0, all pass, all inside.
    pos = r.matched_gt[0].view(4, 4) == 0
    expected = torch.zeros(4, 4, dtype=torch.bool)
    expected[:2, :2] = True
    assert torch.equal(pos, expected)
    assert torch.allclose(r.iou[0][r.matched_gt[0] == 0], torch.full((4,), 0.25))
    # topk 5: a 5th candidate with IoU 0 gives mean 0.2 and unbiased std sqrt(0.05 / 4) = 0.112, so the
    # threshold 0.312 exceeds every IoU: ATSS forces no positive and this GT gets none.
    r = assign_atss(inputs, ATSSConfig(topk=5))
    assert int((r.matched_gt[0] == 0).sum()) == 0


def test_atss_conflict_goes_to_highest_iou():
    cfg = AnchorConfig(strides=[8], octave_base_scale=2.0)
    anchors, counts = grid_anchors([(4, 4)], cfg)
    # Two overlapping GTs both around the anchor centred at (12, 12) (box [4,4,20,20]).
    gts = torch.tensor([[4.0, 4.0, 20.0, 20.0], [2.0, 2.0, 22.0, 22.0]])
    inputs = make_inputs([(gts, [0, 1])], anchors=anchors, counts=counts, strides=[8])
    # topk 4: the anchor at (12, 12) and three at distance 8 (IoU 1/3 with GT 0, 0.32 with GT 1).
    # Thresholds: GT 0: 0.5 + 0.333 = 0.833; GT 1: 0.402 + 0.159 = 0.561. The centre anchor passes both
    # (IoU 1.0 and 0.64) and goes to GT 0, the higher IoU; GT 1 is left with no positive.
    r = assign_atss(inputs, ATSSConfig(topk=4))
    a = 1 * 4 + 1  # row 1, col 1
    assert r.matched_gt[0, a].item() == 0
    assert int((r.matched_gt[0] == 0).sum()) == 1
    assert int((r.matched_gt[0] == 1).sum()) == 0


# ---------------------------------------------------------------- references

def test_max_iou_equals_torchvision_matcher():
    matcher = Matcher(0.5, 0.4, allow_low_quality_matches=True)
    anchors, counts = grid_anchors(
        [(8, 8), (4, 4), (2, 2), (1, 1), (1, 1)],
        AnchorConfig(octave_base_scale=4, scales_per_octave=3, aspect_ratios=[0.5, 1.0, 2.0]),
    )
    gts = [g for g in random_gts(24, 8, seed=1) if len(g[0])]
    # Ties: a GT identical to two anchors' union-equal copies, and a GT equal to an anchor.
    gts.append((torch.stack([anchors[10], anchors[10] + 0.0, anchors[200]]), torch.tensor([0, 1, 2])))
    inputs = make_inputs(gts, anchors=anchors, counts=counts)
    ours = assign_max_iou(inputs, MaxIoUConfig())
    for i, (boxes, _) in enumerate(gts):
        ref = matcher(box_iou(boxes, anchors))
        assert torch.equal(ours.matched_gt[i], ref), f"image {i}"


def atss_reference(boxes, anchors, counts, topk, eps=0.01):
    """A plain per-GT loop of ATSS, written from the paper's Algorithm 1."""
    n = anchors.shape[0]
    best = torch.full((n,), -1.0)
    owner = torch.full((n,), BG, dtype=torch.long)
    centers = (anchors[:, :2] + anchors[:, 2:]) / 2
    for g, box in enumerate(boxes):
        ious = box_iou(box[None], anchors)[0]
        gc = (box[:2] + box[2:]) / 2
        d = (centers - gc).norm(dim=1)
        cand, start = [], 0
        for c in counts:
            k = min(topk, c)
            cand += (d[start:start + c].argsort(stable=True)[:k] + start).tolist()
            start += c
        cand = torch.tensor(cand)
        ci = ious[cand]
        thr = ci.mean() + ci.std()
        for a, v in zip(cand.tolist(), ci.tolist()):
            inside = min(centers[a, 0] - box[0], centers[a, 1] - box[1], box[2] - centers[a, 0], box[3] - centers[a, 1])
            if v >= thr and inside > eps and v > best[a]:
                best[a], owner[a] = v, g
    return owner


def test_atss_equals_per_gt_reference():
    anchors, counts = grid_anchors([(8, 8), (4, 4), (2, 2), (1, 1), (1, 1)], AnchorConfig())
    gts = random_gts(12, 6, seed=2)
    inputs = make_inputs(gts, anchors=anchors, counts=counts)
    ours = assign_atss(inputs, ATSSConfig())
    for i, (boxes, _) in enumerate(gts):
        ref = atss_reference(boxes, anchors, counts, 9)
        # Distance ties may order candidates differently; they are rare with random float boxes.
        assert torch.equal(ours.matched_gt[i], ref), f"image {i}"


# ---------------------------------------------------------------- hand-computed fixture, every assigner

# One level of five 10x10 anchors (xyxy pixels) and two GTs, g0 = [0, 0, 10, 10] and g1 = [40, 0, 52, 10]:
#   a0 [0, 0, 10, 10]        equals g0: IoU(a0, g0) = 1
#   a1 [20, 0, 30, 10]       overlaps no GT
#   a2 [40, 0, 50, 10]       inside g1: IoU(a2, g1) = 100 / 120 = 0.833
#   a3 [100, 100, 110, 110]  overlaps no GT
#   a4 [3.5, 0, 13.5, 10]    IoU(a4, g0) = 65 / 135 = 0.481
# Predictions (PAA reads them): the same logit for every anchor and class, every box predicted as its anchor.
HAND_ANCHORS = [[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10], [100, 100, 110, 110], [3.5, 0, 13.5, 10]]
HAND_GTS = [[0, 0, 10, 10], [40, 0, 52, 10]]
HAND_EXPECTED = {
    # pos 0.5 / neg 0.4: a0 -> g0 (1), a2 -> g1 (0.833); a4's 0.481 lies between the thresholds: IGNORE;
    # a1, a3 (IoU 0): BG. Low-quality matches add nothing: each GT's best anchor is already matched to it.
    "max_iou": [0, BG, 1, BG, IGNORE],
    # topk 9 >= 5 anchors: all five are candidates of both GTs. g0: IoUs (1, 0, 0, 0, 0.481), threshold mean
    # 0.296 + unbiased std 0.445 = 0.742: a0 alone, its centre (5, 5) 5 px inside g0. g1: IoUs (0, 0, 0.833,
    # 0, 0), threshold 0.167 + 0.373 = 0.539: a2 alone, its centre (45, 5) at least 5 px inside g1.
    "atss": [0, BG, 1, BG, BG],
    # First matching (IoU >= 0.1): g0 {a0, a4}, g1 {a2}. Score = the same focal term F + (1 - GIoU): a0 F,
    # a4 F + 0.519 (hull = union), a2 F + 0.167. g1's single candidate is positive (official edge case).
    # g0: EM starts the fg component at the lower score, a0, which stays its peak; scheme c keeps the prefix
    # up to the fg peak, a0, and a4 is negative.
    "paa": [0, BG, 1, BG, BG],
    # Points (anchor centres; one level, so no size bound): a0 (5, 5), a1 (25, 5), a2 (45, 5), a3 (105, 105),
    # a4 (8.5, 5). FCOS candidates: a0 and a4 in g0, a2 in g1. The rules, with each positive's pIoU (the IoU of
    # the GT-sized box centred on the point: a0 1; a2, box [39, 0, 51, 10], 110 / 130 = 11/13; a4, box [3.5, 0,
    # 13.5, 10] = a4 itself, 65 / 135):
    "fcos_inside": [0, BG, 1, BG, 0],
    "pseudo_iou": [0, BG, 1, BG, 0],  # T 0.4: pIoU 1, 0.846, 0.481 all pass
    "scaled_box": [0, BG, 1, BG, BG],  # s 0.6: a4 is 3.5 px from g0's centre, the scaled box reaches 3 px
    "centerness_threshold": [0, BG, 1, BG, 0],  # c 0.35: a2 sqrt(5/7) = 0.845, a4 sqrt(1.5/8.5) = 0.420
}
# The IoU each method reports for its positives, where it is not the anchor box's (a0 1, a2 100 / 120): points
# have the pIoU of their pseudo box.
HAND_IOU = {name: [1.0, 0.0, 11 / 13, 0.0, 65 / 135] for name in ("fcos_inside", "pseudo_iou", "centerness_threshold")}
HAND_IOU["scaled_box"] = [1.0, 0.0, 11 / 13, 0.0, 0.0]


@pytest.mark.parametrize("name", ASSIGNERS)
def test_hand_computed_fixture(name):
    anchors = torch.tensor(HAND_ANCHORS)
    inputs = make_inputs([(HAND_GTS, [0, 1])], anchors=anchors, counts=[5], strides=[8])
    inputs.cls_logits = torch.full((1, 5, 2), -4.0)
    inputs.pred_boxes = anchors[None].clone()
    points = METHODS[name].box_coding == "ltrb"
    r = run(name, inputs, size_bounds=[]) if points else run(name, inputs)  # one level: no bound between levels
    assert r.matched_gt.tolist() == [HAND_EXPECTED[name]]  # a new method needs its hand-computed case here
    assert torch.allclose(r.iou[0], torch.tensor(HAND_IOU.get(name, [1.0, 0.0, 100 / 120, 0.0, 0.0])))


# ---------------------------------------------------------------- edge-case matrix over every assigner

@pytest.mark.parametrize("name", ASSIGNERS)
def test_no_gt(name):
    r = run(name, make_inputs([([], []), ([], [])]))
    assert (r.matched_gt == BG).all() and r.matched_gt.shape[0] == 2


@pytest.mark.parametrize("name", ASSIGNERS)
def test_all_gt_padding(name):
    inputs = make_inputs([([], [])], pad_to=3, junk_padding=True)
    r = run(name, inputs)
    assert (r.matched_gt == BG).all()


@pytest.mark.parametrize("name", ASSIGNERS)
def test_no_anchors(name):
    inputs = make_inputs(random_gts(2, 3, seed=3), anchors=torch.zeros(0, 4), counts=[0, 0, 0, 0, 0])
    r = run(name, inputs)
    assert r.matched_gt.shape == (2, 0)


@pytest.mark.parametrize("name", ASSIGNERS)
def test_batched_equals_per_image(name):
    gts = random_gts(6, 7, seed=4)
    batched = run(name, make_inputs(gts))
    for i, g in enumerate(gts):
        single = run(name, make_inputs([g]))
        assert torch.equal(batched.matched_gt[i], single.matched_gt[0])
        assert torch.allclose(batched.iou[i], single.iou[0])


@pytest.mark.parametrize("name", ASSIGNERS)
def test_padding_invariance(name):
    gts = random_gts(4, 5, seed=5)
    a = run(name, make_inputs(gts))
    b = run(name, make_inputs(gts, pad_to=12, junk_padding=True))
    assert torch.equal(a.matched_gt, b.matched_gt)
    assert torch.allclose(a.iou, b.iou)


@pytest.mark.parametrize("name", ASSIGNERS)
def test_deterministic(name):
    inputs = make_inputs(random_gts(4, 6, seed=6))
    a, b = run(name, inputs), run(name, inputs)
    assert torch.equal(a.matched_gt, b.matched_gt)


@pytest.mark.parametrize("name", ASSIGNERS)
def test_one_anchor_wanted_by_two_gts(name):
    # Two identical GTs: every anchor has equal IoU with both; each positive goes to exactly one.
    box = [[20.0, 20.0, 84.0, 84.0]]
    r = run(name, make_inputs([(box * 2, [0, 1])]))
    pos = r.matched_gt[0] >= 0
    assert pos.any()
    assert set(r.matched_gt[0][pos].tolist()) <= {0, 1}


@pytest.mark.parametrize("name", ASSIGNERS)
def test_chunked_equals_whole(name, monkeypatch):
    import detector.assigners as A

    inputs = make_inputs(random_gts(5, 6, seed=7))
    whole = run(name, inputs)
    monkeypatch.setattr(A, "MAX_BATCH_ELEMENTS", 1)  # one image per chunk
    chunked = run(name, inputs)
    assert torch.equal(whole.matched_gt, chunked.matched_gt)


@pytest.mark.parametrize("name", ASSIGNERS)
def test_crowd_regions_ignore_background(name):
    inputs = make_inputs([([[0.0, 0.0, 20.0, 20.0]], [0])])
    inputs.ignore_boxes = torch.tensor([[[60.0, 60.0, 200.0, 200.0]]])
    inputs.ignore_valid = torch.tensor([[True]])
    r = run(name, inputs)
    centers = (inputs.anchors[:, :2] + inputs.anchors[:, 2:]) / 2
    inside = ((centers >= 60) & (centers <= 200)).all(1) & ((inputs.anchors[:, 2:] - inputs.anchors[:, :2]) < 60).all(1)
    assert (r.matched_gt[0][inside] == IGNORE).all()
    assert (r.matched_gt[0] >= 0).any()  # the real GT keeps its positives


@pytest.mark.parametrize("name", ASSIGNERS)
def test_all_anchors_ignored(name):
    # Two images without GT, each with one crowd region covering every anchor (the largest, on P7, spans
    # [-448, 576]) and a padding region: every anchor is IGNORE, none positive.
    inputs = make_inputs([([], []), ([], [])])
    inputs.ignore_boxes = torch.tensor([[-1000.0, -1000.0, 2000.0, 2000.0], [0.0, 0.0, 1.0, 1.0]]).expand(2, 2, 4)
    inputs.ignore_valid = torch.tensor([[True, False], [True, False]])
    r = run(name, inputs)
    assert r.matched_gt.shape == (2, inputs.anchors.shape[0])
    assert (r.matched_gt == IGNORE).all()


def test_labels_of_result():
    inputs = make_inputs([([[0.0, 0.0, 32.0, 32.0]], [4])])
    r = run("max_iou", inputs)
    labels = r.labels(inputs.gt_labels)
    assert set(labels[r.positive].tolist()) == {4}
    assert (labels[~r.positive] < 0).all()


def test_prediction_dependent_assigners_are_registered_and_refuse_missing_predictions():
    readers = [name for name in ASSIGNERS if METHODS[name].reads_predictions]
    assert "paa" in readers
    for name in readers:
        inputs = make_inputs(random_gts(1, 2, seed=9))
        inputs.cls_logits = inputs.pred_boxes = None
        with pytest.raises(ValueError):
            run(name, inputs)


def test_atss_nearest_centres_are_exact_at_large_coordinates():
    # One level of 60 anchors whose centres lie 20 px + j * 1e-3 px (j shuffled) from a GT centre near
    # (5000, 5000). The k = 9 nearest by float64 distances (of the same float32 centres) are the reference.
    from detector.assigners.atss import nearest_anchors
    from detector.boxes import box_centers

    g = torch.Generator().manual_seed(0)
    n, k = 60, 9
    theta = torch.rand(n, generator=g, dtype=torch.float64) * 2 * torch.pi
    radius = 20 + torch.randperm(n, generator=g).double() * 1e-3
    centre = torch.tensor([5000.0, 5000.0], dtype=torch.float64)
    ctr = centre + radius[:, None] * torch.stack([theta.cos(), theta.sin()], 1)
    anchors = torch.cat([ctr - 4, ctr + 4], 1).float()
    gt = torch.cat([centre - 10, centre + 10]).float()[None, None]  # (B, M, 4)
    anchor_ctr, gt_ctr = box_centers(anchors), box_centers(gt)

    exact = (anchor_ctr.double() - gt_ctr[0, 0].double()).norm(dim=1)
    assert (exact.sort().values.diff()[:k + 1] > 5e-4).all()  # no near-tie at float64 precision
    ref = set(exact.argsort()[:k].tolist())
    assert set(nearest_anchors(gt_ctr, anchor_ctr, [n], k)[0, 0].tolist()) == ref
    by_cdist = torch.cdist(gt_ctr.reshape(1, 1, 2), anchor_ctr[None])[0, 0].topk(k, largest=False).indices
    assert set(by_cdist.tolist()) != ref  # cdist's default (matrix-product) mode ranks them wrongly
