"""Box ops, anchors, box coding, head, backbone weights, losses and post-processing."""
from __future__ import annotations

import math

import pytest
import torch
from torchvision.ops import box_iou, generalized_box_iou

from detector.box_coder import BoxCoder
from detector.boxes import aligned_giou, aligned_iou, batched_box_iou, box_iof
from detector.config import AnchorConfig, BackboneConfig, InferenceConfig, ModelConfig, VotingConfig
from detector.losses.dense import centerness_target
from detector.model.anchors import grid_anchors
from detector.model.backbone import build_backbone
from detector.model.detector import DenseDetector
from detector.model.head import HeadOutput
from detector.postprocess import postprocess, score_voting


def rand_boxes(n, seed=0, size=100.0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * size
    return torch.cat([xy, xy + torch.rand(n, 2, generator=g) * size / 2 + 1], 1)


def test_box_ops_match_torchvision():
    a, b = rand_boxes(7, 1), rand_boxes(9, 2)
    assert torch.allclose(batched_box_iou(a[None], b)[0], box_iou(a, b), atol=1e-6)
    assert torch.allclose(aligned_iou(a[:, None], b[None]), box_iou(a, b), atol=1e-6)
    assert torch.allclose(aligned_giou(a[:, None], b[None]), generalized_box_iou(a, b), atol=1e-5)
    # IoF: a region covering an anchor fully gives 1, a disjoint one 0.
    region = torch.tensor([[[0.0, 0.0, 50.0, 50.0]]])
    anchors = torch.tensor([[10.0, 10.0, 20.0, 20.0], [60.0, 60.0, 70.0, 70.0], [40.0, 40.0, 60.0, 60.0]])
    assert torch.allclose(box_iof(region, anchors)[0, 0], torch.tensor([1.0, 0.0, 0.25]))


def test_anchors_hand_computed():
    cfg = AnchorConfig(strides=[8, 16], octave_base_scale=4, scales_per_octave=2, aspect_ratios=[1.0, 4.0])
    anchors, counts = grid_anchors([(2, 3), (1, 1)], cfg)
    assert counts == [2 * 3 * 4, 4]
    # Level 0, location (row 0, col 1): centre (12, 4); ratio 1, scale 0: 32x32.
    first = anchors[4]
    assert torch.allclose(first, torch.tensor([12 - 16, 4 - 16, 12 + 16, 4 + 16.0]))
    # ratio 4 (h/w = 4), scale 1 (size 32*sqrt2): w = size / 2, h = size * 2.
    size = 32 * math.sqrt(2)
    r4 = anchors[4 + 3]
    assert torch.allclose(r4[2] - r4[0], torch.tensor(size / 2)) and torch.allclose(r4[3] - r4[1], torch.tensor(size * 2))
    # Level 1 single location centred at (8, 8) with 64x64 base anchors.
    assert torch.allclose(anchors[24], torch.tensor([8 - 32, 8 - 32, 8 + 32, 8 + 32.0]))


def test_box_coder_roundtrip_and_clamp():
    coder = BoxCoder((10, 10, 5, 5), clamp=math.log(1000 / 16))
    anchors, gt = rand_boxes(20, 3), rand_boxes(20, 4)
    assert torch.allclose(coder.decode(coder.encode(gt, anchors), anchors), gt, atol=1e-3)
    huge = torch.tensor([[0.0, 0.0, 1e4, 1e4]])
    box = coder.decode(huge, torch.tensor([[0.0, 0.0, 10.0, 10.0]]))
    assert torch.isfinite(box).all() and (box[0, 2] - box[0, 0]) <= 10 * 1000 / 16 + 1e-3


def test_head_shapes_prior_and_aux():
    cfg = ModelConfig(backbone=BackboneConfig(name="tiny", tiny_width=8))
    cfg.head.fpn_width = cfg.head.width = 16
    cfg.head.gn_groups, cfg.head.num_convs, cfg.head.aux = 8, 1, "iou"
    model = DenseDetector(cfg, num_classes=3)
    out, anchors, counts = model(torch.zeros(2, 3, 64, 96))
    a = sum(counts)
    assert counts[0] == (64 // 8) * (96 // 8) and len(counts) == 5
    assert out.cls_logits.shape == (2, a, 3) and out.box_deltas.shape == (2, a, 4) and out.aux_logits.shape == (2, a)
    assert anchors.shape == (a, 4)
    prior = torch.sigmoid(model.head.cls_logits.bias).mean().item()
    assert abs(prior - 0.01) < 1e-6


def test_backbone_weights_from_local_path_only(tmp_path):
    net = build_backbone(BackboneConfig(name="resnet18"))
    import torchvision

    ref = torchvision.models.resnet18(weights=None)
    torch.nn.init.constant_(ref.conv1.weight, 0.5)
    torch.save(ref.state_dict(), tmp_path / "r18.pt")
    loaded = build_backbone(BackboneConfig(name="resnet18", weights=str(tmp_path / "r18.pt"), frozen_bn=True))
    assert torch.all(loaded.stem[0].weight == 0.5) and not torch.all(net.stem[0].weight == 0.5)
    assert type(loaded.stem[1]).__name__ == "FrozenBatchNorm2d"
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        build_backbone(BackboneConfig(name="resnet18", weights=str(tmp_path / "nope.pt")))


def test_centerness_target():
    pts = torch.tensor([[5.0, 5.0], [1.0, 5.0], [20.0, 20.0]])
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0]]).expand(3, 4)
    c = centerness_target(pts, gt)
    assert torch.allclose(c, torch.tensor([1.0, math.sqrt(1 / 9), 0.0]))


def _head_output(logits, deltas, aux=None):
    return HeadOutput(cls_logits=logits, box_deltas=deltas, aux_logits=aux)


def test_postprocess_classwise_nms_threshold_and_max():
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 0.0, 11.0, 10.0], [50.0, 50.0, 60.0, 60.0]])
    logits = torch.full((1, 3, 2), -10.0)
    logits[0, 0, 0], logits[0, 1, 0], logits[0, 1, 1], logits[0, 2, 1] = 3.0, 2.0, 1.0, -4.0
    out = _head_output(logits, torch.zeros(1, 3, 4))
    coder = BoxCoder()
    det = postprocess(out, anchors, [3], torch.tensor([[100, 100]]), coder, InferenceConfig(nms_thresh=0.5), "none")[0]
    # anchor 1 class 0 is suppressed by anchor 0 class 0 (IoU 0.82); class 1 on anchor 1 survives (class-wise);
    # anchor 2 class 1 has score sigmoid(-4) = 0.018 < 0.05.
    assert det["labels"].tolist() == [0, 1]
    assert torch.allclose(det["boxes"], anchors[[0, 1]])
    det = postprocess(out, anchors, [3], torch.tensor([[100, 100]]), coder, InferenceConfig(max_detections=1), "none")[0]
    assert len(det["scores"]) == 1


def test_score_fusion_sqrt_product():
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    out = _head_output(torch.tensor([[[0.0]]]), torch.zeros(1, 1, 4), aux=torch.tensor([[0.0]]))
    for fusion, expected in (("none", 0.5), ("product", 0.25), ("sqrt_product", 0.5)):
        det = postprocess(out, anchors, [1], torch.tensor([[20, 20]]), BoxCoder(), InferenceConfig(score_fusion=fusion),
                          "product")[0]  # explicit values win over the method's
        assert abs(det["scores"].item() - expected) < 1e-6


def test_score_voting_formula():
    kept = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    pool = torch.tensor([[0.0, 0.0, 10.0, 10.0], [2.0, 0.0, 12.0, 10.0], [0.0, 0.0, 10.0, 10.0], [50.0, 50, 60, 60]])
    scores = torch.tensor([0.9, 0.6, 0.8, 0.9])
    labels = torch.tensor([0, 0, 1, 0])  # the third box is another class, the fourth does not overlap
    sigma = 0.025
    voted = score_voting(kept, torch.tensor([0]), pool, scores, labels, sigma, 0.01)
    iou = 80 / 120
    w1 = math.exp(-((1 - iou) ** 2) / sigma) * 0.6
    expected = (0.9 * pool[0] + w1 * pool[1]) / (0.9 + w1)
    assert torch.allclose(voted[0], expected, atol=1e-5)
    cfg = InferenceConfig(voting=VotingConfig(enabled=True))
    assert cfg.voting.sigma == 0.025


def test_channels_last_is_the_same_model():
    from detector.config import HeadConfig

    def build(channels_last):
        torch.manual_seed(0)
        cfg = ModelConfig(backbone=BackboneConfig(name="tiny", tiny_width=8), channels_last=channels_last,
                          head=HeadConfig(num_convs=1, width=16, fpn_width=16, gn_groups=8, aux="iou"))
        return DenseDetector(cfg, num_classes=3).eval()

    plain, nhwc = build(False), build(True)
    assert nhwc.backbone.stem[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    nhwc.load_state_dict(plain.state_dict())  # checkpoints move between the two layouts
    images = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        a, anchors_a, _ = plain(images)
        b, anchors_b, _ = nhwc(images)
    assert torch.equal(anchors_a, anchors_b)
    for x, y in ((a.cls_logits, b.cls_logits), (a.box_deltas, b.box_deltas), (a.aux_logits, b.aux_logits)):
        assert torch.allclose(x, y, atol=1e-5, rtol=1e-4)


def test_tiny_depth_adds_residual_convs_and_keeps_depth_one_state_keys():
    one = build_backbone(BackboneConfig(name="tiny", tiny_width=8))
    three = build_backbone(BackboneConfig(name="tiny", tiny_width=8, tiny_depth=3))
    keys_one, keys_three = set(one.state_dict()), set(three.state_dict())
    assert keys_one < keys_three  # a depth-1 checkpoint still loads into a depth-1 model: same names
    assert sum(p.numel() for p in three.parameters()) > sum(p.numel() for p in one.parameters())
    # receptive field: a pixel change far from the centre reaches C5's centre only with the deeper stages
    x = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(0)).requires_grad_()
    for net, reaches in ((one, False), (three, True)):
        net.eval()
        c5 = net(x)[-1]
        grad, = torch.autograd.grad(c5[0, :, 4, 4].sum(), x)
        assert bool(grad[0, :, :, :20].abs().sum() > 0) == reaches
