"""Everything anchorlab writes to MLflow: runs and their records, links to reused runs, study parents.

Everything `detector/` measures reaches MLflow through `MlflowHooks` (a `TrainHooks`); everything a
run is (resolved config, git state, run key, method) is written by `tracked_run` when the run is created.
Records for figures are stored as JSON artifacts only; `dashboards/` draws them after training.
AP-type metrics are logged in percent and runs say so (`units.py`); the dataset's counts are params.
Reading is `ablation/tracking/reader.py`'s job.
"""
from __future__ import annotations

import json
import math
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ablation.tracking.store import ensure_experiment, git_info
from ablation.tracking.units import PERCENT, UNIT_TAG, eval_in_percent, in_percent, is_percent_metric
from detector.config import Config, config_to_dict, dump_yaml, flatten
from detector.engine.hooks import TrainHooks
from detector.run_key import run_key

NONFINITE_KEY = "nonfinite_metric_values"
KEY_TAG = "run_key"
OUTCOME_TAG = "outcome"  # FINISHED | FAILED | PRUNED | KILLED: what ended the run (MLflow has no PRUNED)
REUSED_TAG = "reused_from"  # on a run that links to the finished run of the same key it reuses
RESUMED_TAG = "resumed_at"  # the iterations a re-opened run resumed from, in order: "4,8" (absent: never resumed)
NO_DATA_TAG = "val_no_data"  # the AP-type val metrics an evaluation had no data for (COCO's -1), e.g. "APl,ARl"
METHOD_TAG = "method"  # assign.name: what a user compares first
DATA_PREFIX = "data/"  # the dataset's counts, params since they cannot change during a run
MLFLOW_STATUS = {"FINISHED": "FINISHED", "FAILED": "FAILED", "PRUNED": "KILLED", "KILLED": "KILLED"}


def _now_ms() -> int:
    return int(time.time() * 1000)


def one_line(exc: BaseException) -> str:
    """'Type: first line of the message' (what a FAILED run's reason and a CLI error show)."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _client(tracking_uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri)


class MlflowHooks(TrainHooks):
    """Sends a run's records to MLflow: scalars buffered and batched, evaluations, records, status.

    Iteration scalars are buffered and sent with `log_batch` every `flush_every` iterations or
    `flush_seconds` seconds, whichever comes first, so a step costs a list append, not a database
    transaction; `before_checkpoint` sends them too, so what a checkpoint covers is in the store before
    the checkpoint exists. Non-finite values are skipped (MLflow charts cannot show them) and counted; the
    count is logged as `nonfinite_metric_values` when the run ends.

    A re-opened run (`earlier`: the run as it was, for a resume) records where it resumed (`resumed_at`)
    and sends no point at a step its metric already reached: a killed attempt may have sent steps past
    its last checkpoint, which the resumed training runs again, so each step stays in a curve exactly once
    (kept from the attempt that sent it first).

    Evaluations are logged with their AP-type metrics in percent (`percent`, the default: the run is tagged
    `metric_unit=percent` when created) and without COCO's "no data" -1, whose names go to the tag
    `val_no_data`; a run re-opened from before units were tagged keeps its fractions (`percent=False`), so
    one run never mixes the two. The dataset's counts (`on_data`) are params.
    """

    def __init__(self, client, run_id: str, flush_every: int = 50, flush_seconds: float = 10.0, earlier=None,
                 percent: bool = True):
        from mlflow.utils.validation import MAX_METRICS_PER_BATCH, MAX_TAG_VAL_LENGTH

        self.client = client
        self.run_id = run_id
        self.flush_every = max(1, int(flush_every))
        self.flush_seconds = flush_seconds
        self.nonfinite = 0
        self.status: str | None = None  # set by on_end
        self.percent = percent
        self._batch_size = MAX_METRICS_PER_BATCH
        self._max_tag = MAX_TAG_VAL_LENGTH
        self._buffer: list = []
        self._pending_iterations = 0
        self._last_flush = time.monotonic()
        self._last_step = 0
        self._earlier_tags = earlier.data.tags if earlier is not None else None
        # metric key -> the last step the run already holds (MLflow's latest metric is the one of the max step)
        self._held = {m.key: m.step for m in earlier.data.to_proto().metrics} if earlier is not None else {}
        self._params_held = dict(earlier.data.params) if earlier is not None else {}

    def _metrics(self, scalars: dict[str, float], step: int, prefix: str = "") -> list:
        from mlflow.entities import Metric

        ts = _now_ms()
        out = []
        for key, value in scalars.items():
            value = float(value)
            if not math.isfinite(value):
                self.nonfinite += 1
                continue
            if int(step) <= self._held.get(f"{prefix}{key}", -1):
                continue  # sent by an earlier attempt of this run (class doc)
            out.append(Metric(f"{prefix}{key}", value, ts, int(step)))
        return out

    def _send(self, metrics: list) -> None:
        """log_batch in chunks; a chunk leaves the list only once MLflow has taken it."""
        while metrics:
            chunk = metrics[: self._batch_size]
            self.client.log_batch(self.run_id, metrics=chunk)
            del metrics[: len(chunk)]

    def flush(self) -> None:
        """Send the buffered scalars now; a no-op when nothing is buffered."""
        self._send(self._buffer)
        self._pending_iterations = 0
        self._last_flush = time.monotonic()

    def on_start(self, config: dict, workdir: Path, start_iteration: int) -> None:
        self.client.set_tag(self.run_id, "workdir", str(workdir))
        self.client.set_tag(self.run_id, "start_iteration", str(start_iteration))  # the latest start
        if self._earlier_tags is not None:
            points = self._earlier_tags.get(RESUMED_TAG, "").split(",") + [str(start_iteration)]
            text = ",".join(p for p in points if p)
            if len(text) > self._max_tag:  # thousands of resumes: keep the latest ones
                text = text[len(text) - self._max_tag:].partition(",")[2]
            self.client.set_tag(self.run_id, RESUMED_TAG, text)

    def before_checkpoint(self, iteration: int) -> None:
        self.flush()

    def on_iteration(self, iteration: int, scalars: dict[str, float]) -> None:
        self._buffer.extend(self._metrics(scalars, iteration))
        self._last_step = max(self._last_step, int(iteration))
        self._pending_iterations += 1
        if (self._pending_iterations >= self.flush_every
                or time.monotonic() - self._last_flush >= self.flush_seconds):
            self.flush()

    def on_data(self, counts: dict[str, float]) -> None:
        """The dataset's counts ("data/train_images": 7) as params; ones the run already holds are not sent again."""
        fresh = {k: str(int(v) if float(v).is_integer() else v) for k, v in counts.items()}
        _log_params(self.client, self.run_id, {k: v for k, v in fresh.items() if k not in self._params_held})
        self._params_held.update(fresh)

    def on_eval(self, iteration: int, metrics: dict[str, float], files: dict[str, Path]) -> None:
        self.flush()
        self._last_step = max(self._last_step, int(iteration))
        if self.percent:
            metrics, no_data = eval_in_percent(metrics)
            if no_data:
                self.client.set_tag(self.run_id, NO_DATA_TAG, ",".join(no_data))
        self._send(self._metrics(metrics, iteration, prefix="val/"))
        for path in files.values():
            self.log_artifact(Path(path), "eval")

    def on_checkpoint(self, iteration: int, path: Path) -> None:
        # Tags, not params: they may change as the run goes on.
        self.client.set_tag(self.run_id, "checkpoint", str(path))
        self.client.set_tag(self.run_id, "checkpoint_iteration", str(iteration))

    def log_artifact(self, path: Path, folder: str = "") -> None:
        """A file (or a folder's files) kept with the run under `folder`."""
        path = Path(path)
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), f"{folder}/{path.name}" if folder else path.name)
        else:
            self.client.log_artifact(self.run_id, str(path), folder or None)

    def on_records(self, iteration: int, kind: str, records: list | dict) -> None:
        """Store records as `<kind>/<kind>_<iteration>.json` (read back by `reader.run_records`)."""
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp) / f"{kind}_{int(iteration):07d}.json"
            data.write_text(json.dumps({"iteration": iteration, "records": records}))
            self.client.log_artifact(self.run_id, str(data), kind)

    def on_end(self, status: str, reason: str = "") -> None:
        """Flush, record the non-finite count, the outcome and the reason, and close the run."""
        from mlflow.entities import Metric

        self.flush()
        self._send([Metric(NONFINITE_KEY, float(self.nonfinite), _now_ms(), self._last_step)])
        if reason:
            self.client.set_tag(self.run_id, "failure_reason" if status == "FAILED" else "end_reason",
                                reason[: self._max_tag])
        self.client.set_tag(self.run_id, OUTCOME_TAG, status)
        self.client.set_terminated(self.run_id, MLFLOW_STATUS.get(status, status))
        self.status = status


def _params(config: Config) -> dict[str, str]:
    """The flattened resolved config as MLflow params: str() values, cut to MLflow's length limit."""
    from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

    marker = "...[truncated]"
    out = {}
    for key, value in flatten(config_to_dict(config)).items():
        text = str(value)
        if len(text) > MAX_PARAM_VAL_LENGTH:
            text = text[: MAX_PARAM_VAL_LENGTH - len(marker)] + marker
        out[key] = text
    return out


def _log_params(client, run_id: str, params: dict[str, str]) -> None:
    from mlflow.entities import Param
    from mlflow.utils.validation import MAX_PARAMS_TAGS_PER_BATCH

    items = [Param(k, v) for k, v in params.items()]
    for i in range(0, len(items), MAX_PARAMS_TAGS_PER_BATCH):
        client.log_batch(run_id, params=items[i: i + MAX_PARAMS_TAGS_PER_BATCH])


def _new_run(client, config: Config, tracking_uri: str, experiment: str, workspace: Path, run_name: str | None,
             tags: dict[str, str] | None, parent_run_id: str | None) -> str:
    """Create a run with the identity tags (git state, run key, parent) and the config as params + YAML."""
    exp_id = ensure_experiment(experiment, tracking_uri, workspace)
    git = git_info()
    run_tags = {**git, KEY_TAG: run_key(config), METHOD_TAG: config.assign.name, UNIT_TAG: PERCENT}
    if git["git_sha"] != "unknown":
        run_tags["mlflow.source.git.commit"] = git["git_sha"]
    if parent_run_id:
        run_tags["mlflow.parentRunId"] = parent_run_id
    run_tags.update(tags or {})
    run_id = client.create_run(exp_id, tags=run_tags, run_name=run_name or config.name).info.run_id
    _log_params(client, run_id, _params(config))
    client.log_text(run_id, dump_yaml(config), "config.yaml")
    return run_id


@contextmanager
def tracked_run(
    config: Config,
    tracking_uri: str,
    experiment: str,
    workspace: Path,
    run_name: str | None = None,
    tags: dict[str, str] | None = None,
    parent_run_id: str | None = None,
    run_id: str | None = None,
) -> Iterator[MlflowHooks]:
    """Open an MLflow run for `config` and yield its `MlflowHooks`.

    A new run gets: params = the flattened resolved config; artifact `config.yaml`; tags git_sha,
    git_dirty, run_key, method (`assign.name`), metric_unit=percent, mlflow.runName (default: `config.name`),
    mlflow.parentRunId, `tags`. With `run_id` the run is re-opened (status RUNNING) for a resume; its run key
    must match (the hooks then record the resume and skip the steps it already holds, `MlflowHooks`; a run
    from before units were tagged that already logged fractions keeps logging fractions).
    The run is ended FINISHED if the body returns without calling `on_end`, FAILED (reason: the
    exception's first line) if it raises, KILLED on KeyboardInterrupt; the exception propagates.
    """
    client, earlier, percent = _client(tracking_uri), None, True
    if run_id is None:
        run_id = _new_run(client, config, tracking_uri, experiment, workspace, run_name, tags, parent_run_id)
    else:
        earlier = client.get_run(run_id)
        old_tags, key = earlier.data.tags, run_key(config)
        if old_tags.get(KEY_TAG) not in (None, key):
            raise ValueError(f"run {run_id} has run key {old_tags[KEY_TAG]}; this config's key is {key}")
        if OUTCOME_TAG in old_tags:  # a KILLED run resumed: its outcome is open again
            client.delete_tag(run_id, OUTCOME_TAG)
        percent = old_tags.get(UNIT_TAG) == PERCENT or not any(map(is_percent_metric, earlier.data.metrics))
        if percent and UNIT_TAG not in old_tags:
            client.set_tag(run_id, UNIT_TAG, PERCENT)
        client.update_run(run_id, status="RUNNING")
    hooks = MlflowHooks(client, run_id, earlier=earlier, percent=percent)
    try:
        yield hooks
    except BaseException as exc:
        status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
        try:
            hooks.on_end(status, one_line(exc))
        except Exception as end_exc:  # never mask the original error
            warnings.warn(f"could not mark run {run_id} {status}: {one_line(end_exc)}", stacklevel=2)
        raise
    if hooks.status is None:
        hooks.on_end("FINISHED")


def record_failure(config: Config, tracking_uri: str, experiment: str, workspace: Path, reason: str,
                   run_name: str | None = None, tags: dict[str, str] | None = None,
                   parent_run_id: str | None = None, run_id: str | None = None) -> str:
    """A FAILED run holding `reason`, for a run that failed before training could record it."""
    with tracked_run(config, tracking_uri, experiment, workspace, run_name, tags, parent_run_id, run_id) as hooks:
        hooks.on_end("FAILED", reason)
    return hooks.run_id


def link_run(source_run_id: str, config: Config, tracking_uri: str, experiment: str, workspace: Path,
             run_name: str | None = None, tags: dict[str, str] | None = None,
             parent_run_id: str | None = None) -> str:
    """A FINISHED run in `experiment` that reuses the finished run `source_run_id` of the same key.

    It carries the source's final metric values (so this experiment's tables show them; AP-type ones in
    percent, like every run created now, whatever unit the source logged), its dataset counts as params, its
    checkpoint tags and the config; `reused_from` names the source, whose artifacts and curves stay where they are.
    """
    from mlflow.entities import Metric

    client = _client(tracking_uri)
    source = client.get_run(source_run_id)
    keep = ("checkpoint", "checkpoint_iteration", "workdir", "git_sha", "git_dirty", NO_DATA_TAG)
    link_tags = {k: source.data.tags[k] for k in keep if k in source.data.tags}
    link_tags.update(tags or {})
    link_tags[REUSED_TAG] = source_run_id
    link_tags["mlflow.note.content"] = f"Reuses run {source_run_id} (same run key): its curves and files are there."
    run_id = _new_run(client, config, tracking_uri, experiment, workspace, run_name, link_tags, parent_run_id)
    step = int(source.data.tags.get("checkpoint_iteration", 0) or 0)
    values = in_percent(source.data.metrics, source.data.tags)
    counts = {k: v for k, v in source.data.params.items() if k.startswith(DATA_PREFIX)}
    counts.update({k: str(int(v)) for k, v in values.items() if k.startswith(DATA_PREFIX)})  # older sources
    _log_params(client, run_id, counts)
    metrics = [Metric(k, v, _now_ms(), step) for k, v in values.items()
               if math.isfinite(v) and not k.startswith(DATA_PREFIX)]
    for i in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[i: i + 1000])
    client.set_tag(run_id, OUTCOME_TAG, "FINISHED")
    client.set_terminated(run_id, "FINISHED")
    return run_id


# ---------------------------------------------------------------- study parent runs
def create_parent(tracking_uri: str, workspace: Path, experiment: str, run_name: str, tags: dict[str, str],
                  note: str = "") -> str:
    """A study's parent run (tags: role=study, git state, metric_unit=percent (its summary's AP), the given ones)."""
    exp_id = ensure_experiment(experiment, tracking_uri, workspace)
    all_tags = {"role": "study", **git_info(), UNIT_TAG: PERCENT, **tags, "mlflow.note.content": note}
    return _client(tracking_uri).create_run(exp_id, tags=all_tags, run_name=run_name).info.run_id


def open_parent(tracking_uri: str, run_id: str, tags: dict[str, str], texts: dict[str, str]) -> None:
    """Mark a parent run RUNNING with `tags` and the artifact `texts` ({path: text})."""
    client = _client(tracking_uri)
    for key, value in tags.items():
        client.set_tag(run_id, key, value)
    for path, text in texts.items():
        client.log_text(run_id, text, path)
    client.update_run(run_id, status="RUNNING")


def end_run(tracking_uri: str, run_id: str, status: str) -> None:
    _client(tracking_uri).set_terminated(run_id, status)


def log_text(tracking_uri: str, run_id: str, text: str, path: str) -> None:
    """A text artifact (e.g. a rendered table, `tables/<profile>.md`)."""
    _client(tracking_uri).log_text(run_id, text, path)


def log_files(tracking_uri: str, run_id: str, paths: list[Path], folder: str) -> None:
    """Files drawn after the run (figures), kept with it under `folder`."""
    client = _client(tracking_uri)
    for path in paths:
        client.log_artifact(run_id, str(path), folder)


__all__ = ["MlflowHooks", "tracked_run", "record_failure", "link_run", "create_parent", "open_parent", "end_run",
           "log_text", "log_files", "one_line", "KEY_TAG", "OUTCOME_TAG", "REUSED_TAG", "RESUMED_TAG", "NONFINITE_KEY",
           "NO_DATA_TAG", "METHOD_TAG", "DATA_PREFIX"]
