"""One tracked training run: a detector training wrapped in an MLflow run.

`train_tracked` is what `anchorlab train` calls and what study workers will call per row.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from detector.config import Config, config_hash
from detector.engine.hooks import HookList, TrainHooks
from detector.engine.train import TrainResult, train

log = logging.getLogger("anchorlab")


@dataclass
class RunOutcome:
    run_id: str
    tracking_uri: str
    experiment: str
    result: TrainResult


def find_resumable_run(tracking_uri: str, experiment: str, cfg: Config) -> str | None:
    """The newest unfinished run of this exact config (same config hash), if any."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return None
    runs = client.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.config_hash = '{config_hash(cfg)}' and attributes.status != 'FINISHED'",
        order_by=["attributes.start_time DESC"], max_results=1,
    )
    return runs[0].info.run_id if runs else None


def train_tracked(
    cfg: Config,
    workspace: Path | None = None,
    tracking_uri: str | None = None,
    experiment: str = "anchorlab",
    run_name: str | None = None,
    resume: bool = False,
    tags: dict[str, str] | None = None,
    parent_run_id: str | None = None,
    extra_hooks: TrainHooks | None = None,
) -> RunOutcome:
    """Train `cfg` inside one MLflow run (re-opened when resuming) and return its outcome."""
    from ablation.tracking import ensure_experiment, resolve_tracking_uri, tracked_run, workspace_dir

    workspace = workspace_dir(workspace)
    uri = resolve_tracking_uri(tracking_uri, workspace)
    ensure_experiment(experiment, uri, workspace)
    run_id = find_resumable_run(uri, experiment, cfg) if resume else None
    with tracked_run(
        cfg, uri, experiment, workspace, run_name=run_name or cfg.name, tags=tags,
        parent_run_id=parent_run_id, run_id=run_id,
    ) as hooks:
        result = train(cfg, workspace, HookList(hooks, extra_hooks), resume=resume)
        return RunOutcome(hooks.run_id, uri, experiment, result)
