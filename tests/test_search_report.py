"""`anchorlab search report` and the search figures, over real Optuna journal studies whose trials are added
directly (`study.add_trial`): nothing trains here. One test makes a real MLflow SQLite store with a parent
run and rerun children, and checks that the report reads the reruns and is logged to the parent.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial
from typer.testing import CliRunner

from ablation.search import storage as st
from ablation.search.spec import Objective, Param, PrunerSpec, SamplerSpec, Search
from ablation.study.load import Profile
from ablation.tracking.store import store_exists
from dashboards.search_figures import draw_search_figures, param_importances
from dashboards.search_report import NoTrials, build_report, load_study

PARAMS = [Param("lr", "train.base_lr", "float", 1e-3, 1e-2, log=True),
          Param("topk", "assign.atss.topk", "int", 3, 19, step=2)]
DISTS = {"lr": FloatDistribution(1e-3, 1e-2, log=True), "topk": IntDistribution(3, 19, step=2)}
TWO = [Objective("AP", "maximize"), Objective("time/step_s", "minimize")]


def _search(tmp_path: Path, name: str, objectives: list[Objective] | None = None) -> Search:
    objectives = objectives or [Objective("AP", "maximize")]
    pruner = PrunerSpec("none" if len(objectives) == 2 else "median")
    return Search(tmp_path / f"{name}.yaml", name, "a report test", {}, "inline", {}, {},
                  {"smoke": Profile("smoke", 0, {}, {}, seeds=[0, 1])}, PARAMS, objectives,
                  SamplerSpec("random", 0), pruner, trials=6)


def _study(ws: Path, search: Search):
    storage = st.open_search_storage(st.default_location(ws, search.name, "smoke"))
    return st.open_study(storage, f"{search.name}:smoke", [o.direction for o in search.objectives])[0]


def _complete(study, lr: float, topk: int, ap: float, step_s: float | None = None, steps=(10, 20)):
    values = [ap] if step_s is None else [ap, step_s]
    inter = {} if step_s is not None else {s: ap * s / steps[-1] for s in steps}
    study.add_trial(create_trial(params={"lr": lr, "topk": topk}, distributions=DISTS, values=values,
                                 intermediate_values=inter, user_attrs={"outcome": "FINISHED", "step": steps[-1]},
                                 state=TrialState.COMPLETE))


def _pruned(study, lr: float, topk: int, reported: dict[int, float]):
    study.add_trial(create_trial(params={"lr": lr, "topk": topk}, distributions=DISTS,
                                 value=reported[max(reported)], intermediate_values=reported,
                                 user_attrs={"outcome": "PRUNED", "step": max(reported)}, state=TrialState.PRUNED))


def _failed(study, lr: float, topk: int):
    study.add_trial(create_trial(params={"lr": lr, "topk": topk}, distributions=DISTS, state=TrialState.FAIL,
                                 user_attrs={"outcome": "FAILED", "reason": "diverged"}))


def _single(tmp_path: Path, name: str = "s_report"):
    ws = tmp_path / "ws"
    search = _search(tmp_path, name)
    study = _study(ws, search)
    _complete(study, 0.002, 9, 0.30)   # trial 0
    _complete(study, 0.005, 5, 0.42)   # trial 1: the best
    _pruned(study, 0.009, 17, {10: 0.05})  # trial 2
    _complete(study, 0.001, 13, 0.25)  # trial 3
    _pruned(study, 0.008, 19, {10: 0.08, 20: 0.09})  # trial 4: stopped later
    _failed(study, 0.003, 3)           # trial 5
    _complete(study, 0.004, 7, 0.38)   # trial 6
    return ws, search, study


def _png(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 1000 and path.read_bytes()[:4] == b"\x89PNG"


def test_figures_and_report_of_a_single_objective_search(tmp_path):
    ws, search, study = _single(tmp_path)
    study, location = load_study(search, "smoke", workspace=ws)
    report = build_report(search, "smoke", study, location, workspace=ws)
    out = ws / "search" / "s_report-smoke"
    assert report.out_dir == out and report.report_file == out / "report.md" and report.report_file.is_file()
    assert set(report.figures) == {"history", "importances", "parallel", "slice", "intermediate"}
    assert all(_png(p) and p.parent == out for p in report.figures.values())
    assert set(report.skipped) == {"pareto"} and "single-objective" in report.skipped["pareto"]
    md = report.markdown
    assert md == report.report_file.read_text()
    assert "4 complete, 2 pruned, 1 failed" in md
    assert "- complete trials trained 20 iterations on average (4 trials)" in md
    assert "- pruned trials trained 15 iterations on average (2 trials)" in md
    best_row = next(line for line in md.splitlines() if line.startswith("| 1 |"))
    assert best_row == "| 1 | COMPLETE | 0.005 | 5 | 0.42 |"
    rows = [line for line in md.splitlines() if line.startswith("| ") and "COMPLETE" in line]
    assert [r.split("|")[1].strip() for r in rows] == ["1", "6", "0", "3"]  # best first
    ranking = md.split("## Parameter importances (fANOVA)")[1].split("##")[0]
    assert "1. " in ranking and "2. " in ranking and "lr" in ranking and "topk" in ranking
    assert "without one trial)" in ranking and "of the 4 complete trials" in ranking  # the spread, 4 complete
    assert sum(report.importances["AP"].values()) == pytest.approx(1.0)
    assert "no MLflow parent run" in md and not report.logged
    assert not store_exists(f"sqlite:///{ws}/mlflow.db")  # reading the report creates no store
    assert "## Reruns" not in md
    # the same study gives the same ranking (seeded evaluator)
    assert param_importances(study, search)[0] == report.importances


def test_importances_skip_with_a_reason(tmp_path):
    ws = tmp_path / "ws"
    search = _search(tmp_path, "s_one")
    study = _study(ws, search)
    _complete(study, 0.002, 9, 0.30)
    _pruned(study, 0.009, 17, {10: 0.05})
    figures, skipped = draw_search_figures(study, search, tmp_path / "out")
    assert "needs >= 2 complete trials" in skipped["importances"] and "has 1" in skipped["importances"]
    assert {"history", "parallel", "slice", "intermediate"} <= set(figures) and "importances" not in figures
    assert all(_png(p) for p in figures.values())

    search2 = _search(tmp_path, "s_flat")
    flat = _study(ws, search2)
    for lr, ap in ((0.002, 0.3), (0.004, 0.35), (0.008, 0.2)):
        _complete(flat, lr, 9, ap)  # topk never varies
    importances, why = param_importances(flat, search2)
    assert importances == {} and "2 parameters that vary" in why and "(lr)" in why


def test_pareto_front_only_for_two_objectives(tmp_path):
    ws = tmp_path / "ws"
    search = _search(tmp_path, "s_two", TWO)
    study = _study(ws, search)
    for lr, topk, ap, step_s in ((0.002, 9, 0.30, 0.5), (0.005, 5, 0.42, 0.9), (0.009, 17, 0.20, 0.3),
                                 (0.004, 13, 0.28, 0.8)):
        _complete(study, lr, topk, ap, step_s)
    study, location = load_study(search, "smoke", workspace=ws)
    report = build_report(search, "smoke", study, location, workspace=ws)
    assert "pareto" in report.figures and _png(report.figures["pareto"])
    assert {"history", "importances", "parallel", "slice"} <= set(report.figures)
    assert "two-objective" in report.skipped["intermediate"]
    assert set(report.importances) == {"AP", "time/step_s"}
    md = report.markdown
    assert "## Pareto front" in md and "| trial | state | lr | topk | AP | time/step_s |" in md
    front = [line.split("|")[1].strip() for line in md.splitlines() if "COMPLETE" in line]
    assert sorted(front) == ["0", "1", "2"]  # trial 3 is dominated by trial 0


def _yaml(tmp_path: Path) -> Path:
    path = tmp_path / "search_cli.yaml"
    path.write_text("""\
name: s_cli
description: a tiny search for the report command
base: studies/configs/atss.yaml
profiles:
  smoke:
    configs: [studies/configs/quick.yaml]
    overrides:
      train: {iterations: 20, eval_every: 10}
space:
  lr: {key: train.base_lr, type: float, low: 0.001, high: 0.01, log: true}
  topk: {key: assign.atss.topk, type: int, low: 3, high: 19, step: 2}
objective: AP
sampler: {name: random, seed: 0}
pruner: median
trials: 4
""")
    return path


def test_cli_report_before_and_after_the_search_ran(tmp_path):
    from ablation.search.load import load_search
    from cli import app

    file, ws = _yaml(tmp_path), tmp_path / "ws"
    runner = CliRunner()
    args = ["search", "report", str(file), "--profile", "smoke", "--workspace", str(ws)]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert lines == [f"error: no trials yet: run anchorlab search run {file} --profile smoke"]
    assert not Path(st.default_location(ws, "s_cli", "smoke")).exists()  # the report created no storage
    with pytest.raises(NoTrials):
        load_study(load_search(file), "smoke", workspace=ws)

    study = _study(ws, load_search(file))
    _complete(study, 0.002, 9, 0.30)
    _complete(study, 0.005, 5, 0.42)
    _pruned(study, 0.009, 17, {10: 0.05})
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "# search s_cli [smoke]" in result.output and "2 complete, 1 pruned, 0 failed" in result.output
    assert "| 1 | COMPLETE | 0.005 | 5 | 0.42 |" in result.output
    out = ws / "search" / "s_cli-smoke"
    assert f"wrote {out / 'report.md'}" in result.output and f"wrote {out / 'history.png'}" in result.output

    custom = tmp_path / "elsewhere"
    result = runner.invoke(app, args + ["--out", str(custom)])
    assert result.exit_code == 0 and (custom / "report.md").is_file() and _png(custom / "slice.png")


def test_cli_dashboard_without_the_extra(tmp_path, monkeypatch):
    import importlib.util
    import shutil

    from cli import app

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "optuna_dashboard" else real(name, *a))
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)
    result = CliRunner().invoke(app, ["search", "dashboard", str(_yaml(tmp_path)), "--profile", "smoke",
                                      "--workspace", str(tmp_path / "ws")])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "optuna-dashboard is an optional extra and is not installed: pip install optuna-dashboard"]


def test_report_reads_reruns_and_is_logged_to_the_parent(tmp_path):
    from mlflow import MlflowClient

    from ablation.tracking import writer
    from ablation.search.rerun import RERUN_JSON, Candidate, RerunResult, to_dict
    from ablation.tracking.store import ensure_store

    ws, search, study = _single(tmp_path, "s_logged")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    ensure_store(uri)
    parent = writer.create_parent(uri, ws, search.name, "s_logged [smoke]",
                                  {"role": "search", "search": search.name, "profile": "smoke"})
    study.set_user_attr("parent_run_id", parent)
    client = MlflowClient(uri)
    # what `search run` stores on the parent after its reruns (`rerun.RERUN_JSON`), here in another order
    aps = [("trial 6", 6, {"lr": 0.002, "topk": 7}, 38.0, [37.0, 39.0]), ("default", None, {}, None, [30.0, 31.0]),
           ("trial 1", 1, {"lr": 0.005, "topk": 5}, 42.0, [40.0, 44.0])]  # AP in percent
    stored = RerunResult("AP", True, [Candidate(label, trial, values, sv, dict(enumerate(v)))
                                      for label, trial, values, sv, v in aps])
    writer.log_text(uri, parent, json.dumps(to_dict(stored)), RERUN_JSON.format(profile="smoke"))

    study, location = load_study(search, "smoke", workspace=ws)
    report = build_report(search, "smoke", study, location, workspace=ws, tracking_uri=uri)
    assert report.parent_run_id == parent and report.logged
    rerun = report.rerun
    assert [c.label for c in rerun.candidates] == ["trial 1", "trial 6", "default"]
    best = rerun.candidates[0]
    assert best.values == {"lr": 0.005, "topk": 5} and best.search_value == pytest.approx(42.0)
    assert best.interval.estimate == pytest.approx(42.0) and best.interval.half is not None
    assert math.isfinite(rerun.vs_default.estimate) and rerun.vs_default.estimate == pytest.approx(11.5)
    md = report.markdown
    assert "## Reruns (2 seeds per candidate)" in md and "| trial 1 | 0.005 | 5 | 42.00 |" in md
    assert f"MLflow parent run {parent}" in md

    logged = {f.path for f in client.list_artifacts(parent, "report")}
    assert "report/report.md" in logged and {f"report/{n}.png" for n in report.figures} <= logged
    import mlflow.artifacts

    local = mlflow.artifacts.download_artifacts(run_id=parent, artifact_path="report/report.md",
                                                dst_path=str(tmp_path / "dl"), tracking_uri=uri)
    assert Path(local).read_text() == md


def test_pruning_saved_counts_each_pruned_trial_at_the_complete_trials_mean_time():
    from ablation.search.run import SearchResult, TrialRecord
    from dashboards.search_report import pruning_saved

    def rec(n, state, wall, reused=None):
        return TrialRecord(n, state, {}, [1.0], f"r{n}", wall_s=wall, reused_from=reused)

    trials = [rec(0, "COMPLETE", 300.0), rec(1, "COMPLETE", 340.0), rec(2, "PRUNED", 100.0),
              rec(3, "PRUNED", 400.0), rec(4, "COMPLETE", None, reused="x"), rec(5, "PRUNED", 50.0, reused="y")]
    result = SearchResult("s", "smoke", "s:smoke", "j", "p", "u", 6, trials, [])
    saved, took, n = pruning_saved(result)
    assert (saved, took, n) == (220.0, 1140.0, 2)  # 320 - 100, and a pruned trial slower than the mean saves 0
    assert pruning_saved(SearchResult("s", "smoke", "s:smoke", "j", "p", "u", 2, trials[:2], [])) is None


def test_importance_spread_says_whether_the_order_holds(tmp_path):
    """fANOVA again without each complete trial: one clear driver holds first place; two parameters that each
    owe their importance to a single trial are 'unsettled'; too few trials give no spread."""
    from dashboards.importance_spread import importance_spread, spread_lines

    ws = tmp_path / "ws"
    clear_search = _search(tmp_path, "s_clear")
    clear = _study(ws, clear_search)
    for i, topk in enumerate((3, 5, 7, 9, 11, 13, 15, 17)):  # AP follows topk; lr wanders
        _complete(clear, 0.001 * (1 + (i * 3) % 8), topk, 0.1 + 0.02 * topk)
    spread = importance_spread(clear, clear_search, ["lr", "topk"])["AP"]
    assert spread.n == 8 and spread.holds and spread.leaders == ["topk"]
    assert 0.5 < spread.ranges["topk"][0] <= spread.ranges["topk"][1] <= 1.0
    lines = spread_lines(param_importances(clear, clear_search)[0]["AP"], spread)
    assert lines[0].startswith("1. topk ") and lines[0].endswith("without one trial)")
    assert lines[-1] == "topk comes first whichever of the 8 complete trials is left out."

    odd_search = _search(tmp_path, "s_odd")
    odd = _study(ws, odd_search)
    for lr, topk, ap in ((0.001, 9, 0.30), (0.0012, 11, 0.31), (0.0011, 7, 0.30), (0.0013, 9, 0.29),
                         (0.009, 9, 0.50), (0.0012, 19, 0.50)):  # one high-lr and one high-topk trial carry it
        _complete(odd, lr, topk, ap)
    spread = importance_spread(odd, odd_search, ["lr", "topk"])["AP"]
    assert not spread.holds and set(spread.leaders) == {"lr", "topk"}
    assert spread_lines(param_importances(odd, odd_search)[0]["AP"], spread)[-1].startswith("Unsettled: ")

    few_search = _search(tmp_path, "s_few")
    few = _study(ws, few_search)
    for lr, topk, ap in ((0.001, 3, 0.1), (0.002, 5, 0.2), (0.004, 9, 0.3)):
        _complete(few, lr, topk, ap)
    assert importance_spread(few, few_search, ["lr", "topk"]) is None
    assert spread_lines({"lr": 0.7, "topk": 0.3}, None) == ["1. lr 0.700", "2. topk 0.300"]
