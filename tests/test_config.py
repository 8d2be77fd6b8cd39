"""Typed config: unknown keys and wrong types are one-line errors naming the key."""
from __future__ import annotations

from pathlib import Path

import pytest

from detector.config import ConfigError, build_config, load_config, parse_override
from detector.run_key import run_key

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_are_the_papers():
    cfg = build_config({})
    assert cfg.model.backbone.name == "resnet50" and cfg.data.min_size == [800]
    assert cfg.loss.focal_alpha == 0.25 and cfg.loss.focal_gamma == 2.0
    assert cfg.model.box_coder.weights == [10.0, 10.0, 5.0, 5.0]
    assert cfg.assign.max_iou.pos_iou == 0.5 and cfg.assign.max_iou.neg_iou == 0.4


def test_unknown_key_names_key_and_siblings():
    with pytest.raises(ConfigError) as e:
        build_config({"train": {"iteratons": 10}})
    msg = str(e.value)
    assert "train.iteratons" in msg and "iterations" in msg and "\n" not in msg


@pytest.mark.parametrize("data,key", [
    ({"train": {"iterations": "ten"}}, "train.iterations"),
    ({"train": {"amp": 1}}, "train.amp"),
    ({"train": {"amp_dtype": "half"}}, "train.amp_dtype"),
    ({"data": {"min_size": 800}}, "data.min_size"),
    ({"model": {"head": {"aux": "quality"}}}, "model.head.aux"),
    ({"assign": {"name": "nope"}}, "assign.name"),
    ({"model": "big"}, "model"),
])
def test_wrong_types_and_choices(data, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        build_config(data)


def test_overrides_and_layering():
    cfg = load_config([ROOT / "studies/configs/atss.yaml", ROOT / "studies/configs/quick.yaml"],
                      ["train.iterations=7", "model.anchors.aspect_ratios=[0.5, 1, 2]", "assign.atss.topk=5"])
    assert cfg.assign.name == "atss" and cfg.model.backbone.name == "tiny"
    assert cfg.train.iterations == 7 and cfg.assign.atss.topk == 5
    assert cfg.model.anchors.aspect_ratios == [0.5, 1.0, 2.0]
    assert parse_override("a.b=c") == {"a": {"b": "c"}}
    with pytest.raises(ConfigError):
        parse_override("no-equals-sign")


def test_exponent_floats_are_numbers(tmp_path):
    path = tmp_path / "lr.yaml"
    path.write_text("train: {base_lr: 1.0e-2, weight_decay: 1e-4}\n")
    cfg = load_config([path], ["train.momentum=9e-1"])
    assert cfg.train.base_lr == 0.01 and cfg.train.weight_decay == 1e-4 and cfg.train.momentum == 0.9


def test_shipped_configs_validate():
    for path in (ROOT / "studies/configs").glob("*.yaml"):
        load_config([path])


def test_malformed_yaml_is_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {iterations: 3\n  bad")
    with pytest.raises(ConfigError) as e:
        load_config([bad])
    assert "bad.yaml" in str(e.value) and "\n" not in str(e.value)


def test_run_key_is_stable_and_changes_with_the_seed():
    a = build_config({})
    assert run_key(a) == run_key(build_config({}))
    assert run_key(a) != run_key(build_config({"train": {"seed": 1}}))


@pytest.mark.parametrize("override", ["assign.paa.score_focal_alpha=1.5", "assign.paa.score_giou_weight=-1",
                                      "assign.paa.iou_thresh=0"])
def test_paa_score_settings_that_would_break_its_bound_are_refused(override):
    with pytest.raises(ConfigError, match="assign.paa"):
        load_config(None, [override])
