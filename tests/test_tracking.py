"""ablation.tracking against a real MLflow SQLite store in a temp folder (no mocks)."""
from __future__ import annotations

import math
import shutil
import subprocess
import threading
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from ablation.tracking.store import (
    artifact_root, ensure_experiment, git_info, resolve_tracking_uri, workspace_dir,
)
from ablation.tracking.writer import MlflowHooks, tracked_run
from detector.config import Config, build_config, config_to_dict, flatten
from detector.run_key import run_key

EXPERIMENT = "tests"
# MLflow 3.17's own SQLAlchemy models trigger this on first use; nothing of ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One SQLite store for the module: creating it runs MLflow's migrations (seconds)."""
    ws = workspace_dir(tmp_path_factory.mktemp("ws"))
    uri = resolve_tracking_uri(None, ws)
    ensure_experiment(EXPERIMENT, uri, ws)
    return ws, uri, MlflowClient(uri)


def small_config(name: str = "unit") -> Config:
    cfg = Config(name=name)
    cfg.model.anchors.strides = [8, 16, 32]
    cfg.train.base_lr = 0.02
    return cfg


def new_run(store, name: str = "r") -> tuple[MlflowClient, str]:
    ws, uri, client = store
    exp = client.get_experiment_by_name(EXPERIMENT)
    return client, client.create_run(exp.experiment_id, run_name=name).info.run_id


def history(client, run_id, key):
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


# --- tracked_run ---------------------------------------------------------------------------------


def test_tracked_run_logs_resolved_config(store, tmp_path):
    ws, uri, client = store
    cfg = small_config()
    with tracked_run(cfg, uri, EXPERIMENT, ws, run_name="r1", tags={"study": "s1"}) as hooks:
        run_id = hooks.run_id
    run = client.get_run(run_id)
    params = run.data.params
    assert params == {k: str(v) for k, v in flatten(config_to_dict(cfg)).items()}
    assert params["model.anchors.strides"] == "[8, 16, 32]"
    assert params["data.mean"] == "[0.485, 0.456, 0.406]"
    assert params["train.base_lr"] == "0.02"
    assert params["train.amp"] == "True"
    assert params["assign.name"] == "max_iou"
    assert params["data.synth.train"] == "2000"

    tags = run.data.tags
    assert tags["run_key"] == run_key(cfg)
    assert tags["git_sha"] and tags["git_dirty"] in ("true", "false", "unknown")
    assert tags["mlflow.runName"] == "r1" and tags["study"] == "s1"
    assert "mlflow.parentRunId" not in tags
    assert run.info.status == "FINISHED"
    assert run.info.artifact_uri.startswith(artifact_root(ws))

    local = client.download_artifacts(run_id, "config.yaml", str(tmp_path))
    assert build_config(yaml.safe_load(Path(local).read_text())) == cfg


def test_tracked_run_parent_and_default_name(store):
    ws, uri, client = store
    with tracked_run(small_config("parent"), uri, EXPERIMENT, ws) as parent:
        with tracked_run(small_config("child"), uri, EXPERIMENT, ws, parent_run_id=parent.run_id) as child:
            pass
    tags = client.get_run(child.run_id).data.tags
    assert tags["mlflow.parentRunId"] == parent.run_id
    assert tags["mlflow.runName"] == "child"


def test_exception_in_body_ends_failed_and_propagates(store):
    ws, uri, client = store
    with pytest.raises(RuntimeError, match="boom"):
        with tracked_run(small_config(), uri, EXPERIMENT, ws) as hooks:
            hooks.on_iteration(1, {"loss": 1.0})
            raise RuntimeError("boom\nsecond line of detail")
    run = client.get_run(hooks.run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags["failure_reason"] == "RuntimeError: boom"
    assert history(client, hooks.run_id, "loss") == [(1, 1.0)]  # the buffer was flushed on the way out


def test_on_end_failed_inside_body_is_kept(store):
    ws, uri, client = store
    with tracked_run(small_config(), uri, EXPERIMENT, ws) as hooks:
        hooks.on_end("FAILED", "diverged at iteration 7")
    run = client.get_run(hooks.run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags["failure_reason"] == "diverged at iteration 7"


def test_resume_reopens_the_run_and_checks_the_config(store):
    ws, uri, client = store
    cfg = small_config("resumable")
    with tracked_run(cfg, uri, EXPERIMENT, ws) as hooks:
        hooks.on_iteration(10, {"loss": 2.0})
        hooks.on_end("KILLED", "preempted")
    run_id = hooks.run_id
    with tracked_run(cfg, uri, EXPERIMENT, ws, run_id=run_id) as hooks:
        assert client.get_run(run_id).info.status == "RUNNING"
        hooks.on_iteration(20, {"loss": 1.0})
    assert client.get_run(run_id).info.status == "FINISHED"
    assert history(client, run_id, "loss") == [(10, 2.0), (20, 1.0)]
    other = small_config("resumable")
    other.train.base_lr = 0.5
    with pytest.raises(ValueError, match="run key"):
        with tracked_run(other, uri, EXPERIMENT, ws, run_id=run_id):
            pass


# --- MlflowHooks ---------------------------------------------------------------------------------


def test_hooks_batch_every_iteration_point(store):
    client, run_id = new_run(store)
    hooks = MlflowHooks(client, run_id, flush_every=50, flush_seconds=1e9)
    keys = [f"loss/k{j}" for j in range(10)]
    for it in range(1, 121):
        hooks.on_iteration(it, {k: it * 0.5 + j for j, k in enumerate(keys)})
        if it == 100:  # flushed at 50 and 100; nothing waits in the buffer
            assert len(client.get_metric_history(run_id, keys[0])) == 100
    assert len(client.get_metric_history(run_id, keys[0])) == 100  # 101..120 still buffered
    hooks.on_end("FINISHED")
    for j, k in enumerate(keys):
        assert history(client, run_id, k) == [(it, it * 0.5 + j) for it in range(1, 121)]
    assert client.get_run(run_id).info.status == "FINISHED"
    assert history(client, run_id, "nonfinite_metric_values") == [(120, 0.0)]


def test_hooks_flush_on_time(store):
    client, run_id = new_run(store)
    hooks = MlflowHooks(client, run_id, flush_every=10**6, flush_seconds=0.0)
    hooks.on_iteration(1, {"a": 1.0})
    assert history(client, run_id, "a") == [(1, 1.0)]


def test_hooks_skip_and_count_nonfinite(store):
    client, run_id = new_run(store)
    hooks = MlflowHooks(client, run_id)
    hooks.on_iteration(1, {"a": math.nan, "b": 1.0, "c": math.inf})
    hooks.on_iteration(2, {"a": 3.0, "b": -math.inf, "c": 2.0})
    hooks.flush()
    hooks.flush()  # repeated flushes are harmless
    hooks.on_end("FINISHED")
    assert history(client, run_id, "a") == [(2, 3.0)]
    assert history(client, run_id, "b") == [(1, 1.0)]
    assert history(client, run_id, "nonfinite_metric_values") == [(2, 3.0)]


def test_hooks_on_end_failed_sets_status_and_reason(store):
    client, run_id = new_run(store)
    MlflowHooks(client, run_id).on_end("FAILED", "diverged at iteration 7")
    run = client.get_run(run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags["failure_reason"] == "diverged at iteration 7"


def test_hooks_eval_checkpoint_artifact(store, tmp_path):
    client, run_id = new_run(store)
    hooks = MlflowHooks(client, run_id, flush_every=1000)
    hooks.on_iteration(5, {"loss": 0.3})
    metrics_file = tmp_path / "metrics.json"
    metrics_file.write_text("{}")
    hooks.on_eval(5, {"AP": 0.25, "APl": -1.0, "ARl": -1.0, "iou_pred_error": 0.125}, {"metrics": metrics_file})
    assert history(client, run_id, "loss") == [(5, 0.3)]  # on_eval flushed first
    assert history(client, run_id, "val/AP") == [(5, 25.0)]  # AP-type metrics in percent
    assert history(client, run_id, "val/iou_pred_error") == [(5, 0.125)]  # not an AP: as measured
    # COCO's "no data" (-1) is not a value: not logged, its names in a tag
    assert history(client, run_id, "val/APl") == [] and history(client, run_id, "val/ARl") == []
    assert client.get_run(run_id).data.tags["val_no_data"] == "APl,ARl"
    assert [f.path for f in client.list_artifacts(run_id, "eval")] == ["eval/metrics.json"]
    hooks.on_checkpoint(5, tmp_path / "a.pt")
    hooks.on_checkpoint(9, tmp_path / "b.pt")
    assert client.get_run(run_id).data.tags["checkpoint"] == str(tmp_path / "b.pt")
    figure = tmp_path / "fig.png"
    figure.write_bytes(b"png")
    hooks.log_artifact(figure, "figures")
    hooks.log_artifact(figure)
    assert {f.path for f in client.list_artifacts(run_id)} == {"eval", "figures", "fig.png"}


# --- store, workspace, git, ui -------------------------------------------------------------------


def test_ensure_experiment_idempotent_and_under_workspace(store):
    ws, uri, client = store
    first = ensure_experiment("name with / odd chars", uri, ws)
    assert ensure_experiment("name with / odd chars", uri, ws) == first
    location = client.get_experiment(first).artifact_location
    assert location.startswith(artifact_root(ws) + "/")


def test_ensure_experiment_concurrent_creators_agree(store):
    ws, uri, _ = store
    barrier, ids, errors = threading.Barrier(4), [], []

    def create():
        barrier.wait()
        try:
            ids.append(ensure_experiment("raced", uri, ws))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=create) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(ids)) == 1


def test_workspace_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ANCHORLAB_HOME", raising=False)
    assert workspace_dir() == tmp_path.resolve() / "anchorlab-runs"
    monkeypatch.setenv("ANCHORLAB_HOME", str(tmp_path / "home"))
    assert workspace_dir() == tmp_path.resolve() / "home"
    assert workspace_dir("explicit") == tmp_path.resolve() / "explicit"
    assert (tmp_path / "explicit").is_dir() and workspace_dir("explicit").is_absolute()


def test_resolve_tracking_uri_precedence(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri(None, tmp_path) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking:5000")
    assert resolve_tracking_uri(None, tmp_path) == "http://tracking:5000"
    assert resolve_tracking_uri("sqlite:////x/y.db", tmp_path) == "sqlite:////x/y.db"


def test_git_info_outside_a_checkout(tmp_path):
    assert git_info(tmp_path) == {"git_sha": "unknown", "git_dirty": "unknown"}
    assert git_info(tmp_path / "missing") == {"git_sha": "unknown", "git_dirty": "unknown"}


@pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")
def test_git_info_in_a_scratch_checkout(tmp_path):
    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                       check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "a.txt").write_text("1")
    git("add", "a.txt")
    git("commit", "-q", "-m", "init")
    info = git_info(tmp_path)
    assert len(info["git_sha"]) == 40 and info["git_dirty"] == "false"
    (tmp_path / "a.txt").write_text("2")
    assert git_info(tmp_path) == {"git_sha": info["git_sha"], "git_dirty": "true"}


def test_ensure_experiment_creates_the_store_atomically(tmp_path):
    """A fresh SQLite store appears complete (via a private file and a hard link), with no leftovers."""
    from ablation.tracking.store import ensure_experiment, store_exists

    uri = f"sqlite:///{tmp_path / 'sub' / 'mlflow.db'}"
    assert not store_exists(uri)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / ".mlflow.db.999999999.init").write_text("left by a killed process")
    exp_id = ensure_experiment("atomic", uri, tmp_path)
    assert store_exists(uri) and exp_id
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["mlflow.db"]
