"""Run a study: a launcher that prepares MLflow and the queue, and worker processes that train.

MLflow is the source of truth for run state; the queue (`ablation/queue.py`) only hands out work.
A run is keyed by its config hash (the seed is part of the config), inside one MLflow experiment per
study (named after it); `tables.fetch_records` maps hashes to runs.

Launcher (`run_study`):
 1. open the queue, an Optuna study `<study>.<profile>`. Creating it is atomic, so exactly one
    launcher is its creator: that one creates the MLflow store, the experiment and the parent run,
    and stores the parent's id in the queue; the others wait for the id (SQLite stores break when
    several processes create them at once). Workers only start after this.
 2. reconcile: enqueue every run that MLflow has not finished (failed ones only with
    `retry_failed`) and that no live trial holds.
 3. start N workers (one per GPU with CUDA_VISIBLE_DEVICES pinned; on CPU, torch threads are split
    `cores // N` per worker without touching the config); show progress; when they exit, build the
    table from MLflow and log it to the parent run.
Worker: claim a run -> MLflow says FINISHED: reuse it; FAILED: skip it unless the item retries ->
otherwise `train_tracked(resume=True)`, which re-opens an interrupted run of the same hash and
continues from `checkpoints/<hash>/last.pt`. Divergence or an exception = a FAILED run with its
reason; the worker goes on. With nothing waiting, a worker reaps stale trials (dead workers),
re-enqueues what they held, and waits while runs are live elsewhere; it exits when none are.
"""
from __future__ import annotations

import multiprocessing
import os
import queue as std_queue
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from ablation.queue import DEFAULT_HEARTBEAT_S, HOST, WorkQueue, default_storage
from ablation.study import RunSpec, Study, expand, spec_hash
from ablation.tables import FORMATS, build_table, fetch_records, find_parent, log_table, render
from ablation.tracking import ensure_store, pid_alive
from ablation.worker import WorkerArgs, _stop_once, _worker_main

PARENT_WAIT_S = 120.0  # how long a launcher waits for the queue's creator to make the parent run
JOIN_TIMEOUT_S = 30.0
INTERRUPT_GRACE_S = 2.0  # after Ctrl-C, workers (which got it too) may stop by themselves first


@dataclass
class RunnerSettings:
    workers: int = 1
    gpus: list[str] = field(default_factory=list)
    retry_failed: bool = False
    queue_storage: str | None = None  # journal file path or database URL; default under workspace/queue/
    heartbeat_s: float = DEFAULT_HEARTBEAT_S
    poll_s: float = 2.0


@dataclass
class PlanEntry:
    spec: RunSpec
    state: str  # finished | failed | running | interrupted | queued | pending
    action: str  # what `study run` would do
    record: object | None = None  # tables.RunRecord


@dataclass
class StudyResult:
    study: str
    profile: str
    parent_run_id: str
    tracking_uri: str
    experiment: str
    counts: dict[str, int]
    table: str  # markdown
    interrupted: bool = False


def _targets(workspace, tracking_uri):
    from ablation.tracking import resolve_tracking_uri, workspace_dir

    ws = workspace_dir(workspace)
    return ws, resolve_tracking_uri(tracking_uri, ws)


def _queue_location(settings: RunnerSettings, ws: Path, study: Study, profile: str) -> str:
    return settings.queue_storage or default_storage(ws, study.name, profile)


# ---------------------------------------------------------------- plan (dry run, status)
def plan(study: Study, profile: str, workspace=None, tracking_uri=None, settings: RunnerSettings | None = None,
         ) -> tuple[list[PlanEntry], list]:
    """What `study run` would do for each run, and the live trials; reads only (creates nothing)."""
    settings = settings or RunnerSettings()
    ws, uri = _targets(workspace, tracking_uri)
    location = _queue_location(settings, ws, study, profile)
    live: dict = {}
    running: list = []
    if "://" in location or Path(location).exists():
        try:
            q = WorkQueue(location, f"{study.name}.{profile}", settings.heartbeat_s, create=False)
        except KeyError:
            q = None
        if q is not None:
            live, running = q.live(), q.running()
    records = fetch_records(uri, study.name)
    entries = []
    for spec in expand(study, profile):
        rec = records.get(spec.config_hash)
        status = rec.status if rec else None
        held = spec.config_hash in live
        if status == "FINISHED":
            state, action = "finished", f"reuse (AP {100 * rec.metrics.get('val/AP', float('nan')):.1f})"
        elif status == "FAILED":
            state = "failed"
            action = "retry" if settings.retry_failed else f"skip: {rec.reason or 'failed'}"
        elif held:
            state, action = ("running", "running elsewhere") if live[spec.config_hash][0].state.name == "RUNNING" \
                else ("queued", "run (queued)")
        elif status is not None:
            it = rec.tags.get("checkpoint_iteration")
            state, action = "interrupted", f"resume from iteration {it}" if it else "resume (no checkpoint yet)"
        else:
            state, action = "pending", "run"
        entries.append(PlanEntry(spec, state, action, rec))
    return entries, running


def format_plan(study: Study, profile: str, entries: list[PlanEntry]) -> str:
    """An aligned text listing: #, label, seed, config hash, state, action."""
    head = ["#", "label", "seed", "config hash", "state", "action"]
    rows = [[str(e.spec.row + 1), e.spec.label, str(e.spec.seed), e.spec.config_hash, e.state, e.action]
            for e in entries]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = [f"study {study.name} · profile {profile} · {len(entries)} runs · spec {spec_hash(study, profile)}"]
    for r in [head, *rows]:
        lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    counts = count_states(entries)
    lines.append("  " + ", ".join(f"{n} {k}" for k, n in counts.items() if n))
    return "\n".join(lines)


def count_states(entries: list[PlanEntry]) -> dict[str, int]:
    keys = ("finished", "failed", "running", "queued", "interrupted", "pending")
    return {k: sum(e.state == k for e in entries) for k in keys}


# ---------------------------------------------------------------- queue items and reconcile
def _item(spec: RunSpec, retry: bool) -> dict:
    return {"key": spec.config_hash, "label": spec.label, "row": spec.row, "seed": spec.seed,
            "study": spec.study, "profile": spec.profile, "retry": retry}


def reconcile(q: WorkQueue, specs: list[RunSpec], tracking_uri: str, experiment: str, retry_failed: bool) -> int:
    """Enqueue the runs that need work and that no live trial holds; return how many.

    Trials are read before MLflow: a trial closes only after its MLflow run ended, so a run missing
    from the live set has its final MLflow state by the time it is read (no spurious re-runs).
    """
    q.reap_stale()
    live = q.live()
    records = fetch_records(tracking_uri, experiment)
    items = []
    for spec in specs:
        rec = records.get(spec.config_hash)
        if spec.config_hash in live or (rec is not None and rec.status == "FINISHED"):
            continue
        if rec is not None and rec.status == "FAILED" and not retry_failed:
            continue
        items.append(_item(spec, retry=rec is not None and rec.status == "FAILED"))
    q.enqueue(items)
    return len(items)


# ---------------------------------------------------------------- parent run
def _create_parent(study: Study, profile: str, uri: str, ws: Path) -> str:
    from mlflow import MlflowClient

    from ablation.tracking import ensure_experiment, git_info

    exp_id = ensure_experiment(study.name, uri, ws)
    found = find_parent(uri, study.name, profile)
    if found:
        return found
    tags = {"role": "study", "study": study.name, "profile": profile, **git_info(),
            "paper_table": study.paper.get("table", ""), "mlflow.note.content": study.description}
    return MlflowClient(uri).create_run(exp_id, tags=tags, run_name=f"{study.name} [{profile}]").info.run_id


def _parent_ok(uri: str, run_id: str) -> bool:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        return MlflowClient(uri).get_run(run_id).info.lifecycle_stage == "active"
    except MlflowException:
        return False


def prepare_parent(q: WorkQueue, study: Study, profile: str, uri: str, ws: Path) -> str:
    """The parent run of (study, profile): made by the queue's creator, read by everyone else."""
    from mlflow import MlflowClient

    parent = None
    if q.created:
        q.set_attr("creator", {"host": HOST, "pid": os.getpid()})
    else:
        parent = _wait_parent(q)
    ensure_store(uri)
    if parent is None or not _parent_ok(uri, parent):  # the creator, a creator that died, or a deleted parent
        parent = _create_parent(study, profile, uri, ws)
        q.set_attr("parent_run_id", parent)
    client = MlflowClient(uri)
    client.set_tag(parent, "spec_hash", spec_hash(study, profile))
    client.set_tag(parent, "study_file", str(study.path))
    client.log_text(parent, study.path.read_text(), "study.yaml")
    client.update_run(parent, status="RUNNING")
    return parent


def _wait_parent(q: WorkQueue, poll_s: float = 0.5) -> str | None:
    """The parent id once the queue's creator has stored it; None if the creator died first."""
    deadline = time.monotonic() + PARENT_WAIT_S
    while time.monotonic() < deadline:
        parent = q.get_attr("parent_run_id")
        if parent is not None:
            return parent
        creator = q.get_attr("creator") or {}
        if creator.get("host") == HOST and not pid_alive(creator.get("pid", -1)):
            return None
        time.sleep(poll_s)
    return None


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def run_study(study: Study, profile: str | None = None, settings: RunnerSettings | None = None, workspace=None,
              tracking_uri: str | None = None, display=None) -> StudyResult:
    """Run every row x seed of `study` under `profile` and return the table (see the module doc).

    `display` (a `ProgressDisplay`, or anything with its start/handle/tick/stop) shows progress; None
    runs silently.
    """
    from mlflow import MlflowClient

    settings = settings or RunnerSettings()
    profile = profile or study.default_profile()
    specs = expand(study, profile)
    ws, uri = _targets(workspace, tracking_uri)
    location = _queue_location(settings, ws, study, profile)
    q = WorkQueue(location, f"{study.name}.{profile}", settings.heartbeat_s)
    parent = prepare_parent(q, study, profile, uri, ws)
    entries, _ = plan(study, profile, ws, uri, settings)
    reconcile(q, specs, uri, study.name, settings.retry_failed)
    n = len(settings.gpus) or max(1, settings.workers)
    if not q.waiting() and not q.running():
        n = 0  # everything is finished or failed: no worker to start
    threads = max(1, _cpu_count() // max(1, n))
    ctx = multiprocessing.get_context("spawn")
    events = ctx.Queue()
    procs = []
    interrupted = False
    if display is not None:
        display.start(study, profile, entries, n)
    previous = signal.signal(signal.SIGTERM, _stop_once), signal.getsignal(signal.SIGINT)
    try:
        for i in range(n):
            args = WorkerArgs(i, specs, location, q.name, settings.heartbeat_s, settings.poll_s, str(ws), uri,
                              study.name, parent, threads, settings.gpus[i] if settings.gpus else None, os.getpid())
            proc = ctx.Process(target=_worker_main, args=(args, events), name=f"anchorlab-worker-{i}")
            proc.start()
            procs.append(proc)
        reported: set[int] = set()
        while any(p.is_alive() for p in procs):
            _drain(events, display, timeout=0.5)
            for i, p in enumerate(procs):
                if not p.is_alive() and p.exitcode not in (0, None) and i not in reported:
                    reported.add(i)  # a crashed or killed worker: its run is re-handed (pid check, heartbeat)
                    if display is not None:
                        display.handle((i, "died", {"code": p.exitcode}))
    except KeyboardInterrupt:  # Ctrl-C reached the workers too; SIGTERM did not
        interrupted = True
        _stop(procs)
    finally:
        signal.signal(signal.SIGTERM, previous[0])
        signal.signal(signal.SIGINT, previous[1])
        _drain(events, display, timeout=0.0)
        if display is not None:
            display.stop()
    for p in procs:
        p.join()
    records = fetch_records(uri, study.name)
    table = build_table(study, profile, records)
    for fmt in FORMATS:
        log_table(uri, parent, render(table, fmt, reference=True), fmt, profile)
    entries, _ = plan(study, profile, ws, uri, settings)
    counts = count_states(entries)
    done = counts["finished"] + counts["failed"] == len(entries)
    MlflowClient(uri).set_terminated(parent, "FINISHED" if done else "KILLED")
    return StudyResult(study.name, profile, parent, uri, study.name, counts, render(table, "md"), interrupted)


def _stop(procs) -> None:
    """Let workers end their runs as KILLED and release them (SIGTERM after a grace moment), then reap."""
    grace, deadline = time.monotonic() + INTERRUPT_GRACE_S, time.monotonic() + JOIN_TIMEOUT_S
    for p in procs:
        p.join(max(0.0, grace - time.monotonic()))
    for p in procs:
        if p.is_alive():
            p.terminate()
    for p in procs:
        p.join(max(0.1, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()


def _drain(events, display, timeout: float) -> None:
    try:
        event = events.get(timeout=timeout) if timeout else events.get_nowait()
        while True:
            if display is not None:
                display.handle(event)
            event = events.get_nowait()
    except (std_queue.Empty, EOFError, OSError):
        pass
    if display is not None:
        display.tick()


__all__ = ["RunnerSettings", "PlanEntry", "StudyResult", "plan", "format_plan", "count_states", "reconcile",
           "run_study", "prepare_parent"]
