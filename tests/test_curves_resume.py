"""A tracked training SIGKILLed at the worst moments, then resumed: its curves keep every step exactly once.

A real process kills itself (SIGKILL: no handler, no flush) from a hook, which makes the moment exact:
right after its metrics were flushed by an evaluation but past its last checkpoint (so the resumed run
trains those steps again), and during the final evaluation (after the last checkpoint was published).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from mlflow import MlflowClient

from detector.engine.diagnostics import RUN_SECONDS

REPO = Path(__file__).resolve().parents[1]
ITERS = 8
TRAIN = {"iterations": ITERS, "checkpoint_every": 4, "eval_every": 6}

_SCRIPT = """
import json, os, signal, sys
from pathlib import Path
from ablation.execution.run import RunSpec, execute
from detector.engine.hooks import TrainHooks
from tests.conftest import tiny_config

ws, uri, kill = Path(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
cfg = tiny_config(train=json.loads(sys.argv[4]))


class KillSelf(TrainHooks):
    def __init__(self):
        self.iteration = 0

    def on_iteration(self, iteration, scalars):
        self.iteration = iteration
        if "loss" in scalars and iteration == kill.get("at_iteration"):
            os.kill(os.getpid(), signal.SIGKILL)

    def on_eval_progress(self, done, total):
        if kill.get("in_final_eval") and self.iteration == cfg.train.iterations:
            os.kill(os.getpid(), signal.SIGKILL)


out = execute(RunSpec(cfg, "curves", "curves", resume=True), ws, uri, hooks=KillSelf())
print(out.status, out.run_id)
"""


def _train(workspace: Path, uri: str, kill: dict) -> subprocess.CompletedProcess:
    import json

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", _SCRIPT, str(workspace), uri, json.dumps(kill), json.dumps(TRAIN)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=150)


def _steps(client: MlflowClient, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def test_killed_twice_then_finished_every_step_is_logged_exactly_once(tmp_path, workspace):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # 1. killed at iteration 7: the checkpoint of 4 is the last; steps 1-6 were flushed by the evaluation at 6
    first = _train(workspace, uri, {"at_iteration": 7})
    assert first.returncode == -9, first.stderr
    # 2. resumed from 4, killed during the final evaluation (the checkpoint of 8 is published)
    second = _train(workspace, uri, {"in_final_eval": True})
    assert second.returncode == -9, second.stderr
    # 3. resumed from 8: only the evaluation is left
    third = _train(workspace, uri, {})
    assert third.returncode == 0 and third.stdout.split()[0] == "FINISHED", third.stderr

    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("curves").experiment_id])
    assert run.info.status == "FINISHED" and third.stdout.split()[1] == run.info.run_id
    for key in ("loss", "lr", "assign/pos_per_image"):
        assert _steps(client, run.info.run_id, key) == list(range(1, ITERS + 1)), key
    assert _steps(client, run.info.run_id, "val/AP") == [6, ITERS]
    assert run.data.tags["resumed_at"] == f"4,{ITERS}"
    assert run.data.tags["start_iteration"] == str(ITERS)
    # its time counts each process up to its last checkpoint, not the restarts or the work a kill threw away
    (run_s,) = client.get_metric_history(run.info.run_id, RUN_SECONDS)
    assert run_s.step == ITERS and 0 < run_s.value < (run.info.end_time - run.info.start_time) / 1000
