"""`anchorlab study run` as real processes on a real MLflow SQLite store: kills, two launchers, bad files, divergence.

Each run is the TINY config (96 px synthetic images) for ITERS iterations: a few seconds. What is
checked is what a user relies on: after any crash, the same command finishes the study with every
finished run kept, none trained twice, and interrupted ones resumed in the same MLflow run.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from ablation.execution.launcher import RunnerSettings, plan
from ablation.execution.queue import WorkQueue, default_storage
from ablation.study.expand import expand, load_study
from ablation.tracking.reader import runs_frame, study_runs
from tests.conftest import data_workspace
from tests.test_study import empty_store, with_store, write_study  # noqa: F401 (fixture)

REPO = Path(__file__).resolve().parents[1]
ITERS = 100
PROFILE = {"overrides": {"train.iterations": ITERS, "train.checkpoint_every": 10}}
ROWS = [
    {"label": "Max IoU", "overrides": {"assign.name": "max_iou"}},
    {"label": "ATSS", "overrides": {"assign.name": "atss"}},
    {"label": "ATSS (K=5)", "overrides": {"assign.name": "atss", "assign.atss.topk": 5}},
]
DIVERGES = {"label": "Diverges", "overrides": {"assign.name": "atss", "train.base_lr": 1.0e12, "train.warmup_iters": 0},
            "reference": "training failed"}
TIMEOUT_S = 150
B_ITERS = 400  # the row the kill test stops mid-run trains longer: at 100 iterations (a few seconds) it could
# finish between being seen mid-run and the kill, or run before the poll saw it (seen on an idle machine)


def _start(ws: Path, study: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "ANCHORLAB_HOME": str(ws)}
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [sys.executable, "-m", "cli", "study", "run", str(study), "--profile", "smoke", "--heartbeat", "2", *extra]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)  # its own process group: the test can kill launcher + workers


def _finish(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=TIMEOUT_S)
    assert proc.returncode == 0, out
    return out


def _wait_for(predicate, what: str, timeout: float = TIMEOUT_S):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def count_runs(uri: str, experiment: str) -> dict[str, int]:
    """run key -> number of study-row runs (a check that no run was made twice)."""
    return runs_frame(uri, experiment, "tags.role = 'row'")["tags.run_key"].value_counts().to_dict()


def _records(ws: Path, study) -> dict:
    try:
        return study_runs(f"sqlite:///{ws / 'mlflow.db'}", study.name)
    except Exception:  # the store is being written: read again
        return {}


def _mid_run(ws, study, spec, min_iteration=20):
    rec = _records(ws, study).get(spec.key)
    ok = rec is not None and rec.status == "RUNNING" and int(rec.tags.get("checkpoint_iteration", 0)) >= min_iteration
    return rec if ok else None


@pytest.fixture
def setup(tmp_path, synth_data, empty_store):
    """A workspace with the session's synthetic data and (optionally) an initialised store."""
    def make(rows, store=True, profile=PROFILE):
        ws = data_workspace(tmp_path / "ws", synth_data)
        if store:
            with_store(ws, empty_store)
        path = write_study(tmp_path, rows=rows, name="rel", profiles={"smoke": profile})
        return ws, load_study(path)
    return make


def _loss_steps(ws: Path, run_id: str) -> list[int]:
    return [m.step for m in MlflowClient(f"sqlite:///{ws / 'mlflow.db'}").get_metric_history(run_id, "loss")]


def test_kills_at_any_moment_then_the_same_command_finishes(setup):
    # the iterations per row (the profile's override would win over a row's)
    rows = [{**row, "overrides": {**row["overrides"], "train.iterations": B_ITERS if i == 1 else ITERS}}
            for i, row in enumerate(ROWS)]
    ws, study = setup(rows, profile={"overrides": {"train.checkpoint_every": 10}})
    a, b, c = expand(study, "smoke")
    # 1. SIGKILL of launcher and workers during start-up (store, queue, parent run being made).
    proc = _start(ws, study.path)
    time.sleep(6.0)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    # 2. SIGKILL of the launcher alone mid-run: its workers get SIGTERM, end their run KILLED and release it.
    proc = _start(ws, study.path)
    # (The queue's order after step 1 depends on when the kill came: rows 1 and 3 may run before or after row 2.)
    _wait_for(lambda: _mid_run(ws, study, b), "row 2 mid-run")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    try:
        _wait_for(lambda: _records(ws, study)[b.key].status == "KILLED", "the orphaned worker to stop", 60)
    except AssertionError:  # say what the run holds
        rec = _records(ws, study)[b.key]
        raise AssertionError(f"row 2 still {rec.status} 60 s after its launcher died; tags {rec.tags}") from None
    first = _records(ws, study)
    done = [k for k, r in first.items() if r.status == "FINISHED"]  # rows that ran before row 2
    # 3. SIGKILL of everything mid-run of the resumed row: its MLflow run and queue trial stay RUNNING.
    proc = _start(ws, study.path)
    resumed = _wait_for(lambda: (r := _mid_run(ws, study, b, int(first[b.key].tags["checkpoint_iteration"])
                                            + 10)) and int(r.tags.get("start_iteration", 0)) > 0 and r, "resume")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert _records(ws, study)[b.key].status == "RUNNING"
    # 4. The same command: finished runs kept, the interrupted one resumed, the rest run.
    out = _finish(_start(ws, study.path))
    final = _records(ws, study)
    assert count_runs(f"sqlite:///{ws / 'mlflow.db'}", study.name) == {s.key: 1 for s in (a, b, c)}
    assert {k: r.status for k, r in final.items()} == {s.key: "FINISHED" for s in (a, b, c)}
    assert all(final[k].end_time == first[k].end_time for k in done)  # not run again
    assert final[b.key].run_id == first[b.key].run_id  # the same MLflow run, re-opened twice
    assert int(final[b.key].tags["start_iteration"]) >= int(resumed.tags["checkpoint_iteration"]) > 0
    assert max(_loss_steps(ws, final[b.key].run_id)) == B_ITERS
    assert all(_loss_steps(ws, final[k].run_id) == list(range(1, ITERS + 1)) for k in done)
    assert "| Max IoU |" in out and "| ATSS (K=5) |" in out and "pending" not in out


def test_a_killed_worker_is_replaced_within_the_same_command(setup):
    ws, study = setup(ROWS[:2])
    a, b = expand(study, "smoke")
    proc = _start(ws, study.path, "--workers", "2")
    _wait_for(lambda: _mid_run(ws, study, a) and _mid_run(ws, study, b), "both rows mid-run")
    queue = WorkQueue(default_storage(ws, study.name, "smoke"), f"{study.name}.smoke", create=False)
    victim = next(t for t in queue.running() if t.user_attrs["item"]["key"] == b.key)
    killed_at = int(_records(ws, study)[b.key].tags["checkpoint_iteration"])
    os.kill(victim.user_attrs["worker"]["pid"], signal.SIGKILL)
    out = _finish(proc)
    final = _records(ws, study)
    assert "worker" in out and "died" in out
    assert final[b.key].status == "FINISHED" and int(final[b.key].tags["start_iteration"]) >= killed_at
    assert count_runs(f"sqlite:///{ws / 'mlflow.db'}", study.name) == {a.key: 1, b.key: 1}


def test_two_launchers_at_once_run_every_row_exactly_once(setup):
    ws, study = setup(ROWS + [DIVERGES], store=False)  # no store yet: both launchers race to create it
    specs = expand(study, "smoke")
    procs = [_start(ws, study.path), _start(ws, study.path)]
    outs = [_finish(p) for p in procs]
    uri = f"sqlite:///{ws / 'mlflow.db'}"
    assert count_runs(uri, study.name) == {s.key: 1 for s in specs}
    final = _records(ws, study)
    for spec in specs[:3]:
        rec = final[spec.key]
        assert rec.status == "FINISHED" and rec.tags["start_iteration"] == "0"
        assert _loss_steps(ws, rec.run_id) == list(range(1, ITERS + 1))  # trained once, never restarted
    failed = final[specs[3].key]
    assert failed.status == "FAILED" and failed.reason.startswith("diverged at iteration ")
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(study.name)
    parents = client.search_runs([exp.experiment_id], "tags.role = 'study'")
    assert len(parents) == 1 and all(r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
                                     for r in client.search_runs([exp.experiment_id], "tags.role = 'row'"))
    for out in outs:
        assert "| Diverges | training failed |" in out
    # A re-run leaves the failed run failed; only --retry-failed would run it again.
    entries, _ = plan(study, "smoke", ws, uri, RunnerSettings())
    assert [e.state for e in entries] == ["finished"] * 3 + ["failed"]
    assert entries[3].action == f"skip: {failed.reason}"
    assert plan(study, "smoke", ws, uri, RunnerSettings(retry_failed=True))[0][3].action == "retry"


def test_a_malformed_study_is_one_line_and_starts_nothing(tmp_path):
    ws = tmp_path / "ws"
    path = write_study(tmp_path, rows=[{"label": "A", "overrides": {"assign.name": "atss"}},
                                       {"label": "B", "overrides": {"train.iteratons": 5}}])
    proc = _start(ws, path)
    out, _ = proc.communicate(timeout=TIMEOUT_S)
    assert proc.returncode == 2
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if "iteratons" in text)
    assert out.strip() == f"error: {path}:{line}: rows[1].overrides: unknown key 'train.iteratons'; valid keys " \
                          f"here: {out.split('valid keys here: ')[1].strip()}"
    assert not ws.exists() or sorted(p.name for p in ws.iterdir()) == []
    shutil.rmtree(ws, ignore_errors=True)
