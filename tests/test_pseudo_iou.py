"""Pseudo-IoU: the closed form against the paper's Algorithm 1 step by step, hand-computed points, T = 0 as the
AF-baseline, positives shrinking as T grows, grid-aligned ties, rejected points staying negatives."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from detector.assigners.base import BG, AssignInputs
from detector.assigners.fcos import TIE_TOLERANCE, FCOSConfig, assign_fcos_inside
from detector.assigners.pseudo_iou import PseudoIoUConfig, assign_pseudo_iou
from detector.boxes import pseudo_iou
from detector.config import AnchorConfig, ConfigError, build_config
from detector.model.anchors import grid_anchors
from tests.test_assigners import make_inputs, random_gts


def algorithm1(l_b: float, t_b: float, r_b: float, b_b: float, stride: float) -> np.float32:
    """Pseudo-IoU of one point, step by step as the paper's Algorithm 1, in the official code's arithmetic:
    float32, on the distances divided by the stride (`norm_on_bbox`)."""
    l_b, t_b, r_b, b_b = (np.float32(v) / np.float32(stride) for v in (l_b, t_b, r_b, b_b))
    # 1. The pseudo box A: the GT's size, centred on the point.
    l_a = r_a = (l_b + r_b) / np.float32(2)
    t_a = b_a = (t_b + b_b) / np.float32(2)
    s_b = (l_b + r_b) * (t_b + b_b)
    s_a = (l_a + r_a) * (t_a + b_a)  # the paper prints (tA + tA): the same, tA = bA
    # 2. The intersection box's sides, from the point.
    l_i, r_i = min(l_a, l_b), min(r_a, r_b)
    t_i, b_i = min(t_a, t_b), min(b_a, b_b)
    # 3. Its area; 4. the union; 5. their ratio.
    s_i = (l_i + r_i) * (t_i + b_i)
    union = s_a + s_b - s_i
    return np.float32(s_i / union)


def inside_points(n: int, seed: int, grid: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """n (distances (l, t, r, b) in pixels, stride) pairs of points strictly inside boxes. With `grid`, the box
    sides lie on a half-stride grid and points on the stride grid, as on boxes snapped to it (exact ties)."""
    g = torch.Generator().manual_seed(seed)
    stride = torch.tensor([8.0, 16.0, 32.0, 64.0, 128.0])[torch.randint(0, 5, (n,), generator=g)]
    if grid:  # l = (k + 0.5) s for the side at a multiple of s below the point's (i + 0.5) s, etc.
        ltrb = (torch.randint(0, 12, (n, 4), generator=g) + 0.5) * stride[:, None]
    else:
        ltrb = torch.rand(n, 4, generator=g) * 12 * stride[:, None] + 0.01
    return ltrb, stride


def one_level(gts, size=8, stride=8) -> AssignInputs:
    anchors, counts = grid_anchors([(size, size)], AnchorConfig(strides=[stride]))
    return make_inputs([(gts, [0] * len(gts))], anchors=anchors, counts=counts, strides=[stride])


def point_set(result, gt=0, size=8, stride=8) -> set[tuple[float, float]]:
    idx = (result.matched_gt[0] == gt).nonzero().flatten().tolist()
    return {((i % size + 0.5) * stride, (i // size + 0.5) * stride) for i in idx}


# ---------------------------------------------------------------- the closed form and Algorithm 1

@pytest.mark.parametrize("grid", [False, True])
def test_closed_form_equals_algorithm_1(grid):
    ltrb, stride = inside_points(4000, seed=1 + grid, grid=grid)
    ours = pseudo_iou(ltrb.double())
    ref = torch.tensor([float(algorithm1(*d.tolist(), s.item())) for d, s in zip(ltrb, stride)], dtype=torch.float64)
    assert torch.allclose(ours, ref, atol=1e-6, rtol=0)
    assert (ours > 1 / 7).all() and (ours <= 1).all()
    # The decisions agree at every threshold, ties included: the official float32 order scores an exact tie
    # "not above" (REFERENCE_NOTES 8.8), and so does the assigner's comparison (`fcos.TIE_TOLERANCE`).
    ties = 0
    for t in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8):
        ours_pos = ours > t + TIE_TOLERANCE  # the assigner's comparison
        ref_pos = torch.tensor([bool(v > np.float32(t)) for v in ref.float().numpy()])
        assert torch.equal(ours_pos, ref_pos), t
        ties += int(((ours - t).abs() < 1e-9).sum())
    assert (ties > 0) == grid  # the grid case does hold exact ties


def test_pseudo_iou_by_hand():
    # (l, t, r, b) -> pIoU: a = (1 - |dx|/w)(1 - |dy|/h), pIoU = a / (2 - a).
    cases = {
        (5.0, 5.0, 5.0, 5.0): 1.0,  # the centre: the pseudo box is the GT
        (8.5, 5.0, 1.5, 5.0): 0.65 / 1.35,  # dx 3.5 of w 10: a 0.65 (pseudo box [3.5, 0, 13.5, 10], GT [0, 0, 10, 10])
        (3.0, 1.0, 1.0, 3.0): 0.5625 / 1.4375,  # dx = 1, dy = -1 of w = h = 4: a = 0.75 x 0.75
        (1.0, 1.0, 7.0, 7.0): 0.390625 / 1.609375,  # near a corner: dx = dy = -3 of 8: a = 0.625 x 0.625
        (26.0, 10.0, 2.0, 10.0): 0.4,  # dx 12 of w 28: a 4/7, exactly the default threshold
    }
    for ltrb, expected in cases.items():
        assert pseudo_iou(torch.tensor(ltrb, dtype=torch.float64)).item() == pytest.approx(expected, abs=1e-12)
        assert float(algorithm1(*ltrb, stride=8)) == pytest.approx(expected, abs=1e-6)


def test_assigner_by_hand():
    # GT [0, 0, 64, 32]: centre (32, 16), w 64, h 32. Points at 4 + 8k. T = 0.4: positive iff a > 4/7.
    # Row y = 12 (dy 4, 1 - 1/8 = 0.875): 1 - |dx|/64 > 0.653 -> |dx| < 22.2: x = 12 ... 52.
    # Row y = 4 (dy 12, 0.625): 1 - |dx|/64 > 0.914 -> |dx| < 5.5: x = 28, 36. Rows 20, 28 mirror 12, 4.
    r = assign_pseudo_iou(one_level([[0.0, 0.0, 64.0, 32.0]]), PseudoIoUConfig(size_bounds=[]))
    wide = {(x, y) for x in (12, 20, 28, 36, 44, 52) for y in (12, 20)}
    assert point_set(r) == wide | {(x, y) for x in (28, 36) for y in (4, 28)}
    assert (r.matched_gt[0][r.matched_gt[0] < 0] == BG).all()  # the rejected are negatives, not ignored
    centre = (1 * 8 + 3)  # the point (28, 12): dx 4, dy 4 -> a = (60/64)(28/32)
    a = 60 / 64 * 28 / 32
    assert r.iou[0, centre].item() == pytest.approx(a / (2 - a), abs=1e-6)
    with pytest.raises(ConfigError, match=r"^assign\.pseudo_iou: threshold must be in \[0, 1\)"):
        build_config({"assign": {"pseudo_iou": {"threshold": 1.0}}})


def test_a_grid_aligned_tie_is_negative():
    # GT [10, 26, 38, 46], point (36, 36): l 26, r 2 (dx 12 of w 28), dy 0: pIoU = 0.4 exactly.
    inputs = one_level([[10.0, 26.0, 38.0, 46.0]])
    point = 4 * 8 + 4  # (36, 36)
    assert float(algorithm1(26.0, 10.0, 2.0, 10.0, stride=8)) <= np.float32(0.4)  # the reference: not above
    assert assign_pseudo_iou(inputs, PseudoIoUConfig(size_bounds=[], threshold=0.4)).matched_gt[0, point] == BG
    assert assign_pseudo_iou(inputs, PseudoIoUConfig(size_bounds=[], threshold=0.39)).matched_gt[0, point] == 0


def test_a_rejected_point_is_not_offered_to_another_gt():
    # The point (36, 4) lies in both GTs. The smaller, g1 = [0, 0, 40, 16], takes it (FCOS), at pIoU
    # 0.45 / 1.55 = 0.29 (dx 16 of 40, dy 4 of 16): rejected, it stays negative although it is the centre of
    # the larger g0 = [8, -16, 64, 24] (pIoU 1 there). No GT is forced a positive either.
    inputs = one_level([[8.0, -16.0, 64.0, 24.0], [0.0, 0.0, 40.0, 16.0]])
    point = 0 * 8 + 4
    assert assign_fcos_inside(inputs, FCOSConfig(size_bounds=[])).matched_gt[0, point] == 1
    r = assign_pseudo_iou(inputs, PseudoIoUConfig(size_bounds=[]))
    assert r.matched_gt[0, point] == BG and r.iou[0, point] == 0


# ---------------------------------------------------------------- thresholds

def scenes():
    """Random multi-level scenes (five levels, strides 8-128, 64 x 64 at P3) with crowded GTs."""
    gts = random_gts(8, 9, size=256, seed=11)
    anchors, counts = grid_anchors([(32, 32), (16, 16), (8, 8), (4, 4), (2, 2)], AnchorConfig())
    return make_inputs(gts, anchors=anchors, counts=counts)


def test_threshold_zero_is_the_af_baseline_exactly():
    inputs = scenes()
    for sampling in (False, True):
        base = assign_fcos_inside(inputs, FCOSConfig(center_sampling=sampling))
        zero = assign_pseudo_iou(inputs, PseudoIoUConfig(threshold=0.0, center_sampling=sampling))
        assert torch.equal(base.matched_gt, zero.matched_gt) and torch.equal(base.iou, zero.iou)
        assert int(base.positive.sum()) > 100


def test_positives_shrink_monotonically_as_the_threshold_grows():
    inputs = scenes()
    thresholds = [0.0, 0.1, 0.14, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.99]
    results = [assign_pseudo_iou(inputs, PseudoIoUConfig(threshold=t)) for t in thresholds]
    counts = [int(r.positive.sum()) for r in results]
    for lower, higher in zip(results, results[1:]):
        kept = higher.positive
        assert not (kept & ~lower.positive).any()  # a subset, not just fewer
        assert torch.equal(higher.matched_gt[kept], lower.matched_gt[kept])  # with the same GT
    assert counts[0] == counts[1] == counts[2]  # pIoU > 1/7 for every point inside its GT
    assert all(a > b for a, b in zip(counts[2:], counts[3:])) and counts[-1] < counts[0] / 20
    for t, r in zip(thresholds, results):
        assert (r.iou[r.positive] > t).all()  # each positive reports its pIoU
