"""A saved view of a study's runs in MLflow's UI: its rows with row label, method, seed and AP as the first columns.

By default MLflow 3's runs table shows Created, Dataset, Duration, Source and Models, with every study row folded
under its collapsed parent run. What a project can preset is a saved view: MLflow 3.17's UI keeps those as
experiment tags `mlflow.sharedViewState.<id>` holding {name, createdAt, updatedAt, state}, lists them under
"Views", and opens one from a link with `?viewStateShareKey=<id>`. Its state holds the runs' filter and
order (`searchFilter`, `orderByKey`, `orderByAsc`) and the table's look (`selectedColumns`, ...), in the UI's own
names (`metrics.\\`val/AP\\``). The view written here lists the study's rows (tag role=row, of one profile or of
all), best AP first, with the columns row, method, seed and the study's first metric. Filtering on the rows alone also
unfolds them: a child whose parent is not in the list is shown at the top level.

What a view cannot preset (the UI drops these keys from a shared view): which parent runs are expanded, pinned or
hidden. What the UI keeps in the browser instead (the GenAI / Model training switch) is set by the link
(`dashboards.ui_address.runs_url`).
"""
from __future__ import annotations

import json
import time

VIEW_TAG_PREFIX = "mlflow.sharedViewState."
ROW_TAGS = ("row", "method", "seed")


def view_id(profile: str | None) -> str:
    """The view's id (the part of its tag after the prefix): one per profile, and one over all profiles."""
    return f"anchorlab-rows-{profile}" if profile else "anchorlab-rows"


def _col(kind: str, key: str) -> str:
    return f"{kind}.`{key}`"  # the UI's canonical column key


def view_state(profile: str | None, metrics: list[str]) -> dict:
    """The UI state of the rows view (module doc): filter, order and columns."""
    search = "tags.role = 'row'" + (f" and tags.profile = '{profile}'" if profile else "")
    tags = ROW_TAGS if profile else (*ROW_TAGS, "profile")
    # One metric column: MLflow puts metric columns before tag columns whatever the view says, so every further
    # metric pushes row / method / seed off a laptop screen (the study's other metrics are one click away)
    return {"searchFilter": search, "orderByKey": _col("metrics", f"val/{metrics[0]}"), "orderByAsc": False,
            "selectedColumns": [_col("tags", t) for t in tags] + [_col("metrics", f"val/{metrics[0]}")]}


def ensure_rows_view(tracking_uri: str, experiment_id: str, profile: str | None, metrics: list[str]) -> str | None:
    """Write (or bring up to date) the rows view of a study's experiment; returns its id for the link, or None
    when the store refuses the write (a read-only store, a server where this user may only read)."""
    from mlflow.exceptions import MlflowException

    try:
        return _write_view(tracking_uri, experiment_id, profile, metrics)
    except (MlflowException, OSError):
        return None


def _write_view(tracking_uri: str, experiment_id: str, profile: str | None, metrics: list[str]) -> str:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    key = f"{VIEW_TAG_PREFIX}{view_id(profile)}"
    state = json.dumps(view_state(profile, metrics or ["AP"]))
    held = client.get_experiment(experiment_id).tags.get(key)
    try:
        old = json.loads(held) if held else {}
    except ValueError:  # someone's own tag under this key: replaced
        old = {}
    old = old if isinstance(old, dict) else {}
    if old.get("state") != state:
        now = int(time.time() * 1000)
        created = old.get("createdAt", now)
        name = f"anchorlab: rows · {profile}" if profile else "anchorlab: rows"
        client.set_experiment_tag(experiment_id, key, json.dumps({"name": name, "createdAt": created,
                                                                  "updatedAt": now, "state": state}))
    return view_id(profile)


__all__ = ["ensure_rows_view", "view_state", "view_id", "VIEW_TAG_PREFIX"]
