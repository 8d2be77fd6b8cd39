"""Where a search's trials live (an Optuna storage), who holds each, and how many count toward the budget.

* **Storage**: by default a journal file `<workspace>/queue/search-<search>-<profile>.journal` opened with
  the study queue's helper (`execution.queue.open_storage`: appends under a symlink file lock, so several
  local processes, and machines sharing the folder, can work on one search). A database URL
  (PostgreSQL, MySQL) gives an `RDBStorage` with Optuna's heartbeat (`heartbeat_interval`) and a
  `RetryFailedTrialCallback`; SQLite is refused as for the study queue (it cannot hand a waiting trial
  to exactly one process).
* **Liveness**: the worker that asked a trial writes the system attribute `anchorlab_worker` =
  {host, pid, beat} every `heartbeat_s` seconds from a thread (`Beater`; with a database, Optuna's own
  heartbeat too). A RUNNING trial is dead when its beat is older than `GRACE_BEATS` heartbeats, or at
  once when it ran on this machine and its pid is gone (a killed worker). `reap` fails dead trials
  (a compare-and-set: with a journal the log is totally ordered, with a database it is a row lock, so one
  process wins) and the winner enqueues a copy with the same params (`Retry`, at most `MAX_RETRY` times
  per trial), which the next `ask()` pops: the trial is run again, its MLflow run resumed, not lost.
* **Budget**: a search of N trials has N trials COMPLETE or PRUNED. Workers ask concurrently, so a worker
  checks after `ask()` that fewer than N trials with a lower number count (COMPLETE, PRUNED, WAITING, or
  RUNNING with a live worker; trial numbers are unique and fixed, so every worker agrees); otherwise it
  drops its trial (FAIL, outcome "over budget") without running it. Together the workers run exactly N.
"""
from __future__ import annotations

import copy
import os
import threading
import time
import warnings
from datetime import datetime
from pathlib import Path

from ablation.execution.queue import QueueError, open_storage, rdb_storage
from ablation.processes import HOST, pid_alive
from ablation.tracking.units import PERCENT, is_percent_name

WORKER = "anchorlab_worker"  # trial system attribute: {host, pid, beat}
OUTCOME = "outcome"  # trial user attribute: FINISHED | PRUNED | FAILED | stale | interrupted | over budget
GRACE_BEATS = 6
MAX_RETRY = 3  # a trial whose worker keeps dying (out of memory) is not enqueued again after this many
DEFAULT_HEARTBEAT_S = 10.0
RETRIED = ("stale", "interrupted")  # FAIL outcomes whose trial was enqueued again
DROPPED = "over budget"
UNIT_ATTR = "metric_unit"  # study user attribute: "percent" (AP-type objectives); absent on searches stored before


def default_location(workspace: Path, search: str, profile: str) -> str:
    """`<workspace>/queue/search-<search>-<profile>.journal` (beside the study queues)."""
    return str(Path(workspace) / "queue" / f"search-{search}-{profile}.journal")


class Retry:
    """Enqueue a failed trial again with its params (Optuna's `RetryHeartbeatStaleTrialCallback`, named
    `RetryFailedTrialCallback` before Optuna 4.9, whose copy would also carry the dead worker's record and
    the old run's attributes: both are dropped first)."""

    def __init__(self, max_retry: int = MAX_RETRY):
        import optuna.storages as storages

        cls = getattr(storages, "RetryHeartbeatStaleTrialCallback", None) or storages.RetryFailedTrialCallback
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # experimental-API notices
            self.callback = cls(max_retry=max_retry)

    def __call__(self, study, trial) -> None:
        trial = copy.deepcopy(trial)
        trial.system_attrs = {k: v for k, v in trial.system_attrs.items() if k != WORKER}
        trial.user_attrs = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # experimental-API notices
            self.callback(study, trial)


def open_search_storage(location: str, heartbeat_s: float = DEFAULT_HEARTBEAT_S):
    """An Optuna storage for `location`: a journal file path, or a PostgreSQL/MySQL URL (module doc)."""
    import optuna

    if "://" not in location:
        return open_storage(location)
    if location.startswith("sqlite"):
        raise QueueError(f"--storage {location}: SQLite cannot hand a trial to exactly one process through Optuna; "
                         "use a journal file path (the default) or a PostgreSQL URL")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    import inspect

    # Optuna 4.9 renamed the callback argument (the old name warns); pass whichever this Optuna has.
    params = inspect.signature(optuna.storages.RDBStorage).parameters
    callback = "heartbeat_stale_trial_callback" if "heartbeat_stale_trial_callback" in params else "failed_trial_callback"
    return rdb_storage(location, "--storage", heartbeat_interval=max(1, round(heartbeat_s)),
                       grace_period=max(2, round(GRACE_BEATS * heartbeat_s)), **{callback: Retry()})


def open_study(storage, name: str, directions: list[str], sampler=None, pruner=None,
               metrics: list[str] | None = None):
    """(the Optuna study `name`, whether this call created it): creation is atomic, so one process is its creator.

    The study's values are in the unit its user attr `metric_unit` names: "percent" for AP-type objectives
    (`ablation.tracking.units`). A study stored before holds fractions; one that holds values already and whose
    objectives (`metrics`; None: assume AP) include an AP-type one is refused in one line rather than fed values
    100x larger, which its sampler and pruner would compare with the old ones.
    """
    import optuna

    try:
        optuna.create_study(storage=storage, study_name=name, directions=directions)
        created = True
    except optuna.exceptions.DuplicatedStudyError:
        created = False
    study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
    if [d.name.lower() for d in study.directions] != list(directions):
        raise QueueError(f"the stored search '{name}' has directions {[d.name.lower() for d in study.directions]}, "
                         f"the file {directions}; use another --storage or remove the stored one")
    _check_unit(study, name, metrics)
    return study, created


def _check_unit(study, name: str, metrics: list[str] | None) -> None:
    if study.user_attrs.get(UNIT_ATTR) == PERCENT:
        return
    in_percent = metrics is None or any(is_percent_name(m) for m in metrics)
    if in_percent and any(t.values or t.intermediate_values for t in study.get_trials(deepcopy=False)):
        raise QueueError(f"the stored search '{name}' holds its objective as fractions (stored before anchorlab "
                         "logged AP in percent); finish it with the anchorlab version that started it, or start "
                         "over with another --storage")
    study.set_user_attr(UNIT_ATTR, PERCENT)


def alive(trial, grace_s: float) -> bool:
    """A RUNNING trial whose worker still beats (and, on this machine, still exists)."""
    from optuna.trial import TrialState

    if trial.state != TrialState.RUNNING:
        return False
    worker = trial.system_attrs.get(WORKER)
    if worker is None:  # asked a moment ago, before its first beat
        started = trial.datetime_start or datetime.now()
        return (datetime.now() - started).total_seconds() < grace_s
    if worker.get("host") == HOST and not pid_alive(worker.get("pid", -1)):
        return False
    return time.time() - float(worker.get("beat", 0.0)) < grace_s


def counts(trial, grace_s: float) -> bool:
    """Whether `trial` counts toward the budget: COMPLETE, PRUNED, WAITING, or RUNNING and alive."""
    from optuna.trial import TrialState

    return trial.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.WAITING) or alive(trial, grace_s)


def over_budget(trials: list, number: int, budget: int, grace_s: float) -> bool:
    """True when `budget` trials numbered below `number` already count (module doc: the budget rule)."""
    return sum(1 for t in trials if t.number < number and counts(t, grace_s)) >= budget


def reap(study, grace_s: float, retry: Retry | None = None) -> list[int]:
    """Fail the RUNNING trials whose worker is gone and enqueue each again; return their numbers.

    With a database, Optuna's own stale-trial check runs first (its callback is a `Retry` too).
    """
    import optuna
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    storage, retry = study._storage, retry or Retry()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optuna.storages.fail_stale_trials(study)  # a no-op without a heartbeat (the journal)
    reaped = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if alive(trial, grace_s):
            continue
        try:
            storage.set_trial_user_attr(trial._trial_id, OUTCOME, "stale")
            if not storage.set_trial_state_values(trial._trial_id, TrialState.FAIL):
                continue
        except UpdateFinishedTrialError:  # another process failed it first: theirs to enqueue
            continue
        retry(study, storage.get_trial(trial._trial_id))
        reaped.append(trial.number)
    return reaped


class Beater:
    """Writes this process's liveness record on a trial now and every `heartbeat_s` seconds until `stop()`.

    `lost` is set when the trial was finished under it (another process judged this worker dead).
    """

    def __init__(self, storage, trial_id: int, heartbeat_s: float):
        from optuna.storages._heartbeat import BaseHeartbeat, is_heartbeat_enabled

        self.storage, self.trial_id, self.heartbeat_s = storage, trial_id, float(heartbeat_s)
        self.optuna_beat = isinstance(storage, BaseHeartbeat) and is_heartbeat_enabled(storage)
        self.lost, self._stop = threading.Event(), threading.Event()
        self.beat()
        self._thread = threading.Thread(target=self._loop, daemon=True, name=f"search-beat-{trial_id}")
        self._thread.start()

    def beat(self) -> None:
        from optuna.exceptions import UpdateFinishedTrialError

        try:
            self.storage.set_trial_system_attr(self.trial_id, WORKER,
                                               {"host": HOST, "pid": os.getpid(), "beat": time.time()})
            if self.optuna_beat:
                self.storage.record_heartbeat(self.trial_id)
        except UpdateFinishedTrialError:
            self.lost.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.heartbeat_s) and not self.lost.is_set():
            try:
                self.beat()
            except Exception:  # a storage hiccup must not kill the run; the next beat retries
                pass

    def stop(self) -> None:
        self._stop.set()


__all__ = ["open_search_storage", "open_study", "default_location", "alive", "counts", "over_budget", "reap",
           "Beater", "Retry", "WORKER", "OUTCOME", "GRACE_BEATS", "MAX_RETRY", "DEFAULT_HEARTBEAT_S", "RETRIED",
           "DROPPED"]
