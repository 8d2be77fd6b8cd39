"""`anchorlab viz rules`: the positive points of each point rule on one image of the tiny synthetic benchmark are
the training step's, the rules nest as they should (every rule keeps a subset of the FCOS candidates, Pseudo-IoU
at T = 0 is the AF-baseline), the figure is written, and the CLI reports bad input in one line."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from cli import app
from cli_viz import POINT_CONFIGS
from dashboards.point_rules_figure import MIN_GTS, draw_point_rules, point_rule_positives
from detector.config import build_config, deep_merge, load_yaml
from tests.conftest import TINY, data_workspace

runner = CliRunner()
LAYER = {k: v for k, v in TINY.items() if k != "name"}  # the tiny data, model and schedule on each method config


def _configs(*deltas: dict):
    """The four point-rule configs on the tiny benchmark, then one more per delta (over pseudo_iou.yaml)."""
    cfgs = [build_config(deep_merge(load_yaml(p), LAYER)) for p in POINT_CONFIGS]
    return cfgs + [build_config(deep_merge(deep_merge(load_yaml(POINT_CONFIGS[1]), LAYER), d)) for d in deltas]


def _triples(rule) -> set[tuple[float, float, int]]:
    return {(float(x), float(y), int(j)) for (x, y), j in zip(rule.points_xy, rule.gt_index)}


@pytest.fixture(scope="module")
def drawn(tmp_path_factory, synth_data):
    ws = data_workspace(tmp_path_factory.mktemp("ws"), synth_data)
    zero = {"assign": {"pseudo_iou": {"threshold": 0.0}}}
    strict = {"assign": {"pseudo_iou": {"threshold": 0.9}}}
    return point_rule_positives(_configs(zero, strict), ws), ws


def test_default_image_has_enough_gts_and_rules_nest(drawn):
    result, _ = drawn
    fcos, piou, sbox, ctr, piou_zero, piou_strict = result.rules
    assert len(result.gt_boxes) >= MIN_GTS and result.image.dtype == np.uint8 and result.image.ndim == 3
    assert [r.rule for r in result.rules] == ["fcos_inside", "pseudo_iou", "scaled_box", "centerness_threshold",
                                              "pseudo_iou", "pseudo_iou"]
    assert piou.param == "threshold=0.4" and fcos.param == "all inside" and sbox.param == "scale=0.6"
    assert _triples(fcos), "the AF-baseline keeps every candidate: some point lies inside a GT"
    for rule in (piou, sbox, ctr, piou_strict):  # each rule keeps or rejects FCOS candidates, never adds one
        assert _triples(rule) <= _triples(fcos), rule.title
    assert _triples(piou_strict) <= _triples(piou) < _triples(fcos)
    assert _triples(piou_zero) == _triples(fcos), "pIoU > 1/7 inside a GT: T = 0 is the AF-baseline"
    for rule in result.rules:
        assert rule.gts_without == len(result.gt_boxes) - len(set(rule.gt_index.tolist()))
        assert f"{len(rule.gt_index)} positives" in rule.title


def test_positives_are_the_training_steps(drawn, one_thread):
    """The same image through a real model forward and `TrainStep` (the training path): the same positives."""
    from detector.data.build import build_datasets
    from detector.data.transforms import collate
    from detector.engine.step import TrainStep
    from detector.model.detector import DenseDetector

    result, ws = drawn
    torch.manual_seed(0)
    for cfg, rule in zip(_configs(), result.rules):
        _, val = build_datasets(cfg, ws)
        batch = collate([val[val.image_ids.index(result.image_id)]], cfg.data.size_divisibility)
        model = DenseDetector(cfg.model, val.num_classes)
        with torch.no_grad():
            _, anchors, _ = model(batch.images)
            _, assigned, _ = TrainStep(model, cfg)(batch)
        pos = torch.nonzero(assigned.matched_gt[0] >= 0).squeeze(1)
        xy = ((anchors[pos, :2] + anchors[pos, 2:]) / 2 / batch.scales[0]).numpy()
        assert _triples(rule) == {(float(x), float(y), int(j)) for (x, y), j in zip(xy, assigned.matched_gt[0, pos])}


def test_figure_is_written_with_one_panel_per_rule(drawn, tmp_path):
    import matplotlib.image as mpimg

    result, _ = drawn
    path = draw_point_rules(result.image, result.gt_boxes, result.rules, tmp_path / "rules.png", title="tiny")
    assert path.stat().st_size > 20_000
    pixels = mpimg.imread(path)
    assert pixels.shape[1] == 4 * 480 and 2 * 480 <= pixels.shape[0] < 3 * 480, "six panels: two rows of four"
    assert pixels[..., :3].std() > 0.05, "not a blank canvas"


def _layer_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(LAYER))
    return path


def test_cli_draws_the_four_rules(drawn, tmp_path):
    result, ws = drawn
    out = tmp_path / "figs" / "rules.png"
    r = runner.invoke(app, ["viz", "rules", "--layer", str(_layer_file(tmp_path)), "--workspace", str(ws),
                            "--image-id", str(result.image_id), "--set", "assign.scaled_box.scale=0.5",
                            "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert out.is_file() and out.stat().st_size > 20_000
    lines = r.output.strip().splitlines()
    assert lines[0] == result.rules[0].title and lines[1] == result.rules[1].title
    assert lines[2].startswith("scaled_box (scale=0.5): ") and lines[-1] == f"wrote {out}"


@pytest.mark.parametrize("args, message", [
    (["--image-id", "987654"], "error: image id 987654 is not among the"),
    (["-c", "studies/configs/atss.yaml"], "error: config 'atss': method 'atss' is not a point rule"),
    (["--set", "assign.pseudo_iou.treshold=0.5"], "error: unknown key 'assign.pseudo_iou.treshold'"),
    (["--out", "rules.jpg"], "error: --out rules.jpg: expected a .png file"),
])
def test_cli_bad_input_is_one_line_and_exit_2(drawn, tmp_path, args, message):
    _, ws = drawn
    r = runner.invoke(app, ["viz", "rules", "--layer", str(_layer_file(tmp_path)), "--workspace", str(ws), *args])
    assert r.exit_code == 2, r.output
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(message), r.output
