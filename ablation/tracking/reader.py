"""Everything anchorlab reads from MLflow: runs as a pandas DataFrame, records back from their JSON, and a
run's detections (its final evaluation's COCO results).

`runs_frame` is the one query; the rest are views of it (pure functions over the frame, usable by
tables and reports without MLflow) or small lookups built on it. Read-only: a missing SQLite store
reads as empty and is not created. For a local SQLite store `runs_frame` reads MLflow's tables directly
(`sqlite_runs`: no 1.5-3 s import of mlflow, so `study status` answers in a second), MLflow's client otherwise.

Units: the frame holds what is stored; every view that hands out metric values (`records_of`, hence
`RunRecord.metrics`, `by_key`, `study_runs`, `finished_run`; and `run_metrics`) passes them through
`units.in_percent`, so AP-type values are percent whether a run logged them so (tag `metric_unit=percent`)
or, before that tag existed, as fractions with -1 for "no data" (scaled x100, the -1 left out).
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ablation.tracking.sqlite_runs import read_runs
from ablation.tracking.store import store_exists
from ablation.tracking.units import in_percent
from ablation.tracking.writer import KEY_TAG, OUTCOME_TAG, REUSED_TAG

BASE_COLUMNS = ["run_id", "experiment_id", "run_name", "status", "start_time", "end_time"]
DETECTIONS_ARTIFACT = "eval/detections.json"  # what `MlflowHooks.on_eval` keeps of the final evaluation


class RunNotFound(LookupError):
    """A run id the store does not hold (one line)."""


@dataclass
class RunRecord:
    """One run as the runner and the tables see it."""

    run_id: str
    status: str  # MLflow's: FINISHED | FAILED | KILLED | RUNNING | SCHEDULED
    metrics: dict[str, float]
    tags: dict[str, str]
    start_time: int
    end_time: int | None

    @property
    def key(self) -> str:
        return self.tags.get(KEY_TAG, "")

    @property
    def outcome(self) -> str:
        """FINISHED | FAILED | PRUNED | KILLED once ended (PRUNED is a KILLED run in MLflow), else the status."""
        return self.tags.get(OUTCOME_TAG) or self.status

    @property
    def reason(self) -> str:
        return self.tags.get("failure_reason") or self.tags.get("end_reason", "")

    @property
    def reused_from(self) -> str | None:
        return self.tags.get(REUSED_TAG)

    def settled(self, retry_failed: bool) -> bool:
        """Nothing left to run for this key: FINISHED, or FAILED and not to be retried."""
        return self.outcome == "FINISHED" or (self.outcome == "FAILED" and not retry_failed)


def _client(tracking_uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri)


def _experiment_ids(client, experiment: str | None) -> list[str]:
    if experiment is None:
        return [e.experiment_id for e in client.search_experiments()]  # active ones
    exp = client.get_experiment_by_name(experiment)
    return [exp.experiment_id] if exp is not None and exp.lifecycle_stage == "active" else []


def runs_frame(tracking_uri: str, experiment: str | None = None, filter_string: str = "") -> pd.DataFrame:
    """Runs of `experiment` (None: every active experiment) matching `filter_string`, one row per run.

    Columns: run_id, experiment_id, run_name, status, start_time, end_time (ms), then `tags.<name>` and
    `metrics.<name>` (each metric's last value; NaN where a run lacks it). Params stay in MLflow.
    """
    if not store_exists(tracking_uri):
        return pd.DataFrame(columns=BASE_COLUMNS)
    rows = read_runs(tracking_uri, experiment, filter_string)
    if rows is not None:
        return pd.DataFrame(rows, columns=None if rows else BASE_COLUMNS)
    client = _client(tracking_uri)
    ids = _experiment_ids(client, experiment)
    rows, token = [], None
    while ids:
        page = client.search_runs(ids, filter_string=filter_string, max_results=1000, page_token=token)
        for run in page:
            row = {"run_id": run.info.run_id, "experiment_id": run.info.experiment_id,
                   "run_name": run.info.run_name, "status": run.info.status,
                   "start_time": run.info.start_time or 0, "end_time": run.info.end_time}
            row.update({f"tags.{k}": v for k, v in run.data.tags.items()})
            row.update({f"metrics.{k}": v for k, v in run.data.metrics.items()})
            rows.append(row)
        token = page.token
        if not token:
            break
    return pd.DataFrame(rows, columns=None if rows else BASE_COLUMNS)


def records_of(frame: pd.DataFrame) -> list[RunRecord]:
    """The frame's rows as `RunRecord`s (NaN metrics and missing tags left out; AP-type metrics in percent,
    see the module doc)."""
    out = []
    for row in frame.to_dict("records"):
        metrics = {k[8:]: float(v) for k, v in row.items()
                   if k.startswith("metrics.") and v is not None and not (isinstance(v, float) and math.isnan(v))}
        tags = {k[5:]: str(v) for k, v in row.items() if k.startswith("tags.") and isinstance(v, str)}
        end = row.get("end_time")
        out.append(RunRecord(row["run_id"], row["status"], in_percent(metrics, tags), tags,
                             int(row.get("start_time") or 0),
                             None if end is None or (isinstance(end, float) and math.isnan(end)) else int(end)))
    return out


def by_key(frame: pd.DataFrame) -> dict[str, RunRecord]:
    """run key -> the run that represents it: a FINISHED one, else the newest (the one a resume re-opens)."""
    best: dict[str, RunRecord] = {}
    for rec in records_of(frame):
        if not rec.key:
            continue
        old = best.get(rec.key)
        if old is None or (rec.status == "FINISHED", rec.start_time) > (old.status == "FINISHED", old.start_time):
            best[rec.key] = rec
    return best


def study_runs(tracking_uri: str, experiment: str) -> dict[str, RunRecord]:
    """run key -> representative run among the study rows (tag role=row) of `experiment`."""
    return by_key(runs_frame(tracking_uri, experiment, "tags.role = 'row'"))


def finished_run(tracking_uri: str, key: str, experiment: str | None = None) -> RunRecord | None:
    """A FINISHED run of `key`: in `experiment` (links included), or anywhere in the store (None), where
    only runs that trained (not links to others) count. The oldest, so every link points to one source."""
    flt = f"tags.{KEY_TAG} = '{key}' and attributes.status = 'FINISHED'"
    runs = [r for r in records_of(runs_frame(tracking_uri, experiment, flt))
            if experiment is not None or r.reused_from is None]
    return min(runs, key=lambda r: (r.start_time, r.run_id)) if runs else None


def resumable_run(tracking_uri: str, experiment: str, key: str) -> RunRecord | None:
    """The newest run of `key` in `experiment` that was interrupted (RUNNING or KILLED, not PRUNED).

    A FAILED run is never resumed: it would fail again at the same point; it is started again instead.
    """
    runs = [r for r in records_of(runs_frame(tracking_uri, experiment, f"tags.{KEY_TAG} = '{key}'"))
            if r.status in ("RUNNING", "KILLED", "SCHEDULED") and r.outcome != "PRUNED"]
    return max(runs, key=lambda r: (r.start_time, r.run_id)) if runs else None


def find_parent(tracking_uri: str, experiment: str, profile: str) -> str | None:
    """The study's parent run for `profile` (the earliest active one), if any."""
    flt = f"tags.role = 'study' and tags.profile = '{profile}'"
    runs = records_of(runs_frame(tracking_uri, experiment, flt))
    return min(runs, key=lambda r: (r.start_time, r.run_id)).run_id if runs else None


def run_active(tracking_uri: str, run_id: str) -> bool:
    """True when `run_id` exists and is not deleted."""
    from mlflow.exceptions import MlflowException

    try:
        return _client(tracking_uri).get_run(run_id).info.lifecycle_stage == "active"
    except MlflowException:
        return False


def run_tags(tracking_uri: str, run_id: str) -> dict[str, str]:
    """The tags of `run_id` ({} when the store does not hold it)."""
    from mlflow.exceptions import MlflowException

    try:
        return dict(_client(tracking_uri).get_run(run_id).data.tags)
    except MlflowException:
        return {}


def run_metrics(tracking_uri: str, run_id: str) -> dict[str, float]:
    """The last value of each metric of `run_id`, AP-type ones in percent ({} when the store does not hold it)."""
    from mlflow.exceptions import MlflowException

    try:
        run = _client(tracking_uri).get_run(run_id)
    except MlflowException:
        return {}
    return in_percent(dict(run.data.metrics), dict(run.data.tags))


def experiment_id(tracking_uri: str, name: str) -> str | None:
    """The id of the active experiment `name` (None when the store holds none; a missing store is not created)."""
    if not store_exists(tracking_uri):
        return None
    ids = _experiment_ids(_client(tracking_uri), name)
    return ids[0] if ids else None


def _record_files(tracking_uri: str, run_id: str, kind: str) -> dict[int, str]:
    """iteration -> artifact path of the records of `kind` (`<kind>/<kind>_<iteration>.json`), in order."""
    if not run_active(tracking_uri, run_id):
        raise RunNotFound(f"no run {run_id} in {tracking_uri}")
    prefix = f"{kind}/{kind}_"
    names = [f.path for f in _client(tracking_uri).list_artifacts(run_id, kind)
             if f.path.startswith(prefix) and f.path.endswith(".json") and f.path[len(prefix):-5].isdigit()]
    return dict(sorted((int(n[len(prefix):-5]), n) for n in names))


def record_iterations(tracking_uri: str, run_id: str, kind: str) -> list[int]:
    """The iterations at which a run stored records of `kind`, ascending (nothing is downloaded)."""
    return list(_record_files(tracking_uri, run_id, kind))


def run_records(tracking_uri: str, run_id: str, kind: str,
                iterations: list[int] | None = None) -> list[tuple[int, list | dict]]:
    """The records of `kind` a run stored (`MlflowHooks.on_records`), as (iteration, records), in order;
    only those of `iterations` when given (a long run stores hundreds; a report draws a few)."""
    files = _record_files(tracking_uri, run_id, kind)
    wanted = None if iterations is None else set(iterations)
    names = [name for it, name in files.items() if wanted is None or it in wanted]
    return [(int(data["iteration"]), data["records"]) for data in read_json_artifacts(tracking_uri, run_id, names)]


def metric_history(tracking_uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    """Every logged (step, value) of metric `key` of a run, by step ([] when it has none)."""
    from mlflow.exceptions import MlflowException

    try:
        points = _client(tracking_uri).get_metric_history(run_id, key)
    except MlflowException:
        return []
    return sorted((int(m.step), float(m.value)) for m in points)


def run_detections(tracking_uri: str, run_id: str) -> list[dict] | None:
    """The COCO results of a run's final evaluation (artifact `eval/detections.json`), read from the run that
    trained it: a link run (tag `reused_from`) has them with its source. None when that run kept none."""
    from mlflow.exceptions import MlflowException

    client = _client(tracking_uri)
    seen = {run_id}
    while True:
        try:
            source = client.get_run(run_id).data.tags.get(REUSED_TAG)
        except MlflowException:
            raise RunNotFound(f"no run {run_id} in {tracking_uri}") from None
        if not source or source in seen:
            break
        run_id = source
        seen.add(run_id)
    folder = DETECTIONS_ARTIFACT.rpartition("/")[0]
    if DETECTIONS_ARTIFACT not in {f.path for f in client.list_artifacts(run_id, folder)}:
        return None
    return read_json_artifacts(tracking_uri, run_id, [DETECTIONS_ARTIFACT])[0]


def json_artifact(tracking_uri: str, run_id: str, name: str) -> dict | list | None:
    """The JSON artifact `name` (e.g. "search/quick-rerun.json") of a run, parsed; None when it has none."""
    folder = name.rpartition("/")[0]
    if name not in {f.path for f in _client(tracking_uri).list_artifacts(run_id, folder or None)}:
        return None
    return read_json_artifacts(tracking_uri, run_id, [name])[0]


def read_json_artifacts(tracking_uri: str, run_id: str, names: list[str]) -> list:
    """The JSON artifacts `names` of a run, parsed, in order (downloaded to a temporary folder, quietly)."""
    import mlflow.artifacts

    out = []
    with tempfile.TemporaryDirectory() as tmp, _no_progress_bar():
        for name in names:
            local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=name, dst_path=tmp,
                                                        tracking_uri=tracking_uri)
            out.append(json.loads(Path(local).read_text()))
    return out


@contextlib.contextmanager
def _no_progress_bar():
    """MLflow draws a download bar on stderr per artifact unless its documented switch says no."""
    name = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    old = os.environ.get(name)
    os.environ[name] = "false"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


__all__ = ["RunNotFound", "RunRecord", "run_metrics", "experiment_id", "in_percent", "json_artifact", "read_json_artifacts", "runs_frame", "records_of", "by_key", "study_runs", "finished_run",
           "resumable_run", "find_parent", "run_active", "run_tags", "run_records", "record_iterations",
           "metric_history", "run_detections",
           "DETECTIONS_ARTIFACT"]
