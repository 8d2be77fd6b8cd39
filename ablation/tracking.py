"""The one module that talks to MLflow: workspace and store, runs, and the training-loop hooks.

Everything `detector/` measures reaches MLflow through `MlflowHooks` (a `TrainHooks`); everything a
run is (resolved config, git state, config hash) is written by `tracked_run` when the run is created.

Defaults on disk (see DESIGN.md):  <workspace>/mlflow.db  and  <workspace>/artifacts/<experiment>/.
mlflow is imported inside the functions that need it, so importing this module is cheap.
"""
from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import unquote, urlparse

from detector.config import Config, config_hash, config_to_dict, dump_yaml, flatten
from detector.engine.hooks import TrainHooks

WORKSPACE_ENV = "ANCHORLAB_HOME"
DEFAULT_WORKSPACE = "anchorlab-runs"
TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
# Stores reached through a tracking server decide where artifacts go; with any other store the
# client writes artifacts itself, so the experiment gets an explicit location under the workspace.
SERVER_SCHEMES = ("http", "https", "databricks", "databricks-uc", "uc")
GIT_TIMEOUT_S = 5.0
NONFINITE_KEY = "nonfinite_metric_values"


def workspace_dir(path: str | Path | None = None) -> Path:
    """The workspace folder: `path` > $ANCHORLAB_HOME > ./anchorlab-runs; created, absolute."""
    chosen = path if path is not None else (os.environ.get(WORKSPACE_ENV) or DEFAULT_WORKSPACE)
    ws = Path(chosen).expanduser().resolve()
    ws.mkdir(parents=True, exist_ok=True)
    return ws


def resolve_tracking_uri(explicit: str | None = None, workspace: Path | None = None) -> str:
    """`explicit` > $MLFLOW_TRACKING_URI > a SQLite store in the workspace."""
    if explicit:
        return explicit
    if os.environ.get(TRACKING_URI_ENV):
        return os.environ[TRACKING_URI_ENV]
    ws = workspace_dir(workspace)
    return f"sqlite:///{ws.as_posix()}/mlflow.db"


def artifact_root(workspace: Path) -> str:
    """`<workspace>/artifacts` as a file URI (the folder is created)."""
    root = Path(workspace).expanduser().resolve() / "artifacts"
    root.mkdir(parents=True, exist_ok=True)
    return root.as_uri()


def _client_writes_artifacts(tracking_uri: str) -> bool:
    return urlparse(tracking_uri).scheme not in SERVER_SCHEMES


def _safe_folder_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "experiment"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True


def store_exists(tracking_uri: str) -> bool:
    """False for a SQLite store whose file is missing (reading it would create it)."""
    if urlparse(tracking_uri).scheme != "sqlite" or not tracking_uri.startswith("sqlite:///"):
        return True
    path = unquote(tracking_uri[len("sqlite:///"):].split("?", 1)[0])
    return Path(path).exists()


def ensure_store(uri: str) -> None:
    """Create a missing SQLite store atomically: initialise a private file, then hard-link it into place.

    MLflow builds a new store by running its migrations in place; a process killed meanwhile leaves a
    half-migrated file that every later command fails on. Here the store appears complete or not at all.
    """
    if not uri.startswith("sqlite:///") or store_exists(uri):
        return
    from mlflow import MlflowClient

    path = Path(unquote(uri[len("sqlite:///"):].split("?", 1)[0])).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    for old in path.parent.glob(f".{path.name}.*.init*"):  # left by killed launchers
        if not pid_alive(int(old.name.split(".")[-2])):
            old.unlink(missing_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.init")
    MlflowClient(f"sqlite:///{tmp}").search_experiments()
    try:
        os.link(tmp, path)  # fails if another launcher got there first: theirs is as good
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)


def ensure_experiment(name: str, tracking_uri: str, workspace: Path) -> str:
    """The id of experiment `name`, created if missing; tolerates a concurrent creator.

    With a store the client writes artifacts for (SQLite, file, a database URI), a new experiment
    gets `<workspace>/artifacts/<name>` as its artifact location; MLflow's default would be a
    folder relative to the current directory. A deleted experiment is an error, not resurrected.
    """
    ensure_store(tracking_uri)
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(name)
    if exp is None:
        location = None
        if _client_writes_artifacts(tracking_uri):
            location = f"{artifact_root(workspace)}/{_safe_folder_name(name)}"
        try:
            return client.create_experiment(name, artifact_location=location)
        except MlflowException:
            exp = client.get_experiment_by_name(name)  # another process created it first
            if exp is None:
                raise
    if exp.lifecycle_stage == "deleted":
        raise RuntimeError(f"experiment '{name}' is deleted in {tracking_uri}; restore it "
                           f"(mlflow experiments restore --experiment-id {exp.experiment_id}) or pick another name")
    return exp.experiment_id


def _git(repo_dir: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", "--no-optional-locks", "-C", str(repo_dir), *args], capture_output=True,
                             text=True, timeout=GIT_TIMEOUT_S, env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"})
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def git_info(repo_dir: Path | None = None) -> dict[str, str]:
    """{"git_sha", "git_dirty"} of the checkout holding the code (default: this package's root).

    Values are "unknown" outside a git checkout or without git; untracked, non-ignored files count
    as dirty. Read-only (`--no-optional-locks`: not even the index stat cache is refreshed); never raises.
    """
    repo_dir = Path(repo_dir) if repo_dir is not None else Path(__file__).resolve().parent.parent
    sha = _git(repo_dir, "rev-parse", "HEAD")
    status = _git(repo_dir, "status", "--porcelain")  # works before the first commit too
    return {
        "git_sha": sha.strip() if sha else "unknown",
        "git_dirty": "unknown" if status is None else ("true" if status.strip() else "false"),
    }


def _now_ms() -> int:
    return int(time.time() * 1000)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


class MlflowHooks(TrainHooks):
    """Sends a run's records to MLflow: scalars buffered and batched, evaluations, files, status.

    Iteration scalars are buffered and sent with `log_batch` every `flush_every` iterations or
    `flush_seconds` seconds, whichever comes first, so a step costs a list append, not a database
    transaction. Non-finite values are skipped (MLflow charts cannot show them) and counted; the
    count is logged as `nonfinite_metric_values` when the run ends.
    """

    def __init__(self, client, run_id: str, flush_every: int = 50, flush_seconds: float = 10.0):
        from mlflow.utils.validation import MAX_METRICS_PER_BATCH, MAX_TAG_VAL_LENGTH

        self.client = client
        self.run_id = run_id
        self.flush_every = max(1, int(flush_every))
        self.flush_seconds = flush_seconds
        self.nonfinite = 0
        self.status: str | None = None  # set by on_end
        self._batch_size = MAX_METRICS_PER_BATCH
        self._max_tag = MAX_TAG_VAL_LENGTH
        self._buffer: list = []
        self._pending_iterations = 0
        self._last_flush = time.monotonic()
        self._last_step = 0

    def _metrics(self, scalars: dict[str, float], step: int, prefix: str = "") -> list:
        from mlflow.entities import Metric

        ts = _now_ms()
        out = []
        for key, value in scalars.items():
            value = float(value)
            if not math.isfinite(value):
                self.nonfinite += 1
                continue
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
        self.client.set_tag(self.run_id, "start_iteration", str(start_iteration))

    def on_iteration(self, iteration: int, scalars: dict[str, float]) -> None:
        self._buffer.extend(self._metrics(scalars, iteration))
        self._last_step = max(self._last_step, int(iteration))
        self._pending_iterations += 1
        if (self._pending_iterations >= self.flush_every
                or time.monotonic() - self._last_flush >= self.flush_seconds):
            self.flush()

    def on_eval(self, iteration: int, metrics: dict[str, float], files: dict[str, Path]) -> None:
        self.flush()
        self._last_step = max(self._last_step, int(iteration))
        self._send(self._metrics(metrics, iteration, prefix="val/"))
        for path in files.values():
            self.on_artifact(Path(path), "eval")

    def on_checkpoint(self, iteration: int, path: Path) -> None:
        # Tags, not params: they may change as the run goes on.
        self.client.set_tag(self.run_id, "checkpoint", str(path))
        self.client.set_tag(self.run_id, "checkpoint_iteration", str(iteration))

    def on_artifact(self, path: Path, folder: str = "") -> None:
        path = Path(path)
        if path.is_dir():
            dest = f"{folder}/{path.name}" if folder else path.name
            self.client.log_artifacts(self.run_id, str(path), dest)
        else:
            self.client.log_artifact(self.run_id, str(path), folder or None)

    def on_records(self, iteration: int, kind: str, records: list | dict) -> None:
        """Store records as JSON plus a figure, under `<kind>/` with the iteration in the file name."""
        from dashboards.assign_figures import plot_gmm_fits, plot_positives_histogram

        name = f"{kind}_{int(iteration):07d}"
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp) / f"{name}.json"
            data.write_text(json.dumps({"iteration": iteration, "records": records}))
            figure = Path(tmp) / f"{name}.png"
            if kind == "gmm_fits":
                plot_gmm_fits(records, figure, title=f"iteration {iteration}")
            elif kind == "positives_per_gt":
                plot_positives_histogram(records["counts"], figure, title=f"iteration {iteration}")
            for path in (data, figure):
                if path.exists():
                    self.client.log_artifact(self.run_id, str(path), kind)

    def on_end(self, status: str, reason: str = "") -> None:
        """Flush, record the non-finite count and the reason, and close the run with `status`."""
        from mlflow.entities import Metric

        self.flush()
        self._send([Metric(NONFINITE_KEY, float(self.nonfinite), _now_ms(), self._last_step)])
        if reason:
            self.client.set_tag(self.run_id, "failure_reason", reason[: self._max_tag])
        self.client.set_terminated(self.run_id, status)
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
    git_dirty, config_hash, mlflow.runName (default: `config.name`), mlflow.parentRunId, `tags`.
    With `run_id` the run is re-opened (status RUNNING) for a resume; its config_hash must match.
    The run is ended FINISHED if the body returns without calling `on_end`, FAILED (reason: the
    exception's first line) if it raises, KILLED on KeyboardInterrupt; the exception propagates.
    """
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    chash = config_hash(config)
    if run_id is None:
        exp_id = ensure_experiment(experiment, tracking_uri, workspace)
        git = git_info()
        run_tags = {**git, "config_hash": chash}
        if git["git_sha"] != "unknown":
            run_tags["mlflow.source.git.commit"] = git["git_sha"]
        if parent_run_id:
            run_tags["mlflow.parentRunId"] = parent_run_id
        run_tags.update(tags or {})
        run = client.create_run(exp_id, tags=run_tags, run_name=run_name or config.name)
        run_id = run.info.run_id
        fresh = True
    else:
        known = client.get_run(run_id).data.tags.get("config_hash")
        if known is not None and known != chash:
            raise ValueError(f"run {run_id} was made with config_hash {known}; this config hashes to {chash}")
        client.update_run(run_id, status="RUNNING")
        fresh = False
    hooks = MlflowHooks(client, run_id)
    try:
        if fresh:
            _log_params(client, run_id, _params(config))
            client.log_text(run_id, dump_yaml(config), "config.yaml")
        yield hooks
    except BaseException as exc:
        status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
        try:
            hooks.on_end(status, _one_line(exc))
        except Exception as end_exc:  # never mask the original error
            warnings.warn(f"could not mark run {run_id} {status}: {_one_line(end_exc)}", stacklevel=2)
        raise
    if hooks.status is None:
        hooks.on_end("FINISHED")


def ui_command(workspace: Path, tracking_uri: str | None = None, host: str = "127.0.0.1",
               port: int = 5000) -> list[str]:
    """The `mlflow ui` command line for the workspace's store."""
    uri = resolve_tracking_uri(tracking_uri, workspace)
    return [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
            "--default-artifact-root", artifact_root(workspace), "--host", host, "--port", str(port)]


def launch_ui(workspace: Path, tracking_uri: str | None = None, host: str = "127.0.0.1",
              port: int = 5000) -> subprocess.Popen:
    """Start the MLflow UI on the workspace's store; the caller owns (and terminates) the process."""
    return subprocess.Popen(ui_command(workspace, tracking_uri, host, port))


def ui_url(host: str, port: int) -> str:
    """The address to open in a browser ("0.0.0.0" / "::" listen everywhere: open localhost)."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    if ":" in shown and not shown.startswith("["):
        shown = f"[{shown}]"
    return f"http://{shown}:{port}"


__all__ = [
    "pid_alive", "store_exists", "ensure_store", "workspace_dir", "resolve_tracking_uri", "artifact_root", "ensure_experiment", "git_info", "MlflowHooks",
    "tracked_run", "ui_command", "launch_ui", "ui_url",
]
