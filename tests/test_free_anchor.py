"""FreeAnchor (Zhang et al., NeurIPS 2019): Mean-max and the saturated linear at their limits, the loss against a
per-image, per-object re-implementation of the official code, empty images and batches, its gradient stops, the
diagnostics, its config edge, and a tiny training through the real training step."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import box_iou

from detector.assigners.base import BG
from detector.box_coder import BoxCoder
from detector.config import ConfigError, build_config, load_config
from detector.config.sections import AnchorConfig
from detector.data.batch import Batch
from detector.engine.hooks import TrainHooks
from detector.engine.step import TrainStep
from detector.engine.train import train
from detector.losses.free_anchor import (FreeAnchorBags, FreeAnchorConfig, free_anchor_losses, match_probability,
                                         mean_max, saturated_linear)
from detector.losses.free_anchor_details import bags_result, free_anchor_records, free_anchor_summary, holding
from detector.methods import METHODS
from detector.model.anchors import grid_anchors
from detector.model.detector import DenseDetector
from tests.conftest import tiny_config

CONFIGS = Path(__file__).resolve().parents[1] / "studies" / "configs"
NINE = {"octave_base_scale": 4, "scales_per_octave": 3, "aspect_ratios": [0.5, 1.0, 2.0]}  # RetinaNet's anchors
CODER = BoxCoder((10.0, 10.0, 5.0, 5.0), math.log(1000.0 / 16))
C = 3


def scene(seed: int = 0, empty_image: bool = True):
    """48 px images, 9 anchors per location at strides 4 and 8 (A = 1620), 3 classes. Image 0: four objects, two of
    one class, one of them a jittered anchor (best predicted IoU > t), one tiny (best IoU <= t); image 1: two
    objects and two padding rows; image 2: none when `empty_image`. Head outputs are random leaves."""
    g = torch.Generator().manual_seed(seed)
    anchors, _ = grid_anchors([(12, 12), (6, 6)], AnchorConfig(strides=[4, 8], **NINE))
    a = anchors.shape[0]

    def box(x, y, w, h):
        return [x, y, x + w, y + h]

    jitter = lambda: float(torch.rand((), generator=g)) * 0.8  # noqa: E731  (continuous coordinates: no IoU ties)
    ref = anchors[700].tolist()
    gts = torch.tensor([
        [[ref[0] + jitter(), ref[1] + jitter(), ref[2] - jitter(), ref[3] - jitter()],
         box(5.3 + jitter(), 8.1, 21.7, 14.2), box(20.2, 4.4 + jitter(), 4.3, 3.9),
         box(14.6, 22.9, 30.1 + jitter(), 17.3)],
        [box(3.1 + jitter(), 30.2, 12.4, 10.9), box(25.4, 7.7, 11.3 + jitter(), 28.6), [0.0] * 4, [0.0] * 4],
        [box(9.0 + jitter(), 9.0, 20.0, 20.0), box(2.0, 2.0 + jitter(), 30.0, 12.0), [0.0] * 4, [0.0] * 4],
    ])
    labels = torch.tensor([[1, 1, 0, 2], [2, 0, -1, -1], [0, 1, -1, -1]])
    valid = torch.tensor([[True] * 4, [True, True, False, False], [not empty_image] * 2 + [False] * 2])
    labels = torch.where(valid, labels, -1)
    cls_logits = (torch.randn(3, a, C, generator=g) * 2.0 - 3.0).requires_grad_()
    deltas = (torch.randn(3, a, 4, generator=g) * 0.3)
    deltas[0, 700] = CODER.encode(gts[0, 0], anchors[700]) + 0.01  # the first object's best predicted box
    return anchors, gts, labels, valid, cls_logits, deltas.requires_grad_()


def official_losses(anchors, gts, labels, valid, cls_logits, deltas, cfg: FreeAnchorConfig):
    """The official `FreeAnchorLossComputation.__call__` (REFERENCE_NOTES 4), one image and one object at a time,
    with anchorlab's boxes (no "+1"); an image without objects has no bag and no protection (as mmdetection)."""
    cls_prob = torch.sigmoid(cls_logits)
    box_probs, positive_losses, positive_numels = [], [], 0
    for img in range(cls_logits.shape[0]):
        boxes, lab = gts[img][valid[img]], labels[img][valid[img]]
        with torch.no_grad():
            image_box_prob = torch.zeros(anchors.shape[0], C)
            if len(lab):
                object_box_iou = box_iou(boxes, CODER.decode(deltas[img], anchors))
                t1 = cfg.iou_threshold
                t2 = object_box_iou.max(dim=1, keepdim=True).values.double().clamp(min=t1 + 1e-12)
                object_box_prob = ((object_box_iou.double() - t1) / (t2 - t1)).clamp(min=0, max=1).float()
                for i in range(len(lab)):  # P{a_j in A+}[j, c] = max over the objects of class c
                    image_box_prob[:, lab[i]] = torch.maximum(image_box_prob[:, lab[i]], object_box_prob[i])
            box_probs.append(image_box_prob)
        for i in range(len(lab)):
            _, matched = box_iou(boxes[i:i + 1], anchors)[0].topk(cfg.bag_size, sorted=False)
            p_cls = cls_prob[img, matched, lab[i]]
            target = CODER.encode(boxes[i][None], anchors[matched])
            val = target - deltas[img, matched]
            absv = val.abs()
            reg = cfg.bbox_reg_weight * torch.where(absv < cfg.smooth_l1_beta, 0.5 / cfg.smooth_l1_beta * val ** 2,
                                                    absv - 0.5 * cfg.smooth_l1_beta).sum(-1)
            x = p_cls * torch.exp(-reg)
            weight = 1 / (1 - x).clamp(min=1e-12)  # x < 1 here: the straight-through clip is a plain clamp
            weight = weight / weight.sum()
            bag_prob = (weight * x).sum()
            positive_losses.append(F.binary_cross_entropy(bag_prob, torch.ones_like(bag_prob)))
            positive_numels += 1
    positive = torch.stack(positive_losses).sum() / max(1, positive_numels)
    p = cls_prob * (1 - torch.stack(box_probs))
    negative = (p ** cfg.gamma * F.binary_cross_entropy(p, torch.zeros_like(p), reduction="none")).sum()
    negative = negative / max(1, positive_numels * cfg.bag_size)
    return cfg.alpha * positive, (1 - cfg.alpha) * negative


def losses_of(anchors, gts, labels, valid, cls_logits, deltas, cfg=None):
    return free_anchor_losses(cls_logits, deltas, anchors, gts, labels, valid, CODER, cfg or FreeAnchorConfig())


# ---------------------------------------------------------------- the two functions of the paper

def test_mean_max_is_the_mean_for_small_confidences_and_the_max_for_confident_ones():
    g = torch.Generator().manual_seed(0)
    small = torch.rand(4, 50, generator=g, dtype=torch.float64) * 1e-4
    value, weight = mean_max(small)
    assert torch.allclose(value, small.mean(1), rtol=2e-4)
    assert torch.allclose(weight.sum(1), torch.ones(4, dtype=torch.float64))
    confident = torch.rand(4, 50, generator=g, dtype=torch.float64) * 0.5
    confident[:, 7] = 1 - 1e-9
    assert torch.allclose(mean_max(confident)[0], confident.amax(1), atol=1e-6)
    middle = torch.rand(4, 50, generator=g, dtype=torch.float64)
    assert (middle.mean(1) <= mean_max(middle)[0]).all() and (mean_max(middle)[0] <= middle.amax(1)).all()
    # x = 1 exactly: the clip holds the weight at 1e12 and is straight-through (the official `Clip`)
    certain = torch.tensor([[1.0, 0.2, 0.1]], requires_grad=True)
    value, _ = mean_max(certain)
    value.sum().backward()
    assert value.item() == pytest.approx(1.0) and torch.isfinite(certain.grad).all()


def test_mean_max_keeps_the_gradient_of_its_weights():
    x = torch.tensor([0.3, 0.6, 0.1, 0.45], dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(mean_max(x)[0], x)
    def closed(v):  # sum x/(1-x) / sum 1/(1-x), Sec. 3.3
        return (v / (1 - v)).sum() / (1 / (1 - v)).sum()
    numeric = torch.stack([(closed(x.detach() + e) - closed(x.detach() - e)) / 2e-6
                           for e in torch.eye(4, dtype=torch.float64) * 1e-6])
    assert torch.allclose(grad, numeric, atol=1e-7)
    weight = mean_max(x)[1].detach()  # with the weights held fixed the gradient would be the weights alone
    assert not torch.allclose(grad, weight, atol=1e-3)


def test_saturated_linear_at_its_bounds():
    x = torch.tensor([[0.0, 0.3, 0.6, 0.7, 0.8, 0.9]])
    out = saturated_linear(x, 0.6, torch.tensor([[0.9]]))
    assert torch.allclose(out, torch.tensor([[0.0, 0.0, 0.0, 1 / 3, 2 / 3, 1.0]]), atol=1e-6) and out[0, -1] == 1.0
    assert saturated_linear(torch.tensor([[0.95]]), 0.6, torch.tensor([[0.9]])).item() == 1.0
    # best <= t: every value 0 (the official intent; its float32 t2.clamp(min=t + 1e-12) would give 0/0 at x = t)
    for best in (0.5, 0.6):
        low = torch.tensor([[0.0, 0.2, 0.5, best]])
        assert saturated_linear(low, 0.6, low.amax(1, keepdim=True)).tolist() == [[0.0] * 4]
    # over a real image: each object's best predicted box gets exactly 1 (and P is 0 at <= t), padding rows 0
    anchors, gts, labels, valid, _, deltas = scene()
    match, iou = match_probability(CODER.decode(deltas.detach(), anchors), gts, valid, 0.6)
    assert match[0, 0].max() == 1.0 and match[0, 0].argmax() == iou[0, 0].argmax()
    assert (match[iou <= 0.6] == 0).all() and (match[~valid] == 0).all()
    assert iou[0, 2].max() <= 0.6 and (match[0, 2] == 0).all()  # the tiny object protects nothing


# ---------------------------------------------------------------- the loss against the official code

def test_loss_equals_a_per_image_per_object_reimplementation_of_the_official_code():
    for seed in (0, 1):
        anchors, gts, labels, valid, cls_logits, deltas = scene(seed)
        losses, _ = losses_of(anchors, gts, labels, valid, cls_logits, deltas)
        grads = torch.autograd.grad(losses["loss"], [cls_logits, deltas])
        pos, neg = official_losses(anchors, gts, labels, valid, cls_logits, deltas, FreeAnchorConfig())
        ref_grads = torch.autograd.grad(pos + neg, [cls_logits, deltas])
        assert losses["loss_positive"].item() == pytest.approx(pos.item(), rel=1e-5)
        assert losses["loss_negative"].item() == pytest.approx(neg.item(), rel=1e-5)
        assert losses["loss"].item() == pytest.approx(pos.item() + neg.item(), rel=1e-5)
        for got, want in zip(grads, ref_grads):
            assert torch.allclose(got, want, rtol=1e-4, atol=1e-9)
    # padding rows change nothing
    anchors, gts, labels, valid, cls_logits, deltas = scene(0)
    fills = ((gts, torch.zeros(1, 1, 4)), (labels, torch.full((1, 1), -1)), (valid, torch.zeros(1, 1, dtype=torch.bool)))
    padded = [torch.cat([t, fill.expand(t.shape[0], 3, *t.shape[2:])], 1) for t, fill in fills]
    a = losses_of(anchors, gts, labels, valid, cls_logits, deltas)[0]
    b = losses_of(anchors, *padded, cls_logits, deltas)[0]
    assert all(torch.allclose(a[k], b[k]) for k in a)


def test_the_box_branch_learns_only_through_the_positive_term():
    anchors, gts, labels, valid, cls_logits, deltas = scene()
    losses, _ = losses_of(anchors, gts, labels, valid, cls_logits, deltas)
    box_grad, cls_grad = torch.autograd.grad(losses["loss_negative"], [deltas, cls_logits], allow_unused=True,
                                             retain_graph=True)
    assert box_grad is None or not box_grad.any()  # P{a_j in A+} is computed without gradient
    assert cls_grad.abs().sum() > 0
    box_grad, cls_grad = torch.autograd.grad(losses["loss_positive"], [deltas, cls_logits])
    assert box_grad.abs().sum() > 0 and cls_grad.abs().sum() > 0
    # the positive term reaches only bag anchors, and only the object's class
    bags = losses_of(anchors, gts, labels, valid, cls_logits, deltas)[1]
    in_bag = torch.zeros(3, anchors.shape[0], C, dtype=torch.bool)
    in_bag[bags.image[:, None], bags.anchor, bags.label[:, None]] = True
    assert not cls_grad[~in_bag].any() and not box_grad[~in_bag.any(2)].any()


def test_images_and_batches_without_objects_are_finite_without_a_spike():
    anchors, gts, labels, valid, cls_logits, deltas = scene(empty_image=True)  # image 2 has no object
    with_empty, _ = losses_of(anchors, gts, labels, valid, cls_logits, deltas)
    only = lambda t: t[:2]  # noqa: E731
    alone, _ = losses_of(anchors, only(gts), only(labels), only(valid), only(cls_logits), only(deltas))
    assert with_empty["loss_positive"].item() == pytest.approx(alone["loss_positive"].item(), rel=1e-6)
    assert with_empty["loss_negative"] > alone["loss_negative"]  # its anchors are all negatives

    one_each = valid.clone()
    one_each[:] = False
    one_each[:, 0] = True  # one object per image ...
    none = torch.zeros_like(valid)  # ... and none at all, same predictions
    normal, _ = losses_of(anchors, gts, torch.where(one_each, labels.clamp(min=0), -1), one_each, cls_logits, deltas)
    for gts_, labels_, valid_ in ((gts, torch.full_like(labels, -1), none),
                                  (gts[:, :0], labels[:, :0], valid[:, :0])):  # M = 0
        empty, bags = losses_of(anchors, gts_, labels_, valid_, cls_logits, deltas)
        assert empty["loss_positive"].item() == 0.0 and torch.isfinite(empty["loss"])
        assert bags.image.numel() == 0 and free_anchor_summary(bags_result(bags, 3, anchors.shape[0])) == {}
        (grad,) = torch.autograd.grad(empty["loss"], [cls_logits])
        assert torch.isfinite(grad).all()
        assert empty["loss"] < 2 * normal["loss_negative"]  # normalised as one object per image: no spike
    official, _ = losses_of(anchors, gts, torch.full_like(labels, -1), none, cls_logits, deltas,
                            FreeAnchorConfig(empty_batch="official"))
    assert official["loss"] > 50 * normal["loss_negative"]  # max(1, 0 x 50) = 1: the official spike, kept as a choice


# ---------------------------------------------------------------- diagnostics

def test_the_anchors_holding_most_of_a_bag_are_its_positives(tmp_path):
    assert holding(torch.tensor([[0.6, 0.05, 0.3, 0.05], [0.0] * 4, [0.25] * 4])).sum(1).tolist() == [2, 0, 4]
    bags = FreeAnchorBags(  # two objects of image 0 share anchor 3; the second holds more of it
        image=torch.tensor([0, 0]), gt=torch.tensor([0, 1]), label=torch.tensor([1, 0]),
        anchor=torch.tensor([[3, 1, 2], [3, 4, 5]]), anchor_iou=torch.tensor([[0.5, 0.4, 0.1], [0.7, 0.2, 0.1]]),
        match=torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]), likelihood=torch.full((2, 3), 0.1),
        share=torch.tensor([[0.5, 0.4, 0.1], [0.9, 0.05, 0.05]]), bag_prob=torch.tensor([0.1, 0.1]))
    result = bags_result(bags, 2, 6)
    assert result.matched_gt.tolist() == [[BG, 0, BG, 1, BG, BG], [BG] * 6]
    assert result.iou[0, 3].item() == pytest.approx(0.7) and result.details is bags
    summary = free_anchor_summary(result)
    assert summary["free_anchor/match_max"] == pytest.approx(0.5) and summary["free_anchor/unmatched_share"] == 0.5
    assert summary["free_anchor/match_holders"] == 1.0 and summary["free_anchor/bag_holders"] == 1.5
    (rec,) = free_anchor_records(result, 1, seed=0)["bag_confidence"]
    from dashboards.run_figures import PLOTS  # `anchorlab viz assign` draws the records

    assert PLOTS["bag_confidence"]([rec], tmp_path / "bags.png").is_file()
    joined = FreeAnchorBags.cat([bags, bags], [0, 1])  # the `Details` contract: rows of image chunks as one
    assert joined.image.tolist() == [0, 0, 1, 1] and torch.equal(joined.share[2:], bags.share)
    assert rec["bag_size"] == 3 and rec["match"] == sorted(rec["match"], reverse=True) and rec["hold_share"] == 0.8


# ---------------------------------------------------------------- config, training

@pytest.mark.parametrize("override,field", [
    ("bag_size=0", "bag_size"), ("iou_threshold=1.0", "iou_threshold"), ("smooth_l1_beta=0", "smooth_l1_beta"),
    ("alpha=1.5", "alpha"), ("gamma=0.5", "gamma"), ("bbox_reg_weight=-1", "bbox_reg_weight"),
    ("empty_batch=skip", "empty_batch"), ("bbox_reg_weight=.inf", "bbox_reg_weight"), ("alpha=.nan", "alpha"),
])
def test_settings_the_loss_cannot_run_with_are_refused(override, field):
    with pytest.raises(ConfigError, match=rf"^assign\.free_anchor: {field}"):
        load_config(None, [f"assign.free_anchor.{override}"])


def test_the_config_file_is_the_official_setting_and_layers_with_the_quick_profile():
    cfg = load_config([CONFIGS / "free_anchor.yaml"])
    assert cfg.assign.name == "free_anchor" and cfg.assign.free_anchor == FreeAnchorConfig()
    assert cfg.model.head.norm == "none" and cfg.model.head.prior_prob == 0.02 and cfg.train.grad_clip == 0
    assert (cfg.model.anchors.octave_base_scale, cfg.model.anchors.scales_per_octave) == (4, 3)
    assert cfg.model.anchors.aspect_ratios == [0.5, 1.0, 2.0] and cfg.inference.nms_thresh == 0.5
    quick = load_config([CONFIGS / "free_anchor.yaml", CONFIGS / "quick.yaml"], ["train.iterations=3"])
    assert quick.assign.name == "free_anchor" and quick.model.head.norm == "none" and quick.train.iterations == 3
    assert METHODS["free_anchor"].assign is None and METHODS["free_anchor"].score_fusion == "none"


class _Log(TrainHooks):
    def __init__(self):
        self.losses, self.scalars, self.kinds = [], {}, set()

    def on_iteration(self, iteration, scalars):
        if "loss" in scalars:
            self.losses.append(scalars["loss"])
            self.scalars.update(scalars)

    def on_records(self, iteration, kind, records):
        if records:
            self.kinds.add(kind)


FREE_ANCHOR = {"assign": {"name": "free_anchor"},
               "model": {"anchors": NINE, "head": {"norm": "none", "prior_prob": 0.02}}}


def test_a_batch_without_objects_goes_through_the_real_training_step(one_thread):
    cfg = tiny_config(**FREE_ANCHOR)
    torch.manual_seed(0)
    step = TrainStep(DenseDetector(cfg.model, num_classes=C), cfg)
    images = torch.randn(2, 3, 64, 64)
    boxes = torch.tensor([[[4.0, 6.0, 40.0, 30.0]], [[0.0, 0.0, 0.0, 0.0]]])
    for valid in (torch.tensor([[True], [False]]), torch.tensor([[False], [False]])):
        batch = Batch(images, torch.tensor([[64, 64]] * 2), boxes, torch.where(valid, 1, -1), valid,
                      torch.zeros(2, 0, 4), torch.zeros(2, 0, dtype=torch.bool), torch.arange(2), torch.ones(2))
        losses, result, _ = step(batch)
        losses["loss"].backward()
        assert torch.isfinite(losses["loss"]) and (result.positive.sum() > 0) == bool(valid.any())
        assert all(torch.isfinite(p.grad).all() for p in step.model.parameters() if p.grad is not None)
        step.model.zero_grad()


def test_tiny_training_through_the_real_training_step(workspace, one_thread):
    cfg = tiny_config(**FREE_ANCHOR, train={"record_every": 1, "record_gts": 2})
    hooks = _Log()
    result = train(cfg, workspace, hooks)
    assert result.status == "FINISHED", result.reason
    assert len(hooks.losses) == cfg.train.iterations and all(math.isfinite(v) for v in hooks.losses)
    for key in ("loss_positive", "loss_negative", "assign/pos_per_gt_mean", "free_anchor/match_max",
                "free_anchor/bag_holders", "free_anchor/bag_prob"):
        assert key in hooks.scalars, key
    assert hooks.kinds == {"positives_per_gt", "bag_confidence"}
    assert build_config({"assign": {"name": "free_anchor"}}).assign.free_anchor.bag_size == 50
