"""FCOS points: their locations, the ltrb coding, size ranges, the smallest-GT rule, centre sampling, the
scaled-box and centerness rules by hand, the point losses and inference, and a tiny training of every point
method. (Pseudo-IoU itself: tests/test_pseudo_iou.py; the shared assigner matrix: tests/test_assigners.py.)"""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from detector.assigners.base import BG, AssignInputs, AssignResult
from detector.assigners.centerness_threshold import CenternessThresholdConfig, assign_centerness_threshold
from detector.assigners.fcos import FCOSConfig, assign_fcos_inside, fcos_candidates, level_ranges
from detector.assigners.scaled_box import ScaledBoxConfig, assign_scaled_box
from detector.box_coder import LTRBCoder
from detector.boxes import centerness
from detector.config import AnchorConfig, ConfigError, LossConfig, build_config, load_config
from detector.engine.hooks import TrainHooks
from detector.engine.train import train
from detector.losses.dense import dense_losses
from detector.methods import METHODS, build_box_coder
from detector.model.anchors import grid_anchors
from detector.model.head import HeadOutput
from detector.postprocess import postprocess
from tests.conftest import tiny_config

POINT_METHODS = [name for name, m in METHODS.items() if m.box_coding == "ltrb"]
CONFIGS = Path(__file__).resolve().parents[1] / "studies" / "configs"


def one_level(size: int = 8, stride: int = 8) -> tuple[torch.Tensor, list[int]]:
    """One level of size x size points (anchors of side 8 x stride, as the point configs')."""
    return grid_anchors([(size, size)], AnchorConfig(strides=[stride]))


def inputs_for(gts: list[list[float]], anchors, counts, strides, valid=None) -> AssignInputs:
    boxes = torch.tensor([gts], dtype=torch.float32)
    m = boxes.shape[1]
    return AssignInputs(anchors=anchors, num_per_level=list(counts), strides=list(strides), gt_boxes=boxes,
                        gt_labels=torch.zeros(1, m, dtype=torch.long),
                        gt_valid=torch.ones(1, m, dtype=torch.bool) if valid is None else torch.tensor([valid]))


def positives(result: AssignResult, gt: int = 0) -> set[tuple[float, float]]:
    """The points (x, y) positive for GT `gt` in image 0, read back from a one-level 8-stride grid."""
    idx = (result.matched_gt[0] == gt).nonzero().flatten().tolist()
    return {((i % 8 + 0.5) * 8, (i // 8 + 0.5) * 8) for i in idx}


# ---------------------------------------------------------------- points and the ltrb coding

def test_points_are_mmdetection_locations():
    # mmdetection: (x, y) = (j * s + s // 2, i * s + s // 2), level-major, row-major; one point per location.
    anchors, counts = grid_anchors([(2, 3), (1, 2)], AnchorConfig(strides=[8, 16]))
    assert counts == [6, 2]
    centres = (anchors[:, :2] + anchors[:, 2:]) / 2
    expected = [(4, 4), (12, 4), (20, 4), (4, 12), (12, 12), (20, 12), (8, 8), (24, 8)]
    assert centres.tolist() == [list(map(float, p)) for p in expected]
    assert (anchors[:, 2] - anchors[:, 0]).tolist() == [64.0] * 6 + [128.0] * 2  # side 8 x stride: the coder's unit


def test_ltrb_encode_is_distances_over_the_stride_and_decode_inverts_it():
    coder = LTRBCoder(anchor_scale=8.0)
    anchor = torch.tensor([[12.0 - 64, 4.0 - 64, 12.0 + 64, 4.0 + 64]])  # the point (12, 4) of stride 16
    gt = torch.tensor([[4.0, 0.0, 44.0, 20.0]])
    codes = coder.encode(gt, anchor)
    assert codes.tolist() == [[8 / 16, 4 / 16, 32 / 16, 16 / 16]]
    assert torch.equal(coder.decode(codes, anchor), gt)
    # Round trip over random points inside random boxes, at every stride.
    g = torch.Generator().manual_seed(0)
    lt = torch.rand(500, 2, generator=g) * 300
    boxes = torch.cat([lt, lt + 1 + torch.rand(500, 2, generator=g) * 400], 1)
    pts = boxes[:, :2] + torch.rand(500, 2, generator=g) * (boxes[:, 2:] - boxes[:, :2])
    stride = torch.tensor([8.0, 16, 32, 64, 128])[torch.randint(0, 5, (500,), generator=g)]
    anchors = torch.cat([pts - 4 * stride[:, None], pts + 4 * stride[:, None]], 1)
    assert torch.allclose(coder.decode(coder.encode(boxes, anchors), anchors), boxes, atol=1e-3)


def test_ltrb_decode_clamps_negative_distances_like_the_reference_relu():
    coder = LTRBCoder(anchor_scale=8.0)
    anchor = torch.tensor([[-60.0, -60.0, 68.0, 68.0]])  # the point (4, 4), stride 16
    codes = torch.tensor([[-1.0, 0.5, 1.0, -0.25]], requires_grad=True)
    box = coder.decode(codes, anchor)
    assert box.tolist() == [[4.0, -4.0, 20.0, 4.0]]
    box.sum().backward()
    assert codes.grad.tolist() == [[0.0, -16.0, 16.0, 0.0]]  # no gradient through a clamped distance


def test_point_methods_build_the_ltrb_coder_and_refuse_other_anchor_shapes():
    for name in POINT_METHODS:
        cfg = build_config({"assign": {"name": name}})
        assert isinstance(build_box_coder(cfg), LTRBCoder) and build_box_coder(cfg).anchor_scale == 8.0
        assert METHODS[name].score_fusion == "product"  # mmdetection FCOS / PIOUHead: cls x centerness
        with pytest.raises(ConfigError, match=r"^model\.anchors: method .* one per location"):
            build_config({"assign": {"name": name}, "model": {"anchors": {"aspect_ratios": [0.5, 1.0, 2.0]}}})
        with pytest.raises(ConfigError, match=r"^model\.anchors: "):
            build_config({"assign": {"name": name}, "model": {"anchors": {"scales_per_octave": 3}}})
        with pytest.raises(ConfigError, match=rf"^assign\.{name}\.size_bounds: 5 levels need 4 bounds"):
            build_config({"assign": {"name": name, name: {"size_bounds": [64, 128]}}})
        with pytest.raises(ConfigError, match=rf"^assign\.{name}: size_bounds must be positive and strictly"):
            build_config({"assign": {name: {"size_bounds": [64, 64, 256, 512]}}})
    with pytest.raises(ConfigError, match="^loss.reg_centerness_weighted: "):
        build_config({"loss": {"reg_iou_weighted": True, "reg_centerness_weighted": True}})


@pytest.mark.parametrize("name", POINT_METHODS)
def test_method_config_files_layer_with_the_quick_profile(name):
    cfg = load_config([CONFIGS / f"{name}.yaml", CONFIGS / "quick.yaml"], ["train.iterations=3"])
    assert cfg.assign.name == name and cfg.train.iterations == 3 and cfg.model.backbone.name == "tiny"
    assert cfg.model.head.aux == "centerness" and cfg.loss.reg == "giou" and cfg.loss.reg_centerness_weighted
    assert cfg.inference.score_fusion == "product" and cfg.inference.nms_thresh == 0.5
    assert getattr(cfg.assign, name).size_bounds == [64.0, 128.0, 256.0, 512.0]


# ---------------------------------------------------------------- FCOS candidates

def test_size_ranges_are_inclusive_at_both_ends():
    assert level_ranges(3, [64.0, 128.0]).tolist() == [[-math.inf, 64.0], [64.0, 128.0], [128.0, math.inf]]
    with pytest.raises(ValueError, match="2 bounds for 2 levels"):
        level_ranges(2, [64.0, 128.0])
    # Two levels, strides 8 (points at 4 + 8k) and 16 (points at 8 + 16k), bound 32: level 0 takes max(l, t, r, b)
    # in (-inf, 32], level 1 in [32, inf).
    anchors, counts = grid_anchors([(8, 8), (4, 4)], AnchorConfig(strides=[8, 16]))

    def candidates(gt, bounds=(32.0,)):
        matched, _ = fcos_candidates(inputs_for([gt], anchors, counts, [8, 16]), FCOSConfig(size_bounds=list(bounds)))
        level0 = {(4 + 8 * (i % 8), 4 + 8 * (i // 8)) for i in (matched[0, :64] == 0).nonzero().flatten().tolist()}
        level1 = {(8 + 16 * (i % 4), 8 + 16 * (i // 4)) for i in (matched[0, 64:] == 0).nonzero().flatten().tolist()}
        return level0, level1

    # GT [4, 4, 68, 68]: on level 0 only its centre (36, 36) is within 32 of every side, exactly 32 (hi inclusive);
    # on level 1 every point inside is at least 32 from some side (the nearest to the centre, (40, 40): 36).
    level0, level1 = candidates([4.0, 4.0, 68.0, 68.0])
    assert level0 == {(36, 36)}
    assert level1 == {(x, y) for x in (8, 24, 40, 56) for y in (8, 24, 40, 56)}
    assert candidates([4.0, 4.0, 68.0, 68.0], bounds=(31.5,))[0] == set()
    # GT [8, 8, 72, 72]: the level-1 point (40, 40) at exactly 32 from every side (lo inclusive) is a candidate.
    level0, level1 = candidates([8.0, 8.0, 72.0, 72.0])
    assert level0 == set() and (40, 40) in level1
    assert (40, 40) not in candidates([8.0, 8.0, 72.0, 72.0], bounds=(32.5,))[1]


def test_a_point_in_several_gts_goes_to_the_smallest_then_the_first():
    anchors, counts = one_level()
    big, small, same_area = [0.0, 0.0, 48.0, 48.0], [8.0, 8.0, 32.0, 32.0], [16.0, 8.0, 40.0, 32.0]
    inputs = inputs_for([big, small, same_area], anchors, counts, [8], valid=[True, True, True])
    matched, ltrb = fcos_candidates(inputs, FCOSConfig(size_bounds=[]))
    grid = matched[0].view(8, 8)  # [row y, column x]; points at 4 + 8k
    assert grid[0, 0] == 0  # (4, 4): only in the big one
    assert grid[1, 1] == 1  # (12, 12): big and small: the smaller
    assert grid[2, 2] == 1  # (20, 20): in all three; small and same_area tie on area 576: the first
    assert grid[2, 4] == 2  # (36, 20): big (2304) and same_area (576)
    assert grid[6, 6] == BG  # (52, 52): in none
    assert ltrb[0, 2 * 8 + 2].tolist() == [12.0, 12.0, 12.0, 12.0]  # distances to its own GT, small
    # A padding row that would win every point (tiny area, covers all) changes nothing: the mask, not zeros.
    padded = inputs_for([big, small, same_area, [0.0, 0.0, 64.0, 64.0]], anchors, counts, [8],
                        valid=[True, True, True, False])
    padded.gt_boxes[0, 3] = torch.tensor([-1.0, -1.0, 100.0, 100.0])
    assert torch.equal(fcos_candidates(padded, FCOSConfig(size_bounds=[]))[0], matched)


def test_center_sampling_takes_the_centre_box_clipped_to_the_gt():
    anchors, counts = one_level()
    # GT [0, 0, 64, 24]: centre (32, 12). Radius 1.5 x stride 8 = 12: centre box [20, 0, 44, 24] (in y, 12 +- 12
    # is the GT's extent). Radius 2: [16, -4, 48, 28], clipped to the GT in y: [16, 0, 48, 24].
    inputs = inputs_for([[0.0, 0.0, 64.0, 24.0]], anchors, counts, [8])
    plain = assign_fcos_inside(inputs, FCOSConfig(size_bounds=[]))
    sampled = assign_fcos_inside(inputs, FCOSConfig(size_bounds=[], center_sampling=True))
    assert positives(plain) == {(x, y) for x in (4, 12, 20, 28, 36, 44, 52, 60) for y in (4, 12, 20)}
    assert positives(sampled) == {(x, y) for x in (28, 36) for y in (4, 12, 20)}  # 20 and 44 on the border: out
    wider = assign_fcos_inside(inputs, FCOSConfig(size_bounds=[], center_sampling=True, center_radius=2.0))
    assert positives(wider) == {(x, y) for x in (20, 28, 36, 44) for y in (4, 12, 20)}


# ---------------------------------------------------------------- the scaled-box and centerness rules by hand

def test_scaled_box_by_hand():
    anchors, counts = one_level()
    # GT [0, 0, 64, 32]: centre (32, 16), w 64, h 32. Scale 0.5: |x - 32| < 16 and |y - 16| < 8.
    inputs = inputs_for([[0.0, 0.0, 64.0, 32.0]], anchors, counts, [8])
    r = assign_scaled_box(inputs, ScaledBoxConfig(size_bounds=[], scale=0.5))
    assert positives(r) == {(x, y) for x in (20, 28, 36, 44) for y in (12, 20)}
    # Scale 0.25: |x - 32| < 8, |y - 16| < 4: no point (they sit at 4 from the centre in y: a tie, outside).
    assert positives(assign_scaled_box(inputs, ScaledBoxConfig(size_bounds=[], scale=0.25))) == set()
    # Scale 1 keeps every FCOS candidate.
    full = assign_scaled_box(inputs, ScaledBoxConfig(size_bounds=[], scale=1.0))
    assert torch.equal(full.matched_gt, assign_fcos_inside(inputs, FCOSConfig(size_bounds=[])).matched_gt)


def test_centerness_threshold_by_hand():
    anchors, counts = one_level()
    # GT [0, 0, 32, 16]. Points (4|12|20|28, 4|12): x-ratios 4/28, 12/20, 12/20, 4/28; y-ratio 4/12 for both rows.
    # centerness sqrt(3/5 x 1/3) = 0.447 at x 12, 20; sqrt(1/7 x 1/3) = 0.218 at x 4, 28.
    inputs = inputs_for([[0.0, 0.0, 32.0, 16.0]], anchors, counts, [8])
    assert positives(assign_centerness_threshold(inputs, CenternessThresholdConfig(size_bounds=[], threshold=0.35))) \
        == {(12, 4), (20, 4), (12, 12), (20, 12)}
    assert positives(assign_centerness_threshold(inputs, CenternessThresholdConfig(size_bounds=[], threshold=0.2))) \
        == {(x, y) for x in (4, 12, 20, 28) for y in (4, 12)}
    assert positives(assign_centerness_threshold(inputs, CenternessThresholdConfig(size_bounds=[], threshold=0.45))) \
        == set()
    # An exact tie is not above: the point (12, 4) in GT [0, 0, 36, 8] is at (12, 4, 24, 4): centerness sqrt(1/2).
    tie = inputs_for([[0.0, 0.0, 36.0, 8.0]], anchors, counts, [8])
    assert centerness(torch.tensor([12.0, 4.0, 24.0, 4.0], dtype=torch.float64)).item() == math.sqrt(0.5)
    at = {c: positives(assign_centerness_threshold(tie, CenternessThresholdConfig(size_bounds=[], threshold=c)))
          for c in (0.7, math.sqrt(0.5))}
    assert (12, 4) in at[0.7] and (12, 4) not in at[math.sqrt(0.5)]


# ---------------------------------------------------------------- losses and inference

def test_giou_weighted_by_the_centerness_target_and_the_iou_loss():
    coder = LTRBCoder(anchor_scale=8.0)
    anchors = torch.tensor([[4.0 - 32, 4.0 - 32, 4.0 + 32, 4.0 + 32], [12.0 - 32, 4.0 - 32, 12.0 + 32, 4.0 + 32]])
    gt = torch.tensor([[[0.0, 0.0, 16.0, 8.0]]])
    # Point (4, 4): centerness sqrt(4/12 x 1) = 0.577; point (12, 4): the same by symmetry. Predictions: the
    # first exact (GIoU 1), the second a box [4, 0, 16, 8] (codes (1, .5, .5, .5)), IoU = GIoU = 96 / 128.
    exact = coder.encode(gt[0, 0], anchors[0])
    out = HeadOutput(torch.zeros(1, 2, 1), torch.stack([exact, torch.tensor([1.0, 0.5, 0.5, 0.5])])[None],
                     torch.zeros(1, 2))
    result = AssignResult(torch.tensor([[0, 0]]), torch.ones(1, 2), torch.ones(1, 2))
    labels = torch.zeros(1, 1, dtype=torch.long)
    w = math.sqrt(1 / 3)
    cfg = LossConfig(reg_centerness_weighted=True)
    losses = dense_losses(out, anchors, result, gt, labels, coder, cfg, "centerness")
    assert losses["loss_reg"].item() == pytest.approx((w * 0 + w * (1 - 0.75)) / (2 * w), abs=1e-6)
    bce = -math.log(0.5)  # aux logit 0: BCE(0.5 | target) = -t log .5 - (1 - t) log .5
    assert losses["loss_aux"].item() == pytest.approx(bce, abs=1e-6)
    plain = dense_losses(out, anchors, result, gt, labels, coder, LossConfig(reg="iou"), "centerness")
    assert plain["loss_reg"].item() == pytest.approx(-math.log(0.75) / 2, abs=1e-6)


def test_inference_decodes_points_and_fuses_cls_with_centerness():
    cfg = build_config({"assign": {"name": "pseudo_iou"}, "model": {"head": {"aux": "centerness"}}})
    anchors = torch.tensor([[20.0 - 64, 20.0 - 64, 20.0 + 64, 20.0 + 64]])  # the point (20, 20), stride 16
    codes = torch.tensor([[[0.5, 0.25, 1.0, 2.0]]])  # distances 8, 4, 16, 32
    out = HeadOutput(torch.zeros(1, 1, 1), codes, torch.full((1, 1), math.log(4.0)))  # cls 0.5, centerness 0.8
    det = postprocess(out, anchors, [1], torch.tensor([[100, 100]]), build_box_coder(cfg), cfg.inference,
                      METHODS["pseudo_iou"].score_fusion)[0]
    assert det["boxes"].tolist() == [[12.0, 16.0, 36.0, 52.0]]
    assert det["scores"].item() == pytest.approx(0.4)


# ---------------------------------------------------------------- one tiny training per point method

class _Losses(TrainHooks):
    def __init__(self):
        self.losses: list[float] = []
        self.positives: list[float] = []

    def on_iteration(self, iteration, scalars):
        if "loss" in scalars:  # iteration 0 reports the data counts only
            self.losses.append(scalars["loss"])
            self.positives.append(scalars["assign/pos_per_image"])


@pytest.mark.parametrize("name", POINT_METHODS)
def test_tiny_training_of_each_point_method(name, workspace, one_thread):
    cfg = tiny_config(assign={"name": name}, model={"head": {"aux": "centerness"}},
                      loss={"reg_centerness_weighted": True})
    hooks = _Losses()
    result = train(cfg, workspace, hooks)
    assert result.status == "FINISHED", result.reason
    assert len(hooks.losses) == cfg.train.iterations and all(math.isfinite(v) for v in hooks.losses)
    assert sum(hooks.positives) > 0
    assert 0.0 <= result.metrics["AP"] <= 1.0
