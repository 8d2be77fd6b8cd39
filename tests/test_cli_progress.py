"""Progress where output is a log: `anchorlab train` and `study run` with stdout to a pipe print a plain line
every --progress-every seconds (run, iteration/total, loss, it/s, ETA); on a terminal, log lines and worker
lines go above the live bar or panel, not through it."""
from __future__ import annotations

import io
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

from ablation.display.log_progress import Every, RunProgress, WorkerLines, progress_line
from ablation.display.study_progress import ProgressDisplay
from tests.conftest import TINY
from tests.test_study import write_study

ROOT = Path(__file__).resolve().parents[1]
# "progress    LABEL  it 12/40 (30%)  loss 1.234  5.67 it/s  ETA 0:05": every field of a training line
LINE = re.compile(r"progress +(?P<label>.+?)  it (?P<it>\d+)/(?P<total>\d+) \((?P<pct>\d+)%\)  loss (?P<loss>\d+\.\d{3})"
                  r"  (?P<rate>\d+\.\d\d) it/s  ETA (?P<eta>\d+:\d\d)$")


def _cli(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m cli ARGS` with stdout and stderr to pipes (not a terminal, whatever rich's env says)."""
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE")}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-m", "cli", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def _training_lines(stdout: str, label: str) -> list[re.Match]:
    lines = [LINE.search(line) for line in stdout.splitlines()]
    return [m for m in lines if m is not None and m["label"] == label]


def test_train_into_a_pipe_prints_progress_lines(tmp_path, workspace):
    cfg = {**TINY, "train": {**TINY["train"], "iterations": 40, "log_every": 1, "checkpoint_every": 20}}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = _cli(["train", "-c", str(path), "--workspace", str(workspace), "--progress-every", "0.2"])
    assert out.returncode == 0, out.stderr[-2000:]
    lines = _training_lines(out.stdout, "tiny")
    assert lines, out.stdout
    for m in lines:
        assert m["total"] == "40" and 0 < int(m["it"]) <= 40 and float(m["rate"]) > 0
        assert int(m["pct"]) == round(100 * int(m["it"]) / 40)
    assert re.search(r"^start +tiny  it 0/40$", out.stdout, re.M) and re.search(r"^finished +tiny  it 40/40$",
                                                                                out.stdout, re.M)
    assert "\x1b[" not in out.stdout  # no bar redrawn into the log


def test_study_into_a_pipe_prints_progress_lines_per_run_and_for_the_study(tmp_path, workspace):
    study = write_study(tmp_path, rows=[{"label": "A", "overrides": {"assign.name": "atss"}}],
                        profiles={"smoke": {"overrides": {"train.iterations": 150, "train.checkpoint_every": 75,
                                                          "train.log_every": 1}}})  # a few seconds: several lines
    out = _cli(["study", "run", str(study), "--profile", "smoke", "--workspace", str(workspace),
                "--progress-every", "0.2"])
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    lines = _training_lines(out.stdout, "A · seed 0")
    assert lines, out.stdout
    assert all(m["total"] == "150" and float(m["rate"]) > 0 for m in lines)
    assert re.search(r"progress +study demo \[smoke\]: 0 done · 1 running · 0 failed · 0 pending · elapsed \d+:\d\d · "
                     r"ETA", out.stdout)
    assert re.search(r"finished +A · seed 0  AP \d+\.\d%", out.stdout)  # a percentage, said so
    assert f"its figures on one HTML page: anchorlab report {study} --profile smoke --workspace {workspace}" in out.stdout


def test_progress_fields_and_rate():
    clock = iter([0.0, 10.0, 20.0]).__next__  # construction, then each line
    run = RunProgress("R", 100, it=0, now=clock)
    run.update(20, 1.5)
    assert run.line() == "progress    R  it 20/100 (20%)  loss 1.500  2.00 it/s  ETA 0:40"
    run.update(40)  # no loss in this report: the last one stays
    assert run.line() == "progress    R  it 40/100 (40%)  loss 1.500  2.00 it/s  ETA 0:30"
    assert progress_line("R", 3, 8, phase="eval") == "progress    R  eval 3/8 images"
    assert progress_line("R", 0, 10) == "progress    R  it 0/10 (0%)  - it/s  ETA -"


def test_every_and_worker_lines():
    t = [0.0]
    every = Every(30.0, now=lambda: t[0])
    assert not every.due()
    t[0] = 31.0
    assert every.due() and not every.due()
    written: list[str] = []
    lines = WorkerLines(0.0, written.append)
    lines.update(1, "trial 3", {"it": 5, "total": 10, "loss": 0.5, "phase": "train"})
    lines.update(0, "trial 2", {"it": 2, "total": 4, "phase": "eval"})
    assert any("trial 3  it 5/10 (50%)  loss 0.500" in w for w in written)
    assert written[-2:][0].startswith("  progress    trial 2  eval 2/4")  # sorted by worker
    lines.done(0)
    assert list(lines.runs) == [1]


def _display(terminal: bool) -> tuple[ProgressDisplay, io.StringIO]:
    """A study display over one pending run (key "k1", 10 iterations), on a terminal or into a log."""
    from types import SimpleNamespace

    from rich.console import Console

    from ablation.execution.launcher import PlanEntry
    from ablation.study.expand import StudyRun
    from tests.conftest import tiny_config

    buffer = io.StringIO()
    display = ProgressDisplay(Console(file=buffer, force_terminal=terminal, width=200), every_s=0.0)
    run = StudyRun("demo", "smoke", "A", 0, 0, tiny_config(train={"iterations": 10}), "k1")
    display.start(SimpleNamespace(name="demo"), "smoke", [PlanEntry(run, "pending", "run")], 1)
    return display, buffer


def test_the_study_display_prints_periodic_lines_into_a_log_and_worker_lines_above_a_panel():
    display, buffer = _display(terminal=False)
    display.handle((0, "start", {"key": "k1", "total": 10}))
    display.handle((0, "iter", {"key": "k1", "it": 4, "total": 10, "loss": 0.75, "phase": "train"}))
    display.handle((0, "log", {"text": "WARNING something"}))
    display.stop()
    text = buffer.getvalue()
    assert "progress    A · seed 0  it 4/10 (40%)  loss 0.750" in text and "progress    study demo [smoke]:" in text
    assert "  worker 0: WARNING something\n" in text

    display, buffer = _display(terminal=True)  # a live panel: the line is printed above it, whole
    display.handle((0, "start", {"key": "k1", "total": 10}))
    display.handle((0, "log", {"text": "WARNING something"}))
    display.stop()
    shown = [line.split("\r")[-1] for line in re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", buffer.getvalue()).split("\n")]
    assert "  worker 0: WARNING something" in shown  # a line of its own once the panel's line is cleared (\r)


def test_a_workers_writes_become_lines_for_the_launcher():
    from ablation.execution.worker import ProgressEvents, _LineStream

    sent: list[str] = []
    stream = _LineStream(sent.append)
    stream.write("first line\nsecond ")
    stream.write("half\n\n")
    assert sent == ["first line", "second half"]

    events: list[tuple] = []
    hooks = ProgressEvents(lambda kind, **data: events.append((kind, data)), 50, key="k")
    hooks.on_start({}, Path("."), 0)
    hooks.on_iteration(1, {"loss": 2.5})
    hooks.on_iteration(2, {"assign/gt_without_pos_mean": 0.1})  # an end-of-run scalar: throttled, loss kept
    assert events[0] == ("iter", {"key": "k", "it": 0, "total": 50, "loss": None, "phase": "train"})
    assert events[1] == ("iter", {"key": "k", "it": 1, "total": 50, "loss": 2.5, "phase": "train"})


def test_log_records_follow_the_current_stderr(monkeypatch):
    """rich's live display swaps sys.stderr for a proxy that prints above the bar: records must go there."""
    from cli_output import _CurrentStderr

    handler = _CurrentStderr()
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("anchorlab.test_current_stderr")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        swapped = io.StringIO()
        monkeypatch.setattr(sys, "stderr", swapped)
        logger.warning("above the bar")
        assert swapped.getvalue() == "WARNING above the bar\n"
    finally:
        logger.removeHandler(handler)
