"""Search files: the shipped ones load under every profile, trial configs resolve, malformed ones give one-line
file:line errors (`ablation.search.load`, `ablation.search.resolve`). Nothing here trains."""
from __future__ import annotations

import functools
import math
from pathlib import Path

import pytest

from ablation.search.load import load_search, parse_search
from ablation.search.resolve import trial_config
from ablation.study.source import StudyError

REPO = Path(__file__).resolve().parents[1]
SHIPPED = {  # file -> the method its trials train
    "search_paa_lambda": "paa", "search_atss_topk": "atss", "search_voting_sigma": "paa",
    "search_pseudo_iou": "pseudo_iou", "search_free_anchor": "free_anchor",
}


def _get(cfg, dotted: str):
    return functools.reduce(getattr, dotted.split("."), cfg)


def _middle(p):
    """A value inside the parameter's range other than its bounds."""
    if p.kind == "categorical":
        return p.choices[-1]
    if p.kind == "int":
        return p.low + p.step
    return math.sqrt(p.low * p.high) if p.log else (p.low + p.high) / 2


# ---------------------------------------------------------------- the shipped search files
def test_every_search_file_is_known():
    assert sorted(p.stem for p in (REPO / "studies").glob("search_*.yaml")) == sorted(SHIPPED)


@pytest.mark.parametrize("stem", sorted(SHIPPED))
def test_shipped_search_loads_and_resolves_under_every_profile(stem):
    search = load_search(REPO / "studies" / f"{stem}.yaml")
    assert search.name == stem
    assert {"quick", "smoke"} <= set(search.profiles)
    values = {p.name: _middle(p) for p in search.space}
    for profile in search.profiles:
        cfg = trial_config(search, profile, values)
        assert cfg.assign.name == SHIPPED[stem], profile
        for p in search.space:
            assert _get(cfg, p.key) == pytest.approx(values[p.name]), (profile, p.key)
        assert cfg.train.seed == search.seed
        assert 0 < cfg.train.eval_every < cfg.train.iterations, profile  # intermediate values for the pruner
    quick = trial_config(search, "quick", values)
    assert (quick.train.iterations, quick.train.eval_every, quick.data.min_size) == (800, 200, [320])
    smoke = trial_config(search, "smoke", values)
    assert (smoke.train.iterations, smoke.train.eval_every, smoke.data.min_size) == (20, 10, [96])
    assert (smoke.model.backbone.tiny_width, smoke.model.head.width) == (8, 16)
    assert search.rerun.top == 3 and search.rerun.seeds == [0, 1, 2]


def test_paa_lambda_search():
    search = load_search(REPO / "studies" / "search_paa_lambda.yaml")
    space = {p.name: p for p in search.space}
    lam = space["score_giou_weight"]
    assert (lam.key, lam.kind, lam.low, lam.high, lam.log) == ("assign.paa.score_giou_weight", "float", 0.25, 4.0, True)
    assert space["topk"].kind == "int" and space["topk"].step == 1
    assert {p.key for p in search.space} == {"assign.paa.score_giou_weight", "assign.paa.topk", "loss.reg_weight",
                                             "loss.aux_weight"}
    assert (search.sampler.name, search.sampler.seed, search.pruner.name, search.trials) == ("tpe", 0, "median", 16)
    assert [(o.metric, o.direction) for o in search.objectives] == [("AP", "maximize")]
    cfg = trial_config(search, "quick", {"score_giou_weight": 2.0, "topk": 12, "reg_weight": 1.0, "aux_weight": 0.7})
    assert (cfg.assign.paa.score_giou_weight, cfg.assign.paa.topk, cfg.loss.reg_weight, cfg.loss.aux_weight) == \
        (2.0, 12, 1.0, 0.7)
    assert cfg.assign.paa.separation == "c" and cfg.inference.voting.enabled  # the rest is paa.yaml's


def test_grid_and_voc_searches():
    atss = load_search(REPO / "studies" / "search_atss_topk.yaml")
    assert atss.sampler.name == "grid" and (atss.space[0].low, atss.space[0].high, atss.space[0].step) == (3, 19, 2)
    piou = load_search(REPO / "studies" / "search_pseudo_iou.yaml")
    assert piou.objectives[0].metric == "VOC07_mAP"
    assert trial_config(piou, "smoke", {"threshold": 0.5}).eval.voc_metric == "11point"


# ---------------------------------------------------------------- trial configs
def test_trial_values_come_after_the_profile(tmp_path):
    path = tmp_path / "order.yaml"
    path.write_text(GOOD.replace("overrides: {train.iterations: 20, train.eval_every: 10}",
                                 "overrides: {train.iterations: 20, train.eval_every: 10, assign.paa.topk: 3}")
                    .replace("trials: 4", "trials: 4\nseed: 5\noverrides: {assign.paa.topk: 4, loss.aux_weight: 0.3}"))
    search = load_search(path)
    cfg = trial_config(search, "smoke", {"topk": 7, "lam": 2.0})
    assert (cfg.assign.paa.topk, cfg.assign.paa.score_giou_weight) == (7, 2.0)  # the trial beats profile and overrides
    assert (cfg.train.iterations, cfg.loss.aux_weight, cfg.train.seed) == (20, 0.3, 5)
    assert trial_config(search, "smoke", {"lam": 2.0}).assign.paa.topk == 3  # unsearched here: the profile's
    with pytest.raises(StudyError, match=r"space: no parameter named nope$"):
        trial_config(search, "smoke", {"nope": 1})


def test_two_objectives_default_to_no_pruner(tmp_path):
    path = tmp_path / "multi.yaml"
    path.write_text(GOOD.replace("pruner: median\n", "").replace(
        "objective: AP", "objective: [AP, {metric: time/step_s, direction: minimize}]"))
    search = load_search(path)
    assert search.pruner.name == "none"
    assert [(o.metric, o.direction) for o in search.objectives] == [("AP", "maximize"), ("time/step_s", "minimize")]


# ---------------------------------------------------------------- malformed files
GOOD = """\
name: demo
description: a small search
base: studies/configs/paa.yaml
profiles:
  smoke:
    configs: [studies/configs/quick.yaml]
    overrides: {train.iterations: 20, train.eval_every: 10}
space:
  lam: {key: assign.paa.score_giou_weight, type: float, low: 0.25, high: 4.0, log: true}
  topk: {key: assign.paa.topk, type: int, low: 5, high: 25}
objective: AP
sampler: {name: tpe, seed: 0}
pruner: median
trials: 4
"""
TOPK = "  topk: {key: assign.paa.topk, type: int, low: 5, high: 25}"
LAM = "  lam: {key: assign.paa.score_giou_weight, type: float, low: 0.25, high: 4.0, log: true}"

# (id, replace old -> new in GOOD, the line's text, key, message)
BAD = [
    ("unknown top key", ("trials: 4", "trails: 4"), "trails:", "trails",
     "unknown key 'trails'; valid keys here: name, description, base, overrides, profiles, space, objective, "
     "sampler, pruner, trials, seed, rerun"),
    ("unknown param field", (TOPK, TOPK[:-1] + ", stpe: 2}"), "topk:", "space.topk.stpe",
     "unknown key 'stpe'; valid keys here: key, type, low, high, log, step, choices"),
    ("unknown config key", (TOPK, TOPK.replace("paa.topk", "paa.topkk")), "topk:", "space",
     "unknown key 'assign.paa.topkk'; valid keys here: iou_thresh, low_quality, topk, score_giou_weight"),
    ("unknown config section", (LAM, LAM.replace("assign.paa.score", "assign.paa_x.score")), "lam:", "space",
     "unknown key 'assign.paa_x'"),
    ("value the config refuses", (TOPK, TOPK.replace("type: int, low: 5", "type: float, low: 5")), "topk:", "space",
     "assign.paa.topk: expected an integer, got 5.0"),
    ("low >= high", (TOPK, TOPK.replace("low: 5, high: 25", "low: 25, high: 5")), "topk:", "space.topk",
     "low (25) must be < high (5)"),
    ("low == high", (LAM, LAM.replace("high: 4.0", "high: 0.25")), "lam:", "space.lam",
     "low (0.25) must be < high (0.25)"),
    ("log with low <= 0", (LAM, LAM.replace("low: 0.25", "low: 0.0")), "lam:", "space.lam.low",
     "a log scale needs low > 0, got 0.0"),
    ("int with a float bound", (TOPK, TOPK.replace("high: 25", "high: 25.5")), "topk:", "space.topk.high",
     "expected an integer (type int), got 25.5"),
    ("int with a float step", (TOPK, TOPK[:-1] + ", step: 1.5}"), "topk:", "space.topk.step",
     "expected an integer >= 1, got 1.5"),
    ("categorical without choices", (TOPK, "  topk: {key: assign.paa.topk, type: categorical}"), "topk:",
     "space.topk.choices", "a categorical parameter needs a non-empty 'choices' list, got None"),
    ("categorical with bounds", (TOPK, "  topk: {key: assign.paa.topk, type: categorical, choices: [5], low: 1}"),
     "topk:", "space.topk.low", "not used by type categorical; its fields: key, type, choices"),
    ("unknown type", (TOPK, TOPK.replace("type: int", "type: integer")), "topk:", "space.topk.type",
     "'integer' is not one of float, int, categorical"),
    ("cmaes with a categorical", ("name: tpe", "name: cmaes"), None, "space.topk",
     "the cmaes sampler cannot sample a categorical parameter"),
    ("grid with a continuous float", ("name: tpe", "name: grid"), "lam:", "space.lam",
     "the grid sampler needs a finite grid, and a float is continuous"),
    ("two objectives with a pruner", ("objective: AP", "objective: [AP, AP50]"), "pruner:", "pruner",
     "Optuna cannot prune a multi-objective search; set pruner: none (got median)"),
    ("three objectives", ("objective: AP", "objective: [AP, AP50, AP75]"), "objective:", "objective",
     "one objective, or two for a multi-objective search; got 3"),
    ("objective that is not a metric", ("objective: AP", "objective: mAP"), "objective:", "objective",
     "'mAP' is not a metric: one of AP, AP50"),
    ("logged metric without direction", ("objective: AP", "objective: time/step_s"), "objective:", "objective",
     "the logged metric 'time/step_s' needs a direction"),
    ("bad direction", ("objective: AP", "objective: {metric: AP, direction: up}"), "objective:",
     "objective.direction", "'up' is not one of maximize, minimize"),
    ("duplicate key", (TOPK, TOPK + "\n  k2: {key: assign.paa.topk, type: int, low: 3, high: 9}"), "k2:",
     "space.k2.key", "'assign.paa.topk' is also set by space.topk ('assign.paa.topk', line 10)"),
    ("nested key", (TOPK, TOPK + "\n  whole: {key: assign.paa, type: categorical, choices: [{}]}"), "whole:",
     "space.whole.key", "'assign.paa' is also set by space.lam"),
    ("searched seed", (TOPK, "  topk: {key: train.seed, type: int, low: 0, high: 3}"), "topk:", "space.topk.key",
     "train.seed is the search's 'seed' (and rerun.seeds), not a searched parameter"),
    ("seed in overrides", ("trials: 4", "trials: 4\noverrides: {train.seed: 3}"), "overrides: {train.seed", "overrides",
     "train.seed is set by the search's 'seed'"),
    ("unknown sampler", ("name: tpe", "name: bayes"), "sampler:", "sampler.name",
     "'bayes' is not one of tpe, random, grid, cmaes"),
    ("unknown sampler option", ("{name: tpe, seed: 0}", "{name: tpe, seed: 0, options: {n_startup: 3}}"),
     "sampler:", "sampler.options.n_startup", "not an argument of optuna.samplers.TPESampler; its arguments: "),
    ("unknown pruner", ("pruner: median", "pruner: {name: asha}"), "pruner:", "pruner.name",
     "'asha' is not one of median, hyperband, percentile, threshold, none"),
    ("no trials", ("trials: 4", "trials: 0"), "trials:", "trials", "expected an integer >= 1, got 0"),
    ("rerun top 0", ("trials: 4", "trials: 4\nrerun: {top: 0}"), "rerun:", "rerun.top",
     "expected an integer >= 1, got 0"),
    ("unknown rerun key", ("trials: 4", "trials: 4\nrerun: {best: 2}"), "rerun:", "rerun.best",
     "unknown key 'best'; valid keys here: top, seeds"),
    ("profile key unknown", ("overrides: {train.iterations: 20,", "overrides: {train.iteratons: 20,"), "overrides:",
     "profiles.smoke", "unknown key 'train.iteratons'"),
    ("VOC objective not computed", ("objective: AP", "objective: VOC07_mAP"), "smoke:", "profiles.smoke",
     "the objective VOC07_mAP is not computed with eval.voc_metric='none'"),
    ("empty space", ("space:\n" + LAM + "\n" + TOPK + "\n", "space: {}\n"), "space:", "space",
     "needs at least one parameter"),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_malformed_search_is_one_line_error(tmp_path, case):
    _, (old, new), needle, key, message = case
    if case[0] == "cmaes with a categorical":
        old_text = GOOD.replace(TOPK, "  topk: {key: assign.paa.topk, type: categorical, choices: [5, 9]}")
        needle = "topk:"
    else:
        old_text = GOOD
    assert old in old_text
    text = old_text.replace(old, new)
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    line = next(i for i, t in enumerate(text.splitlines(), 1) if t.lstrip().startswith(needle))
    with pytest.raises(StudyError) as info:
        load_search(path)
    error = str(info.value)
    assert "\n" not in error
    assert error.startswith(f"{path}:{line}: {key}: "), error
    assert message in error, error


def test_parse_alone_leaves_config_keys_to_load(tmp_path):
    path = tmp_path / "late.yaml"
    path.write_text(GOOD.replace(TOPK, TOPK.replace("paa.topk", "paa.topkk")))
    assert parse_search(path).space[1].key == "assign.paa.topkk"  # the schema is fine
    with pytest.raises(StudyError, match=r":10: space: unknown key 'assign.paa.topkk'"):
        load_search(path)


def test_missing_file_and_top_level():
    with pytest.raises(StudyError, match="search file not found: nowhere.yaml"):
        load_search("nowhere.yaml")
