"""Run a study: prepare MLflow and the queue, start workers, build the table.

MLflow is the source of truth for run state; the queue (`queue.py`) only hands out work. A run is
keyed by its run key (`detector.run_key`); keys are workspace-wide, so a key that finished in another
study (or in `anchorlab train`) is reused by linking, not trained again (`run.execute`).

`run_study`:
 1. open the queue, an Optuna study `<study>.<profile>`. Creating it is atomic, so exactly one
    launcher is its creator: that one creates the MLflow store, the experiment and the parent run,
    and stores the parent's id in the queue; the others wait for the id (SQLite stores break when
    several processes create them at once). Workers only start after this.
 2. reconcile: enqueue every run (its resolved config in the item) that this study has not finished
    (failed ones only with `retry_failed`) and that no live trial holds.
 3. start N workers (`worker.py`; one per GPU with CUDA_VISIBLE_DEVICES pinned; on CPU, torch threads
    are split `cores // N` per worker without touching the config); show progress; when they exit,
    build the table from MLflow and log it to the parent run, with its summary (each row's AP, the best
    row, what the table covers: `tables.summary`, written by `tracking.summary`).

The table (`_table`, also behind `study_table`) is built from plain data read here: the runs as a
DataFrame and, when the study names a `baseline`, each finished run's detections matched per image
against the val annotation file its config resolves to (for the bootstrap over val images).
"""
from __future__ import annotations

import multiprocessing
import os
import queue as std_queue
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from ablation.execution.per_image import per_image_matches, workspace_detections  # noqa: F401 (re-exported)
from ablation.execution.queue import DEFAULT_HEARTBEAT_S, WorkQueue, default_storage
from ablation.processes import HOST, pid_alive
from ablation.study.expand import StudyRun, expand, spec_hash
from ablation.study.load import Study
from ablation.tables.build import Table, as_run, build_table
from ablation.tables.render import EXTENSIONS, FORMATS, render
from ablation.tables.summary import summarize
from ablation.tracking import reader, writer
from ablation.tracking.store import ensure_store, resolve_tracking_uri, workspace_dir
from ablation.tracking.summary import log_study_summary
from ablation.tracking.views import ensure_rows_view
from detector.config import config_to_dict

PARENT_WAIT_S = 120.0  # how long a launcher waits for the queue's creator to make the parent run
JOIN_TIMEOUT_S = 30.0
INTERRUPT_GRACE_S = 2.0  # after Ctrl-C, workers (which got it too) may stop by themselves first
ROWS_FILTER = "tags.role = 'row'"


@dataclass
class RunnerSettings:
    workers: int = 1
    gpus: list[str] = field(default_factory=list)
    procs_per_run: int = 1  # processes (GPUs, with `gpus`) that train each row together (`ranks.py`)
    retry_failed: bool = False
    queue_storage: str | None = None  # journal file path or database URL; default under workspace/queue/
    heartbeat_s: float = DEFAULT_HEARTBEAT_S
    poll_s: float = 2.0


@dataclass
class PlanEntry:
    run: StudyRun
    state: str  # finished | failed | running | interrupted | queued | pending
    action: str  # what `study run` would do
    record: reader.RunRecord | None = None


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


def _targets(workspace, tracking_uri) -> tuple[Path, str]:
    ws = workspace_dir(workspace)
    return ws, resolve_tracking_uri(tracking_uri, ws)


def _queue_location(settings: RunnerSettings, ws: Path, study: Study, profile: str) -> str:
    return settings.queue_storage or default_storage(ws, study.name, profile)


def _ap(rec: reader.RunRecord) -> str:
    return f"AP {rec.metrics.get('val/AP', float('nan')):.1f}%"  # percent (`reader`)


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
    records = reader.study_runs(uri, study.name)
    elsewhere = {k: r for k, r in reader.by_key(reader.runs_frame(uri, None, "attributes.status = 'FINISHED'")).items()
                 if r.reused_from is None}
    entries = []
    for run in expand(study, profile):
        rec = records.get(run.key)
        outcome = rec.outcome if rec else None
        if outcome == "FINISHED":
            state, action = "finished", f"reuse ({_ap(rec)})"
        elif outcome == "FAILED":
            state = "failed"
            action = "retry" if settings.retry_failed else f"skip: {rec.reason or 'failed'}"
        elif run.key in live:
            state, action = ("running", "running elsewhere") if live[run.key][0].state.name == "RUNNING" \
                else ("queued", "run (queued)")
        elif run.key in elsewhere:
            state, action = "pending", f"reuse run {elsewhere[run.key].run_id[:8]} of another study ({_ap(elsewhere[run.key])})"
        elif rec is not None and outcome != "PRUNED":
            it = rec.tags.get("checkpoint_iteration")
            state, action = "interrupted", f"resume from iteration {it}" if it else "resume (no checkpoint yet)"
        else:
            state, action = "pending", "run"
        entries.append(PlanEntry(run, state, action, rec))
    return entries, running


def format_plan(study: Study, profile: str, entries: list[PlanEntry]) -> str:
    """An aligned text listing: #, label, seed, run key, state, action."""
    head = ["#", "label", "seed", "run key", "state", "action"]
    rows = [[str(e.run.row + 1), e.run.label, str(e.run.seed), e.run.key, e.state, e.action] for e in entries]
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
def study_item(run: StudyRun, retry: bool) -> dict:
    """A queue item: everything a worker needs to execute the run, the resolved config included."""
    return {"key": run.key, "label": run.label, "run_name": run.run_name, "row": run.row, "seed": run.seed,
            "study": run.study, "profile": run.profile, "tags": run.tags, "retry": retry,
            "config": config_to_dict(run.config)}


def reconcile(q: WorkQueue, runs: list[StudyRun], tracking_uri: str, experiment: str, retry_failed: bool) -> int:
    """Enqueue the runs that need work and that no live trial holds; return how many.

    Trials are read before MLflow: a trial closes only after its MLflow run ended, so a run missing
    from the live set has its final MLflow state by the time it is read (no spurious re-runs).
    """
    q.reap_stale()
    live = q.live()
    records = reader.study_runs(tracking_uri, experiment)
    items = []
    for run in runs:
        rec = records.get(run.key)
        if run.key in live or (rec is not None and rec.settled(retry_failed)):
            continue
        items.append(study_item(run, retry=rec is not None and rec.outcome == "FAILED"))
    q.enqueue(items)
    return len(items)


# ---------------------------------------------------------------- parent run
def prepare_parent(q: WorkQueue, study: Study, profile: str, uri: str, ws: Path) -> str:
    """The parent run of (study, profile): made by the queue's creator, read by everyone else."""
    parent = None
    if q.created:
        q.set_attr("creator", {"host": HOST, "pid": os.getpid()})
    else:
        parent = _wait_parent(q)
    ensure_store(uri)
    if parent is None or not reader.run_active(uri, parent):  # the creator, a dead creator, or a deleted parent
        parent = reader.find_parent(uri, study.name, profile) or writer.create_parent(
            uri, ws, study.name, f"{study.name} [{profile}]",
            {"study": study.name, "profile": profile, "paper_table": study.paper.get("table", "")}, study.description)
        q.set_attr("parent_run_id", parent)
    writer.open_parent(uri, parent, {"spec_hash": spec_hash(study, profile), "study_file": str(study.path)},
                       {"study.yaml": study.path.read_text()})
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
    from ablation.execution.worker import WorkerArgs, stop_once, worker_main  # torch: only where runs train

    settings = settings or RunnerSettings()
    profile = profile or study.default_profile()
    runs = expand(study, profile)
    ws, uri = _targets(workspace, tracking_uri)
    location = _queue_location(settings, ws, study, profile)
    q = WorkQueue(location, f"{study.name}.{profile}", settings.heartbeat_s)
    parent = prepare_parent(q, study, profile, uri, ws)
    entries, _ = plan(study, profile, ws, uri, settings)
    reconcile(q, runs, uri, study.name, settings.retry_failed)
    k = max(1, settings.procs_per_run)
    gpu_sets = [",".join(settings.gpus[i:i + k]) for i in range(0, len(settings.gpus) - k + 1, k)]
    n = len(gpu_sets) or max(1, settings.workers)
    if not q.waiting() and not q.running():
        n = 0  # everything is finished or failed: no worker to start
    threads = max(1, _cpu_count() // max(1, n))
    ctx = multiprocessing.get_context("spawn")
    events = ctx.Queue()
    procs = []
    interrupted = False
    if display is not None:
        display.start(study, profile, entries, n)
    previous = signal.signal(signal.SIGTERM, stop_once), signal.getsignal(signal.SIGINT)
    try:
        for i in range(n):
            args = WorkerArgs(i, location, q.name, settings.heartbeat_s, settings.poll_s, str(ws), uri, study.name,
                              parent, threads, gpu_sets[i] if gpu_sets else None, os.getpid(), k)
            proc = ctx.Process(target=worker_main, args=(args, events), name=f"anchorlab-worker-{i}")
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
    table = _table(study, profile, uri, ws)
    for fmt in FORMATS:
        writer.log_text(uri, parent, render(table, fmt, reference=True), f"tables/{profile}.{EXTENSIONS[fmt]}")
    _log_summary(study, profile, table, uri, parent)
    entries, _ = plan(study, profile, ws, uri, settings)
    counts = count_states(entries)
    done = counts["finished"] + counts["failed"] == len(entries)
    writer.end_run(uri, parent, "FINISHED" if done else "KILLED")
    return StudyResult(study.name, profile, parent, uri, study.name, counts, render(table, "md"), interrupted)


def study_table(study: Study, profile: str | None = None, fmt: str = "md", reference: bool = False,
                workspace=None, tracking_uri: str | None = None, log: bool = True) -> str:
    """Render the study's table from MLflow (and, with `log`, log it to the parent run when there is one)."""
    profile = profile or study.default_profile()
    expand(study, profile)  # an unknown profile is an error before anything is read
    ws, uri = _targets(workspace, tracking_uri)
    table = _table(study, profile, uri, ws)
    text = render(table, fmt, reference)
    if log:
        parent = log_table(study, profile, fmt, text, ws, uri)
        if parent:
            _log_summary(study, profile, table, uri, parent)
    return text


def log_table(study: Study, profile: str, fmt: str, text: str, workspace=None, tracking_uri: str | None = None,
              ) -> str | None:
    """Log a rendered table to the study's parent run of `profile`; its id, or None when there is no parent.

    Apart from `study_table` so that `anchorlab study table` prints first: writing loads mlflow (1.5-3 s),
    which reading the table does not need.
    """
    ws, uri = _targets(workspace, tracking_uri)
    parent = reader.find_parent(uri, study.name, profile)
    if parent:
        writer.log_text(uri, parent, text, f"tables/{profile}.{EXTENSIONS[fmt]}")
    return parent


def _log_summary(study: Study, profile: str, table: Table, uri: str, parent: str) -> None:
    """The table's summary on the parent run: its metrics, params, tags and description (`tables.summary`); and
    the experiment's saved view of the profile's rows (`tracking.views`)."""
    found = summarize(table, study, profile, render(table, "md"))
    log_study_summary(uri, parent, found.values, found.params, found.tags, found.markdown, study.description)
    experiment = reader.experiment_id(uri, study.name)
    if experiment is not None:
        ensure_rows_view(uri, experiment, profile, study.metrics)


def _table(study: Study, profile: str, uri: str, ws: Path) -> Table:
    frame = reader.runs_frame(uri, study.name, ROWS_FILTER)
    return as_run(build_table(study, profile, frame, per_image_matches(study, profile, frame, uri, ws)
                              if study.baseline is not None else None), profile)


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
           "study_item", "run_study", "study_table", "log_table", "prepare_parent", "per_image_matches",
           "workspace_detections"]
