"""The method record: a method added by its spec and one dict entry trains end to end; every method has a spec and
every spec a method; unknown names; score fusion "auto";
one box-coder builder; every detector module imports on its own (no hidden import cycle)."""
from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from detector.assigners.base import BG, AssignInputs, AssignResult
from detector.boxes import batched_box_iou, box_centers, point_box_distances
from detector.config import ConfigError, build_config
from detector.config.method_specs import METHOD_SPECS, MethodSpec
from detector.engine.hooks import TrainHooks
from detector.engine.step import TrainStep
from detector.engine.train import train
from detector.evaluation.coco_eval import STAT_NAMES
from detector.methods import METHODS, Method, build_box_coder
from detector.model.detector import DenseDetector
from detector.model.head import HeadOutput
from detector.postprocess import postprocess, resolve_score_fusion
from tests.conftest import tiny_config

ROOT = Path(__file__).resolve().parents[1]


class ToyAssigner:
    """Every anchor whose centre lies strictly inside a valid GT is positive for the first such GT; counts its calls."""

    def __init__(self):
        self.calls = 0

    @torch.no_grad()
    def __call__(self, inputs: AssignInputs, cfg: None) -> AssignResult:
        assert cfg is None  # a method without a config type gets none
        self.calls += 1
        b, m = inputs.gt_labels.shape
        a = inputs.anchors.shape[0]
        if m == 0:
            return AssignResult(torch.full((b, a), BG, dtype=torch.long), torch.zeros(b, a), torch.ones(b, a))
        ltrb = point_box_distances(box_centers(inputs.anchors)[None, None], inputs.gt_boxes[:, :, None])  # (B, M, A, 4)
        inside = (ltrb.amin(-1) > 0) & inputs.gt_valid[:, :, None]  # (B, M, A)
        first = inside.long().argmax(1)  # (B, A): the first GT containing the centre (0 when none)
        matched = torch.where(inside.any(1), first, BG)
        iou = batched_box_iou(inputs.gt_boxes, inputs.anchors).gather(1, first[:, None]).squeeze(1)
        return AssignResult(matched, torch.where(matched >= 0, iou, 0.0), torch.ones(b, a))


class _Scalars(TrainHooks):
    def __init__(self):
        self.logged: dict[str, float] = {}

    def on_iteration(self, iteration, scalars):
        self.logged.update(scalars)


def test_a_method_added_by_its_spec_and_one_dict_entry_trains_end_to_end(monkeypatch, workspace):
    toy = ToyAssigner()
    monkeypatch.setitem(METHOD_SPECS, "toy", MethodSpec(config=None))  # what configs know of it (no torch)
    monkeypatch.setitem(METHODS, "toy", Method(METHOD_SPECS["toy"], assign=toy,
                                               summary=lambda r: {"toy/positives": float(r.positive.sum())}))
    cfg = tiny_config(assign={"name": "toy"})
    hooks = _Scalars()
    result = train(cfg, workspace, hooks)
    assert result.status == "FINISHED", result.reason
    assert set(STAT_NAMES) <= set(result.metrics) and all(math.isfinite(result.metrics[k]) for k in STAT_NAMES)
    assert toy.calls >= cfg.train.iterations  # the toy assigner made every step's assignment
    assert hooks.logged["toy/positives"] > 0 and hooks.logged["time/assign_s"] >= 0  # its summary is logged


def test_every_method_has_its_spec_and_every_spec_a_method():
    assert list(METHODS) == list(METHOD_SPECS)
    assert all(METHODS[name].spec is METHOD_SPECS[name] for name in METHODS)


def test_unknown_method_is_a_one_line_error_naming_the_valid_ones():
    with pytest.raises(ConfigError) as e:
        build_config({"assign": {"name": "retina"}})
    msg = str(e.value)
    assert msg.startswith("assign.name: 'retina'") and "\n" not in msg
    assert all(name in msg for name in METHODS)


def test_method_sections_are_assembled_from_the_dict():
    cfg = build_config({"assign": {"paa": {"topk": 5}}})
    assert cfg.assign.paa.topk == 5 and cfg.assign.name == "max_iou"
    sections = [n for n in vars(cfg.assign) if n not in ("name", "ignore_iof")]
    assert sections == [name for name, m in METHODS.items() if m.config is not None]
    with pytest.raises(ConfigError, match=r"assign\.paa: separation 'e'"):  # a method config's own checks
        build_config({"assign": {"paa": {"separation": "e"}}})


@pytest.mark.parametrize("name,own", [("max_iou", "none"), ("atss", "product"), ("paa", "sqrt_product"),
                                      ("free_anchor", "none")])
def test_auto_score_fusion_is_the_methods_own_with_an_aux_branch(name, own):
    assert build_config({}).inference.score_fusion == "auto"
    method_fusion = METHODS[name].score_fusion
    assert method_fusion == own
    assert resolve_score_fusion("auto", method_fusion, has_aux=True) == own
    assert resolve_score_fusion("auto", method_fusion, has_aux=False) == "none"
    assert resolve_score_fusion("product", method_fusion, has_aux=True) == "product"  # explicit values win
    # Post-processing applies it: cls probability 0.5, aux probability 0.8.
    cfg = build_config({"assign": {"name": name}})
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    out = HeadOutput(torch.zeros(1, 1, 1), torch.zeros(1, 1, 4), torch.full((1, 1), math.log(4.0)))
    det = postprocess(out, anchors, [1], torch.tensor([[20, 20]]), build_box_coder(cfg), cfg.inference, method_fusion)[0]
    expected = {"none": 0.5, "product": 0.4, "sqrt_product": math.sqrt(0.4)}[own]
    assert det["scores"].item() == pytest.approx(expected, abs=1e-6)
    no_aux = HeadOutput(out.cls_logits, out.box_deltas, None)
    det = postprocess(no_aux, anchors, [1], torch.tensor([[20, 20]]), build_box_coder(cfg), cfg.inference, method_fusion)[0]
    assert det["scores"].item() == pytest.approx(0.5, abs=1e-6)


def test_the_box_coder_comes_from_one_builder():
    cfg = tiny_config(model={"box_coder": {"weights": [1.0, 2.0, 3.0, 4.0], "clamp": 2.0}})
    coder = build_box_coder(cfg)
    assert coder.weights == (1.0, 2.0, 3.0, 4.0) and coder.clamp == 2.0
    step = TrainStep(DenseDetector(cfg.model, num_classes=3), cfg)
    assert step.coder.weights == coder.weights and step.coder.clamp == coder.clamp
    builders = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "detector").rglob("*.py") if "BoxCoder(" in p.read_text())
    assert builders == ["detector/methods.py"]  # training and evaluation both build it there


def test_method_records_refuse_what_they_cannot_do():
    with pytest.raises(ValueError, match="box_coding"):
        MethodSpec(config=None, box_coding="polar")
    with pytest.raises(ValueError, match="score_fusion"):
        MethodSpec(config=None, score_fusion="max")
    with pytest.raises(ValueError, match="loss function of its own"):
        Method(MethodSpec(config=None), assign=None)


IMPORT_EACH_FIRST = """
import importlib, pkgutil, sys
import detector
names = sorted(m.name for m in pkgutil.walk_packages(detector.__path__, "detector."))
for name in names:
    for loaded in [m for m in sys.modules if m == "detector" or m.startswith("detector.")]:
        del sys.modules[loaded]
    importlib.import_module(name)  # an import cycle shows up when its module is imported first
print(len(names))
"""


def test_every_detector_module_can_be_imported_first():
    out = subprocess.run([sys.executable, "-c", IMPORT_EACH_FIRST], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert int(out.stdout.split()[-1]) >= 40
