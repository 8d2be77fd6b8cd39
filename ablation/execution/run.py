"""One run, from a self-contained spec to an outcome: the one path every training takes.

`anchorlab train`, study workers and search trials all call `execute(RunSpec)`. A spec carries the
resolved config (so a run decided at run time, like a search trial, needs nothing else), its label,
experiment, parent run and tags, and two policies:

* `reuse`: a FINISHED run of the same run key anywhere in the workspace stands in for this one: a
  FINISHED run of the key already in this experiment is returned as is; one elsewhere gets a link run
  here (tag `reused_from`, its final metrics copied) and nothing trains;
* `resume`: an interrupted run of the key in this experiment (RUNNING or KILLED, never FAILED or
  PRUNED) is re-opened and continues from its last checkpoint; otherwise a new run starts from scratch.

While a spec runs, the workspace-wide lock of its key is held (`key_lock`), so one key is never
trained twice at the same time; each tracked run keeps its files in `checkpoints/<key>/<run id>/`, a
folder no other run writes (and `train` holds it besides, `checkpoint.claim_workdir`). A checkpoint that
cannot be resumed (damaged, or of another config) fails the run with the spec's `restart_hint` added to
the reason: a FAILED run is never resumed, so training it again starts over in a new folder.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ablation.execution.key_lock import key_lock
from ablation.tracking.reader import finished_run, resumable_run
from ablation.tracking.store import ensure_experiment, resolve_tracking_uri, workspace_dir
from ablation.tracking.units import eval_in_percent
from ablation.tracking.writer import link_run, one_line, tracked_run
from detector.config import Config
from detector.engine.checkpoint import CheckpointError
from detector.engine.hooks import HookList, TrainHooks
from detector.engine.train import TrainResult, train
from detector.run_key import run_dir, run_key

log = logging.getLogger("anchorlab")
# the `restart_hint` of a run the user trains by hand (`anchorlab train`)
SAME_COMMAND_RESTARTS = "the same command starts that run over (a FAILED run is never resumed)"


@dataclass
class RunSpec:
    """Everything needed to execute one run (see the module doc)."""

    config: Config
    label: str  # the MLflow run name
    experiment: str = "anchorlab"
    parent_run_id: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    reuse: bool = False
    resume: bool = False
    restart_hint: str = ""  # how the user starts a run over whose checkpoint cannot be resumed (module doc)

    @property
    def key(self) -> str:
        return run_key(self.config)


@dataclass
class Outcome:
    status: str  # FINISHED | FAILED | PRUNED
    run_id: str | None
    reason: str = ""
    metrics: dict[str, float] = field(default_factory=dict)  # val metrics, without "val/"; AP-type ones in percent
    step: int = 0  # iterations trained (for PRUNED: where it stopped)
    reused_from: str | None = None  # the run that trained it, when this one reuses it
    result: TrainResult | None = None  # the training's own result (None when reused)
    error: Exception | None = None  # what a FAILED training raised (None when it failed by itself)


def _val_metrics(metrics: dict[str, float]) -> dict[str, float]:
    return {k[4:]: v for k, v in metrics.items() if k.startswith("val/")}


def execute(spec: RunSpec, workspace: str | Path | None = None, tracking_uri: str | None = None,
            hooks: TrainHooks | None = None, on_wait: Callable[[], None] | None = None) -> Outcome:
    """Execute `spec` to an outcome (module doc). `hooks` see the training; `on_wait` is called once if
    another process holds the key. A training that raises ends FAILED with the error's first line as
    reason; errors before a run exists (an unreachable store) and KeyboardInterrupt propagate."""
    ws = workspace_dir(workspace)
    uri = resolve_tracking_uri(tracking_uri, ws)
    ensure_experiment(spec.experiment, uri, ws)
    key = spec.key
    with key_lock(ws, key, on_wait):
        if spec.reuse:
            here = finished_run(uri, key, spec.experiment)
            if here is not None:
                return Outcome("FINISHED", here.run_id, metrics=_val_metrics(here.metrics),
                               reused_from=here.reused_from)
            source = finished_run(uri, key)
            if source is not None:
                run_id = link_run(source.run_id, spec.config, uri, spec.experiment, ws, spec.label, spec.tags,
                                  spec.parent_run_id)
                log.info("run key %s: reusing finished run %s", key, source.run_id)
                return Outcome("FINISHED", run_id, metrics=_val_metrics(source.metrics), reused_from=source.run_id)
        previous = resumable_run(uri, spec.experiment, key) if spec.resume else None
        opened: list[str] = []
        try:
            with tracked_run(spec.config, uri, spec.experiment, ws, spec.label, spec.tags, spec.parent_run_id,
                             previous.run_id if previous else None) as tracker:
                opened.append(tracker.run_id)
                try:
                    result = train(spec.config, ws, HookList(tracker, hooks), resume=previous is not None,
                                   workdir=run_dir(ws, key, tracker.run_id))
                except CheckpointError as exc:  # the run's reason is this line: say how to start it over
                    if not spec.restart_hint:
                        raise
                    raise CheckpointError(f"{exc}; {spec.restart_hint}") from exc
        except Exception as exc:  # the tracked run is marked FAILED with this reason
            if not opened:
                raise
            return Outcome("FAILED", opened[0], one_line(exc), error=exc)
    metrics = eval_in_percent(result.metrics)[0]  # as MLflow holds them, and as a reused run reads
    return Outcome(result.status, opened[0], result.reason, metrics, result.iterations, result=result)


__all__ = ["RunSpec", "Outcome", "execute", "SAME_COMMAND_RESTARTS"]
