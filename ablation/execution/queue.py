"""The work queue of a study: Optuna storage hands each run to exactly one worker.

The queue only hands out work; MLflow says what is done (see `launcher.py`).

* One Optuna study per (study, profile). An item is an enqueued (WAITING) trial whose user attribute
  `item` holds the run: run key (`key`), label, seed, row, tags, resolved config, and whether it
  retries a failed run.
* **Claim** = `storage.set_trial_state_values(trial, RUNNING)` on a WAITING trial: the compare-and-set
  that `Study.ask()` uses to pop enqueued trials. With the default journal file it is atomic because
  the log is totally ordered (appends under a file lock) and a RUNNING transition of a trial that is
  no longer WAITING is dropped on replay, so exactly one worker owns it; with PostgreSQL/MySQL it is
  a `SELECT ... FOR UPDATE` transaction. SQLite through Optuna's RDB storage reads and then writes
  without a lock (pysqlite defers BEGIN), so it is refused.
* **Duplicates**: two launchers may enqueue the same run at once. Among the live trials of one key
  the lowest trial number is the canonical one; a worker that claims another one drops it (PRUNED,
  outcome "duplicate"). Trial numbers are unique and fixed, so every worker agrees.
* **Liveness**: a claimant writes `worker = {host, pid, beat}` every `heartbeat_s` seconds from a
  thread. A RUNNING trial is stale when its beat is older than `GRACE_BEATS` heartbeats, or at once
  when its worker ran on this machine and its pid is gone (a SIGKILLed worker). Stale trials are
  failed (`reap_stale`) and their items enqueued again by an idle worker. Beats use wall clocks: machines
  sharing a queue need roughly synchronised clocks (well within the grace period).
"""
from __future__ import annotations

import logging
import os
import threading
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from ablation.processes import HOST, pid_alive

ITEM = "item"
WORKER = "worker"
OUTCOME = "outcome"
GRACE_BEATS = 6  # a trial is stale after this many missed heartbeats
LOCK_GRACE_S = 10  # a journal lock left by a killed process is broken after this long
DEFAULT_HEARTBEAT_S = 10.0


class QueueError(RuntimeError):
    """A queue storage that cannot be used (one line)."""


def default_storage(workspace: Path, study: str, profile: str) -> str:
    """`<workspace>/queue/<study>.<profile>.journal` (DESIGN.md: queue/ holds the Optuna storage)."""
    return str(Path(workspace) / "queue" / f"{study}.{profile}.journal")


def open_storage(location: str):
    """An Optuna storage: a database URL (PostgreSQL, MySQL) or a journal file path (the default)."""
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock, JournalStorage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if "://" in location:
        if location.startswith("sqlite"):
            raise QueueError(f"--queue-storage {location}: SQLite cannot claim rows atomically through Optuna; "
                             "use a journal file path (the default) or a PostgreSQL URL")
        return rdb_storage(location, "--queue-storage")
    path = Path(location).expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = JournalFileSymlinkLock(str(path), grace_period=LOCK_GRACE_S)
    return JournalStorage(JournalFileBackend(str(path), lock_obj=lock))


SCHEMA_TRIES = 5  # processes that open a fresh database at once race to create Optuna's schema


def rdb_storage(location: str, option: str, **kwargs):
    """Optuna's `RDBStorage` on a database URL; a missing database driver is one line naming the extra to install.

    Two processes opening a fresh database at once both create Optuna's schema; PostgreSQL refuses the second's
    `CREATE TYPE` / `CREATE TABLE` (a unique violation, not an "if not exists"). The loser opens it again: by
    then the schema exists and is only checked.
    """
    import optuna
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    try:
        for attempt in range(SCHEMA_TRIES):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeat_interval's
                    return optuna.storages.RDBStorage(location, engine_kwargs={"pool_pre_ping": True}, **kwargs)
            except (IntegrityError, ProgrammingError):
                if attempt == SCHEMA_TRIES - 1:
                    raise
                time.sleep(0.5 * (attempt + 1))
    except ImportError as exc:
        driver = exc.__cause__.name if isinstance(exc.__cause__, ImportError) and exc.__cause__.name else "its driver"
        hint = ' (pip install "anchorlab[postgres]")' if location.startswith("postgres") else ""
        raise QueueError(f"{option} {location}: the database driver is not installed: {driver}{hint}") from None


@dataclass
class Claim:
    """A run this worker owns until `WorkQueue.finish`; `lost` is set if another process failed it."""

    trial_id: int
    number: int
    item: dict
    lost: threading.Event = field(default_factory=threading.Event)
    stop: threading.Event = field(default_factory=threading.Event)


class WorkQueue:
    """Enqueue runs, claim them atomically, beat while running, reap the trials of dead workers."""

    def __init__(self, location: str, name: str, heartbeat_s: float = DEFAULT_HEARTBEAT_S, create: bool = True):
        """Open (and with `create`, create) the queue; without `create` a missing one raises KeyError."""
        import optuna

        self.location, self.name = location, name
        self.heartbeat_s = float(heartbeat_s)
        self.grace_s = GRACE_BEATS * self.heartbeat_s
        self.storage = open_storage(location)
        self.created = False
        if create:
            try:
                self.study = optuna.create_study(storage=self.storage, study_name=name)
                self.created = True  # exactly one process ever sees True for a name (atomic creation)
            except optuna.exceptions.DuplicatedStudyError:
                pass
        if not self.created:
            self.study = optuna.load_study(study_name=name, storage=self.storage)
        self.study_id = self.storage.get_study_id_from_name(name)

    # ------------------------------------------------------------ study attributes
    def get_attr(self, key: str):
        return self.storage.get_study_user_attrs(self.study_id).get(key)

    def set_attr(self, key: str, value) -> None:
        self.storage.set_study_user_attr(self.study_id, key, value)

    # ------------------------------------------------------------ trials
    def _trials(self, states):
        return self.storage.get_all_trials(self.study_id, deepcopy=False, states=states)

    def _trial_id(self, number: int) -> int:
        return self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number)

    def is_alive(self, trial) -> bool:
        """A RUNNING trial whose worker still beats (and, on this machine, still exists)."""
        from optuna.trial import TrialState

        if trial.state != TrialState.RUNNING:
            return False
        worker = trial.user_attrs.get(WORKER)
        if worker is None:  # claimed a moment ago, before its first beat
            started = trial.datetime_start or datetime.now()
            return (datetime.now() - started).total_seconds() < self.grace_s
        if worker.get("host") == HOST and not pid_alive(worker.get("pid", -1)):
            return False
        return time.time() - float(worker.get("beat", 0.0)) < self.grace_s

    def reap_stale(self) -> list[dict]:
        """Fail the RUNNING trials whose worker is gone; return their items."""
        from optuna.exceptions import UpdateFinishedTrialError
        from optuna.trial import TrialState

        reaped = []
        for trial in self._trials((TrialState.RUNNING,)):
            if self.is_alive(trial) or ITEM not in trial.user_attrs:
                continue
            tid = self._trial_id(trial.number)
            try:
                self.storage.set_trial_user_attr(tid, OUTCOME, "stale")
                if self.storage.set_trial_state_values(tid, TrialState.FAIL):
                    reaped.append(trial.user_attrs[ITEM])
            except UpdateFinishedTrialError:
                pass
        return reaped

    def live(self) -> dict[str, list]:
        """key -> the live trials (WAITING, or RUNNING with a live worker), lowest number first."""
        from optuna.trial import TrialState

        out: dict[str, list] = {}
        for trial in self._trials((TrialState.WAITING, TrialState.RUNNING)):
            item = trial.user_attrs.get(ITEM)
            if item is None or (trial.state == TrialState.RUNNING and not self.is_alive(trial)):
                continue
            out.setdefault(item["key"], []).append(trial)
        for trials in out.values():
            trials.sort(key=lambda t: t.number)
        return out

    def running(self) -> list:
        """RUNNING trials with a live worker (on any machine)."""
        from optuna.trial import TrialState

        return [t for t in self._trials((TrialState.RUNNING,)) if ITEM in t.user_attrs and self.is_alive(t)]

    def waiting(self) -> int:
        from optuna.trial import TrialState

        return len(self._trials((TrialState.WAITING,)))

    def enqueue(self, items: list[dict]) -> None:
        for item in items:
            self.study.enqueue_trial({}, user_attrs={ITEM: item})

    def claim(self) -> Claim | None:
        """Take one WAITING run (compare-and-set), or None when there is none; starts the heartbeat."""
        from optuna.exceptions import UpdateFinishedTrialError
        from optuna.trial import TrialState

        for trial in self._trials((TrialState.WAITING,)):
            tid = self._trial_id(trial.number)
            try:
                if not self.storage.set_trial_state_values(tid, TrialState.RUNNING):
                    continue  # another worker took it first
            except UpdateFinishedTrialError:
                continue
            claim = Claim(tid, trial.number, trial.user_attrs[ITEM])
            self._beat(claim)
            first = self.live().get(claim.item["key"], [])
            if first and first[0].number != claim.number:
                self.finish(claim, TrialState.PRUNED, "duplicate")
                continue
            threading.Thread(target=self._beat_loop, args=(claim,), daemon=True, name=f"beat-{tid}").start()
            return claim
        return None

    def _beat(self, claim: Claim) -> None:
        from optuna.exceptions import UpdateFinishedTrialError

        try:
            self.storage.set_trial_user_attr(
                claim.trial_id, WORKER, {"host": HOST, "pid": os.getpid(), "beat": time.time()})
        except UpdateFinishedTrialError:
            claim.lost.set()

    def _beat_loop(self, claim: Claim) -> None:
        while not claim.stop.wait(self.heartbeat_s) and not claim.lost.is_set():
            try:
                self._beat(claim)
            except Exception as exc:  # a storage hiccup must not kill the run; the next beat retries
                logging.getLogger("anchorlab").warning("heartbeat of trial %d failed: %s", claim.number, exc)

    def finish(self, claim: Claim, state, outcome: str, value: float | None = None) -> None:
        """Stop the heartbeat and close the trial (COMPLETE needs a value; FAIL/PRUNED do not)."""
        from optuna.exceptions import UpdateFinishedTrialError
        from optuna.trial import TrialState

        claim.stop.set()
        try:
            self.storage.set_trial_user_attr(claim.trial_id, OUTCOME, outcome)
            values = [float(value or 0.0)] if state == TrialState.COMPLETE else None
            self.storage.set_trial_state_values(claim.trial_id, state, values=values)
        except UpdateFinishedTrialError:
            claim.lost.set()


__all__ = ["WorkQueue", "Claim", "QueueError", "default_storage", "open_storage", "DEFAULT_HEARTBEAT_S", "ITEM",
           "WORKER"]
