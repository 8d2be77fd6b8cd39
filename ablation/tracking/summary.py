"""A study's summary on its parent run: what MLflow's runs table and run page show of the study itself.

`ablation.tables.summary` computes it from the table; this writes it (the launcher calls `log_study_summary`
each time it makes the table):

* metrics `<metric>/<row label>` (e.g. "AP/ATSS"): the row's mean over its finished seeds, in percent. MLflow
  allows only letters, digits, `_ - . / :` and spaces in a name, so other characters become spaces
  ("AP/FSR 0.3" for the row "FSR (>0.3)"); two labels that end up alike get "_2", "_3".
* tags `best_row`, `best_metric`, `best_significant`: the best row by the study's first metric, and whether the
  table calls it significantly above the runner-up. Tags, since the best changes as runs finish.
* params `study`, `profile`, `seeds`, `rows`, `baseline`: what the table covers. MLflow never changes a param,
  so when a later table covers other seeds or rows, the params keep the first values and a tag
  `latest.<name>` holds the current one.
* the run's description (`mlflow.note.content`): the study's description, then the table in markdown.
"""
from __future__ import annotations

import re

NOTE_TAG = "mlflow.note.content"
LATEST_PREFIX = "latest."
NOT_IN_A_NAME = re.compile(r"[^\w.\- :]+")  # what MLflow refuses in a metric name (its validation rule)


def metric_name(metric: str, label: str, taken: set[str]) -> str:
    """`<metric>/<label>` as MLflow accepts it, unique among `taken` (which it joins)."""
    clean = " ".join(NOT_IN_A_NAME.sub(" ", label).split()).strip(".") or "row"
    name, n = f"{metric}/{clean}", 1
    while name in taken:
        n += 1
        name = f"{metric}/{clean}_{n}"
    taken.add(name)
    return name


def log_study_summary(tracking_uri: str, run_id: str, values: dict[str, dict[str, float]], params: dict[str, str],
                      tags: dict[str, str], markdown: str = "", description: str = "") -> None:
    """Write a table's summary on the study's parent run `run_id` (module doc)."""
    import time

    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.utils.validation import MAX_METRICS_PER_BATCH, MAX_TAG_VAL_LENGTH

    client = MlflowClient(tracking_uri)
    run = client.get_run(run_id)
    held = run.data.params
    now = int(time.time() * 1000)
    metrics = []
    for metric, by_row in values.items():
        taken: set[str] = set()
        metrics += [Metric(metric_name(metric, label, taken), float(v), now, 0) for label, v in by_row.items()]
    all_tags = dict(tags)
    all_tags.update({f"{LATEST_PREFIX}{k}": v for k, v in params.items() if k in held and held[k] != v})
    if markdown:
        note = f"{description.strip()}\n\n{markdown}".strip()
        all_tags[NOTE_TAG] = note if len(note) <= MAX_TAG_VAL_LENGTH else note[: MAX_TAG_VAL_LENGTH - 1] + "…"
    client.log_batch(run_id, params=[Param(k, v) for k, v in params.items() if k not in held],
                     tags=[RunTag(k, v) for k, v in all_tags.items()])
    for k, v in params.items():  # back to the first values: no "latest" left behind
        if held.get(k) == v and f"{LATEST_PREFIX}{k}" in run.data.tags:
            client.delete_tag(run_id, f"{LATEST_PREFIX}{k}")
    for i in range(0, len(metrics), MAX_METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=metrics[i: i + MAX_METRICS_PER_BATCH])


__all__ = ["log_study_summary", "metric_name", "NOTE_TAG", "LATEST_PREFIX"]
