"""Post-processing conventions: mmdetection's FCOS head (`pre_nms_candidates: points`, `threshold_on: cls`,
`clip: two_sided`) against a per-image reference written from the mmdet v2.11 source, and the defaults against
the code as it was before the options existed."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from torchvision.ops import batched_nms

from detector.box_coder import BoxCoder, LTRBCoder
from detector.config import ConfigError, InferenceConfig, build_config, load_config
from detector.config.sections import AnchorConfig, VotingConfig
from detector.model.anchors import grid_anchors
from detector.model.head import HeadOutput
from detector.postprocess import clip_boxes, fused_scores, postprocess, resolve_score_fusion, score_voting

ROOT = Path(__file__).resolve().parents[1]
POINT_CONFIGS = ("fcos_inside", "pseudo_iou", "scaled_box", "centerness_threshold")
STRIDES = [8, 16, 32]
FEATURE_SIZES = [(6, 7), (3, 4), (2, 2)]  # 42, 12 and 4 points: the top-k of 10 cuts the first two levels only
IMAGE_SIZES = torch.tensor([[45, 50], [48, 56], [30, 41]])  # (h, w) inside the 48 x 56 grid: points in padding


def _point_grid() -> tuple[torch.Tensor, list[int]]:
    cfg = AnchorConfig(strides=STRIDES, octave_base_scale=8, scales_per_octave=1, aspect_ratios=[1.0])
    return grid_anchors(FEATURE_SIZES, cfg)


def _random_outputs(num_anchors: int, num_classes: int = 3, batch: int = 3, seed: int = 0) -> HeadOutput:
    g = torch.Generator().manual_seed(seed)
    cls = torch.randn(batch, num_anchors, num_classes, generator=g) * 2.0 - 1.0
    codes = torch.randn(batch, num_anchors, 4, generator=g) * 1.5 + 1.0  # some negative (ReLU), some past the image
    aux = torch.randn(batch, num_anchors, generator=g) * 2.0
    return HeadOutput(cls_logits=cls, box_deltas=codes, aux_logits=aux)


# ------------------------------------------------------------------ mmdetection v2.11 FCOSHead, one image at a time

def _mmdet_points(h: int, w: int, stride: int) -> torch.Tensor:
    """`FCOSHead._get_points_single`: (x, y) = (j * s + s // 2, i * s + s // 2), row-major."""
    ys, xs = torch.meshgrid(torch.arange(0, h * stride, stride, dtype=torch.float32),
                            torch.arange(0, w * stride, stride, dtype=torch.float32), indexing="ij")
    return torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=-1) + stride // 2


def _mmdet_fcos(out: HeadOutput, image_sizes: torch.Tensor, nms_pre: int, score_thr: float, iou_thr: float,
                max_per_img: int) -> list[dict[str, torch.Tensor]]:
    """`FCOSHead._get_bboxes` + `multiclass_nms(score_factors=centerness)`, per image, per level, as written."""
    results = []
    for i in range(out.cls_logits.shape[0]):
        mlvl_boxes, mlvl_scores, mlvl_ctr = [], [], []
        start = 0
        for (h, w), stride in zip(FEATURE_SIZES, STRIDES):
            n = h * w
            scores = out.cls_logits[i, start:start + n].sigmoid()  # (n, C)
            ctr = out.aux_logits[i, start:start + n].sigmoid()  # (n,)
            pred = out.box_deltas[i, start:start + n].relu() * stride  # forward_single: relu(scale(x)) * stride
            points = _mmdet_points(h, w, stride)
            start += n
            if n > nms_pre:
                max_scores, _ = (scores * ctr[:, None]).max(dim=1)
                _, topk = max_scores.topk(nms_pre)
                points, pred, scores, ctr = points[topk], pred[topk], scores[topk], ctr[topk]
            boxes = torch.stack([points[:, 0] - pred[:, 0], points[:, 1] - pred[:, 1],
                                 points[:, 0] + pred[:, 2], points[:, 1] + pred[:, 3]], dim=-1)
            img_h, img_w = image_sizes[i].tolist()  # distance2bbox(max_shape=img_shape): both sides
            boxes[:, 0::2] = boxes[:, 0::2].clamp(min=0, max=img_w)
            boxes[:, 1::2] = boxes[:, 1::2].clamp(min=0, max=img_h)
            mlvl_boxes.append(boxes)
            mlvl_scores.append(scores)
            mlvl_ctr.append(ctr)
        boxes, scores, ctr = torch.cat(mlvl_boxes), torch.cat(mlvl_scores), torch.cat(mlvl_ctr)
        # multiclass_nms: threshold the raw class score, then multiply by the score factor, then class-aware NMS
        valid = scores > score_thr
        fused = scores * ctr[:, None]
        point, label = valid.nonzero(as_tuple=True)
        boxes, fused, ctr = boxes[point], fused[point, label], ctr[point]
        keep = batched_nms(boxes, fused, label, iou_thr)[:max_per_img]  # sorted by score
        results.append({"boxes": boxes[keep], "scores": fused[keep], "labels": label[keep], "aux": ctr[keep]})
    return results


@pytest.mark.parametrize("name", POINT_CONFIGS)
def test_point_configs_take_the_mmdet_head_conventions(name):
    cfg = load_config([ROOT / f"studies/configs/{name}.yaml"])
    inf = cfg.inference
    assert (inf.pre_nms_candidates, inf.threshold_on, inf.clip, inf.score_fusion) == ("points", "cls", "two_sided",
                                                                                      "product")
    assert (inf.pre_nms_topk, inf.score_thresh, inf.nms_thresh, inf.max_detections) == (1000, 0.05, 0.5, 100)
    assert cfg.assign.ignore_iof == 1.0  # an IoF is at most 1 and the rule is `> ignore_iof`: nothing is ignored


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_points_mode_equals_mmdet_fcos_reference(seed):
    anchors, counts = _point_grid()
    out = _random_outputs(anchors.shape[0], seed=seed)
    base = load_config([ROOT / "studies/configs/pseudo_iou.yaml"]).inference
    cfg = dataclasses.replace(base, pre_nms_topk=10, score_thresh=0.3, max_detections=36)
    got = postprocess(out, anchors, counts, IMAGE_SIZES, LTRBCoder(8.0), cfg, "product")
    want = _mmdet_fcos(out, IMAGE_SIZES, nms_pre=10, score_thr=0.3, iou_thr=0.5, max_per_img=36)
    for g, w in zip(got, want):
        assert torch.equal(g["labels"], w["labels"]) and torch.equal(g["boxes"], w["boxes"])
        # a sigmoid over the whole batch and over one level's slice may differ in the last bit (vectorised tails)
        torch.testing.assert_close(g["scores"], w["scores"], rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(g["aux"], w["aux"], rtol=1e-6, atol=1e-7)
    # the case is one where the conventions matter: a kept score under the threshold (fused after it), and
    # every image keeping some detections
    assert any((g["scores"] <= 0.3).any() for g in got) and all(len(g["scores"]) for g in got)
    default = postprocess(out, anchors, counts, IMAGE_SIZES, LTRBCoder(8.0),
                          dataclasses.replace(cfg, pre_nms_candidates="pairs", threshold_on="fused", clip="one_sided"),
                          "product")
    assert any(len(d["scores"]) != len(g["scores"]) or not torch.equal(d["scores"], g["scores"])
               for d, g in zip(default, got))


def test_batched_points_mode_equals_one_image_at_a_time():
    anchors, counts = _point_grid()
    out = _random_outputs(anchors.shape[0], seed=3)
    cfg = InferenceConfig(pre_nms_topk=10, score_thresh=0.3, max_detections=15, score_fusion="product",
                          pre_nms_candidates="points", threshold_on="cls", clip="two_sided")
    batched = postprocess(out, anchors, counts, IMAGE_SIZES, LTRBCoder(8.0), cfg, "product")
    for i, det in enumerate(batched):
        alone = HeadOutput(out.cls_logits[i:i + 1], out.box_deltas[i:i + 1], out.aux_logits[i:i + 1])
        single = postprocess(alone, anchors, counts, IMAGE_SIZES[i:i + 1], LTRBCoder(8.0), cfg, "product")[0]
        for key in ("boxes", "scores", "labels", "aux"):
            assert torch.equal(det[key], single[key])


def test_points_keep_every_class_of_a_top_point():
    """Two points, two classes, top-1 per level: "points" keeps both classes of the best point (max fused 0.9),
    "pairs" keeps the single best pair; the other point's 0.8 goes either way."""
    anchors = torch.tensor([[0.0, 0.0, 64.0, 64.0], [64.0, 0.0, 128.0, 64.0]])  # points (32, 32), (96, 32), stride 8
    probs = torch.tensor([[[0.9, 0.6], [0.8, 0.1]]])
    out = HeadOutput(torch.logit(probs), torch.ones(1, 2, 4), None)
    points = postprocess(out, anchors, [2], torch.tensor([[64, 128]]), LTRBCoder(8.0),
                         InferenceConfig(pre_nms_topk=1, pre_nms_candidates="points"), "none")[0]
    pairs = postprocess(out, anchors, [2], torch.tensor([[64, 128]]), LTRBCoder(8.0),
                        InferenceConfig(pre_nms_topk=1), "none")[0]
    assert points["labels"].tolist() == [0, 1] and points["boxes"][:, 0].tolist() == [24.0, 24.0]
    assert pairs["labels"].tolist() == [0] and pairs["scores"].tolist() == pytest.approx([0.9])


def test_threshold_on_cls_keeps_a_low_fused_score():
    """cls 0.3, centerness 0.1: fused 0.03 < 0.05 is dropped on "fused" and kept (scored 0.03) on "cls"."""
    anchors = torch.tensor([[0.0, 0.0, 64.0, 64.0]])
    out = HeadOutput(torch.logit(torch.tensor([[[0.3]]])), torch.ones(1, 1, 4), torch.logit(torch.tensor([[0.1]])))
    fused = postprocess(out, anchors, [1], torch.tensor([[64, 64]]), LTRBCoder(8.0), InferenceConfig(), "product")[0]
    on_cls = postprocess(out, anchors, [1], torch.tensor([[64, 64]]), LTRBCoder(8.0),
                         InferenceConfig(threshold_on="cls"), "product")[0]
    assert len(fused["scores"]) == 0
    assert on_cls["scores"].tolist() == pytest.approx([0.03])


def test_clip_one_and_two_sided():
    boxes = torch.tensor([[52.0, -3.0, 60.0, 20.0], [-5.0, 2.0, -1.0, 70.0]])
    hw = torch.tensor([[40.0, 50.0], [40.0, 50.0]])
    assert clip_boxes(boxes, hw, "one_sided").tolist() == [[52.0, 0.0, 50.0, 20.0], [0.0, 2.0, -1.0, 40.0]]
    assert clip_boxes(boxes, hw, "two_sided").tolist() == [[50.0, 0.0, 50.0, 20.0], [0.0, 2.0, 0.0, 40.0]]


# ------------------------------------------------------------------ the defaults: the code before the options

@torch.no_grad()
def _postprocess_before(out, anchors, num_per_level, image_sizes, box_coder, cfg, method_fusion):
    """`detector.postprocess.postprocess` as it was before `pre_nms_candidates`, `threshold_on` and `clip`."""
    fusion = resolve_score_fusion(cfg.score_fusion, method_fusion, has_aux=out.aux_logits is not None)
    scores = fused_scores(out, fusion)  # (B, A, C)
    b, _, c = scores.shape
    device = scores.device
    cand_scores, cand_anchor, cand_label = [], [], []
    start = 0
    for n in num_per_level:
        level = scores[:, start:start + n].reshape(b, -1)  # (B, n*C)
        k = min(cfg.pre_nms_topk, level.shape[1])
        top, idx = level.topk(k, dim=1)
        cand_scores.append(top)
        cand_anchor.append(idx // c + start)
        cand_label.append(idx % c)
        start += n
    cand_scores = torch.cat(cand_scores, 1)  # (B, K)
    cand_anchor = torch.cat(cand_anchor, 1)
    cand_label = torch.cat(cand_label, 1)

    img_idx, k_idx = (cand_scores > cfg.score_thresh).nonzero(as_tuple=True)
    anchor_idx = cand_anchor[img_idx, k_idx]
    labels = cand_label[img_idx, k_idx]
    kept_scores = cand_scores[img_idx, k_idx]
    boxes = box_coder.decode(out.box_deltas[img_idx, anchor_idx].float(), anchors[anchor_idx])
    hw = image_sizes.to(device)[img_idx].to(boxes.dtype)  # (N, 2) = (h, w)
    boxes = torch.stack(
        [boxes[:, 0].clamp(min=0), boxes[:, 1].clamp(min=0),
         torch.minimum(boxes[:, 2], hw[:, 1]), torch.minimum(boxes[:, 3], hw[:, 0])], dim=1
    )
    keep = batched_nms(boxes, kept_scores, img_idx * c + labels, cfg.nms_thresh)  # sorted by score
    aux = out.aux_logits[img_idx, anchor_idx].float().sigmoid() if out.aux_logits is not None else None
    results = []
    for i in range(b):
        mine = keep[img_idx[keep] == i][: cfg.max_detections]
        det = {"boxes": boxes[mine], "scores": kept_scores[mine], "labels": labels[mine]}
        if cfg.voting.enabled and len(mine):
            pool = img_idx == i
            det["boxes"] = score_voting(det["boxes"], det["labels"], boxes[pool], kept_scores[pool], labels[pool],
                                        cfg.voting.sigma, cfg.voting.iou_thresh)
        if aux is not None:
            det["aux"] = aux[mine]
        results.append(det)
    return results


@pytest.mark.parametrize("coding,fusion,voting", [("ltrb", "product", False), ("delta", "none", True),
                                                  ("delta", "sqrt_product", False)])
def test_defaults_equal_the_code_before_the_options(coding, fusion, voting):
    if coding == "ltrb":
        anchors, counts = _point_grid()
        coder = LTRBCoder(8.0)
    else:
        cfg = AnchorConfig(strides=STRIDES, octave_base_scale=4, scales_per_octave=3, aspect_ratios=[0.5, 1.0, 2.0])
        anchors, counts = grid_anchors(FEATURE_SIZES, cfg)
        coder = BoxCoder()
    out = _random_outputs(anchors.shape[0], seed=5)
    if coding == "delta":
        out = HeadOutput(out.cls_logits, out.box_deltas - 1.0, out.aux_logits)  # deltas around 0
    cfg = InferenceConfig(pre_nms_topk=20, score_thresh=0.2, max_detections=25, score_fusion=fusion,
                          voting=VotingConfig(enabled=voting))
    assert cfg == dataclasses.replace(cfg, pre_nms_candidates="pairs", threshold_on="fused", clip="one_sided")
    got = postprocess(out, anchors, counts, IMAGE_SIZES, coder, cfg, "product")
    want = _postprocess_before(out, anchors, counts, IMAGE_SIZES, coder, cfg, "product")
    assert all(len(w["scores"]) for w in want)
    for g, w in zip(got, want):
        assert g.keys() == w.keys()
        for key in g:
            assert torch.equal(g[key], w[key]), key


# ------------------------------------------------------------------ config edge

@pytest.mark.parametrize("key,value", [("pre_nms_candidates", "anchors"), ("threshold_on", "aux"),
                                       ("clip", "none")])
def test_a_bad_choice_is_an_error_naming_the_key(key, value):
    with pytest.raises(ConfigError, match=rf"inference\.{key}: '{value}' is not one of") as e:
        build_config({"inference": {key: value}})
    assert "\n" not in str(e.value)
