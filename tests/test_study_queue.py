"""The study work queue on a real Optuna journal file: atomic claims across processes, duplicates, staleness."""
from __future__ import annotations

import multiprocessing
import os
import signal
import time

import pytest

from ablation.execution.queue import WORKER, QueueError, WorkQueue
from ablation.processes import HOST


def _items(keys):
    return [{"key": k, "label": k, "row": i, "seed": 0} for i, k in enumerate(keys)]


def _claim_all(location: str, name: str, start, out) -> None:
    """A worker's loop without training: a run counts once; a finished key is reused, as the runner does
    with MLflow (whose FINISHED state is written before the trial is closed, like COMPLETE here)."""
    from optuna.trial import TrialState

    q = WorkQueue(location, name, heartbeat_s=1.0)
    start.wait()
    claimed = []
    while (claim := q.claim()) is not None:
        done = {t.user_attrs["item"]["key"] for t in q.study.get_trials(states=(TrialState.COMPLETE,))}
        if claim.item["key"] in done:
            q.finish(claim, TrialState.PRUNED, "reused")
            continue
        claimed.append(claim.item["key"])
        time.sleep(0.01)  # hold it a moment, as a run would
        q.finish(claim, TrialState.COMPLETE, "done", 0.0)
    out.put((os.getpid(), claimed))


def _complete():
    from optuna.trial import TrialState

    return TrialState.COMPLETE


def at_once(target, args: tuple, n: int, timeout: float = 120) -> list:
    """What `target(*args, start, out)` put on `out`, from `n` spawned processes released together."""
    ctx = multiprocessing.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args, start, out)) for _ in range(n)]
    for p in procs:
        p.start()
    start.set()
    results = [out.get(timeout=timeout) for _ in procs]
    for p in procs:
        p.join(30)
    return results


def check_each_item_claimed_once(location: str, n_procs: int) -> None:
    """12 items, 4 of them enqueued twice (two launchers), claimed by `n_procs` processes at once: every item
    runs exactly once, duplicates dropped, the queue left empty (any storage: journal file or database URL)."""
    name = "s.smoke"
    q = WorkQueue(location, name)
    assert q.created and not WorkQueue(location, name).created  # creation is atomic: one creator
    keys = [f"k{i}" for i in range(12)]
    q.enqueue(_items(keys))
    q.enqueue(_items(keys[:4]))  # a second launcher enqueued some again: duplicates must not run twice
    results = at_once(_claim_all, (location, name), n_procs)
    claimed = [k for _, ks in results for k in ks]
    assert sorted(claimed) == sorted(keys), results  # every run once, duplicates dropped
    assert len({pid for pid, _ in results}) == n_procs
    assert q.waiting() == 0 and q.running() == []


def test_concurrent_claims_hand_each_run_to_exactly_one_process(tmp_path):
    check_each_item_claimed_once(str(tmp_path / "q.journal"), 3)


def _claim_and_hang(location: str, name: str, ready) -> None:
    q = WorkQueue(location, name, heartbeat_s=1.0)
    q.claim()
    ready.set()
    time.sleep(600)


def test_a_killed_workers_run_is_reaped_at_once_on_this_machine(tmp_path):
    location, name = str(tmp_path / "q.journal"), "s.smoke"
    q = WorkQueue(location, name, heartbeat_s=30.0)  # a long grace: only the pid check can reap quickly
    q.enqueue(_items(["a", "b"]))
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    proc = ctx.Process(target=_claim_and_hang, args=(location, name, ready))
    proc.start()
    assert ready.wait(120)
    assert [t.user_attrs["item"]["key"] for t in q.running()] == ["a"]
    assert q.reap_stale() == []  # alive: nothing to reap
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(30)
    assert [item["key"] for item in q.reap_stale()] == ["a"]
    assert set(q.live()) == {"b"}


def test_a_silent_remote_worker_is_stale_after_the_grace_period(tmp_path):
    q = WorkQueue(str(tmp_path / "q.journal"), "s.smoke", heartbeat_s=1.0)
    q.enqueue(_items(["a"]))
    claim = q.claim()
    claim.stop.set()  # no more beats from this "machine"
    q.storage.set_trial_user_attr(claim.trial_id, WORKER, {"host": "elsewhere/boot", "pid": 1, "beat": time.time()})
    assert q.reap_stale() == [] and set(q.live()) == {"a"}
    q.storage.set_trial_user_attr(claim.trial_id, WORKER, {"host": "elsewhere/boot", "pid": 1,
                                                           "beat": time.time() - 7.0})
    assert [item["key"] for item in q.reap_stale()] == ["a"]
    q.finish(claim, _complete(), "late", 1.0)
    assert claim.lost.is_set()  # the trial was failed under it: the worker learns it lost the run
    assert HOST.count("/") == 1


def test_sqlite_queue_storage_is_refused(tmp_path):
    with pytest.raises(QueueError, match="SQLite cannot claim rows atomically"):
        WorkQueue(f"sqlite:///{tmp_path / 'q.db'}", "s.smoke")
