"""Defaults a newcomer can live with: without --profile a CPU machine runs `quick` and says so (status and table
agree with run); a ResNet trained from random weights warns once; `study status` / `study table` load no torch
(status no mlflow either: the SQLite store is read directly, with MLflow's answer)."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from ablation import profiles
from ablation.profiles import choose_profile, cuda_device_present, random_backbone_warning
from ablation.study.expand import expand, load_study
from ablation.study.source import StudyError
from ablation.tracking import reader
from tests.conftest import tiny_config
from tests.test_study import SMOKE, _fake_run, empty_store, with_store, write_study  # noqa: F401 (a fixture)

ROOT = Path(__file__).resolve().parents[1]
PAPER_AND_QUICK = {"paper": {}, "quick": SMOKE, "smoke": SMOKE}


# ---------------------------------------------------------------- which profile
def test_the_default_profile_is_paper_with_a_gpu_and_quick_without():
    assert choose_profile(["paper", "quick"], "paper", "f.yaml", gpu=False) == profiles.ProfileChoice("paper", "")
    with_gpu = choose_profile(["paper", "quick"], None, "f.yaml", gpu=True)
    assert with_gpu.name == "paper" and "CUDA GPU" in with_gpu.note
    without = choose_profile(["quick", "paper", "smoke"], None, "f.yaml", gpu=False)
    assert without.name == "quick" and "no CUDA GPU here" in without.note and "--profile paper" in without.note
    with pytest.raises(StudyError, match="no CUDA GPU here and no 'quick' profile; choose one with --profile"):
        choose_profile(["paper", "smoke"], None, "f.yaml", gpu=False)
    assert choose_profile(["smoke"], None, "f.yaml", gpu=False).name == "smoke"
    with pytest.raises(StudyError, match="choose a profile with --profile: smoke, other"):
        choose_profile(["smoke", "other"], None, "f.yaml", gpu=False)
    assert choose_profile(["smoke", "other"], None, "f.yaml", single_only=False, gpu=False).name == "smoke"  # a search


def test_the_gpu_probe_reads_the_driver_and_respects_cuda_visible_devices(tmp_path, monkeypatch):
    gpus, dev = tmp_path / "gpus", tmp_path / "dev"
    dev.mkdir()
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert not cuda_device_present(gpus, dev)
    (dev / "nvidiactl").touch()  # the control node alone is not a GPU
    assert not cuda_device_present(gpus, dev)
    (gpus / "0000:00:04.0").mkdir(parents=True)
    assert cuda_device_present(gpus, dev)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert not cuda_device_present(gpus, dev)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert cuda_device_present(tmp_path / "none", dev) is False and cuda_device_present(gpus, dev)
    (dev / "nvidia0").touch()
    assert cuda_device_present(tmp_path / "none", dev)


def test_status_table_and_run_agree_on_quick_without_a_gpu_and_say_why(tmp_path, monkeypatch):
    from cli import app

    monkeypatch.setattr(profiles, "cuda_device_present", lambda: False)
    study = write_study(tmp_path, profiles=PAPER_AND_QUICK)
    ws = tmp_path / "ws"
    for args in (["study", "status", str(study)], ["study", "run", str(study), "--dry-run"],
                 ["study", "table", str(study)]):
        result = CliRunner().invoke(app, [*args, "--workspace", str(ws)])
        assert result.exit_code == 0, result.output
        assert result.output.count("profile quick: no CUDA GPU here") == 1, result.output
        assert "profile quick" in result.output.split("no CUDA GPU here", 1)[1]  # what ran is quick
    monkeypatch.setattr(profiles, "cuda_device_present", lambda: True)
    result = CliRunner().invoke(app, ["study", "status", str(study), "--workspace", str(ws)])
    assert "profile paper (the default with a CUDA GPU" in result.output and "· profile paper ·" in result.output


def test_a_resnet_from_random_weights_warns_once(tmp_path):
    from cli import app

    assert random_backbone_warning([tiny_config()]) is None  # the CPU profiles' backbone
    resnet = tiny_config(model={"backbone": {"name": "resnet18"}})
    line = random_backbone_warning([resnet, resnet], "paper")
    assert line.startswith("profile 'paper' trains resnet18 from random weights") and "\n" not in line
    assert random_backbone_warning([tiny_config(model={"backbone": {"name": "resnet18", "weights": "r18.pt"}})]) is None

    study = write_study(tmp_path, profiles={"paper": {"overrides": {"model.backbone.name": "resnet18"}},
                                            "quick": SMOKE})
    result = CliRunner().invoke(app, ["study", "run", str(study), "--profile", "paper", "--dry-run",
                                      "--workspace", str(tmp_path / "ws")])
    assert result.exit_code == 0, result.output
    assert result.output.count("from random weights") == 1  # two rows, one line


# ---------------------------------------------------------------- status and table without torch
RUNNER = """
import json, runpy, sys
sys.argv = ["anchorlab", *json.loads(sys.argv[1])]
try:
    runpy.run_module("cli", run_name="__main__")
except SystemExit as exc:
    code = exc.code or 0
print("LOADED " + json.dumps([m for m in ("torch", "torchvision", "mlflow") if m in sys.modules]), file=sys.stderr)
sys.exit(code)
"""


def _loaded(args: list[str]) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Run the CLI in a fresh interpreter; its output and which heavy packages it imported."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", RUNNER, json.dumps(args)], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
    marks = [line for line in out.stderr.splitlines() if line.startswith("LOADED ")]
    assert marks, out.stderr[-2000:]
    return out, json.loads(marks[-1][len("LOADED "):])


def test_status_and_table_import_no_torch(tmp_path, workspace, empty_store):
    from mlflow import MlflowClient

    uri = with_store(workspace, empty_store)
    study = load_study(write_study(tmp_path, rows=[{"label": "A", "overrides": {"assign.name": "max_iou"}},
                                                   {"label": "B", "overrides": {"assign.name": "atss"}}],
                                   baseline="A"))
    a, b = expand(study, "smoke")
    client = MlflowClient(uri)
    exp_id = client.create_experiment(study.name, artifact_location=(tmp_path / "artifacts").as_uri())
    _fake_run(client, exp_id, a, "FINISHED", 0.25)
    _fake_run(client, exp_id, b, "FAILED", reason="diverged")
    common = ["--profile", "smoke", "--workspace", str(workspace)]
    out, loaded = _loaded(["study", "status", str(study.path), *common])
    assert out.returncode == 0 and "1 finished, 1 failed" in out.stdout, out.stderr[-2000:]
    assert loaded == []  # neither torch nor mlflow: the store's tables are read directly
    out, loaded = _loaded(["study", "table", str(study.path), *common])
    assert out.returncode == 0 and "| A | 25.0† |" in out.stdout, out.stderr[-2000:]
    assert "torch" not in loaded and "torchvision" not in loaded  # mlflow: only to read artifacts and log the table


# ---------------------------------------------------------------- the SQLite store read directly
def test_runs_read_from_sqlite_equal_mlflows(tmp_path, workspace, empty_store, monkeypatch):
    from mlflow import MlflowClient

    from ablation.tracking.sqlite_runs import read_runs

    uri = with_store(workspace, empty_store)
    study = load_study(write_study(tmp_path))
    a, b = expand(study, "smoke")
    client = MlflowClient(uri)
    exp_id = client.create_experiment(study.name, artifact_location=(tmp_path / "artifacts").as_uri())
    other = client.create_experiment("other", artifact_location=(tmp_path / "artifacts").as_uri())
    _fake_run(client, exp_id, a, "FINISHED", 0.25)
    failed = _fake_run(client, exp_id, b, "FAILED", reason="diverged")
    client.log_metric(failed, "val/AP", math.nan)
    deleted = _fake_run(client, other, a, "FINISHED", 0.5)
    client.delete_run(deleted)
    _fake_run(client, other, b, "KILLED")
    queries = [(study.name, ""), (study.name, "tags.role = 'row'"), (None, "attributes.status = 'FINISHED'"),
               (None, f"tags.run_key = '{a.key}' and attributes.status = 'FINISHED'"), ("missing", ""), (None, "")]
    for experiment, flt in queries:
        fast = reader.runs_frame(uri, experiment, flt)
        assert read_runs(uri, experiment, flt) is not None  # answered here, not by MLflow
        with monkeypatch.context() as m:
            m.setattr(reader, "read_runs", lambda *args: None)
            slow = reader.runs_frame(uri, experiment, flt)
        pd.testing.assert_frame_equal(fast.reindex(sorted(fast.columns), axis=1),
                                      slow.reindex(sorted(slow.columns), axis=1), check_dtype=False)
    assert read_runs(uri, None, "metrics.val/AP > 0.1") is None  # a filter only MLflow reads
    assert read_runs(f"sqlite:///{tmp_path / 'absent.db'}", None) is None


def test_the_table_reads_detections_from_the_workspace(tmp_path, workspace, empty_store):
    """A run that trained here keeps its detections in its checkpoint folder: no MLflow artifact is read."""
    from mlflow import MlflowClient

    from ablation.execution.launcher import per_image_matches, workspace_detections
    from detector.data.build import dataset_paths
    from detector.run_key import run_dir
    from tests.test_coco_eval import perfect_detections

    uri = with_store(workspace, empty_store)
    study = load_study(write_study(tmp_path, rows=[{"label": "A", "overrides": {"assign.name": "max_iou"}}],
                                   baseline="A"))
    (run,) = expand(study, "smoke")
    gt = json.loads(dataset_paths(run.config, workspace)["val_json"].read_text())
    client = MlflowClient(uri)
    exp_id = client.create_experiment(study.name, artifact_location=(tmp_path / "artifacts").as_uri())
    run_id = _fake_run(client, exp_id, run, "FINISHED", 0.9)  # no artifact in MLflow
    path = run_dir(workspace, run.key, run_id) / reader.DETECTIONS_ARTIFACT
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(perfect_detections(gt)))
    frame = reader.runs_frame(uri, study.name, "tags.role = 'row'")
    (rec,) = reader.records_of(frame)
    assert workspace_detections(workspace, rec) == perfect_detections(gt)
    assert set(per_image_matches(study, "smoke", frame, uri, workspace)) == {run_id}
