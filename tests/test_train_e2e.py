"""Tiny real training runs written to a real MLflow SQLite store; divergence; resume."""
from __future__ import annotations

import math

import pytest
import torch
from mlflow.tracking import MlflowClient

from ablation.execution.run import RunSpec, execute
from detector.engine.checkpoint import load_checkpoint
from detector.engine.hooks import TrainHooks
from tests.conftest import tiny_config


def _uri(tmp_path):
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def train_tracked(cfg, workspace, uri, experiment, resume=False, hooks=None):
    return execute(RunSpec(cfg, cfg.name, experiment, resume=resume), workspace, uri, hooks=hooks)


@pytest.mark.parametrize("method", ["max_iou", "atss"])
def test_tiny_run_is_tracked(tmp_path, workspace, method):
    cfg = tiny_config(assign={"name": method}, model={"head": {"aux": "centerness"}})
    out = train_tracked(cfg, workspace, _uri(tmp_path), experiment="e2e")
    assert out.result.status == "FINISHED", out.result.reason
    client = MlflowClient(_uri(tmp_path))
    run = client.get_run(out.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["assign.name"] == method
    assert run.data.params["train.iterations"] == "3"
    for key in ("git_sha", "git_dirty", "run_key", "checkpoint"):
        assert key in run.data.tags
    assert (workspace / "checkpoints").exists()
    loss = client.get_metric_history(out.run_id, "loss")
    assert [m.step for m in loss] == [1, 2, 3] and all(math.isfinite(m.value) for m in loss)
    for key in ("lr", "assign/pos_per_image", "assign/pos_per_gt_mean", "assign/gt_without_pos",
                "assign/pos_per_image_P3", "loss_aux", "val/AP", "val/AR100"):
        assert key in run.data.metrics, key
    assert 0.0 <= run.data.metrics["val/AP"] <= 100.0 and run.data.tags["metric_unit"] == "percent"
    assert run.data.params["data/train_annotations_kept"].isdigit() and run.data.tags["method"] == method
    assert not [k for k in run.data.metrics if k.startswith("data/")]  # the dataset's counts are params
    assert all(v != -1.0 for v in run.data.metrics.values())  # COCO's "no data" is not a value
    per_step = [m.value for m in client.get_metric_history(out.run_id, "assign/gt_without_pos")]
    mean = client.get_metric_history(out.run_id, "assign/gt_without_pos_mean")
    assert [m.step for m in mean] == [3] and mean[0].value == pytest.approx(sum(per_step) / len(per_step))
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
    run = MlflowClient(_uri(tmp_path)).get_run(out.run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags["failure_reason"] == out.result.reason


class _Crash(TrainHooks):
    def __init__(self, error=RuntimeError, at: int = 2):
        self.error, self.at = error, at

    def on_iteration(self, iteration, scalars):
        if iteration == self.at and "loss" in scalars:
            raise self.error("simulated crash")


def test_resume_continues_from_checkpoint_and_matches_uninterrupted(tmp_path, workspace):
    cfg = tiny_config(train={"iterations": 4, "checkpoint_every": 2})
    uri = _uri(tmp_path)
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C, a SIGTERM: the run is KILLED and resumable
        # at iteration 3: the checkpoint of iteration 2 exists (it is written after iteration 2 is logged)
        train_tracked(cfg, workspace, uri, experiment="e2e", hooks=_Crash(KeyboardInterrupt, at=3))
    client = MlflowClient(uri)
    crashed = client.search_runs([client.get_experiment_by_name("e2e").experiment_id])
    assert [r.info.status for r in crashed] == ["KILLED"]

    resumed = train_tracked(cfg, workspace, uri, experiment="e2e", resume=True)
    assert resumed.result.status == "FINISHED"
    assert resumed.run_id == crashed[0].info.run_id  # the same MLflow run, re-opened
    assert client.get_run(resumed.run_id).data.tags["start_iteration"] == "2"  # from the checkpoint, not from 0
    steps = [m.step for m in client.get_metric_history(resumed.run_id, "loss")]
    assert steps[-2:] == [3, 4]

    # An uninterrupted run of the same config in another workspace ends with the same weights.
    other = tmp_path / "other"
    other.mkdir()
    (other / "data").symlink_to((workspace / "data").resolve(), target_is_directory=True)
    straight = train_tracked(cfg, other, _uri(other), experiment="e2e")
    a = load_checkpoint(resumed.result.checkpoint)["model"]
    b = load_checkpoint(straight.result.checkpoint)["model"]
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-5), k


def test_resume_never_reopens_a_failed_run(tmp_path, workspace):
    cfg = tiny_config(train={"iterations": 4, "checkpoint_every": 2})
    uri = _uri(tmp_path)
    crashed = train_tracked(cfg, workspace, uri, experiment="e2e", hooks=_Crash())
    assert crashed.status == "FAILED" and crashed.reason == "RuntimeError: simulated crash"
    again = train_tracked(cfg, workspace, uri, experiment="e2e", resume=True)
    assert again.status == "FINISHED" and again.run_id != crashed.run_id  # a new run, from scratch
    client = MlflowClient(uri)
    assert client.get_run(crashed.run_id).info.status == "FAILED"
    assert int(client.get_run(again.run_id).data.tags["start_iteration"]) == 0
    assert [m.step for m in client.get_metric_history(again.run_id, "loss")] == [1, 2, 3, 4]
    # each tracked run keeps its files in a folder of its own
    assert crashed.result is None and again.result.checkpoint.parent.name == again.run_id


def test_eval_every_logs_val_metrics_during_training_and_a_hook_can_prune(tmp_path, workspace):
    class StopAfterFirstEval(TrainHooks):
        def __init__(self):
            self.evals = []

        def on_eval(self, iteration, metrics, files):
            self.evals.append((iteration, metrics["AP"], files))

        def should_stop(self, iteration):
            return iteration >= 2

    cfg = tiny_config(train={"iterations": 6, "eval_every": 2})
    uri = _uri(tmp_path)
    hook = StopAfterFirstEval()
    out = train_tracked(cfg, workspace, uri, experiment="e2e", hooks=hook)
    assert out.status == "PRUNED" and out.step == 2 and out.reason.startswith("pruned at iteration 2")
    assert [(it, files) for it, _, files in hook.evals] == [(2, {})]
    run = MlflowClient(uri).get_run(out.run_id)
    assert run.info.status == "KILLED" and run.data.tags["outcome"] == "PRUNED"
    assert [m.step for m in MlflowClient(uri).get_metric_history(out.run_id, "val/AP")] == [2]
    # without a stop request the run evaluates at 2 and 4 during training, then at the end
    plain = train_tracked(tiny_config(train={"iterations": 5, "eval_every": 2}), workspace, uri, "e2e")
    assert plain.status == "FINISHED"
    assert [m.step for m in MlflowClient(uri).get_metric_history(plain.run_id, "val/AP")] == [2, 4, 5]
