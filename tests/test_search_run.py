"""Searches end to end: real Optuna journal storage, real MLflow SQLite store, real (tiny) trainings.

Each trial trains the smoke setting (20 iterations of a tiny ATSS on 96 px synthetic images, evaluated at 10)
in a few seconds; the search is built here (not from a file) so these tests stand alone.
"""
from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
import yaml

from ablation.execution.run import RunSpec, execute
from ablation.processes import HOST
from ablation.search import storage as st
from ablation.search.rerun import format_rerun
from ablation.search.resolve import trial_config
from ablation.search.run import format_result, format_trial, run_search
from ablation.search.space import (SpaceError, build_pruner, build_sampler, decode, encode_choice, grid_space,
                                   suggest)
from ablation.search.spec import Objective, Param, PrunerSpec, RerunSpec, SamplerSpec, Search
from ablation.study.load import Profile
from detector.config import deep_merge, load_yaml
from detector.engine.hooks import TrainHooks
from tests.conftest import TINY

REPO = Path(__file__).resolve().parents[1]
SMOKE = {  # the smoke profile of studies/search_*.yaml, on the session's tiny benchmark (conftest.synth_data)
    "data": {"synth": TINY["data"]["synth"], "min_size": [96], "max_size": 96, "test_min_size": 96},
    "model": {"backbone": {"tiny_width": 8}, "head": {"fpn_width": 16, "width": 16, "num_convs": 1, "gn_groups": 8}},
    "train": {"iterations": 20, "batch_size": 2, "warmup_iters": 5, "checkpoint_every": 10, "eval_every": 10,
              "num_threads": 1},
}
LR = Param("lr", "train.base_lr", "float", 1e-3, 1e-2, log=True)  # continuous: every trial is a new run key


def _search(tmp_path: Path, name: str, trials: int, pruner: PrunerSpec | None = None) -> Search:
    profile = Profile("smoke", 0, deep_merge(load_yaml(REPO / "studies/configs/quick.yaml"), SMOKE), {})
    return Search(tmp_path / f"{name}.yaml", name, "test search", load_yaml(REPO / "studies/configs/atss.yaml"),
                  "atss.yaml", {}, {}, {"smoke": profile}, [LR], [Objective("AP", "maximize")],
                  SamplerSpec("random", 0), pruner or PrunerSpec("none"), trials=trials)


def _study(ws: Path, search: Search):
    storage = st.open_search_storage(st.default_location(ws, search.name, "smoke"))
    return st.open_study(storage, f"{search.name}:smoke", ["maximize"])[0]


def _dead_pid() -> int:
    gone = subprocess.Popen(["true"])
    gone.wait()
    return gone.pid


def _runs(uri: str, experiment: str, role: str):
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], f"tags.role = '{role}'")


# ---------------------------------------------------------------- the space (no training)
def test_space_suggests_encodes_lists_and_builds_samplers_and_pruners():
    import optuna

    params = [Param("lr", "train.base_lr", "float", 1e-4, 1e-2, log=True),
              Param("w", "loss.reg_weight", "float", 0.5, 2.0, step=0.5),
              Param("k", "assign.atss.topk", "int", 3, 15, step=3),
              Param("ratios", "model.anchors.aspect_ratios", "categorical", choices=[[1.0], [0.5, 1.0, 2.0]]),
              Param("opt", "train.optimizer", "categorical", choices=["sgd", "adamw"])]
    study = optuna.create_study(sampler=build_sampler(SamplerSpec("random", 3), params))
    seen = []
    for _ in range(6):
        trial = study.ask()
        values = suggest(trial, params)
        assert 1e-4 <= values["lr"] <= 1e-2 and values["w"] in (0.5, 1.0, 1.5, 2.0) and values["k"] in (3, 6, 9, 12, 15)
        assert values["ratios"] in ([1.0], [0.5, 1.0, 2.0]) and values["opt"] in ("sgd", "adamw")
        assert isinstance(trial.params["ratios"], str)  # stored as its repr, decoded for the config
        assert decode(params, trial.params) == values
        study.tell(trial, 0.0)
        seen.append(values["lr"])
    assert len(set(seen)) == 6
    # a retried trial enqueued with the stored (encoded) params comes back with the same values
    study.enqueue_trial(study.trials[0].params)
    assert suggest(study.ask(), params) == decode(params, study.trials[0].params)
    grid = grid_space(params[1:])
    assert grid["w"] == [0.5, 1.0, 1.5, 2.0] and grid["k"] == [3, 6, 9, 12, 15]
    assert grid["ratios"] == [encode_choice(params[3], c) for c in params[3].choices]
    assert type(build_sampler(SamplerSpec("grid"), params[1:])).__name__ == "GridSampler"
    with pytest.raises(SpaceError, match="finite grid"):
        build_sampler(SamplerSpec("grid"), params)
    assert type(build_sampler(SamplerSpec("tpe", 1), params)).__name__ == "TPESampler"
    assert type(build_pruner(PrunerSpec("none"))).__name__ == "NopPruner"
    assert type(build_pruner(PrunerSpec("median", {"n_startup_trials": 2}))).__name__ == "MedianPruner"
    assert type(build_pruner(PrunerSpec("hyperband"))).__name__ == "HyperbandPruner"
    with pytest.raises(SpaceError, match="pruner median"):
        build_pruner(PrunerSpec("median", {"bogus": 1}))


def test_budget_counts_lower_numbered_live_trials_and_sqlite_storage_is_refused(tmp_path):
    from ablation.execution.queue import QueueError

    study = st.open_study(st.open_search_storage(str(tmp_path / "s.journal")), "s:smoke", ["maximize"])[0]
    done, _, dead, _ = (study.ask() for _ in range(4))
    study.tell(done, 0.5)
    study._storage.set_trial_system_attr(dead._trial_id, st.WORKER, {"host": HOST, "pid": _dead_pid(), "beat": 0.0})
    study.enqueue_trial({})
    # 0 COMPLETE, 1 RUNNING (asked a moment ago), 2 RUNNING (its worker is dead), 3 RUNNING, 4 WAITING
    trials = study.get_trials(deepcopy=False)
    assert [st.counts(t, 60.0) for t in trials] == [True, True, False, True, True]
    assert not st.over_budget(trials, 3, budget=3, grace_s=60.0) and st.over_budget(trials, 4, 3, 60.0)
    assert st.reap(study, 60.0) == [2] and st.reap(study, 60.0) == []  # failed once, enqueued once
    retried = study.get_trials(deepcopy=False)[-1]
    assert retried.state.name == "WAITING" and retried.system_attrs["failed_trial"] == 2
    assert st.WORKER not in retried.system_attrs  # the dead worker's record is not inherited
    with pytest.raises(QueueError, match="SQLite"):
        st.open_search_storage(f"sqlite:///{tmp_path}/o.db")


# ---------------------------------------------------------------- searches
def test_two_workers_run_exactly_the_budget_each_trial_one_child_run(tmp_path, workspace):
    search, uri = _search(tmp_path, "s_workers", trials=4), f"sqlite:///{tmp_path}/mlflow.db"
    events = []
    result = run_search(search, "smoke", workers=2, workspace=workspace, tracking_uri=uri, poll_s=0.5, rerun=False,
                        display=lambda i, kind, data: events.append((i, kind, data)))
    study = _study(workspace, search)
    ran = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(ran) == 4 and len({t.params["lr"] for t in ran}) == 4, [(t.number, t.state) for t in study.trials]
    assert result.counts["complete"] == 4 and result.counts["failed"] == 0 and len(result.best) == 1
    assert sorted(d["number"] for _, kind, d in events if kind == "end") == sorted(t.number for t in ran)
    parents, children = _runs(uri, "s_workers", "search"), _runs(uri, "s_workers", "trial")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == 4 and {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    assert {r.info.run_id for r in children} == {t.user_attrs["run_id"] for t in ran}
    assert len({r.data.tags["run_key"] for r in children}) == 4
    assert {r.data.tags["trial"] for r in children} == {str(t.number) for t in ran}
    assert all(float(r.data.tags["param.lr"]) == float(r.data.params["train.base_lr"]) for r in children)
    assert "4 complete" in format_result(result)


def test_a_pruned_trial_is_pruned_in_optuna_and_in_mlflow_where_it_stopped(tmp_path, workspace, one_thread):
    # AP is at most 100 (percent): a threshold pruner with lower=101 stops every trial at its first evaluation
    search = _search(tmp_path, "s_prune", trials=1, pruner=PrunerSpec("threshold", {"lower": 101.0}))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    result = run_search(search, "smoke", workspace=workspace, tracking_uri=uri, rerun=False)
    (trial,) = _study(workspace, search).trials
    assert trial.state.name == "PRUNED" and list(trial.intermediate_values) == [10]
    assert result.counts == {"complete": 0, "pruned": 1, "failed": 0, "retried": 0, "running": 0, "waiting": 0}
    (record,) = result.trials
    assert record.step == 10 and record.wall_s is not None and result.mean("PRUNED", "step") == 10
    assert format_trial(record, ["AP"]).startswith("trial 0: PRUNED at iteration 10  AP ")
    (run,) = _runs(uri, "s_prune", "trial")
    assert run.info.run_id == record.run_id and run.info.status == "KILLED" and run.data.tags["outcome"] == "PRUNED"
    assert run.data.tags["end_reason"].startswith("pruned at iteration 10")
    assert _runs(uri, "s_prune", "search")[0].info.status == "FINISHED"  # a pruned trial counts toward the budget


class _KilledAt(TrainHooks):
    """A worker killed during training: the run stops at `iteration` (after the checkpoint of 10)."""

    def __init__(self, iteration: int):
        self.iteration = iteration

    def on_iteration(self, iteration, scalars):
        if iteration == self.iteration:
            raise KeyboardInterrupt


def test_a_dead_workers_trial_is_resumed_and_a_search_at_its_budget_starts_nothing(tmp_path, workspace, one_thread):
    search, uri = _search(tmp_path, "s_resume", trials=1), f"sqlite:///{tmp_path}/mlflow.db"
    run_search(search, "smoke", workspace=workspace, tracking_uri=uri, rerun=False)
    study = _study(workspace, search)
    trial = study.ask()  # a worker of a 2-trial search asked trial 1, drew its values, trained 12 iterations ...
    values = suggest(trial, search.space)
    spec = RunSpec(trial_config(search, "smoke", values), "trial 1", "s_resume", study.user_attrs["parent_run_id"],
                   {"role": "trial", "trial": "1"}, reuse=True, resume=True)
    with pytest.raises(KeyboardInterrupt):
        execute(spec, workspace, uri, hooks=_KilledAt(12))
    # ... and was killed: its pid no longer exists
    study._storage.set_trial_system_attr(trial._trial_id, st.WORKER, {"host": HOST, "pid": _dead_pid(),
                                                                       "beat": time.time()})
    assert st.alive(study.trials[1], grace_s=60.0) is False

    result = run_search(search, "smoke", trials=2, workspace=workspace, tracking_uri=uri, rerun=False)
    study = _study(workspace, search)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "FAIL", "COMPLETE"]
    dead, again = study.trials[1:]
    assert dead.user_attrs[st.OUTCOME] == "stale" and again.system_attrs["failed_trial"] == 1
    assert again.params == dead.params and decode(search.space, again.params) == values
    assert result.counts["complete"] == 2 and result.counts["retried"] == 1
    runs = {r.info.run_id: r for r in _runs(uri, "s_resume", "trial")}
    assert len(runs) == 2 and again.user_attrs["run_id"] in runs
    resumed = runs[again.user_attrs["run_id"]]  # the killed run, resumed from its checkpoint: nothing lost
    assert resumed.data.tags["resumed_at"] == "10" and resumed.info.status == "FINISHED"

    result = run_search(search, "smoke", trials=2, workspace=workspace, tracking_uri=uri, rerun=False)  # at its budget
    assert len(_study(workspace, search).trials) == 3 and len(_runs(uri, "s_resume", "trial")) == 2
    assert result.counts["complete"] == 2
    (parent,) = _runs(uri, "s_resume", "search")  # one parent, re-used on every resume
    assert parent.info.status == "FINISHED"


def test_the_best_trials_and_the_default_are_rerun_with_every_seed(tmp_path, workspace, one_thread):
    search, uri = _search(tmp_path, "s_rerun", trials=2), f"sqlite:///{tmp_path}/mlflow.db"
    search.rerun = RerunSpec(top=2, seeds=[0, 1])
    events = []
    result = run_search(search, "smoke", workspace=workspace, tracking_uri=uri,
                        display=lambda worker, kind, data: events.append((kind, data)))
    rr = result.rerun
    assert rr is not None and rr.metric == "AP" and rr.maximize
    assert sorted(c.label for c in rr.candidates) == sorted(["default", *(f"trial {t.number}" for t in result.trials)])
    assert all(sorted(c.by_seed) == [0, 1] and not c.failed for c in rr.candidates)
    # ranked by the mean over seeds, best first; the trials' own seed-0 runs are reused, not trained again
    means = [c.interval.estimate for c in rr.candidates]
    assert means == sorted(means, reverse=True) and rr.best is rr.candidates[0]
    trials = {r.data.tags["trial"]: r for r in _runs(uri, "s_rerun", "trial")}
    for c in rr.candidates:
        if c.trial is not None:
            assert c.by_seed[0] == pytest.approx(trials[str(c.trial)].data.metrics["val/AP"])
    ends = [d for k, d in events if k == "rerun-end"]  # a trial's seed 0 is its own run: nothing trains
    assert sorted((d["candidate"], d["seed"]) for d in ends if not d["trained"]) == \
        sorted((f"trial {t.number}", 0) for t in result.trials)
    reruns = _runs(uri, "s_rerun", "rerun")
    assert len(reruns) == 2 * 3 - 2 and {r.data.tags["seed"] for r in reruns} == {"0", "1"}
    assert rr.vs_runner_up is not None and rr.vs_runner_up.n == 2 and rr.vs_runner_up.estimate >= 0
    text = format_rerun(search, rr)
    assert "best over the seeds: " in text and "vs default" in text and "as a study row:" in text
    assert rr.best_file is not None and rr.best_file.is_file()
    best = yaml.safe_load(rr.best_file.read_text())
    assert (best == {}) if rr.best.label == "default" else (best["train"]["base_lr"] == rr.best.values["lr"])
