"""The several-machines path against a real PostgreSQL server: a study queue (`--queue-storage`) and a search
(`--storage`) shared by two worker processes hand every row or trial to exactly one of them.

The server is the one `.ci/run` starts (`ANCHORLAB_TEST_POSTGRES`, a URL); without it, one is started here with
`.ci/postgres` when PostgreSQL's binaries are on the machine, else these tests are skipped with the reason.
Each test gets a database of its own, dropped afterwards.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest
import yaml

from ablation.execution.queue import WorkQueue
from ablation.study.expand import expand
from tests.conftest import TINY, data_workspace
from tests.test_study import empty_store, write_study  # noqa: F401 (fixture)
from tests.test_study_queue import at_once, check_each_item_claimed_once
from tests.test_study_reliability import _records, count_runs, setup  # noqa: F401 (fixture)

REPO = Path(__file__).resolve().parents[1]
TIMEOUT_S = 300


@pytest.fixture(scope="session")
def pg_server():
    """The URL of a PostgreSQL server's maintenance database (`postgres`)."""
    url = os.environ.get("ANCHORLAB_TEST_POSTGRES")
    if url:
        yield url
        return
    if not (shutil.which("pg_ctl") or list(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))):
        pytest.skip("no PostgreSQL server: set ANCHORLAB_TEST_POSTGRES or install postgresql (.ci/run does both)")
    # Directly under the system's temp folder: as root the server runs as `postgres`, which cannot enter
    # pytest's private (0700) temp folders.
    folder = Path(tempfile.mkdtemp(prefix="anchorlab-pg-"))
    started = subprocess.run(["bash", str(REPO / ".ci/postgres"), "start", str(folder)], capture_output=True,
                             text=True, timeout=120)
    if started.returncode != 0:
        pytest.skip(f"could not start PostgreSQL: {started.stderr.strip()[-300:]}")
    try:
        yield started.stdout.strip()
    finally:
        subprocess.run(["bash", str(REPO / ".ci/postgres"), "stop", str(folder)], timeout=120)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def pg_url(pg_server):
    """A fresh database on the server, dropped after the test."""
    import psycopg

    name = f"anchorlab_{uuid.uuid4().hex[:12]}"
    admin = psycopg.connect(pg_server, autocommit=True)
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")
    try:
        yield pg_server.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


def _env(ws: Path) -> dict:
    env = {**os.environ, "ANCHORLAB_HOME": str(ws), "PYTHONPATH": str(REPO)}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def _cli(ws: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cli", *args], cwd=REPO, env=_env(ws), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _finish(procs: list[subprocess.Popen]) -> list[str]:
    outs = []
    try:
        for proc in procs:
            out, _ = proc.communicate(timeout=TIMEOUT_S)
            assert proc.returncode == 0, out
            outs.append(out)
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, 9)
    return outs


# ---------------------------------------------------------------- opening a fresh database at once
def _open_at_once(url: str, start, out) -> None:
    from ablation.execution.queue import WorkQueue

    start.wait()
    try:
        WorkQueue(url, "race.smoke")
        out.put("ok")
    except Exception as exc:  # noqa: BLE001 (the test reports what failed)
        out.put(f"{type(exc).__name__}: {str(exc).splitlines()[0]}")


def test_processes_opening_a_fresh_database_at_once_all_get_the_queue(pg_url):
    """Each creates Optuna's schema; PostgreSQL refuses all but one `CREATE TYPE`: the others open it again."""
    results = at_once(_open_at_once, (pg_url,), 4)
    assert results == ["ok"] * 4, results


# ---------------------------------------------------------------- the queue alone (no training)
def test_concurrent_claims_on_postgres_hand_each_item_to_exactly_one_process(pg_url):
    check_each_item_claimed_once(pg_url, 2)


# ---------------------------------------------------------------- a study: two launchers, one queue
def test_two_study_launchers_on_a_postgres_queue_run_every_row_exactly_once(setup, pg_url):
    rows = [{"label": "Max IoU", "overrides": {"assign.name": "max_iou"}},
            {"label": "ATSS", "overrides": {"assign.name": "atss"}},
            {"label": "ATSS (K=5)", "overrides": {"assign.name": "atss", "assign.atss.topk": 5}}]
    ws, study = setup(rows)
    specs = expand(study, "smoke")
    args = ["study", "run", str(study.path), "--profile", "smoke", "--heartbeat", "2", "--queue-storage", pg_url]
    _finish([_cli(ws, *args), _cli(ws, *args)])
    assert count_runs(f"sqlite:///{ws / 'mlflow.db'}", study.name) == {s.key: 1 for s in specs}
    assert {k: r.status for k, r in _records(ws, study).items()} == {s.key: "FINISHED" for s in specs}
    # the queue is on the database, not in the workspace
    assert not list((ws / "queue").glob("*.journal")) if (ws / "queue").exists() else True
    from optuna.trial import TrialState

    trials = WorkQueue(pg_url, f"{study.name}.smoke", create=False).study.get_trials(states=(TrialState.COMPLETE,))
    assert sorted(t.user_attrs["item"]["key"] for t in trials) == sorted(s.key for s in specs)


# ---------------------------------------------------------------- a search: two processes, one storage
SEARCH = {
    "name": "pg_search",
    "description": "ATSS learning rate on the tiny benchmark, two processes on one PostgreSQL storage",
    "base": str(REPO / "studies/configs/atss.yaml"),
    "profiles": {"smoke": {
        "description": "seconds per trial",
        "configs": [str(REPO / "studies/configs/quick.yaml")],
        "overrides": {
            "data": {"synth": TINY["data"]["synth"], "min_size": [96], "max_size": 96, "test_min_size": 96},
            "model": {"backbone": {"tiny_width": 8},
                      "head": {"fpn_width": 16, "width": 16, "num_convs": 1, "gn_groups": 8}},
            "train": {"iterations": 20, "batch_size": 2, "warmup_iters": 5, "checkpoint_every": 10,
                      "eval_every": 10, "num_threads": 1}}}},
    "space": {"lr": {"key": "train.base_lr", "type": "float", "low": 1e-3, "high": 1e-2, "log": True}},
    "objective": "AP",
    "sampler": {"name": "random", "seed": 0},
    "pruner": {"name": "none"},
    "trials": 4,
    "seed": 0,
}


def test_two_search_processes_on_postgres_run_the_budget_each_trial_once(tmp_path, synth_data, pg_url):
    from mlflow import MlflowClient
    import optuna

    ws = data_workspace(tmp_path / "ws", synth_data)
    path = tmp_path / "pg_search.yaml"
    path.write_text(yaml.safe_dump(SEARCH, sort_keys=False))
    args = ["search", "run", str(path), "--profile", "smoke", "--storage", pg_url, "--no-rerun"]
    outs = _finish([_cli(ws, *args), _cli(ws, *args)])
    study = optuna.load_study(study_name="pg_search:smoke", storage=pg_url)
    ran = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(ran) == 4 and len({t.params["lr"] for t in ran}) == 4, [(t.number, t.state) for t in study.trials]
    assert not (ws / "queue").exists() or not list((ws / "queue").glob("search-*.journal"))
    client = MlflowClient(f"sqlite:///{ws / 'mlflow.db'}")
    exp = client.get_experiment_by_name("pg_search")
    children = client.search_runs([exp.experiment_id], "tags.role = 'trial'")
    assert sorted(r.data.tags["trial"] for r in children) == sorted(str(t.number) for t in ran)  # one run a trial
    assert {r.info.run_id for r in children} == {t.user_attrs["run_id"] for t in ran}
    assert all(r.info.status == "FINISHED" for r in children)
    # Both processes ran trials or found the budget spent; neither reported a lost or failed one.
    assert all("failed" not in out.lower() or "0 failed" in out for out in outs), outs
    assert not any(" INFO mlflow." in out for out in outs), outs  # MLflow's store set-up lines: --verbose only
    # Run again: the search is at its budget and starts nothing.
    again = _finish([_cli(ws, *args)])[0]
    assert len(optuna.load_study(study_name="pg_search:smoke", storage=pg_url).trials) == len(study.trials), again
