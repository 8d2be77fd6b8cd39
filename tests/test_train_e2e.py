"""Tiny real training runs written to a real MLflow SQLite store; divergence; resume."""
from __future__ import annotations

import math

import pytest
import torch
from mlflow.tracking import MlflowClient

from ablation.train_run import train_tracked
from detector.engine.checkpoint import load_checkpoint
from detector.engine.hooks import TrainHooks
from tests.conftest import tiny_config


def _uri(tmp_path):
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.mark.parametrize("method", ["max_iou", "atss"])
def test_tiny_run_is_tracked(tmp_path, workspace, method):
    cfg = tiny_config(assign={"name": method}, model={"head": {"aux": "centerness"}})
    out = train_tracked(cfg, workspace, _uri(tmp_path), experiment="e2e")
    assert out.result.status == "FINISHED", out.result.reason
    client = MlflowClient(out.tracking_uri)
    run = client.get_run(out.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["assign.name"] == method
    assert run.data.params["train.iterations"] == "3"
    for key in ("git_sha", "git_dirty", "config_hash", "checkpoint"):
        assert key in run.data.tags
    assert (workspace / "checkpoints").exists()
    loss = client.get_metric_history(out.run_id, "loss")
    assert [m.step for m in loss] == [1, 2, 3] and all(math.isfinite(m.value) for m in loss)
    for key in ("lr", "assign/pos_per_image", "assign/pos_per_gt_mean", "assign/gt_without_pos",
                "assign/pos_per_image_P3", "loss_aux", "val/AP", "val/ARl", "data/train_annotations_kept"):
        assert key in run.data.metrics, key
    assert 0.0 <= run.data.metrics["val/AP"] <= 1.0
    arts = {a.path for a in client.list_artifacts(out.run_id)}
    assert "config.yaml" in arts
    state = load_checkpoint(run.data.tags["checkpoint"])
    assert state["iteration"] == 3


def test_divergence_is_a_failed_run_not_a_crash(tmp_path, workspace):
    cfg = tiny_config(train={"base_lr": 1e12, "warmup_iters": 0, "iterations": 20})
    out = train_tracked(cfg, workspace, _uri(tmp_path), experiment="e2e")
    assert out.result.status == "FAILED"
    assert out.result.reason.startswith("diverged at iteration ")
    n = int(out.result.reason.rsplit(" ", 1)[1])
    assert 1 <= n <= 20
    run = MlflowClient(out.tracking_uri).get_run(out.run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags["failure_reason"] == out.result.reason


class _Crash(TrainHooks):
    def on_iteration(self, iteration, scalars):
        if iteration == 2 and "loss" in scalars:
            raise RuntimeError("simulated crash")


def test_resume_continues_from_checkpoint_and_matches_uninterrupted(tmp_path, workspace):
    cfg = tiny_config(train={"iterations": 4, "checkpoint_every": 2})
    uri = _uri(tmp_path)
    with pytest.raises(RuntimeError):
        train_tracked(cfg, workspace, uri, experiment="e2e", extra_hooks=_Crash())
    client = MlflowClient(uri)
    crashed = client.search_runs([client.get_experiment_by_name("e2e").experiment_id])
    assert [r.info.status for r in crashed] == ["FAILED"]

    resumed = train_tracked(cfg, workspace, uri, experiment="e2e", resume=True)
    assert resumed.result.status == "FINISHED"
    assert resumed.run_id == crashed[0].info.run_id  # the same MLflow run, re-opened
    steps = [m.step for m in client.get_metric_history(resumed.run_id, "loss")]
    assert steps[-2:] == [3, 4]

    # An uninterrupted run of the same config in another workspace ends with the same weights.
    other = tmp_path / "other"
    other.mkdir()
    (other / "data").symlink_to((workspace / "data").resolve(), target_is_directory=True)
    straight = train_tracked(cfg, other, _uri(tmp_path / "other"), experiment="e2e")
    a = load_checkpoint(resumed.result.checkpoint)["model"]
    b = load_checkpoint(straight.result.checkpoint)["model"]
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-5), k
