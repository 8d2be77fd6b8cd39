"""Run a search: Optuna proposes each trial, anchorlab's one execution path trains it, MLflow tracks it.

`run_search(search, profile)`:
 1. open the storage (`storage.py`: a journal file in the workspace by default) and the Optuna study
    `<search>:<profile>` with the search's directions; the study's creator makes (or finds, by its tags
    role=search and profile) the MLflow parent run in experiment `search.name`, and stores its id there.
 2. fail the trials left RUNNING by dead workers and enqueue them again (`storage.reap`).
 3. `workers` processes (spawned, CPU threads split among them; with one worker, this process) ask and
    run trials (`worker.work`) until the budget holds `trials` COMPLETE + PRUNED trials: each trial is the
    child run `trial <n>` of the parent, executed with reuse and resume, pruned at an intermediate
    evaluation when the pruner says so; the budget rule makes the workers together run exactly `trials`.
 4. build the `SearchResult` from the storage and end the parent run (FINISHED once the budget is met).

Re-running the command resumes the search: finished trials stay, a search at its budget starts nothing.
MLflow runs are written by `execute` and `ablation.tracking.writer` (not Optuna's MLflow callback).
"""
from __future__ import annotations

import json
import multiprocessing
import os
import queue as std_queue
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ablation.execution.worker import stop_once
from ablation.processes import HOST, pid_alive
from ablation.search import storage as st
from ablation.search.rerun import RERUN_JSON, RerunResult, format_rerun, rerun_top, to_dict, write_best
from ablation.search.space import build_pruner, build_sampler, decode
from ablation.search.spec import Search
from ablation.search.worker import WorkerArgs, work, worker_main
from ablation.study.source import StudyError
from ablation.tracking import reader, writer
from ablation.tracking.store import ensure_store, resolve_tracking_uri, workspace_dir

PARENT_WAIT_S = 120.0  # how long a second launcher waits for the creator's parent run
NO_CREATOR_WAIT_S = 5.0  # the creator records itself right after creating the study
JOIN_TIMEOUT_S = 30.0
INTERRUPT_GRACE_S = 2.0  # after Ctrl-C, workers (which got it too) may stop by themselves first


@dataclass
class TrialRecord:
    number: int
    state: str  # COMPLETE | PRUNED | FAIL | RUNNING | WAITING
    params: dict  # name -> config value
    values: list[float] | None  # objective values (PRUNED: the last reported one)
    run_id: str | None
    outcome: str = ""  # FINISHED | PRUNED | FAILED | stale | interrupted (`storage.OUTCOME`)
    reason: str = ""
    step: int = 0  # iterations trained (PRUNED: where it stopped)
    wall_s: float | None = None  # training time of this trial (None: reused, or not run here)
    reused_from: str | None = None


@dataclass
class SearchResult:
    search: str
    profile: str
    study_name: str
    storage: str
    parent_run_id: str
    tracking_uri: str
    budget: int
    trials: list[TrialRecord]  # those that ran, by number (dropped over-budget trials left out)
    best: list[TrialRecord]  # the best trial, or the Pareto front of a two-objective search
    counts: dict[str, int] = field(default_factory=dict)  # complete, pruned, failed, retried, running, waiting
    metrics: list[str] = field(default_factory=list)  # the objectives' metric names
    interrupted: bool = False
    rerun: RerunResult | None = None  # the best configurations trained with several seeds (`rerun.py`)

    def mean(self, state: str, attr: str) -> float | None:
        """The mean `step` or `wall_s` of trials in `state` that trained here (None when there is none)."""
        xs = [getattr(t, attr) for t in self.trials if t.state == state and t.wall_s is not None]
        return sum(xs) / len(xs) if xs else None


def _seed(base: int, index: int, existing: int) -> int:
    """A sampler seed per worker and per start: concurrent workers, and a resumed search, must not
    replay the same proposals; one worker on a new search keeps the spec's seed."""
    if index == 0 and existing == 0:
        return base
    import numpy as np

    return int(np.random.SeedSequence([base, index, existing]).generate_state(1)[0])


# ---------------------------------------------------------------- the launcher
def _wait_parent(study) -> str | None:
    """The parent id once the study's creator has stored it; None if the creator died first, or if no
    `run_search` created the study (no creator is recorded a few seconds on)."""
    start = time.monotonic()
    while time.monotonic() - start < PARENT_WAIT_S:
        attrs = study.user_attrs
        if attrs.get("parent_run_id") is not None:
            return attrs["parent_run_id"]
        creator = attrs.get("creator")
        if creator is None and time.monotonic() - start > NO_CREATOR_WAIT_S:
            return None
        if creator is not None and creator.get("host") == HOST and not pid_alive(creator.get("pid", -1)):
            return None
        time.sleep(0.5)
    return None


def _parent(study, created: bool, search: Search, profile: str, uri: str, ws: Path, location: str) -> str:
    """The MLflow parent run of (search, profile): made by the study's creator, read by everyone else."""
    parent = None
    if created:
        study.set_user_attr("creator", {"host": HOST, "pid": os.getpid()})
    else:
        parent = _wait_parent(study)
    ensure_store(uri)
    if parent is None or not reader.run_active(uri, parent):
        flt = f"tags.role = 'search' and tags.profile = '{profile}'"
        found = reader.records_of(reader.runs_frame(uri, search.name, flt))
        parent = min(found, key=lambda r: (r.start_time, r.run_id)).run_id if found else writer.create_parent(
            uri, ws, search.name, f"{search.name} [{profile}]",
            {"role": "search", "search": search.name, "profile": profile}, search.description)
        study.set_user_attr("parent_run_id", parent)
    text = search.path.read_text() if search.path.is_file() else ""
    writer.open_parent(uri, parent, {"search_file": str(search.path), "storage": location,
                                     "optuna_study": study.study_name}, {"search.yaml": text} if text else {})
    return parent


def run_search(search: Search, profile: str | None = None, trials: int | None = None, workers: int = 1,
               storage: str | None = None, workspace=None, tracking_uri: str | None = None,
               display: Callable[[int, str, dict], None] | None = None,
               heartbeat_s: float = st.DEFAULT_HEARTBEAT_S, poll_s: float = 1.0, rerun: bool = True) -> SearchResult:
    """Run (or resume) `search` under `profile` until `trials` trials are COMPLETE or PRUNED (module doc).

    `storage`: a journal file path or a database URL (default: a journal in the workspace's queue/).
    `display(worker, kind, data)` sees the workers' events: "start" {number, params}, "iter" {number, it,
    total, loss, phase} (`ProgressEvents`, twice a second at most), "end" {number, outcome, values, step,
    run_id, reason, reused, params}, "wait", "log" {text} (a line a spawned worker wrote), "died" {code}, and
    with `rerun` (once the budget is met; single-objective searches) "rerun-start" {candidate, seed},
    "rerun-end" {candidate, seed, status, value, reason}; None runs silently.
    """
    profile = profile or search.default_profile()
    if profile not in search.profiles:
        raise StudyError(f"{search.path}: no profile '{profile}' (the search has {', '.join(search.profiles)})")
    build_sampler(search.sampler, search.space), build_pruner(search.pruner)  # a SpaceError here, not in a worker
    budget = int(search.trials if trials is None else trials)
    ws = workspace_dir(workspace)
    uri = resolve_tracking_uri(tracking_uri, ws)
    location = storage or st.default_location(ws, search.name, profile)
    name = f"{search.name}:{profile}"
    study, created = st.open_study(st.open_search_storage(location, heartbeat_s), name,
                                   [o.direction for o in search.objectives],
                                   metrics=[o.metric for o in search.objectives])
    parent = _parent(study, created, search, profile, uri, ws, location)
    st.reap(study, st.GRACE_BEATS * heartbeat_s)
    existing = len(study.get_trials(deepcopy=False))
    n = max(1, int(workers))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)

    def args(i: int) -> WorkerArgs:
        return WorkerArgs(i, search, profile, location, name, heartbeat_s, poll_s, str(ws), uri, parent, budget,
                          _seed(search.sampler.seed, i, existing), max(1, cores // n) if n > 1 else 0, os.getpid())

    def emit(i: int, kind: str, data: dict) -> None:
        if display is not None:
            display(i, kind, data)

    interrupted = False
    main = threading.current_thread() is threading.main_thread()
    previous = (signal.getsignal(signal.SIGINT), signal.signal(signal.SIGTERM, stop_once)) if main else None
    try:
        if n == 1:
            work(args(0), lambda kind, **data: emit(0, kind, data))
        else:
            interrupted = _spawn([args(i) for i in range(n)], emit)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if main:
            signal.signal(signal.SIGINT, previous[0])  # SIGTERM stops as Ctrl-C does; `stop_once` then ignores both
            signal.signal(signal.SIGTERM, previous[1])
    result = search_result(study, search, profile, budget, location, parent, uri, interrupted)
    writer.log_text(uri, parent, format_result(result), f"search/{profile}.md")
    met = result.counts["complete"] + result.counts["pruned"] >= budget
    if rerun and met and not interrupted and len(search.objectives) == 1:
        try:
            result.rerun = rerun_top(search, profile, study, parent, ws, uri, lambda k, d: emit(0, k, d))
        except KeyboardInterrupt:
            result.interrupted = interrupted = True
        else:
            write_best(search, profile, result.rerun, ws)
            writer.log_text(uri, parent, format_rerun(search, result.rerun) + "\n", f"search/{profile}-rerun.md")
            writer.log_text(uri, parent, json.dumps(to_dict(result.rerun)), RERUN_JSON.format(profile=profile))
    writer.end_run(uri, parent, "FINISHED" if met and not interrupted else "KILLED")
    return result


def _spawn(all_args: list[WorkerArgs], emit) -> bool:
    """Start one process per `WorkerArgs`, relay their events until they exit; True when interrupted."""
    ctx = multiprocessing.get_context("spawn")
    events = ctx.Queue()
    procs, reported, interrupted = [], set(), False
    try:
        for a in all_args:
            proc = ctx.Process(target=worker_main, args=(a, events), name=f"anchorlab-search-{a.index}")
            proc.start()
            procs.append(proc)
        while any(p.is_alive() for p in procs):
            _drain(events, emit, 0.5)
            for i, p in enumerate(procs):
                if not p.is_alive() and p.exitcode not in (0, 130, None) and i not in reported:
                    reported.add(i)  # a killed worker: its trial is reaped (pid check) and run again
                    emit(i, "died", {"code": p.exitcode})
    except KeyboardInterrupt:  # Ctrl-C reached the workers too; SIGTERM (to this process) did not
        interrupted = True
        grace, deadline = time.monotonic() + INTERRUPT_GRACE_S, time.monotonic() + JOIN_TIMEOUT_S
        for p in procs:
            p.join(max(0.0, grace - time.monotonic()))
        for p in procs:
            if p.is_alive():
                p.terminate()  # the worker ends its run KILLED and puts its trial back (`worker.run_trial`)
        for p in procs:
            p.join(max(0.1, deadline - time.monotonic()))
            if p.is_alive():
                p.kill()
    finally:
        _drain(events, emit, 0.0)
    for p in procs:
        p.join()
    return interrupted


def _drain(events, emit, timeout: float) -> None:
    try:
        event = events.get(timeout=timeout) if timeout else events.get_nowait()
        while True:
            emit(*event)
            event = events.get_nowait()
    except (std_queue.Empty, EOFError, OSError):
        pass


# ---------------------------------------------------------------- the result
def search_result(study, search: Search, profile: str, budget: int, location: str, parent: str, uri: str,
                  interrupted: bool = False) -> SearchResult:
    """The search as the storage holds it now (dropped over-budget trials left out)."""
    from optuna.trial import TrialState

    records = []
    for t in study.get_trials(deepcopy=False):
        outcome = t.user_attrs.get(st.OUTCOME, "")
        if outcome == st.DROPPED:
            continue
        records.append(TrialRecord(t.number, t.state.name, decode(search.space, t.params), t.values,
                                   t.user_attrs.get("run_id"), outcome, t.user_attrs.get("reason", ""),
                                   int(t.user_attrs.get("step", 0)), t.user_attrs.get("wall_s"),
                                   t.user_attrs.get("reused_from")))
    by_number = {r.number: r for r in records}
    best = []
    if study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        best = [by_number[t.number] for t in (study.best_trials if len(search.objectives) > 1 else [study.best_trial])]
    counts = {"complete": sum(r.state == "COMPLETE" for r in records),
              "pruned": sum(r.state == "PRUNED" for r in records),
              "failed": sum(r.state == "FAIL" and r.outcome not in st.RETRIED for r in records),
              "retried": sum(r.state == "FAIL" and r.outcome in st.RETRIED for r in records),
              "running": sum(r.state == "RUNNING" for r in records),
              "waiting": sum(r.state == "WAITING" for r in records)}
    return SearchResult(search.name, profile, study.study_name, location, parent, uri, budget, records, best,
                        counts, [o.metric for o in search.objectives], interrupted)


def trial_line(number: int, outcome: str, metrics: list[str], values, params: dict, step: int = 0,
               reason: str = "", reused: bool = False) -> str:
    """'trial 3: PRUNED at iteration 200  AP 0.123  [lr=0.001, k=9]' (what `search run` prints per trial)."""
    text = outcome + (f" at iteration {step}" if outcome == "PRUNED" else "")
    text += " (reused a finished run)" if reused else (f": {reason}" if outcome == "FAILED" and reason else "")
    scores = "  ".join(f"{m} {v:.4g}" for m, v in zip(metrics, values or []))
    shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())
    return "  ".join(part for part in (f"trial {number}: {text}", scores, f"[{shown}]") if part)


def format_trial(record: TrialRecord, metrics: list[str]) -> str:
    return trial_line(record.number, record.outcome or record.state, metrics, record.values, record.params,
                      record.step, record.reason, record.reused_from is not None)


def format_result(result: SearchResult, trials: bool = True) -> str:
    """A short markdown summary: counts, the best trial(s), iterations and time of pruned vs. complete trials,
    and (with `trials`) one line per trial."""
    lines = [f"# search {result.search} [{result.profile}]", "",
             ", ".join(f"{n} {k}" for k, n in result.counts.items() if n) + f" (budget {result.budget})"]
    for b in result.best:
        lines.append(f"- best trial: {format_trial(b, result.metrics)}  run {b.run_id}")
    for state in ("COMPLETE", "PRUNED"):
        step, wall = result.mean(state, "step"), result.mean(state, "wall_s")
        if step is not None:
            lines.append(f"- {state.lower()} trials trained {step:.0f} iterations in {wall:.1f}s on average")
    if trials:
        lines += ["", *(f"- {format_trial(t, result.metrics)}" for t in result.trials)]
    return "\n".join(lines) + "\n"


__all__ = ["run_search", "SearchResult", "TrialRecord", "search_result", "trial_line", "format_trial", "format_result"]
