"""A study's table as data: its runs (a DataFrame from `ablation.tracking.reader.runs_frame`) laid out in
the paper's order with its labels.

Each row of the study is represented by the run of each of its run keys that `reader.by_key` picks
(FINISHED over the newest other): mean ± std over the finished seeds (metrics in percent, as papers
print them), the best value per column marked, "failed" when no seed finished and one failed,
"pending" when none ran, and the paper's value beside each metric. `render.py` writes it out.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field

import pandas as pd

from ablation.study.expand import expand
from ablation.study.load import FAILED_REFERENCE, Study
from ablation.tracking.reader import RunRecord, by_key


# ---------------------------------------------------------------- the table as data
@dataclass
class Cell:
    mean: float | None = None  # percent
    std: float | None = None
    paper: float | None = None
    best: bool = False

    @property
    def delta(self) -> float | None:
        return None if self.mean is None or self.paper is None else self.mean - self.paper


@dataclass
class TableRow:
    label: str
    cells: dict[str, str]  # label columns from the study (e.g. Method, Aux. task, Voting)
    status: str  # "done" | "partial" | "failed" | "pending"
    seeds_done: int
    seeds_total: int
    values: dict[str, Cell] = field(default_factory=dict)
    paper_failed: bool = False
    reasons: list[str] = field(default_factory=list)


@dataclass
class TablePart:
    title: str
    label_header: str
    label_columns: list[str]
    groups: list[tuple[str, list[TableRow]]]


@dataclass
class Table:
    title: str
    metrics: list[str]
    parts: list[TablePart]


def build_table(study: Study, profile: str, runs: pd.DataFrame) -> Table:
    """Lay the profile's runs (rows of `runs`, tagged with their run key) out as the paper's table."""
    records = by_key(runs)
    by_label: dict[str, list[RunRecord | None]] = {}
    for run in expand(study, profile):
        by_label.setdefault(run.label, []).append(records.get(run.key))
    parts = []
    for part in study.layout:
        groups = []
        for title, labels in part.groups:
            groups.append((title, [_row(study, label, by_label[label]) for label in labels]))
        for metric in study.metrics:
            cells = [r.values[metric] for _, rows in groups for r in rows if r.values[metric].mean is not None]
            top = max((c.mean for c in cells), default=None)
            for c in cells:
                c.best = top is not None and round(c.mean, 1) == round(top, 1)
        parts.append(TablePart(part.title, part.label_header, part.label_columns, groups))
    title = " · ".join(x for x in (study.paper.get("table", ""), study.name, f"profile {profile}") if x)
    return Table(title, list(study.metrics), parts)


def _row(study: Study, label: str, recs: list[RunRecord | None]) -> TableRow:
    row = study.row(label)
    done = [r for r in recs if r is not None and r.status == "FINISHED"]
    failed = [r for r in recs if r is not None and r.status == "FAILED"]
    if done:
        status = "done" if len(done) == len(recs) else "partial"
    else:
        status = "failed" if failed else "pending"
    ref = row.reference if isinstance(row.reference, dict) else {}
    out = TableRow(label, row.cells, status, len(done), len(recs), paper_failed=row.reference == FAILED_REFERENCE,
                   reasons=[r.reason for r in failed if r.reason])
    for metric in study.metrics:
        values = [100.0 * r.metrics[f"val/{metric}"] for r in done
                  if f"val/{metric}" in r.metrics and r.metrics[f"val/{metric}"] >= 0]
        cell = Cell(paper=ref.get(metric))
        if values:
            cell.mean = statistics.fmean(values)
            cell.std = statistics.stdev(values) if len(values) > 1 else None
        out.values[metric] = cell
    return out


__all__ = ["Cell", "TableRow", "TablePart", "Table", "build_table"]
