"""The FreeAnchor paper's study files (studies/freeanchor_*.yaml) and the cross-paper studies/assigners_all.yaml:
every row resolves, under every profile, to the method and hyper-parameters it stands for, with the metric
switches its columns need, the paper's numbers where the paper prints them, and the run keys shared between
studies that their comments promise.

(tests/test_study.py loads every shipped study; this checks what the rows mean.)
"""
from __future__ import annotations

from pathlib import Path

import pytest

from ablation.study.expand import expand, load_study
from detector.evaluation.buckets import ASPECT_NAMES, CROWD_NAMES
from detector.evaluation.nms_recall import METRIC_NAMES as NR_NAMES

REPO = Path(__file__).resolve().parents[1]
NAMES = ("freeanchor_table2", "freeanchor_params", "freeanchor_nms_recall", "assigners_all")
PROFILES = ("paper", "quick", "smoke")
FREEANCHOR_PAPER = "004_5baa3f7635b8d580.txt"

# assign.free_anchor: (bag_size n, iou_threshold t, alpha, gamma, bbox_reg_weight beta); the official setting
DEFAULT = (50, 0.6, 0.5, 2.0, 0.75)


def _fa(n=50, t=0.6, alpha=0.5, gamma=2.0, beta=0.75) -> tuple:
    return ("free_anchor", (n, t, alpha, gamma, beta))


def _method(cfg) -> tuple:
    """(assign.name, FreeAnchor's five hyper-parameters or None)."""
    if cfg.assign.name != "free_anchor":
        return cfg.assign.name, None
    fa = cfg.assign.free_anchor
    return "free_anchor", (fa.bag_size, fa.iou_threshold, fa.alpha, fa.gamma, fa.bbox_reg_weight)


PARAMS = {"Default": _fa(),
          **{f"n = {n}": _fa(n=n) for n in (40, 60, 100)},
          **{f"t = {t}": _fa(t=t) for t in (0.5, 0.7)},
          **{f"alpha = {a}, gamma = {g}": _fa(alpha=a, gamma=g)
             for a in (0.25, 0.5, 0.75) for g in (1.5, 2.0, 2.5) if (a, g) != (0.5, 2.0)},
          **{f"beta = {b}": _fa(beta=b) for b in (0.5, 1.0)}}
# label -> (method, FreeAnchor hyper-parameters) for every row of each study, in paper order
ROWS = {
    "freeanchor_table2": {"RetinaNet": ("max_iou", None), "FreeAnchor": _fa()},
    "freeanchor_params": PARAMS,
    "freeanchor_nms_recall": {"RetinaNet": ("max_iou", None), "FreeAnchor": _fa()},
    "assigners_all": {"RetinaNet": ("max_iou", None), "ATSS": ("atss", None), "PAA": ("paa", None),
                      "FreeAnchor": _fa(), "FCOS baseline": ("fcos_inside", None), "Pseudo-IoU": ("pseudo_iou", None)},
}
BASELINES = {"freeanchor_table2": "RetinaNet", "freeanchor_params": "Default", "freeanchor_nms_recall": "RetinaNet",
             "assigners_all": "ATSS"}
METRICS = {
    "freeanchor_table2": ["AP", "AP50", "AP75", "APs", "APm", "APl", "NR", "AP_square", "AP_slender", "AP_sparse",
                          "AP_crowded"],
    "freeanchor_params": ["AP", "AP50", "AP75", "APs", "APm", "APl"],
    "freeanchor_nms_recall": ["NR", "NR50", "NR60", "NR70", "NR80", "NR90"],
    "assigners_all": ["AP", "AP50", "AP75", *ASPECT_NAMES, *CROWD_NAMES, "NR"],
}
# (eval.nms_recall, eval.aspect_ap, eval.crowd_ap) of every run
SWITCHES = {"freeanchor_table2": (True, True, True), "freeanchor_params": (False, False, False),
            "freeanchor_nms_recall": (True, True, True), "assigners_all": (True, True, True)}
# the paper's numbers (FreeAnchor Tables 1 and 2, ResNet-50; Pseudo-IoU Table 3); rows absent here have none
REFERENCES = {
    "freeanchor_table2": {
        "RetinaNet": {"AP": 35.7, "AP50": 55.0, "AP75": 38.5, "APs": 18.9, "APm": 38.9, "APl": 46.3},
        "FreeAnchor": {"AP": 38.7, "AP50": 57.3, "AP75": 41.6, "APs": 20.2, "APm": 41.3, "APl": 50.1},
    },
    "freeanchor_params": {},  # Sec. 4.3 names the values tried and kept, with no numbers
    "freeanchor_nms_recall": {
        "RetinaNet": {"NR": 81.8, "NR50": 98.3, "NR60": 95.7, "NR70": 87.0, "NR80": 71.8, "NR90": 51.3},
        "FreeAnchor": {"NR": 83.8, "NR50": 99.2, "NR60": 97.5, "NR70": 89.5, "NR80": 74.3, "NR90": 53.1},
    },
    "assigners_all": {
        "FreeAnchor": {"AP": 38.7, "AP50": 57.3, "AP75": 41.6, "NR": 83.8},
        "Pseudo-IoU": {"AP": 37.4, "AP50": 56.5, "AP75": 40.1},
    },
}
# the method config each row is built on
BASES = {"RetinaNet": "retinanet_iou", "FreeAnchor": "free_anchor", "ATSS": "atss", "PAA": "paa",
         "FCOS baseline": "fcos_inside", "Pseudo-IoU": "pseudo_iou"}


@pytest.fixture(scope="module")
def studies():
    return {name: load_study(REPO / "studies" / f"{name}.yaml") for name in NAMES}


def test_every_freeanchor_study_is_checked_here():
    assert {p.stem for p in (REPO / "studies").glob("freeanchor_*.yaml")} | {"assigners_all"} == set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_rows_resolve_to_their_method_and_hyper_parameters(studies, name):
    study = studies[name]
    assert study.name == name and study.paper["file"] == FREEANCHOR_PAPER
    assert [r.label for r in study.rows] == list(ROWS[name])
    assert study.baseline == BASELINES[name]
    assert study.metrics == METRICS[name]
    assert set(study.profiles) == set(PROFILES)
    assert study.seeds == [0] and study.profiles["quick"].seeds == [0, 1, 2]
    for profile in PROFILES:
        runs = expand(study, profile)
        assert study.warnings[profile] == [], "a profile replaces a row's value"
        seeds = study.profiles[profile].seeds or study.seeds
        assert len(runs) == len(study.rows) * len(seeds)
        assert [(r.label, r.seed) for r in runs] == [(label, s) for label in ROWS[name] for s in seeds]
        assert len({r.key for r in runs}) == len(runs)
        for run in runs:
            cfg = run.config
            assert _method(cfg) == ROWS[name][run.label], (profile, run.label)
            assert (cfg.eval.nms_recall, cfg.eval.aspect_ap, cfg.eval.crowd_ap) == SWITCHES[name], (profile, run.label)
        backbones = {r.config.model.backbone.name for r in runs}
        assert backbones == ({"resnet50"} if profile == "paper" else {"tiny"}), profile
    assert {r.config.data.min_size[0] for r in expand(study, "quick")} == {320}
    assert {r.config.data.min_size[0] for r in expand(study, "smoke")} == {96}


@pytest.mark.parametrize("name", NAMES)
def test_rows_carry_the_papers_numbers(studies, name):
    got = {r.label: r.reference for r in studies[name].rows if r.reference}
    assert got == REFERENCES[name]


def test_metric_columns_are_what_the_switches_compute():
    assert set(METRICS["freeanchor_nms_recall"]) <= set(NR_NAMES) and "NR" in NR_NAMES
    assert ASPECT_NAMES == ("AP_square", "AP_oblong", "AP_slender")
    assert CROWD_NAMES == ("AP_sparse", "AP_moderate", "AP_crowded")


@pytest.mark.parametrize("name", ("freeanchor_table2", "freeanchor_nms_recall", "assigners_all"))
def test_each_row_keeps_its_method_config(studies, name):
    """Anchors, head and inference come from the row's own config (studies/configs/<method>.yaml)."""
    runs = {r.label: r.config for r in expand(studies[name], "paper")}
    for label, cfg in runs.items():
        anchors = cfg.model.anchors
        per_location = anchors.scales_per_octave * len(anchors.aspect_ratios)
        assert per_location == (9 if BASES[label] in ("retinanet_iou", "free_anchor") else 1), label
        assert anchors.octave_base_scale == (4 if per_location == 9 else 8), label
    fa = runs["FreeAnchor"]
    assert (fa.model.head.norm, fa.model.head.prior_prob, fa.inference.nms_thresh) == ("none", 0.02, 0.5)
    ret = runs["RetinaNet"]
    # the FreeAnchor paper's RetinaNet is FreeAnchor's detector with max-IoU matching: no GroupNorm, L1 boxes
    paper_retinanet = ("none", "l1") if name != "assigners_all" else ("gn", "giou")
    assert (ret.model.head.norm, ret.loss.reg) == paper_retinanet
    assert (ret.model.head.prior_prob, ret.assign.max_iou.pos_iou) == (0.01, 0.5)
    if name == "assigners_all":
        assert runs["ATSS"].model.head.aux == "centerness" and runs["PAA"].model.head.aux == "iou"
        assert runs["PAA"].inference.voting.enabled
        assert runs["Pseudo-IoU"].assign.pseudo_iou.threshold == 0.4
        assert runs["FCOS baseline"].model.head.aux == "centerness"


@pytest.mark.parametrize("name", NAMES)
def test_one_schedule_per_profile(studies, name):
    """paper: 90k iterations at 16 images for every row (PAA's own 135k included), each method's own clipping
    (FreeAnchor none); quick and smoke: quick.yaml's schedule and clipping for every row."""
    for profile in PROFILES:
        runs = expand(studies[name], profile)
        schedules = {(r.config.train.iterations, r.config.train.batch_size, r.config.train.optimizer,
                      r.config.train.base_lr) for r in runs}
        want = {"paper": (90000, 16, "sgd", 0.01), "quick": (800, 8, "adamw", 0.006),
                "smoke": (20, 2, "adamw", 0.006)}[profile]
        assert schedules == {want}, profile
        clips = {r.label: r.config.train.grad_clip for r in runs}
        if profile == "paper":
            assert clips == {label: (35.0 if label in ("FCOS baseline", "Pseudo-IoU") else 0.0) for label in clips}
        else:
            assert set(clips.values()) == {10.0}, profile


def test_params_sweep_the_papers_values_around_the_default(studies):
    rows = {r.label: r for r in studies["freeanchor_params"].rows}
    assert rows["Default"].overrides == {}
    values = [ROWS["freeanchor_params"][label][1] for label in rows]
    assert {v[0] for v in values} == {40, 50, 60, 100}
    assert {v[1] for v in values} == {0.5, 0.6, 0.7}
    assert {(v[2], v[3]) for v in values} == {(a, g) for a in (0.25, 0.5, 0.75) for g in (1.5, 2.0, 2.5)}
    for label, value in zip(rows, values):  # one sweep per row: the rest stays the official setting
        changed = {i for i in range(5) if value[i] != DEFAULT[i]}
        assert (label == "Default") == (not changed), label
        assert changed <= {2, 3} or len(changed) == 1, label


def test_shared_rows_keep_the_same_run_keys(studies):
    """The comments promise reuse: Table 1's runs are Table 2's (the same rows and eval switches), and Table 2's
    FreeAnchor is assigners_all's."""
    pairs = [("freeanchor_nms_recall", "RetinaNet", "freeanchor_table2", "RetinaNet"),
             ("freeanchor_nms_recall", "FreeAnchor", "freeanchor_table2", "FreeAnchor"),
             ("freeanchor_table2", "FreeAnchor", "assigners_all", "FreeAnchor")]
    for profile in PROFILES:
        keys = {name: {(r.label, r.seed): r.key for r in expand(studies[name], profile)} for name in NAMES}
        for a, label_a, b, label_b in pairs:
            for seed in studies[a].profiles[profile].seeds or studies[a].seeds:
                assert keys[a][(label_a, seed)] == keys[b][(label_b, seed)], (profile, a, label_a)
        # the paper's RetinaNet (FreeAnchor's detector) is not the GroupNorm + GIoU one of the ATSS/PAA comparisons,
        # and the parameter study reports no NMS recall (hence other keys)
        assert keys["freeanchor_table2"][("RetinaNet", 0)] != keys["assigners_all"][("RetinaNet", 0)]
        assert keys["freeanchor_table2"][("FreeAnchor", 0)] != keys["freeanchor_params"][("Default", 0)]
