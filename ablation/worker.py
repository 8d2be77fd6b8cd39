"""A study worker process: claim a run from the queue, train it inside its MLflow run, report events.

Started by `ablation.runner.run_study` (one per GPU, or N on CPU with the threads split); see the
runner's docstring for how claiming, reuse and resume work.
"""
from __future__ import annotations

import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from ablation.queue import WorkQueue
from ablation.study import RunSpec
from ablation.tables import fetch_records
from detector.engine.hooks import TrainHooks

MAX_CONSECUTIVE_ERRORS = 3  # a worker whose runs keep failing outside training stops
LOST_EXIT = 3  # exit code of a worker whose run was handed to another worker


def _row_tags(item: dict) -> dict[str, str]:
    return {"role": "row", "study": item["study"], "profile": item["profile"], "row": item["label"],
            "row_index": str(item["row"]), "seed": str(item["seed"])}



@dataclass
class WorkerArgs:
    index: int
    specs: list[RunSpec]
    queue_location: str
    queue_name: str
    heartbeat_s: float
    poll_s: float
    workspace: str
    tracking_uri: str
    experiment: str
    parent_run_id: str
    threads: int
    gpu: str | None
    launcher_pid: int


class _Terminated(KeyboardInterrupt):
    """SIGTERM (or the launcher's death) in a worker: end the run as KILLED, release the row."""


def _stop_once(signum, frame):
    """A worker's SIGTERM/SIGINT: raise once, then ignore repeats so that the run can still be closed.

    (Repeats happen: Ctrl-C and then the launcher's SIGTERM, or several parent-death signals.)
    """
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise _Terminated(f"stopped by {signal.Signals(signum).name}; the same command resumes it")


def _setup_worker(args: WorkerArgs) -> None:
    """Pin the GPU and threads before torch loads; die with the launcher; SIGTERM -> clean stop."""
    if args.gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = args.gpu
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    signal.signal(signal.SIGTERM, _stop_once)
    signal.signal(signal.SIGINT, _stop_once)
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != args.launcher_pid:  # the launcher died before prctl took effect
        raise _Terminated()
    logging.basicConfig(level=logging.WARNING, format=f"  worker {args.index}: %(levelname)s %(message)s")
    import torch

    torch.set_num_threads(args.threads)  # train.num_threads > 0 in the config still wins


def _worker_main(args: WorkerArgs, events) -> None:
    """Entry point of a worker process: claim and run until no work is left anywhere."""
    def emit(kind: str, **data) -> None:
        events.put((args.index, kind, data))

    try:
        _setup_worker(args)
        q = WorkQueue(args.queue_location, args.queue_name, args.heartbeat_s)
        errors = 0
        from ablation.runner import reconcile  # the launcher's reconciliation, also run by idle workers

        while errors < MAX_CONSECUTIVE_ERRORS:
            claim = q.claim()
            if claim is None:
                if reconcile(q, args.specs, args.tracking_uri, args.experiment, retry_failed=False):
                    continue
                others = q.running()
                if not others and not q.waiting():
                    break
                emit("wait", n=len(others))
                time.sleep(args.poll_s)
                continue
            errors = 0 if _run_claim(q, claim, args, emit) else errors + 1
    except KeyboardInterrupt:
        emit("exit", code=130)
        raise SystemExit(130) from None
    emit("exit", code=0)


def _run_claim(q: WorkQueue, claim, args: WorkerArgs, emit) -> bool:
    """Run one claimed item; False when it failed outside training (the store or queue, not the model)."""
    from optuna.trial import TrialState

    from ablation.tracking import _one_line
    from ablation.train_run import train_tracked

    item, key = claim.item, claim.item["key"]
    spec = next((s for s in args.specs if s.config_hash == key), None)
    if spec is None:  # enqueued from another version of the study file
        q.finish(claim, TrialState.PRUNED, "not in this study")
        return True
    rec = fetch_records(args.tracking_uri, args.experiment).get(key)
    if rec is not None and (rec.status == "FINISHED" or (rec.status == "FAILED" and not item.get("retry"))):
        q.finish(claim, TrialState.PRUNED, f"already {rec.status.lower()}")
        emit("skip", key=key, state=rec.status.lower())
        return True
    emit("start", key=key, total=spec.config.train.iterations)
    tags = _row_tags(item)
    try:
        outcome = train_tracked(spec.config, Path(args.workspace), args.tracking_uri, args.experiment,
                                run_name=spec.run_name, resume=True, tags=tags, parent_run_id=args.parent_run_id,
                                extra_hooks=_EventHooks(emit, claim, key))
        status, reason, ap, ok = outcome.result.status, outcome.result.reason, outcome.result.metrics.get("AP"), True
    except KeyboardInterrupt:
        q.finish(claim, TrialState.FAIL, "interrupted")
        emit("end", key=key, status="INTERRUPTED", reason="", ap=None)
        raise
    except Exception as exc:  # tracked_run recorded it FAILED with this reason, if its run existed
        status, reason, ap = "FAILED", _one_line(exc), None
        ok = _record_failure(spec, tags, args, reason)
    q.finish(claim, TrialState.COMPLETE if status == "FINISHED" else TrialState.FAIL, status.lower(), ap)
    emit("end", key=key, status=status, reason=reason, ap=ap)
    return ok


def _record_failure(spec: RunSpec, tags: dict, args: WorkerArgs, reason: str) -> bool:
    """True if MLflow already holds the FAILED run (training raised); else record one and return False."""
    from ablation.tracking import tracked_run

    try:
        rec = fetch_records(args.tracking_uri, args.experiment).get(spec.config_hash)
        if rec is not None and rec.status == "FAILED":
            return True
        run_id = rec.run_id if rec is not None and rec.status != "FINISHED" else None
        with tracked_run(spec.config, args.tracking_uri, args.experiment, Path(args.workspace), spec.run_name,
                         tags, args.parent_run_id, run_id) as hooks:
            hooks.on_end("FAILED", reason)
    except Exception:  # the store itself is failing: the worker gives up after a few of these
        pass
    return False


class _EventHooks(TrainHooks):
    """Training hooks that report progress to the launcher (throttled) and watch the claim."""

    EVERY_S = 0.5

    def __init__(self, emit, claim, key: str):
        self.emit, self.claim, self.key = emit, claim, key
        self.last = 0.0

    def _check(self) -> None:
        if self.claim.lost.is_set():  # another worker holds this run now: leave it to them, at once
            self.emit("end", key=self.key, status="LOST", reason="handed to another worker", ap=None)
            os._exit(LOST_EXIT)

    def on_start(self, config, workdir, start_iteration):
        self.emit("iter", key=self.key, it=start_iteration, phase="train")

    def on_iteration(self, iteration, scalars):
        self._check()
        now = time.monotonic()
        if now - self.last >= self.EVERY_S:
            self.last = now
            self.emit("iter", key=self.key, it=iteration, phase="train")

    def on_eval_progress(self, done, total):
        self._check()
        now = time.monotonic()
        if now - self.last >= self.EVERY_S or done == total:
            self.last = now
            self.emit("iter", key=self.key, it=done, total=total, phase="eval")


# ---------------------------------------------------------------- launcher
