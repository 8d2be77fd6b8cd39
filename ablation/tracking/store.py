"""Where runs are tracked: the workspace folder, the MLflow store (created atomically), experiments,
and the git state of the code. (The MLflow UI over the store is started by `dashboards.ui`.)

Defaults on disk (see docs/architecture.md):  <workspace>/mlflow.db  and  <workspace>/artifacts/<experiment>/.
mlflow is imported inside the functions that need it, so importing this module is cheap.
"""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from urllib.parse import unquote, urlparse

from ablation.processes import pid_alive

WORKSPACE_ENV = "ANCHORLAB_HOME"
DEFAULT_WORKSPACE = "anchorlab-runs"
TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
# Stores reached through a tracking server decide where artifacts go; with any other store the
# client writes artifacts itself, so the experiment gets an explicit location under the workspace.
SERVER_SCHEMES = ("http", "https", "databricks", "databricks-uc", "uc")
GIT_TIMEOUT_S = 5.0
# MLflow 3's UI opens an experiment by its kind: without this tag (or by its own guess) on a GenAI traces
# overview; "custom_model_development" ("Machine learning" in the UI) opens it on its runs. MLflow 3.17's UI
# takes the kind from a browser-wide workflow switch instead (`dashboards/ui_address.runs_url` sets it).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"


def workspace_dir(path: str | Path | None = None) -> Path:
    """The workspace folder: `path` > $ANCHORLAB_HOME > ./anchorlab-runs; created, absolute, writable.

    A folder that cannot be created or written raises an OSError whose one-line message names it and says
    what to do, before anything is half-written there (a read-only filesystem failed later, deep inside
    MLflow's SQLite store or the data generator, with hundreds of lines of traceback).
    """
    chosen = path if path is not None else (os.environ.get(WORKSPACE_ENV) or DEFAULT_WORKSPACE)
    ws = Path(chosen).expanduser().resolve()
    todo = f"choose a writable --workspace (or set ${WORKSPACE_ENV})"
    try:
        ws.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # read-only filesystem, no permission, a file where a folder should be
        raise type(exc)(f"workspace {ws}: cannot create it ({exc.strerror or exc}); {todo}") from None
    if not os.access(ws, os.W_OK | os.X_OK):  # EROFS counts here too, even for root
        raise PermissionError(f"workspace {ws}: not writable; {todo}")
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


def sqlite_file(tracking_uri: str) -> Path | None:
    """The file of a local SQLite store (`sqlite:///PATH`), None for any other store."""
    if urlparse(tracking_uri).scheme != "sqlite" or not tracking_uri.startswith("sqlite:///"):
        return None
    return Path(unquote(tracking_uri[len("sqlite:///"):].split("?", 1)[0]))


def store_exists(tracking_uri: str) -> bool:
    """False for a SQLite store whose file is missing (reading it would create it)."""
    path = sqlite_file(tracking_uri)
    return path is None or path.exists()


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

    The experiment carries the tag `mlflow.experimentKind = custom_model_development` (set on one created
    before anchorlab set it, unless someone chose another kind), so the UI shows it as model training.
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
            return client.create_experiment(name, artifact_location=location,
                                            tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
        except MlflowException:
            exp = client.get_experiment_by_name(name)  # another process created it first
            if exp is None:
                raise
    if exp.lifecycle_stage == "deleted":
        raise RuntimeError(f"experiment '{name}' is deleted in {tracking_uri}; restore it "
                           f"(mlflow experiments restore --experiment-id {exp.experiment_id}) or pick another name")
    if EXPERIMENT_KIND_TAG not in exp.tags:
        client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
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


__all__ = ["workspace_dir", "resolve_tracking_uri", "artifact_root", "sqlite_file", "store_exists", "ensure_store",
           "ensure_experiment", "git_info", "EXPERIMENT_KIND_TAG", "EXPERIMENT_KIND"]
