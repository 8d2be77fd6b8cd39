"""Checkpoints with real processes: concurrent saves, one folder per training, unreadable and malicious files,
checkpoints that belong to another config, and a corrupt checkpoint in a study.

Bad files are the four a user meets: 0 bytes, truncated, random bytes, and a pickle whose `__reduce__` would
run a command (it must never run). Every CLI error is checked as the user sees it: one line, no traceback.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from mlflow import MlflowClient

from ablation.execution.run import RunSpec, execute
from detector.config import config_to_dict
from detector.engine.checkpoint import LAST, CheckpointError, load_checkpoint, save_checkpoint
from detector.engine.predictor import load_detector
from detector.engine.train import train
from detector.run_key import run_key
from tests.conftest import TINY, data_workspace, tiny_config
from tests.test_study import empty_store, with_store, write_study  # noqa: F401 (fixture)
from tests.test_study_reliability import _records, _start, _wait_for
from tests.test_train_e2e import _Crash

REPO = Path(__file__).resolve().parents[1]
BAD_KINDS = ["empty", "truncated", "random", "malicious"]
TIMEOUT_S = 150


class _Payload:
    """Unpickled without `weights_only`, this would create `marker`: proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def write_bad(path: Path, kind: str, good: Path, marker: Path) -> Path:
    """A bad checkpoint of `kind` at `path` (`good`: a real checkpoint to truncate)."""
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        data = good.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "random":
        path.write_bytes(bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0)).tolist()))
    else:
        torch.save({"model": _Payload(marker), "iteration": 1}, path)
    return path


def _env(ws: Path) -> dict:
    env = {**os.environ, "ANCHORLAB_HOME": str(ws), "PYTHONPATH": str(REPO)}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def _cli(ws: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli", *args], cwd=REPO, env=_env(ws), capture_output=True,
                          text=True, timeout=TIMEOUT_S)


def _one_line(proc: subprocess.CompletedProcess) -> str:
    text = (proc.stdout + proc.stderr).strip()
    assert proc.returncode == 2 and len(text.splitlines()) == 1 and text.startswith("error: "), text
    return text


@pytest.fixture(scope="module")
def trained(tmp_path_factory, synth_data):
    """(workspace, ATSS config file, its checkpoint): a 2-iteration tiny run, trained once for this module."""
    ws = data_workspace(tmp_path_factory.mktemp("trained") / "ws", synth_data)
    body = {**TINY, "assign": {"name": "atss"}, "model": {**TINY["model"], "head": {**TINY["model"]["head"],
                                                                                 "aux": "centerness"}},
            "train": {**TINY["train"], "iterations": 2, "eval_at_end": False}}
    cfg_file = ws.parent / "atss.yaml"
    cfg_file.write_text(yaml.safe_dump(body))
    from detector.config import load_config

    result = train(load_config([str(cfg_file)]), ws, workdir=ws / "run")
    return ws, cfg_file, result.checkpoint


# ---------------------------------------------------------------- saves
_SAVER = """
import sys, torch
from detector.engine.checkpoint import save_checkpoint
model = torch.nn.Linear(256, 256)
for i in range(int(sys.argv[2])):
    save_checkpoint(sys.argv[1], model, iteration=i)
"""


def test_concurrent_saves_never_collide_and_a_reader_never_sees_half_a_file(tmp_path):
    path = tmp_path / "ck" / LAST
    save_checkpoint(path, torch.nn.Linear(256, 256))
    writers = [subprocess.Popen([sys.executable, "-c", _SAVER, str(path), "40"], cwd=REPO, env=_env(tmp_path),
                                stderr=subprocess.PIPE, text=True) for _ in range(3)]
    reads = 0
    while any(w.poll() is None for w in writers):
        assert load_checkpoint(path)["model"]["weight"].shape == (256, 256)  # a whole file, every time
        reads += 1
    errors = [w.stderr.read() for w in writers]
    assert [w.returncode for w in writers] == [0, 0, 0], errors
    assert reads > 0 and sorted(p.name for p in path.parent.iterdir()) == [LAST]  # no temporary left behind


class _Unpicklable(torch.nn.Module):
    """A real module whose state cannot be pickled (its extra state is a lambda): torch.save fails mid-file."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(2, 2)

    def get_extra_state(self):
        return lambda: None

    def set_extra_state(self, state):
        pass


def test_a_failed_save_leaves_the_previous_checkpoint_and_no_temporary(tmp_path):
    path = save_checkpoint(tmp_path / LAST, torch.nn.Linear(2, 2), iteration=5)
    with pytest.raises(Exception):
        save_checkpoint(path, _Unpicklable(), iteration=6)
    assert sorted(p.name for p in tmp_path.iterdir()) == [LAST]
    assert load_checkpoint(path)["iteration"] == 5


def test_two_anchorlab_trains_of_one_config_get_separate_folders(tmp_path, workspace, empty_store):
    uri = with_store(workspace, empty_store)
    cfg_file = tmp_path / "tiny.yaml"
    cfg_file.write_text(yaml.safe_dump({**TINY, "train": {**TINY["train"], "iterations": 30, "checkpoint_every": 1,
                                                          "eval_at_end": False}}))
    args = [sys.executable, "-m", "cli", "train", "-c", str(cfg_file)]
    procs = [subprocess.Popen(args, cwd=REPO, env=_env(workspace), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=TIMEOUT_S)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("anchorlab").experiment_id])
    assert len(runs) == 2 and len({r.data.tags["run_key"] for r in runs}) == 1
    folders = {Path(r.data.tags["checkpoint"]).parent for r in runs}
    assert folders == {Path(r.data.tags["workdir"]) for r in runs} and len(folders) == 2
    for run in runs:
        assert Path(run.data.tags["checkpoint"]).parent.name == run.info.run_id
        assert load_checkpoint(run.data.tags["checkpoint"])["iteration"] == 30


_HOLDER = """
import sys, time
from pathlib import Path
from detector.engine.hooks import TrainHooks
from detector.engine.train import train
from tests.conftest import tiny_config

class Hold(TrainHooks):
    def on_iteration(self, iteration, scalars):
        if iteration == 1:
            Path(sys.argv[2]).touch()
            while not Path(sys.argv[3]).exists():
                time.sleep(0.1)

print(train(tiny_config(train={"eval_at_end": False}), Path(sys.argv[1]), Hold()).status)
"""


def test_a_second_training_in_a_busy_folder_is_refused(tmp_path, workspace):
    """`train()` without a workdir uses `checkpoints/<run key>`: a second one there at once is refused."""
    ready, go = tmp_path / "ready", tmp_path / "go"
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(workspace), str(ready), str(go)], cwd=REPO,
                              env=_env(workspace), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for(lambda: ready.exists() or holder.poll() is not None, "the first training to start")
        cfg = tiny_config(train={"eval_at_end": False})
        with pytest.raises(CheckpointError, match="in use by another training") as err:
            train(cfg, workspace)
        assert str(workspace / "checkpoints" / run_key(cfg)) in str(err.value)
    finally:
        go.touch()
        out = holder.communicate(timeout=TIMEOUT_S)[0]
    assert holder.returncode == 0 and out.strip().endswith("FINISHED"), out


# ---------------------------------------------------------------- unreadable files
@pytest.mark.parametrize("kind", BAD_KINDS)
def test_load_checkpoint_names_the_file_and_runs_nothing(tmp_path, trained, kind):
    marker = tmp_path / "PWNED"
    bad = write_bad(tmp_path / f"{kind}.pt", kind, trained[2], marker)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(bad)
    assert str(bad) in str(err.value) and len(str(err.value).splitlines()) == 1
    assert not marker.exists()


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_eval_of_a_bad_checkpoint_is_one_line(tmp_path, trained, kind):
    ws, cfg_file, good = trained
    marker = tmp_path / "PWNED"
    bad = write_bad(tmp_path / "last.pt", kind, good, marker)
    line = _one_line(_cli(ws, "eval", "-c", str(cfg_file), "--checkpoint", str(bad), "--out", str(tmp_path / "o")))
    assert str(bad) in line
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["empty", "malicious"])
def test_train_resume_of_a_bad_checkpoint_is_one_line_and_the_same_command_starts_over(tmp_path, workspace,
                                                                                       empty_store, kind):
    uri = with_store(workspace, empty_store)
    cfg = tiny_config(train={"iterations": 4, "checkpoint_every": 2, "eval_at_end": False})
    with pytest.raises(KeyboardInterrupt):  # interrupted at iteration 3: a checkpoint of iteration 2 exists
        execute(RunSpec(cfg, "tiny"), workspace, uri, hooks=_Crash(KeyboardInterrupt, at=3))
    killed = MlflowClient(uri).search_runs([MlflowClient(uri).get_experiment_by_name("anchorlab").experiment_id])[0]
    ckpt = Path(killed.data.tags["checkpoint"])
    marker = tmp_path / "PWNED"
    write_bad(ckpt, kind, ckpt, marker)
    cfg_file = tmp_path / "tiny.yaml"
    cfg_file.write_text(yaml.safe_dump(config_to_dict(cfg)))
    line = _one_line(_cli(workspace, "train", "-c", str(cfg_file), "--resume"))
    assert str(ckpt) in line and "the same command starts that run over" in line, line
    assert not marker.exists()
    again = _cli(workspace, "train", "-c", str(cfg_file), "--resume")
    assert again.returncode == 0, again.stdout + again.stderr
    runs = MlflowClient(uri).search_runs([killed.info.experiment_id], order_by=["attributes.start_time"])
    assert [r.info.status for r in runs] == ["FAILED", "FINISHED"]
    assert runs[1].data.tags["start_iteration"] == "0" and Path(runs[1].data.tags["workdir"]) != ckpt.parent


# ---------------------------------------------------------------- a checkpoint belongs to its config
def test_eval_refuses_a_checkpoint_of_another_method_even_when_shapes_agree(tmp_path, trained):
    ws, cfg_file, ckpt = trained
    line = _one_line(_cli(ws, "eval", "-c", str(cfg_file), "--set", "assign.name=paa", "--set", "model.head.aux=iou",
                          "--checkpoint", str(ckpt), "--out", str(tmp_path / "o")))
    atss = run_key(load_checkpoint_config(cfg_file))
    assert str(ckpt) in line and "method atss" in line and "says paa" in line and atss in line, line


def load_checkpoint_config(cfg_file: Path):
    from detector.config import load_config

    return load_config([str(cfg_file)])


def test_inference_and_evaluation_settings_may_differ_a_model_field_may_not(trained):
    ws, cfg_file, ckpt = trained
    cfg = load_checkpoint_config(cfg_file)
    other_inference = dataclasses.replace(cfg, inference=dataclasses.replace(
        cfg.inference, nms_thresh=0.7, score_thresh=0.0, score_fusion="none",
        voting=dataclasses.replace(cfg.inference.voting, enabled=True)),
        data=dataclasses.replace(cfg.data, test_min_size=128),
        train=dataclasses.replace(cfg.train, eval_at_end=True, iterations=99))
    model, _, _ = load_detector(other_inference, ckpt, ws)
    assert not model.training
    # same tensor shapes, another model: larger anchors change what every box delta means
    bigger = dataclasses.replace(cfg, model=dataclasses.replace(
        cfg.model, anchors=dataclasses.replace(cfg.model.anchors, octave_base_scale=6.0)))
    with pytest.raises(CheckpointError, match=r"model\.anchors\.octave_base_scale"):
        load_detector(bigger, ckpt, ws)


def test_resume_refuses_a_checkpoint_of_another_method(tmp_path, trained):
    ws, cfg_file, ckpt = trained
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / LAST).write_bytes(ckpt.read_bytes())
    paa = tiny_config(assign={"name": "paa"}, model={"head": {"aux": "iou"}}, train={"eval_at_end": False})
    with pytest.raises(CheckpointError, match="trained with method atss .* the config says paa"):
        train(paa, ws, resume=True, workdir=workdir)


def test_an_old_checkpoint_without_a_config_loads_with_a_warning(tmp_path, trained, caplog):
    ws, cfg_file, ckpt = trained
    state = load_checkpoint(ckpt)
    old = tmp_path / "old.pt"
    torch.save({k: v for k, v in state.items() if k not in ("config", "run_key")}, old)
    with caplog.at_level(logging.WARNING, logger="anchorlab"):
        load_detector(load_checkpoint_config(cfg_file), old, ws)
    assert any(str(old) in r.getMessage() and "no config" in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------- a corrupt checkpoint in a study
def test_a_corrupt_checkpoint_fails_its_row_with_a_hint_and_retry_failed_starts_it_over(tmp_path, synth_data,
                                                                                        empty_store):
    ws = data_workspace(tmp_path / "ws", synth_data)
    with_store(ws, empty_store)
    iters = 200
    path = write_study(tmp_path, rows=[{"label": "ATSS", "overrides": {"assign.name": "atss"}}], name="ck",
                       profiles={"smoke": {"overrides": {"train.iterations": iters, "train.checkpoint_every": 5}}})
    from ablation.study.expand import expand, load_study

    study = load_study(path)
    (spec,) = expand(study, "smoke")
    proc = _start(ws, path)
    rec = _wait_for(lambda: (r := _records(ws, study).get(spec.key)) and r.status == "RUNNING"
                    and int(r.tags.get("checkpoint_iteration", 0)) >= 5 and r, "a checkpoint")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(0.5)
    ckpt = Path(_records(ws, study)[spec.key].tags["checkpoint"])
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) // 3])  # a disk that lost the end of the file

    out, _ = _start(ws, path).communicate(timeout=TIMEOUT_S)
    failed = _records(ws, study)[spec.key]
    assert failed.run_id == rec.run_id and failed.outcome == "FAILED", out
    assert len(failed.reason.splitlines()) == 1 and str(ckpt) in failed.reason
    assert f"anchorlab study run {path} --profile smoke --retry-failed` starts that run over" in failed.reason

    out, _ = _start(ws, path, "--retry-failed").communicate(timeout=TIMEOUT_S)
    final = _records(ws, study)[spec.key]
    assert final.outcome == "FINISHED" and final.run_id != failed.run_id, out
    assert final.tags["start_iteration"] == "0" and Path(final.tags["workdir"]) != ckpt.parent
    steps = [m.step for m in MlflowClient(f"sqlite:///{ws / 'mlflow.db'}").get_metric_history(final.run_id, "loss")]
    assert steps == list(range(1, iters + 1))
