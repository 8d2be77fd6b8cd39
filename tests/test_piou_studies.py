"""The Pseudo-IoU paper's study files (studies/piou_*.yaml): every row resolves, under every profile, to the
method, threshold and schedule it stands for, and the runs shared with Table 1 (a) keep its run keys.

(tests/test_study.py loads every shipped study; this checks what the rows mean.)
"""
from __future__ import annotations

from pathlib import Path

import pytest

from ablation.study.expand import expand, load_study
from detector.engine.optim import base_lr

REPO = Path(__file__).resolve().parents[1]
STUDIES = sorted((REPO / "studies").glob("piou_*.yaml"))
PROFILES = ("paper", "quick", "smoke")


def _rule(cfg) -> tuple[str, float | None]:
    """(assign.name, its threshold or scale); the AF-baseline has none."""
    name = cfg.assign.name
    section = getattr(cfg.assign, name)
    return name, getattr(section, "threshold", getattr(section, "scale", None))


def _labels(prefix: str, values) -> dict[str, float]:
    return {f"{prefix} {v}": v for v in values}


# label -> (method, threshold / scale) for every row of each table
RULES = {
    "piou_table1a_thresholds": {"Baseline": ("fcos_inside", None),
                                **{f"T = {t}": ("pseudo_iou", t) for t in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)}},
    "piou_table2_rules": {
        **{k: ("centerness_threshold", v) for k, v in _labels("Centerness", (0.2, 0.25, 0.3, 0.35, 0.4, 0.45)).items()},
        **{k: ("scaled_box", v) for k, v in _labels("S-box", (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)).items()},
        **{k: ("pseudo_iou", v) for k, v in _labels("P-IoU", (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)).items()},
    },
    "piou_table1b_epochs": {f"{m} {e} epochs": r for e in (8, 12, 16, 24)
                            for m, r in (("Baseline", ("fcos_inside", None)), ("Pseudo-IoU", ("pseudo_iou", 0.4)))},
    "piou_table1c_batch": {f"{m} batch {b}": r for b in (4, 6, 8, 16)
                           for m, r in (("Baseline", ("fcos_inside", None)), ("Pseudo-IoU", ("pseudo_iou", 0.4)))},
    "piou_table3_coco": {"AF-Baseline": ("fcos_inside", None), "Pseudo-IoU": ("pseudo_iou", 0.4),
                         "Pseudo-IoU + GIoU": ("pseudo_iou", 0.4),
                         "Pseudo-IoU + GIoU + Centerness": ("pseudo_iou", 0.4)},
}
BASELINES = {"piou_table1a_thresholds": "Baseline", "piou_table2_rules": "P-IoU 0.4",
             "piou_table1b_epochs": "Baseline 8 epochs", "piou_table1c_batch": "Baseline batch 16",
             "piou_table3_coco": "AF-Baseline"}


@pytest.fixture(scope="module")
def studies():
    return {path.stem: load_study(path) for path in STUDIES}


def test_every_piou_study_is_checked_here():
    assert {p.stem for p in STUDIES} == set(RULES)


@pytest.mark.parametrize("name", sorted(RULES))
def test_rows_resolve_to_their_method_and_threshold(studies, name):
    study = studies[name]
    assert study.name == name and study.paper["file"] == "003_dcb47af59b6aec44.txt"
    assert [r.label for r in study.rows] == list(RULES[name])
    assert study.baseline == BASELINES[name]
    assert all(r.reference for r in study.rows), "every row carries the paper's numbers"
    assert set(study.profiles) == set(PROFILES)
    for profile in PROFILES:
        runs = expand(study, profile)
        assert study.warnings[profile] == [], "a profile replaces a row's value"
        assert len(runs) == len(study.rows) * len(study.profiles[profile].seeds or study.seeds)
        for run in runs:
            assert _rule(run.config) == RULES[name][run.label], (profile, run.label)
            if "VOC07_mAP" in study.metrics:
                assert run.config.eval.voc_metric == "11point"
        if profile != "paper":
            assert all(r.config.model.backbone.name == "tiny" for r in runs)
    assert expand(study, "quick")[0].config.data.min_size == [320]


PAPER_ITERS_PER_EPOCH = 16551 / 16  # VOC07+12 trainval at 16 images per batch


def test_table1b_rows_train_their_epochs_in_each_profiles_units(studies):
    """Each row's schedule per profile (`profile_overrides`): the paper's iterations, 100 quick iterations per
    epoch, 1/40 of quick's for smoke; the profiles' own train.iterations never replace them."""
    for profile in PROFILES:
        for run in expand(studies["piou_table1b_epochs"], profile):
            epochs = int(run.label.split()[-2])
            want = {"paper": round(epochs * PAPER_ITERS_PER_EPOCH), "quick": 100 * epochs,
                    "smoke": 100 * epochs // 40}[profile]
            assert abs(run.config.train.iterations - want) <= 1, (profile, run.label)
            assert run.config.train.warmup_iters == {"paper": 500, "quick": 200, "smoke": 5}[profile]


def test_table1c_rows_see_the_same_images_and_scale_the_lr_per_16_images(studies):
    images = {"paper": 8 * 16551, "quick": 6400, "smoke": 160}
    for profile in PROFILES:
        lrs = {}
        for run in expand(studies["piou_table1c_batch"], profile):
            train = run.config.train
            batch = int(run.label.split()[-1])
            assert train.batch_size == batch, (profile, run.label)
            assert abs(train.iterations * batch - images[profile]) <= 5 * batch, (profile, run.label)
            if profile == "quick":
                assert abs(train.warmup_iters * batch - 1600) <= batch
            lrs[batch] = base_lr(train)
        if profile != "paper":
            assert lrs == pytest.approx({4: 0.0015, 6: 0.00225, 8: 0.003, 16: 0.006})


def test_table3_rows_add_giou_then_the_centerness_branch(studies):
    got = {r.label: r.config for r in expand(studies["piou_table3_coco"], "quick") if r.seed == 0}
    want = {  # loss.reg, head aux, centerness-weighted regression, score fusion
        "AF-Baseline": ("iou", "none", False, "none"),
        "Pseudo-IoU": ("iou", "none", False, "none"),
        "Pseudo-IoU + GIoU": ("giou", "none", False, "none"),
        "Pseudo-IoU + GIoU + Centerness": ("giou", "centerness", True, "product"),
    }
    for label, cfg in got.items():
        assert (cfg.loss.reg, cfg.model.head.aux, cfg.loss.reg_centerness_weighted,
                cfg.inference.score_fusion) == want[label], label


def test_runs_shared_with_table1a_keep_its_run_keys(studies):
    """The comments promise reuse: same config, same run key, so a workspace trains them once."""
    t1a = {(r.label, r.seed): r.key for r in expand(studies["piou_table1a_thresholds"], "quick")}
    pairs = [("piou_table1b_epochs", "Baseline 8 epochs", "Baseline"),
             ("piou_table1b_epochs", "Pseudo-IoU 8 epochs", "T = 0.4"),
             ("piou_table1c_batch", "Baseline batch 8", "Baseline"),
             ("piou_table1c_batch", "Pseudo-IoU batch 8", "T = 0.4")]
    pairs += [("piou_table2_rules", f"P-IoU {t}", f"T = {t}") for t in (0.3, 0.4, 0.5, 0.6, 0.7)]
    for name, label, label_1a in pairs:
        keys = {(r.label, r.seed): r.key for r in expand(studies[name], "quick")}
        for seed in (0, 1, 2):
            assert keys[(label, seed)] == t1a[(label_1a, seed)], (name, label)


def test_tables_repeating_table1a_quote_the_same_paper_numbers(studies):
    ref = {r.label: r.reference for r in studies["piou_table1a_thresholds"].rows}
    t2 = {r.label: r.reference for r in studies["piou_table2_rules"].rows}
    for t in (0.3, 0.4, 0.5, 0.6, 0.7):
        assert t2[f"P-IoU {t}"] == ref[f"T = {t}"]
    for name, base, piou in (("piou_table1b_epochs", "Baseline 8 epochs", "Pseudo-IoU 8 epochs"),
                             ("piou_table1c_batch", "Baseline batch 16", "Pseudo-IoU batch 16")):
        rows = {r.label: r.reference for r in studies[name].rows}
        assert (rows[base], rows[piou]) == (ref["Baseline"], ref["T = 0.4"])
    assert t2["P-IoU 0.8"] == {"VOC07_mAP": 13.5}
