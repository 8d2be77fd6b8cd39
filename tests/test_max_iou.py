"""RetinaNet max-IoU matching, each low-quality rule against its reference (REFERENCE_NOTES 3)."""
from __future__ import annotations

import pytest
import torch
from torchvision.models.detection._utils import Matcher
from torchvision.ops import box_iou

from detector.assigners.base import BG, IGNORE
from detector.assigners.max_iou import LOW_QUALITY_RULES, MaxIoUConfig, assign_max_iou
from detector.config import AnchorConfig, ConfigError, build_config, load_config
from detector.model.anchors import grid_anchors
from tests.test_assigners import make_inputs, random_gts


def mmdet_reference(boxes: torch.Tensor, anchors: torch.Tensor, pos_iou=0.5, neg_iou=0.4, min_pos_iou=0.0):
    """mmdetection's `MaxIoUAssigner.assign_wrt_overlaps` (gt_max_assign_all=True, match_low_quality=True), per GT,
    in its own convention (-1 ignore, 0 negative, i + 1 GT i), then mapped to anchorlab's (IGNORE, BG, i)."""
    overlaps = box_iou(boxes, anchors)  # (G, N)
    assigned = torch.full((anchors.shape[0],), -1, dtype=torch.long)
    max_overlaps, argmax_overlaps = overlaps.max(dim=0)
    gt_max_overlaps = overlaps.max(dim=1).values
    assigned[(max_overlaps >= 0) & (max_overlaps < neg_iou)] = 0
    pos = max_overlaps >= pos_iou
    assigned[pos] = argmax_overlaps[pos] + 1
    for i in range(boxes.shape[0]):  # in GT order: a later GT overrides an earlier one
        if gt_max_overlaps[i] >= min_pos_iou:
            assigned[overlaps[i] == gt_max_overlaps[i]] = i + 1
    return torch.where(assigned > 0, assigned - 1, torch.where(assigned == 0, BG, IGNORE))


def scenes():
    """RetinaNet anchors (9 per location) and random GTs, plus ties: a GT equal to an anchor, given twice."""
    anchors, counts = grid_anchors([(8, 8), (4, 4), (2, 2), (1, 1), (1, 1)],
                                   AnchorConfig(octave_base_scale=4, scales_per_octave=3, aspect_ratios=[0.5, 1.0, 2.0]))
    gts = [g for g in random_gts(24, 8, seed=1) if len(g[0])]
    gts.append((torch.stack([anchors[10], anchors[10] + 0.0, anchors[200]]), torch.tensor([0, 1, 2])))
    return anchors, counts, gts


@pytest.mark.parametrize("rule", ["torchvision", "off"])
def test_torchvision_rule_and_off_equal_torchvisions_matcher(rule):
    matcher = Matcher(0.5, 0.4, allow_low_quality_matches=rule == "torchvision")
    anchors, counts, gts = scenes()
    ours = assign_max_iou(make_inputs(gts, anchors=anchors, counts=counts), MaxIoUConfig(low_quality=rule))
    for i, (boxes, _) in enumerate(gts):
        assert torch.equal(ours.matched_gt[i], matcher(box_iou(boxes, anchors))), f"image {i}"


def test_mmdet_rule_equals_mmdets_assigner():
    anchors, counts, gts = scenes()
    ours = assign_max_iou(make_inputs(gts, anchors=anchors, counts=counts), MaxIoUConfig(low_quality="mmdet"))
    differs = 0
    for i, (boxes, _) in enumerate(gts):
        ref = mmdet_reference(boxes, anchors)
        assert torch.equal(ours.matched_gt[i], ref), f"image {i}"
        iou = box_iou(boxes, anchors)
        pos = ref >= 0
        torch.testing.assert_close(ours.iou[i][pos], iou[ref[pos], pos.nonzero().squeeze(1)])  # IoU with *its* GT
        differs += int(not torch.equal(ref, Matcher(0.5, 0.4, True)(iou)))
    assert differs > 0  # the scenes do tell the two rules apart


# One level of three anchors: a0 [0, 0, 10, 10], a1 [30, 0, 40, 10], a2 [2, 0, 14, 10].
#   g0 = [2, 0, 14, 10] equals a2 (IoU 1) and takes a0 at IoU 80 / 140 = 0.571 >= 0.5;
#   g1 = [4, 0, 6, 10], slender: IoU 20 / 100 = 0.2 with a0 (its best), 20 / 120 = 0.167 with a2.
SLENDER_ANCHORS = torch.tensor([[0, 0, 10, 10], [30, 0, 40, 10], [2, 0, 14, 10.0]])
SLENDER_GTS = [[2, 0, 14, 10], [4, 0, 6, 10]]


@pytest.mark.parametrize("rule,expected", [
    ("torchvision", [0, BG, 0]),  # g1's best anchor a0 is restored to a0's own best GT, g0: g1 has none
    ("mmdet", [1, BG, 0]),  # a0 goes to g1, the GT it is best for; g0 keeps a2
    ("off", [0, BG, 0]),
])
def test_a_slender_gt_keeps_its_only_anchor_under_mmdets_rule(rule, expected):
    inputs = make_inputs([(SLENDER_GTS, [0, 1])], anchors=SLENDER_ANCHORS, counts=[3], strides=[8])
    r = assign_max_iou(inputs, MaxIoUConfig(low_quality=rule))
    assert r.matched_gt.tolist() == [expected]
    assert torch.equal(r.matched_gt[0], mmdet_reference(torch.tensor(SLENDER_GTS, dtype=torch.float32), SLENDER_ANCHORS)) \
        == (rule == "mmdet")
    torch.testing.assert_close(r.iou[0], torch.tensor([0.2 if rule == "mmdet" else 80 / 140, 0.0, 1.0]))


def test_mmdet_rule_last_gt_wins_and_padding_changes_nothing():
    # Two identical GTs share their best anchors: mmdet gives them to the later one, torchvision to the first
    # (argmax on ties), as it does the other positives. Padding rows that look like boxes must not take part.
    box = [[20.0, 20.0, 84.0, 84.0]]
    inputs = make_inputs([(box * 2, [0, 1])])
    iou = box_iou(inputs.gt_boxes[0, :1], inputs.anchors)[0]
    best = iou == iou.max()
    for rule, owner in (("mmdet", 1), ("torchvision", 0)):
        plain = assign_max_iou(inputs, MaxIoUConfig(low_quality=rule))
        padded = assign_max_iou(make_inputs([(box * 2, [0, 1])], pad_to=5, junk_padding=True), MaxIoUConfig(low_quality=rule))
        assert torch.equal(plain.matched_gt, padded.matched_gt)
        assert (plain.matched_gt[0][best] == owner).all()
        assert (plain.matched_gt[0][~best & (iou >= 0.5)] == 0).all()


def test_low_quality_is_a_choice():
    assert MaxIoUConfig().low_quality == "torchvision" == build_config({}).assign.max_iou.low_quality
    assert LOW_QUALITY_RULES == ("torchvision", "mmdet", "off")
    # The old boolean keeps its meaning (and YAML 1.1 reads a bare `off` as false).
    for value, rule in ((True, "torchvision"), (False, "off"), ("mmdet", "mmdet")):
        assert build_config({"assign": {"max_iou": {"low_quality": value}}}).assign.max_iou.low_quality == rule
    assert load_config(overrides=["assign.max_iou.low_quality=off"]).assign.max_iou.low_quality == "off"
    for value in ("yes", 1, None):
        with pytest.raises(ConfigError, match=r"^assign\.max_iou\.low_quality: .*torchvision, mmdet, off"):
            build_config({"assign": {"max_iou": {"low_quality": value}}})
    with pytest.raises(ValueError, match="torchvision, mmdet, off"):
        assign_max_iou(make_inputs([(SLENDER_GTS, [0, 1])]), MaxIoUConfig(low_quality="maybe"))
