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

import logging
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
from detector.engine.hooks import TrainHooks

MAX_CONSECUTIVE_ERRORS = 3  # a worker whose runs keep failing outside training stops
PARENT_WAIT_S = 120.0  # how long a launcher waits for the queue's creator to make the parent run
LOST_EXIT = 3  # exit code of a worker whose run was handed to another worker
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
def _row_tags(item: dict) -> dict[str, str]:
    return {"role": "row", "study": item["study"], "profile": item["profile"], "row": item["label"],
            "row_index": str(item["row"]), "seed": str(item["seed"])}


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


# ---------------------------------------------------------------- workers
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


class ProgressDisplay:
    """Rich progress of a study run: rows done/running/failed/pending; each worker's row, iteration, ETA.

    On a terminal a live panel is redrawn; either way one line is printed per started or ended run.
    """

    def __init__(self, console=None):
        from rich.console import Console

        self.console = console or Console()
        self.live = None

    def start(self, study: Study, profile: str, entries: list[PlanEntry], n_workers: int) -> None:
        from rich.live import Live

        self.title = f"{study.name} [{profile}]"
        self.specs = {e.spec.config_hash: e.spec for e in entries}
        self.state = {e.spec.config_hash: e.state if e.state in ("finished", "failed", "running") and
                      e.action != "retry" else "pending" for e in entries}
        self.workers: dict[int, dict] = {}
        self.t0 = time.monotonic()
        counts = ", ".join(f"{n} {k}" for k, n in count_states(entries).items() if n)
        self._say(f"study {self.title}: {len(entries)} runs ({counts}); {n_workers} worker(s)")
        if self.console.is_terminal:
            self.live = Live(self._render(), console=self.console, refresh_per_second=2, transient=True)
            self.live.start()

    def _say(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False)

    def _name(self, key: str) -> str:
        spec = self.specs.get(key)
        return spec.run_name if spec else key

    def handle(self, event) -> None:
        index, kind, data = event
        key = data.get("key", "")
        now = time.monotonic()
        if kind == "start":
            self.state[key] = "running"
            self.workers[index] = {"key": key, "it": 0, "total": data["total"], "phase": "train", "rate": 0.0,
                                   "t": now, "it0": None}
            self._say(f"  {'start':<12}{self._name(key)}  (worker {index})")
        elif kind == "iter" and index in self.workers:
            w = self.workers[index]
            if data["phase"] == "train" and w["it0"] is not None and data["it"] > w["it"] and now > w["t"]:
                rate = (data["it"] - w["it"]) / (now - w["t"])
                w["rate"] = rate if not w["rate"] else 0.7 * w["rate"] + 0.3 * rate
            w.update(it=data["it"], phase=data["phase"], t=now, it0=data["it"] if w["it0"] is None else w["it0"])
            if data["phase"] == "eval":
                w["eval_total"] = data.get("total", 0)
        elif kind == "end":
            self.workers.pop(index, None)
            status = data["status"]
            self.state[key] = {"FINISHED": "finished", "FAILED": "failed"}.get(status, "pending")
            detail = f"AP {100 * data['ap']:.1f}" if data.get("ap") is not None else data.get("reason", "")
            self._say(f"  {status.lower():<12}{self._name(key)}  {detail}".rstrip())
        elif kind == "skip":
            self.state[key] = data["state"]
        elif kind == "exit":
            self.workers.pop(index, None)
        elif kind == "died":
            w = self.workers.pop(index, None)
            if w is not None:
                self.state[w["key"]] = "pending"
            self._say(f"  worker {index} died (exit code {data['code']}); its run goes back to the queue")
        self.tick()

    def _eta(self) -> str:
        rate = sum(w["rate"] for w in self.workers.values() if w["phase"] == "train")
        if rate <= 0:
            return "-"
        left = sum(max(0, w["total"] - w["it"]) for w in self.workers.values() if w["phase"] == "train")
        left += sum(self.specs[k].config.train.iterations for k, s in self.state.items() if s == "pending")
        return _clock(left / rate)

    def _render(self):
        from rich.console import Group
        from rich.text import Text

        counts = {k: sum(s == k for s in self.state.values()) for k in ("finished", "running", "failed", "pending")}
        head = Text.assemble((self.title, "bold"), f"  {counts['finished']} done · {counts['running']} running · "
                             f"{counts['failed']} failed · {counts['pending']} pending · elapsed "
                             f"{_clock(time.monotonic() - self.t0)} · ETA {self._eta()}")
        lines = [head]
        for index, w in sorted(self.workers.items()):
            if w["phase"] == "eval":
                where = f"eval {w['it']}/{w.get('eval_total', '?')}"
            else:
                left = (w["total"] - w["it"]) / w["rate"] if w["rate"] else None
                where = f"it {w['it']}/{w['total']}  {w['rate']:.2f} it/s  ETA {_clock(left) if left else '-'}"
            lines.append(Text(f"  worker {index}  {self._name(w['key'])}  {where}"))
        return Group(*lines)

    def tick(self) -> None:
        if self.live is not None:
            self.live.update(self._render())

    def stop(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None


def _clock(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


__all__ = ["RunnerSettings", "PlanEntry", "StudyResult", "plan", "format_plan", "count_states", "reconcile",
           "run_study", "prepare_parent", "ProgressDisplay"]
