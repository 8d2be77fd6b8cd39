"""One execution path: workspace-wide reuse of a finished run key, one trainer per key, run folders."""
from __future__ import annotations

import threading
import time

from mlflow import MlflowClient

from ablation.execution.key_lock import key_lock
from ablation.execution.run import RunSpec, execute
from ablation.tracking.reader import finished_run
from tests.conftest import tiny_config


def test_a_key_finished_elsewhere_is_linked_not_trained(tmp_path, workspace):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = tiny_config(assign={"name": "atss"})
    first = execute(RunSpec(cfg, "trained", "study-a", reuse=True), workspace, uri)  # nothing to reuse: trains
    assert first.status == "FINISHED" and first.reused_from is None and first.result is not None
    folders = sorted(p.name for p in (workspace / "checkpoints" / first.result.checkpoint.parent.parent.name).iterdir())
    assert folders == [first.run_id]

    tags = {"role": "row", "study": "study-b"}
    second = execute(RunSpec(cfg, "linked", "study-b", tags=tags, reuse=True), workspace, uri)
    assert second.status == "FINISHED" and second.reused_from == first.run_id and second.result is None
    assert second.metrics == first.metrics  # the link carries the source's metrics
    client = MlflowClient(uri)
    link = client.get_run(second.run_id)
    assert link.data.tags["reused_from"] == first.run_id and link.data.tags["role"] == "row"
    assert link.data.metrics["val/AP"] == client.get_run(first.run_id).data.metrics["val/AP"]
    assert link.data.tags["run_key"] == client.get_run(first.run_id).data.tags["run_key"]
    # nothing trained: no new folder, and the source stays the one finished run of the key
    assert sorted(p.name for p in first.result.checkpoint.parent.parent.iterdir()) == [first.run_id]
    assert finished_run(uri, first_key := link.data.tags["run_key"]).run_id == first.run_id
    # asked again in study-b, the link itself is the answer (no second link)
    again = execute(RunSpec(cfg, "linked", "study-b", tags=tags, reuse=True), workspace, uri)
    assert again.run_id == second.run_id
    assert len(client.search_runs([client.get_experiment_by_name("study-b").experiment_id],
                                  f"tags.run_key = '{first_key}'")) == 1
    # without reuse (anchorlab train) a finished key trains again, in a folder of its own
    fresh = execute(RunSpec(cfg, "again", "study-a"), workspace, uri)
    assert fresh.reused_from is None and fresh.result.checkpoint.parent.name == fresh.run_id != first.run_id


def test_one_holder_per_key_and_waiters_are_told(tmp_path):
    order, told = [], []
    with key_lock(tmp_path, "k1"):
        def other():
            with key_lock(tmp_path, "k1", on_wait=lambda: told.append("waiting"), poll_s=0.05):
                order.append("other")

        thread = threading.Thread(target=other)
        thread.start()
        time.sleep(0.3)
        with key_lock(tmp_path, "k2", poll_s=0.05):  # another key is free meanwhile
            order.append("k2")
        order.append("holder")
    thread.join(5)
    assert order == ["k2", "holder", "other"] and told == ["waiting"]
