"""A study worker process: claim a queue item, execute its run spec, report events to the launcher.

Started by `launcher.run_study` (one per GPU, or N on CPU with the threads split). An item carries the
resolved config, so the worker needs nothing from the study file. Per item: this study already has the
key FINISHED (or FAILED, unless the item retries it): skip; else `run.execute` with reuse and resume,
which links a key finished elsewhere, re-opens an interrupted run, or trains (a checkpoint that cannot
be resumed fails the run with the `--retry-failed` command in its reason). With nothing waiting, a
worker fails the trials of dead workers and puts their items back, waits while runs are live
elsewhere, and exits when none are.
"""
from __future__ import annotations

import io
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from ablation.execution.queue import WorkQueue
from ablation.execution.ranks import rank_group
from ablation.execution.run import RunSpec, execute
from ablation.tracking import reader
from ablation.tracking.writer import one_line, record_failure
from detector.config import ConfigError, build_config
from detector.engine.hooks import TrainHooks

MAX_CONSECUTIVE_ERRORS = 3  # a worker whose runs keep failing outside training stops
LOST_EXIT = 3  # exit code of a worker whose run was handed to another worker


@dataclass
class WorkerArgs:
    index: int
    queue_location: str
    queue_name: str
    heartbeat_s: float
    poll_s: float
    workspace: str
    tracking_uri: str
    experiment: str
    parent_run_id: str
    threads: int
    gpu: str | None  # CUDA_VISIBLE_DEVICES of the worker: one GPU, or a row's K GPUs ("2,3")
    launcher_pid: int
    procs_per_run: int = 1  # processes that train each row (`ranks.rank_group`); the worker is rank 0


class _Terminated(KeyboardInterrupt):
    """SIGTERM (or the launcher's death) in a worker: end the run as KILLED, release the row."""


def stop_once(signum, frame):
    """A SIGTERM/SIGINT: raise once, then ignore repeats so that the run can still be closed.

    (Repeats happen: Ctrl-C and then the launcher's SIGTERM, or several parent-death signals.)
    """
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise _Terminated(f"stopped by {signal.Signals(signum).name}; the same command resumes it")


def setup_worker_process(index: int, threads: int, launcher_pid: int, gpu: str | None = None,
                         log: Callable[[str], None] | None = None) -> None:
    """In a spawned worker (a study's or a search's): pin the GPU and threads before torch loads; die with the
    launcher; SIGTERM -> clean stop (`_Terminated`, a KeyboardInterrupt). With `log`, what the worker writes to
    sys.stdout / sys.stderr (its warnings, MLflow's and Python's log lines) goes to it line by line, for the
    launcher to print: written straight to the inherited terminal it would break into the launcher's live
    panel. (Writes below Python, to file descriptors 1 and 2, still go straight out.)"""
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    os.environ["OMP_NUM_THREADS"] = str(threads)
    signal.signal(signal.SIGTERM, stop_once)
    signal.signal(signal.SIGINT, stop_once)
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != launcher_pid:  # the launcher died before prctl took effect
        raise _Terminated()
    if log is not None:  # the launcher prefixes "worker <index>:"
        sys.stdout = sys.stderr = _LineStream(log)
    prefix = "" if log is not None else f"  worker {index}: "
    logging.basicConfig(level=logging.WARNING, format=f"{prefix}%(levelname)s %(message)s")
    import torch

    torch.set_num_threads(threads)  # train.num_threads > 0 in the config still wins


def _put_back(q: WorkQueue, items: list[dict], args: WorkerArgs) -> int:
    """Enqueue the items of reaped trials again, unless MLflow already says how they ended."""
    records = reader.study_runs(args.tracking_uri, args.experiment)
    again = []
    for item in items:
        rec = records.get(item["key"])
        if rec is None or not rec.settled(item["retry"]):
            again.append(item)
    q.enqueue(again)
    return len(again)


def worker_main(args: WorkerArgs, events) -> None:
    """Entry point of a worker process: claim and run until no work is left anywhere."""
    def emit(kind: str, **data) -> None:
        events.put((args.index, kind, data))

    try:
        setup_worker_process(args.index, args.threads, args.launcher_pid, args.gpu,
                             log=lambda text: emit("log", text=text))
        q = WorkQueue(args.queue_location, args.queue_name, args.heartbeat_s)
        errors = 0
        while errors < MAX_CONSECUTIVE_ERRORS:
            claim = q.claim()
            if claim is None:
                if _put_back(q, q.reap_stale(), args):
                    continue
                others = q.running()
                if not others and not q.waiting():
                    break
                emit("wait", n=len(others))
                time.sleep(args.poll_s)
                continue
            errors = 0 if run_item(q, claim, args, emit) else errors + 1
    except KeyboardInterrupt:
        emit("exit", code=130)
        raise SystemExit(130) from None
    emit("exit", code=0)


def run_item(q: WorkQueue, claim, args: WorkerArgs, emit) -> bool:
    """Execute one claimed item; False when it failed outside training (the store or queue, not the model)."""
    from optuna.trial import TrialState

    item, key = claim.item, claim.item["key"]
    rec = reader.study_runs(args.tracking_uri, args.experiment).get(key)
    if rec is not None and rec.settled(item["retry"]):
        q.finish(claim, TrialState.PRUNED, f"already {rec.outcome.lower()}")
        emit("skip", key=key, state=rec.outcome.lower())
        return True
    try:
        config = build_config(item["config"])
    except ConfigError as exc:  # enqueued by another version of anchorlab whose config no longer validates
        q.finish(claim, TrialState.FAIL, f"invalid config: {exc}")
        emit("end", key=key, status="FAILED", reason=f"invalid config: {exc}", ap=None)
        return True
    emit("start", key=key, total=config.train.iterations, name=item["run_name"])
    ok = True
    try:
        with rank_group(config, args.workspace, args.procs_per_run, max(1, args.threads // args.procs_per_run)) as config:
            spec = RunSpec(config, item["run_name"], args.experiment, args.parent_run_id, item["tags"],
                           reuse=True, resume=True, restart_hint=_restart_hint(args, item))
            hooks = _ClaimedEvents(emit, claim, config.train.iterations, key=key)
            outcome = execute(spec, args.workspace, args.tracking_uri, hooks=hooks, on_wait=lambda: emit("held", key=key))
        status, reason, ap = outcome.status, outcome.reason, outcome.metrics.get("AP")
    except KeyboardInterrupt:
        q.finish(claim, TrialState.FAIL, "interrupted")
        emit("end", key=key, status="INTERRUPTED", reason="", ap=None)
        raise
    except Exception as exc:  # no run could be opened (the store is failing): record one if possible
        status, reason, ap, ok = "FAILED", one_line(exc), None, False
        try:
            record_failure(config, args.tracking_uri, args.experiment, args.workspace, reason, item["run_name"],
                           item["tags"], args.parent_run_id)
        except Exception:  # the store itself is failing: the worker gives up after a few of these
            pass
    q.finish(claim, TrialState.COMPLETE if status == "FINISHED" else TrialState.FAIL, status.lower(), ap)
    emit("end", key=key, status=status, reason=reason, ap=ap)
    return ok


def _restart_hint(args: WorkerArgs, item: dict) -> str:
    """The command that trains this study's failed runs again from scratch (the parent run names the file)."""
    study_file = reader.run_tags(args.tracking_uri, args.parent_run_id).get("study_file", "<study file>")
    return f"`anchorlab study run {study_file} --profile {item['profile']} --retry-failed` starts that run over"


class _LineStream(io.TextIOBase):
    """A text stream that hands each complete line to `send` (a worker's: a "log" event to the launcher)."""

    encoding = "utf-8"  # read by libraries that print; the text goes to the launcher as str

    def __init__(self, send: Callable[[str], None]):
        self.send, self.pending = send, ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        *lines, self.pending = (self.pending + text).split("\n")
        for line in lines:
            if line.strip():
                try:
                    self.send(line)
                except Exception:  # a closed queue at shutdown: the line is lost, the run is not
                    pass
        return len(text)


class ProgressEvents(TrainHooks):
    """Training hooks that report a run's progress as events, at most one per `EVERY_S`: "iter" {ids, it, total,
    loss, phase "train"} while training, {ids, it: images done, total: images, phase "eval"} while evaluating."""

    EVERY_S = 0.5

    def __init__(self, emit, total: int, **ids):
        self.emit, self.total, self.ids = emit, total, ids
        self.last, self.loss = 0.0, None

    def _check(self) -> None:
        """Called at every report; a subclass may end the run here."""

    def on_start(self, config, workdir, start_iteration):
        self.emit("iter", **self.ids, it=start_iteration, total=self.total, loss=None, phase="train")

    def on_iteration(self, iteration, scalars):
        self._check()
        if "loss" in scalars:
            self.loss = scalars["loss"]
        now = time.monotonic()
        if now - self.last >= self.EVERY_S:
            self.last = now
            self.emit("iter", **self.ids, it=iteration, total=self.total, loss=self.loss, phase="train")

    def on_eval_progress(self, done, total):
        self._check()
        now = time.monotonic()
        if now - self.last >= self.EVERY_S or done == total:
            self.last = now
            self.emit("iter", **self.ids, it=done, total=total, phase="eval")


class _ClaimedEvents(ProgressEvents):
    """`ProgressEvents` of a study worker, which also watch the claim of the run."""

    def __init__(self, emit, claim, total: int, key: str):
        super().__init__(emit, total, key=key)
        self.claim, self.key = claim, key

    def _check(self) -> None:
        if self.claim.lost.is_set():  # another worker holds this run now: leave it to them, at once
            self.emit("end", key=self.key, status="LOST", reason="handed to another worker", ap=None)
            os._exit(LOST_EXIT)


__all__ = ["WorkerArgs", "worker_main", "run_item", "stop_once", "setup_worker_process", "ProgressEvents", "LOST_EXIT"]
