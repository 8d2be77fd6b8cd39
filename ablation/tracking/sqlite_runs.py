"""The runs of a local SQLite MLflow store read straight from its tables, without importing MLflow.

Importing mlflow takes 1.5-3 s (it loads its GenAI, server and artifact stacks), more than all the rest of
`anchorlab study status`, which only needs the runs' states. So `reader.runs_frame` asks here first for a
`sqlite:///` store and falls back to `MlflowClient` whenever this path could answer differently from it:
  * a filter other than `tags.<name> = '<value>'` / `attributes.status = '<value>'` joined by `and`;
  * tables or columns other than MLflow's SQLAlchemy store's (`experiments`, `runs`, `tags`,
    `latest_metrics`; another MLflow version);
  * experiments in a workspace other than MLflow's default one.
Read-only (the file is opened `mode=ro`). Same answer as `MlflowClient.search_runs` (tested): active runs of
active experiments, newest start first, each metric's latest value (NaN kept as NaN).
"""
from __future__ import annotations

import contextlib
import math
import re
import sqlite3
from pathlib import Path
from urllib.parse import quote

from ablation.tracking.store import sqlite_file

CONDITION = re.compile(r"^\s*(?:tags\.(?P<tag>[\w./-]+)|attributes\.(?P<attr>status))\s*=\s*'(?P<value>[^']*)'\s*$")
DEFAULT_WORKSPACE = "default"  # MLflow's, for a store without workspaces
TIMEOUT_S = 10.0  # wait this long for a writer's lock (a study writing runs meanwhile)


def _conditions(filter_string: str) -> list[tuple[str | None, str]] | None:
    """[(tag name or None for the status, value)], or None for a filter this module does not read."""
    out = []
    for part in re.split(r"\s+and\s+", filter_string.strip(), flags=re.IGNORECASE) if filter_string.strip() else []:
        m = CONDITION.match(part)
        if m is None:
            return None
        out.append((m["tag"], m["value"]))
    return out


def _connect(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{quote(str(path.resolve()))}?mode=ro", uri=True, timeout=TIMEOUT_S)


def read_runs(tracking_uri: str, experiment: str | None, filter_string: str = "") -> list[dict] | None:
    """The rows `reader.runs_frame` builds (run_id, experiment_id, run_name, status, start_time, end_time,
    `tags.<name>`, `metrics.<name>`), or None when only MLflow can answer (module doc)."""
    path = sqlite_file(tracking_uri)
    conditions = _conditions(filter_string)
    if path is None or conditions is None or not path.is_file():
        return None
    try:
        with contextlib.closing(_connect(path)) as db:
            return _query(db, experiment, conditions)
    except sqlite3.Error:  # another schema, a damaged file: MLflow answers (or explains)
        return None


def _query(db: sqlite3.Connection, experiment: str | None, conditions) -> list[dict] | None:
    columns = {row[1] for row in db.execute("PRAGMA table_info(experiments)")}
    if "workspace" in columns and db.execute("SELECT 1 FROM experiments WHERE workspace IS NOT NULL AND "
                                              "workspace != ? LIMIT 1", (DEFAULT_WORKSPACE,)).fetchone():
        return None
    sql = ["SELECT r.run_uuid, r.experiment_id, r.name, r.status, r.start_time, r.end_time FROM runs r",
           "JOIN experiments e ON e.experiment_id = r.experiment_id",
           "WHERE r.lifecycle_stage = 'active' AND e.lifecycle_stage = 'active'"]
    args: list = []
    if experiment is not None:
        sql.append("AND e.name = ?")
        args.append(experiment)
    for tag, value in conditions:
        if tag is None:
            sql.append("AND r.status = ?")
            args.append(value)
        else:
            sql.append("AND EXISTS (SELECT 1 FROM tags t WHERE t.run_uuid = r.run_uuid AND t.key = ? AND t.value = ?)")
            args += [tag, value]
    sql.append("ORDER BY r.start_time DESC, r.run_uuid")
    runs = db.execute(" ".join(sql), args).fetchall()
    rows = {run_id: {"run_id": run_id, "experiment_id": str(exp_id), "run_name": name, "status": status,
                     "start_time": start or 0, "end_time": end}
            for run_id, exp_id, name, status, start, end in runs}
    ids = list(rows)
    for chunk in (ids[i:i + 500] for i in range(0, len(ids), 500)):  # SQLite's bound-variable limit
        marks = ",".join("?" * len(chunk))
        for run_id, key, value in db.execute(f"SELECT run_uuid, key, value FROM tags WHERE run_uuid IN ({marks})",
                                             chunk):
            rows[run_id][f"tags.{key}"] = value
        for run_id, key, value, is_nan in db.execute(
                f"SELECT run_uuid, key, value, is_nan FROM latest_metrics WHERE run_uuid IN ({marks})", chunk):
            rows[run_id][f"metrics.{key}"] = math.nan if is_nan else float(value)
    return list(rows.values())


__all__ = ["read_runs"]
