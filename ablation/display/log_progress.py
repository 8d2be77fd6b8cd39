"""Progress as plain lines, for output that is a log rather than a terminal (`nohup anchorlab ... > log`).

A terminal gets rich's live bar or panel, redrawn in place; a file would get nothing until the end (or, from
a redrawn bar, thousands of lines). So when stdout is not a terminal, `anchorlab train`, `study run` and
`search run` print one line per run in progress every `every_s` seconds (`--progress-every`, or
$ANCHORLAB_PROGRESS_EVERY; 30 s by default):

    progress    ATSS [seed 0]  it 120/800 (15%)  loss 1.234  2.31 it/s  ETA 4:54

`RunProgress` follows one run (rate: an average over the last interval, smoothed); `Every` says when a line
is due; `progress_line` formats it, so the three commands print the same fields.
"""
from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from detector.engine.hooks import TrainHooks

ENV = "ANCHORLAB_PROGRESS_EVERY"
DEFAULT_EVERY_S = 30.0
SMOOTHING = 0.3  # weight of the newest interval's rate in the smoothed it/s


def default_every_s() -> float:
    """$ANCHORLAB_PROGRESS_EVERY (seconds) when set to a positive number, else 30."""
    try:
        value = float(os.environ.get(ENV, ""))
    except ValueError:
        return DEFAULT_EVERY_S
    return value if value > 0 else DEFAULT_EVERY_S


def clock(seconds: float) -> str:
    """H:MM:SS, or M:SS under an hour."""
    seconds = int(max(0, seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


def progress_line(label: str, it: int, total: int, loss: float | None = None, rate: float = 0.0,
                  phase: str = "train") -> str:
    """One run's progress: label, iteration/total (percent done), loss, it/s, ETA; for evaluation, images."""
    if phase == "eval":
        return f"{'progress':<12}{label}  eval {it}/{total or '?'} images"
    share = f" ({100 * it / total:.0f}%)" if total else ""
    parts = [f"{'progress':<12}{label}  it {it}/{total}{share}"]
    if loss is not None:
        parts.append(f"loss {loss:.3f}")
    parts.append(f"{rate:.2f} it/s" if rate > 0 else "- it/s")
    parts.append(f"ETA {clock((total - it) / rate)}" if rate > 0 and total >= it else "ETA -")
    return "  ".join(parts)


class Every:
    """True once every `seconds` (the first time after `seconds` too: a start line is printed elsewhere)."""

    def __init__(self, seconds: float, now: Callable[[], float] = time.monotonic):
        self.seconds, self.now = seconds, now
        self.last = now()

    def due(self) -> bool:
        t = self.now()
        if t - self.last < self.seconds:
            return False
        self.last = t
        return True


class RunProgress:
    """One run's iteration, loss and smoothed rate, updated as its iterations are reported."""

    def __init__(self, label: str, total: int, it: int = 0, now: Callable[[], float] = time.monotonic):
        self.label, self.total, self.it, self.now = label, total, it, now
        self.loss: float | None = None
        self.rate = 0.0
        self.phase, self.eval_done, self.eval_total = "train", 0, 0
        self._mark = (it, now())  # (iteration, time) where the current rate interval began

    def update(self, it: int, loss: float | None = None) -> None:
        self.phase, self.it = "train", it
        if loss is not None:
            self.loss = loss

    def update_eval(self, done: int, total: int) -> None:
        self.phase, self.eval_done, self.eval_total = "eval", done, total

    def line(self) -> str:
        """The line for now; closes the rate interval (call it once per printed line)."""
        t = self.now()
        it0, t0 = self._mark
        if self.phase == "train" and self.it > it0 and t > t0:
            rate = (self.it - it0) / (t - t0)
            self.rate = rate if not self.rate else (1 - SMOOTHING) * self.rate + SMOOTHING * rate
        if self.phase == "train":
            self._mark = (self.it, t)
            return progress_line(self.label, self.it, self.total, self.loss, self.rate)
        return progress_line(self.label, self.eval_done, self.eval_total, phase="eval")


class LogProgressHooks(TrainHooks):
    """`anchorlab train` into a log: a line every `every_s` seconds while training and evaluating, one at the end."""

    def __init__(self, label: str, total: int, every_s: float, write: Callable[[str], None] | None = None):
        self.label, self.total, self.every_s = label, total, every_s
        self.write = write or (lambda text: print(text, file=sys.stdout, flush=True))
        self.run: RunProgress | None = None
        self.every: Every | None = None

    def on_start(self, config: dict, workdir: Path, start_iteration: int) -> None:
        self.run, self.every = RunProgress(self.label, self.total, start_iteration), Every(self.every_s)
        self.write(f"{'start':<12}{self.label}  it {start_iteration}/{self.total}")

    def on_iteration(self, iteration: int, scalars: dict[str, float]) -> None:
        if self.run is None or "loss" not in scalars:  # end-of-run scalars come without a loss
            return
        self.run.update(iteration, scalars["loss"])
        if self.every.due():
            self.write(self.run.line())

    def on_eval_progress(self, done: int, total: int) -> None:
        if self.run is not None:
            self.run.update_eval(done, total)
            if self.every.due():
                self.write(self.run.line())

    def on_end(self, status: str, reason: str = "") -> None:
        if self.run is not None:
            self.write(f"{status.lower():<12}{self.label}  it {self.run.it}/{self.total}" + (f"  {reason}" if reason else ""))


class WorkerLines:
    """Progress lines from the "iter" events of several workers (`execution.worker.ProgressEvents`): one
    `RunProgress` per worker, all printed together every `every_s` seconds (a search's runs, into a log)."""

    def __init__(self, every_s: float, write: Callable[[str], None]):
        self.every, self.write = Every(every_s), write
        self.runs: dict[int, RunProgress] = {}

    def update(self, worker: int, label: str, data: dict) -> None:
        run = self.runs.get(worker)
        if run is None or run.label != label:
            run = self.runs[worker] = RunProgress(label, int(data.get("total") or 0), int(data["it"]))
        if data.get("phase") == "eval":
            run.update_eval(int(data["it"]), int(data.get("total") or 0))
        else:
            run.total = int(data.get("total") or run.total)
            run.update(int(data["it"]), data.get("loss"))
        if self.every.due():
            for _, r in sorted(self.runs.items()):
                self.write("  " + r.line())

    def done(self, worker: int) -> None:
        self.runs.pop(worker, None)


__all__ = ["ENV", "DEFAULT_EVERY_S", "default_every_s", "clock", "progress_line", "Every", "RunProgress",
           "LogProgressHooks", "WorkerLines"]
