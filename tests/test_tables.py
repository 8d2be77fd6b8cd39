"""Uncertainty in the study tables: Student t intervals over seeds, the bold rule, and differences to a
baseline (paired over seeds, and a paired bootstrap over val images) in md, LaTeX, CSV and HTML; the
per-row figures under the table (GTs without a positive anchor, time per run)."""
from __future__ import annotations

import json
import math
import statistics

import pandas as pd
import pytest
from scipy import stats as scipy_stats

from ablation.study.expand import expand, load_study
from ablation.tables.build import build_table
from ablation.tables.render import render
from ablation.tables.stats import mean_interval, paired_interval, t_quantile
from ablation.tracking.reader import runs_frame
from tests.test_study import _fake_run, empty_store, with_store, write_study  # noqa: F401 (a fixture)

ROWS = [{"label": "Base", "overrides": {"assign.name": "max_iou"}},
        {"label": "Better", "overrides": {"assign.name": "atss"}},
        {"label": "Same", "overrides": {"assign.name": "atss", "assign.atss.topk": 3}},
        {"label": "Lone", "overrides": {"assign.name": "atss", "assign.atss.topk": 5}}]


# ---------------------------------------------------------------- Student t
def test_t_quantile_matches_scipy():
    for df in [*range(1, 201), 500, 1000]:
        for p in (0.975, 0.95, 0.995, 0.9, 0.5):
            assert t_quantile(p, df) == pytest.approx(scipy_stats.t.ppf(p, df), rel=1e-12, abs=1e-12), (p, df)
    with pytest.raises(ValueError, match="df"):
        t_quantile(0.975, 0)


def test_mean_and_paired_intervals_match_scipy():
    values = [31.2, 29.8, 33.1, 30.4]
    got = mean_interval(values)
    low, high = scipy_stats.t.interval(0.95, len(values) - 1, loc=statistics.fmean(values),
                                       scale=statistics.stdev(values) / math.sqrt(len(values)))
    assert (got.low, got.high, got.n) == (pytest.approx(low, abs=1e-12), pytest.approx(high, abs=1e-12), 4)
    one = mean_interval([30.0])
    assert (one.estimate, one.low, one.high, one.half, one.significant) == (30.0, None, None, None, None)
    pair = paired_interval({0: 35.0, 1: 36.2, 2: 37.1, 9: 1.0}, {0: 30.0, 1: 31.0, 2: 32.0, 3: 50.0})  # 9, 3 unpaired
    ref = scipy_stats.ttest_rel([35.0, 36.2, 37.1], [30.0, 31.0, 32.0]).confidence_interval(0.95)
    assert (pair.low, pair.high, pair.n) == (pytest.approx(ref.low, abs=1e-12), pytest.approx(ref.high, abs=1e-12), 3)
    assert pair.significant and paired_interval({0: 1.0}, {1: 2.0}) is None


# ---------------------------------------------------------------- tables from hand-made runs
def frame_of(runs) -> pd.DataFrame:
    """A runs_frame-like DataFrame: (StudyRun, AP or None, status) per run; AP50 = AP + 0.2, AP75 = AP - 0.1."""
    rows = []
    for i, (spec, ap, status) in enumerate(runs):
        row = {"run_id": f"run{i}", "experiment_id": "1", "run_name": spec.run_name, "status": status,
               "start_time": i, "end_time": i, "tags.run_key": spec.key, "tags.role": "row"}
        if ap is not None:
            row.update({"metrics.val/AP": ap, "metrics.val/AP50": ap + 0.2, "metrics.val/AP75": ap - 0.1})
        rows.append(row)
    return pd.DataFrame(rows)


def test_single_seed_says_so_instead_of_an_interval(tmp_path):
    study = load_study(write_study(tmp_path, rows=ROWS[:2], baseline="Base"))
    base, better = expand(study, "smoke")
    table = build_table(study, "smoke", frame_of([(base, 0.30, "FINISHED"), (better, 0.40, "FINISHED")]))
    md = render(table, "md")
    assert "| Method | AP | AP50 | AP75 | ΔAP vs Base | 95% CI seeds | 95% CI images |" in md
    assert "| Base | 30.0† | 50.0† | 20.0† | baseline |  |  |" in md
    assert "| Better | 40.0† | 60.0† | 30.0† | +10.0 | 1 paired seed | no per-image data |" in md
    assert "† 1 seed: no interval" in md and "±" not in md and "**" not in md.split("\n", 1)[1]
    assert "no bold in AP, AP50, AP75: the best and the runner-up share fewer than 2 finished seeds" in md
    latex = render(table, "latex")
    assert r"40.0$^\dagger$ & 60.0$^\dagger$" in latex and r"\textbf" not in latex
    csv_lines = render(table, "csv").splitlines()
    assert csv_lines[0] == ("table,group,label,status,seeds_done,seeds_total,AP,AP_ci95,AP_n,AP_best,AP50,AP50_ci95,"
                            "AP50_n,AP50_best,AP75,AP75_ci95,AP75_n,AP75_best,AP_vs_baseline,AP_vs_baseline_seeds_low,"
                            "AP_vs_baseline_seeds_high,AP_vs_baseline_seeds_n,AP_vs_baseline_seeds_significant,"
                            "AP_vs_baseline_images_low,AP_vs_baseline_images_high,AP_vs_baseline_images_n,"
                            "AP_vs_baseline_images_significant,AP_vs_baseline_note,gt_without_pos_pct,minutes_per_run")
    assert csv_lines[1] == ",,Base,done,1,1,30.00,,1,0,50.00,,1,0,20.00,,1,0,,,,,,,,,,baseline,,"
    assert csv_lines[2] == (",,Better,done,1,1,40.00,,1,0,60.00,,1,0,30.00,,1,0,10.00,,,1,,,,0,,"
                            "1 paired seed; no per-image data,,")
    assert "<td>40.0†</td>" in render(table, "html")
    # no run has the share of GTs without a positive anchor, nor a start before its end: no such lines
    assert "GTs without a positive anchor" not in md and "Time per run" not in md


def test_best_not_significantly_above_the_runner_up_is_not_bold(tmp_path):
    study = load_study(write_study(tmp_path, rows=ROWS[:2], seeds=[0, 1]))
    b0, b1, o0, o1 = expand(study, "smoke")
    table = build_table(study, "smoke", frame_of([(b0, 0.300, "FINISHED"), (b1, 0.310, "FINISHED"),
                                                  (o0, 0.305, "FINISHED"), (o1, 0.312, "FINISHED")]))
    md = render(table, "md")
    # differences 0.5 and 0.2: 0.35 +- t(0.975, 1) * 0.212 / sqrt(2) = [-1.56, +2.26] contains 0
    assert "| Better | 30.9 ± 4.4 | 50.9 ± 4.4 | 20.9 ± 4.4 |" in md and "**" not in md.split("\n", 1)[1]
    assert ("no bold in AP, AP50, AP75: the best is not significantly above the runner-up (paired t over seeds, 95%)"
            in md)
    assert "ΔAP vs" not in md and "AP_vs_baseline" not in render(table, "csv")  # no baseline: no difference columns


def test_paired_seeds_significance_and_bold_from_a_real_store(tmp_path, empty_store):
    from mlflow import MlflowClient

    ws = tmp_path / "ws"
    ws.mkdir()
    uri = with_store(ws, empty_store)
    study = load_study(write_study(tmp_path, rows=ROWS, seeds=[0, 1, 2], baseline="Base"))
    by = {(s.label, s.seed): s for s in expand(study, "smoke")}
    client = MlflowClient(uri)
    exp_id = client.create_experiment(study.name, artifact_location=(tmp_path / "artifacts").as_uri())
    aps = {"Base": [0.300, 0.310, 0.320], "Better": [0.350, 0.362, 0.371], "Same": [0.305, 0.305, 0.330]}
    for label, values in aps.items():
        for seed, ap in enumerate(values):
            _fake_run(client, exp_id, by[label, seed], "FINISHED", ap)
    _fake_run(client, exp_id, by["Lone", 0], "FINISHED", 0.29)
    _fake_run(client, exp_id, by["Lone", 1], "FAILED", reason="diverged at iteration 3")
    table = build_table(study, "smoke", runs_frame(uri, study.name, "tags.role = 'row'"))

    t2 = scipy_stats.t.ppf(0.975, 2)  # the intervals below, by hand
    assert round(t2 * 1.0 / math.sqrt(3), 1) == 2.5 and round(t2 * math.sqrt(1.11) / math.sqrt(3), 1) == 2.6
    assert round(5.1 - t2 * 0.1 / math.sqrt(3), 1) == 4.9 and round(5.1 + t2 * 0.1 / math.sqrt(3), 1) == 5.3
    same_half = t2 * statistics.stdev([0.5, -0.5, 1.0]) / math.sqrt(3)
    assert (round(1 / 3 - same_half, 1), round(1 / 3 + same_half, 1)) == (-1.6, 2.2)
    md = render(table, "md")
    assert "| Base | 31.0 ± 2.5 | 51.0 ± 2.5 | 21.0 ± 2.5 | baseline |  |  |" in md
    # Better is significantly above the runner-up (Same: differences 4.5, 5.7, 4.1) in every column
    assert ("| Better | **36.1 ± 2.6** | **56.1 ± 2.6** | **26.1 ± 2.6** | +5.1 | [+4.9, +5.3] | no per-image data |"
            in md)
    assert "| Same | 31.3 ± 3.6 | 51.3 ± 3.6 | 21.3 ± 3.6 | +0.3 | [-1.6, +2.2] n.s. | no per-image data |" in md
    assert "| Lone | 29.0*† | 49.0*† | 19.0*† | -1.0 | 1 paired seed | no per-image data |" in md
    assert "no bold" not in md and "n.s.: the 95% interval contains 0" in md
    latex = render(table, "latex")
    assert r"\textbf{36.1 $\pm$ 2.6}" in latex and r"+5.1 & [+4.9, +5.3] & no per-image data \\" in latex
    assert r"$\Delta$AP vs Base & 95\% CI seeds & 95\% CI images \\" in latex and "[-1.6, +2.2] n.s." in latex
    html = render(table, "html")
    assert "<td><b>36.1 ± 2.6</b></td>" in html and "<td>[-1.6, +2.2] n.s.</td>" in html
    csv_lines = {line.split(",")[2]: line for line in render(table, "csv").splitlines()[1:]}
    # the last two columns (GTs without a positive anchor, minutes per run): none and the runs' few milliseconds
    assert (",36.10,2.62,3,1,56.10,2.62,3,1,26.10,2.62,3,1,5.10,4.85,5.35,3,1,,,0,,no per-image data,,"
            in csv_lines["Better"])
    assert ",0.33,-1.56,2.23,3,0,,,0,,no per-image data,," in csv_lines["Same"]
    assert ",Lone,partial,1,3,29.00,,1,0," in csv_lines["Lone"]


# ---------------------------------------------------------------- figures per row under the table
T0 = 1_700_000_000_000  # ms


def _timed_run(client, exp_id, spec, start_s, minutes, share=None, tags=None, run_s=None):
    """A FINISHED run that started `start_s` after T0 and ended `minutes` later; `share`: its GTs without a positive
    anchor (None: a run from before that metric); `run_s`: its logged time over its processes (None: from before)."""
    from ablation.tables.build import GT_WITHOUT_POS_METRIC
    from detector.engine.diagnostics import RUN_SECONDS

    start = T0 + int(start_s * 1000)
    run_id = client.create_run(exp_id, start_time=start, run_name=spec.run_name,
                               tags={"role": "row", "run_key": spec.key, **(tags or {})}).info.run_id
    client.log_metric(run_id, "val/AP", 0.3)
    if share is not None:
        client.log_metric(run_id, GT_WITHOUT_POS_METRIC, share)
    if run_s is not None:
        client.log_metric(run_id, RUN_SECONDS, run_s)
    client.set_terminated(run_id, "FINISHED", end_time=start + round(minutes * 60_000))
    return run_id


def test_gts_without_a_positive_anchor_and_time_per_run_under_the_table(tmp_path, empty_store):
    from mlflow import MlflowClient

    ws = tmp_path / "ws"
    ws.mkdir()
    uri = with_store(ws, empty_store)
    study = load_study(write_study(tmp_path, rows=ROWS[:2], seeds=[0, 1]))
    by = {(s.label, s.seed): s for s in expand(study, "smoke")}
    client = MlflowClient(uri)
    exp_id = client.create_experiment(study.name, artifact_location=(tmp_path / "artifacts").as_uri())
    _timed_run(client, exp_id, by["Base", 0], 0, 4.0, share=0.020)
    # killed and resumed: 5.2 min from start to end, of which 4.4 min computing (its RUN_SECONDS)
    _timed_run(client, exp_id, by["Base", 1], 600, 5.2, share=0.022, run_s=4.4 * 60)
    _timed_run(client, exp_id, by["Better", 0], 1200, 3.0)  # an older run: no share logged
    source = _timed_run(client, client.create_experiment("elsewhere", artifact_location=(tmp_path / "artifacts").as_uri()), by["Better", 1], 1800, 9.0)
    # seed 1 of Better reuses a run of another study: its link took no training time here, so it is not timed
    _timed_run(client, exp_id, by["Better", 1], 2400, 0.1, tags={"reused_from": source})
    table = build_table(study, "smoke", runs_frame(uri, study.name, "tags.role = 'row'"))

    gts = "GTs without a positive anchor (%): Base 2.1"  # (2.0% + 2.2%) / 2; Better's runs lack the metric
    times = "Time per run (min): Base 4.2, Better 3.0"  # (4.0 + 4.4) / 2; Better: its one run that trained here
    md = render(table, "md")
    assert md.endswith(f"\n{gts}  \n{times}\n")  # md notes end in two spaces (a line break), but the last
    latex_gts = gts.replace("%", r"\%")
    assert f"\n% {latex_gts}\n% {times}\n" in render(table, "latex")
    assert f"<p>{gts}</p>\n<p>{times}</p>" in render(table, "html")
    csv_lines = render(table, "csv").splitlines()  # the figures' numbers in the last two columns
    assert csv_lines[0].endswith(",AP75_best,gt_without_pos_pct,minutes_per_run")
    assert csv_lines[1:] == [",,Base,done,2,2,30.00,0.00,2,0,,,0,0,,,0,0,2.10,4.20",
                             ",,Better,done,2,2,30.00,0.00,2,0,,,0,0,,,0,0,,3.00"]


# ---------------------------------------------------------------- the bootstrap, end to end
def _run_with_detections(client, exp_id, spec, gt_path, dets, folder, tags=None):
    """A FINISHED run whose val/AP is the detections' own and which keeps them as eval/detections.json."""
    from detector.evaluation.coco_eval import evaluate_detections

    run_id = client.create_run(exp_id, tags={"role": "row", "run_key": spec.key, **(tags or {})}).info.run_id
    client.log_metric(run_id, "val/AP", evaluate_detections(gt_path, dets)["AP"])
    if dets is not None:
        path = folder / run_id / "detections.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(dets))
        client.log_artifact(run_id, str(path), "eval")
    client.set_terminated(run_id, "FINISHED")
    return run_id


def test_bootstrap_over_val_images_from_run_artifacts(tmp_path, workspace, empty_store):
    from mlflow import MlflowClient

    from ablation.execution.launcher import per_image_matches, study_table
    from ablation.tracking.reader import run_detections
    from detector.data.build import dataset_paths
    from tests.test_coco_eval import noisy_detections, perfect_detections

    uri = with_store(workspace, empty_store)
    study = load_study(write_study(tmp_path, rows=ROWS, baseline="Base"))
    specs = {s.label: s for s in expand(study, "smoke")}
    gt_path = dataset_paths(specs["Base"].config, workspace)["val_json"]
    gt = json.loads(gt_path.read_text())
    noisy = noisy_detections(gt, seed=0, false_per_image=3)
    client = MlflowClient(uri)
    exp_id = client.create_experiment(study.name, artifact_location=(tmp_path / "artifacts").as_uri())
    base = _run_with_detections(client, exp_id, specs["Base"], gt_path, noisy, tmp_path)
    source = _run_with_detections(client, client.create_experiment("elsewhere", artifact_location=(tmp_path / "artifacts").as_uri()), specs["Same"], gt_path, noisy, tmp_path)
    link = client.create_run(exp_id, tags={"role": "row", "run_key": specs["Same"].key, "reused_from": source})
    client.log_metric(link.info.run_id, "val/AP", client.get_run(source).data.metrics["val/AP"])
    client.set_terminated(link.info.run_id, "FINISHED")
    better = _run_with_detections(client, exp_id, specs["Better"], gt_path, perfect_detections(gt), tmp_path)
    _fake_run(client, exp_id, specs["Lone"], "FINISHED", 0.2)  # no detections kept

    assert run_detections(uri, link.info.run_id) == noisy and run_detections(uri, base) == noisy
    frame = runs_frame(uri, study.name, "tags.role = 'row'")
    assert set(per_image_matches(study, "smoke", frame, uri, workspace)) == {base, link.info.run_id, better}
    md = study_table(study, "smoke", workspace=workspace, tracking_uri=uri)
    rows = {line.split(" | ")[0][2:]: line.split(" | ")[4:] for line in md.splitlines() if line.startswith("| ")}
    assert rows["Base"] == ["baseline", "", " |"]
    assert rows["Same"] == ["+0.0", "1 paired seed", "[+0.0, +0.0] n.s. |"]  # the same detections: exactly 0
    better_low = float(rows["Better"][2].split(",")[0][1:])
    assert rows["Better"][1] == "1 paired seed" and better_low > 0 and "n.s." not in rows["Better"][2]
    assert rows["Lone"][2] == "no per-image data |"
    assert "paired bootstrap over the val images (1000 resamples" in md
