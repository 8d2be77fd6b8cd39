"""Paper-style tables from MLflow: one study's child runs -> md / LaTeX / CSV / HTML.

MLflow is the source of truth: `fetch_records` maps each config hash to the best run of it in the
study's experiment (FINISHED over RUNNING over the newest other). `build_table` lays rows out in the
paper's order with its labels: mean ± std over seeds (metrics in percent, as papers print them), the
best value per column in bold, "training failed" when no seed finished and one failed, "pending"
when none ran, and optionally the paper's value and our difference beside each metric.
"""
from __future__ import annotations

import csv
import html
import io
import statistics
from dataclasses import dataclass, field

from ablation.study import FAILED_REFERENCE, Study, expand
from ablation.tracking import store_exists

FORMATS = ("md", "latex", "csv", "html")
FAILED_TEXT = "training failed"
PENDING_TEXT = "pending"
PARTIAL_MARK = "*"



@dataclass
class RunRecord:
    """What MLflow knows about one run of a config hash."""

    run_id: str
    status: str  # FINISHED | FAILED | KILLED | RUNNING | SCHEDULED
    metrics: dict[str, float]
    tags: dict[str, str]
    start_time: int
    end_time: int | None

    @property
    def reason(self) -> str:
        return self.tags.get("failure_reason", "")


def _experiment_id(client, experiment: str) -> str | None:
    exp = client.get_experiment_by_name(experiment)
    return exp.experiment_id if exp is not None and exp.lifecycle_stage == "active" else None


def _search(client, exp_id: str, filter_string: str) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs([exp_id], filter_string=filter_string, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def fetch_records(tracking_uri: str, experiment: str) -> dict[str, RunRecord]:
    """config hash -> the run that represents it: a FINISHED one, else the newest (the one a resume
    re-opens). Read-only: a missing store reads as empty."""
    if not store_exists(tracking_uri):
        return {}
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    exp_id = _experiment_id(client, experiment)
    if exp_id is None:
        return {}
    best: dict[str, RunRecord] = {}
    for run in _search(client, exp_id, "tags.role = 'row'"):
        key = run.data.tags.get("config_hash")
        if not key:
            continue
        rec = RunRecord(run.info.run_id, run.info.status, dict(run.data.metrics), dict(run.data.tags),
                        run.info.start_time or 0, run.info.end_time)
        old = best.get(key)
        if old is None or (rec.status == "FINISHED", rec.start_time) > (old.status == "FINISHED", old.start_time):
            best[key] = rec
    return best


def count_runs(tracking_uri: str, experiment: str) -> dict[str, int]:
    """config hash -> number of child runs (a check that no run was made twice)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    exp_id = _experiment_id(client, experiment)
    counts: dict[str, int] = {}
    for run in _search(client, exp_id, "tags.role = 'row'") if exp_id else []:
        key = run.data.tags.get("config_hash", "")
        counts[key] = counts.get(key, 0) + 1
    return counts


def find_parent(tracking_uri: str, experiment: str, profile: str) -> str | None:
    """The study's parent run for `profile` (the earliest active one), if any."""
    if not store_exists(tracking_uri):
        return None
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    exp_id = _experiment_id(client, experiment)
    if exp_id is None:
        return None
    runs = _search(client, exp_id, f"tags.role = 'study' and tags.profile = '{profile}'")
    return min(runs, key=lambda r: (r.info.start_time or 0, r.info.run_id)).info.run_id if runs else None


def log_table(tracking_uri: str, parent_run_id: str, text: str, fmt: str, profile: str) -> None:
    """Store the rendered table with the parent run as `tables/<profile>.<ext>`."""
    from mlflow import MlflowClient

    ext = {"md": "md", "latex": "tex", "csv": "csv", "html": "html"}[fmt]
    MlflowClient(tracking_uri).log_text(parent_run_id, text, f"tables/{profile}.{ext}")


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


def build_table(study: Study, profile: str, records: dict[str, RunRecord]) -> Table:
    """Lay the profile's runs out as the paper's table (means over the finished seeds)."""
    specs = expand(study, profile)
    by_label: dict[str, list[RunRecord | None]] = {}
    for spec in specs:
        by_label.setdefault(spec.label, []).append(records.get(spec.config_hash))
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


# ---------------------------------------------------------------- rendering
def _number(cell: Cell) -> str:
    text = f"{cell.mean:.1f}"
    return f"{text} ± {cell.std:.1f}" if cell.std is not None else text


def _cells(row: TableRow, metrics: list[str], reference: bool, bold) -> list[str]:
    """The metric cells of one row, already formatted (`bold` wraps a best value)."""
    out = []
    for i, metric in enumerate(metrics):
        cell = row.values[metric]
        if row.status in ("failed", "pending"):
            ours = (FAILED_TEXT if row.status == "failed" else PENDING_TEXT) if i == 0 else ""
        elif cell.mean is None:
            ours = "-"
        else:
            ours = _number(cell) + (PARTIAL_MARK if row.status == "partial" else "")
            ours = bold(ours) if cell.best else ours
        out.append(ours)
        if reference:
            paper = (FAILED_TEXT if i == 0 else "") if row.paper_failed else (
                "-" if cell.paper is None else f"{cell.paper:.1f}")
            out += [paper, "" if cell.delta is None else f"{cell.delta:+.1f}"]
    return out


def _header(part: TablePart, metrics: list[str], reference: bool) -> list[str]:
    head = list(part.label_columns) or [part.label_header]
    for metric in metrics:
        head += [metric, f"{metric} paper", f"Δ{metric}"] if reference else [metric]
    return head


def _label_cells(part: TablePart, row: TableRow) -> list[str]:
    return [row.cells.get(c, "") for c in part.label_columns] if part.label_columns else [row.label]


def _footnotes(table: Table) -> list[str]:
    rows = [r for p in table.parts for _, rs in p.groups for r in rs]
    notes = []
    if any(r.status == "partial" for r in rows):
        notes.append(f"{PARTIAL_MARK} mean over the finished seeds only")
    for r in rows:
        if r.status == "failed" and r.reasons:
            notes.append(f"{r.label}: {r.reasons[0]}")
    return notes


def render(table: Table, fmt: str, reference: bool = False) -> str:
    """The table as text in one of `FORMATS`."""
    if fmt not in FORMATS:
        raise ValueError(f"format '{fmt}' is not one of {', '.join(FORMATS)}")
    return {"md": _markdown, "latex": _latex, "csv": _csv, "html": _html}[fmt](table, reference)


def _markdown(table: Table, reference: bool) -> str:
    lines = [f"**{table.title}**", ""]
    for part in table.parts:
        if part.title:
            lines += [f"*{part.title}*", ""]
        head = _header(part, table.metrics, reference)
        lines += ["| " + " | ".join(head) + " |",
                  "|" + "|".join([":--"] * (len(head) - len(table.metrics) * (3 if reference else 1))
                                 + ["--:"] * (len(table.metrics) * (3 if reference else 1))) + "|"]
        for title, rows in part.groups:
            if title:
                lines.append("| " + " | ".join([f"*{title}*"] + [""] * (len(head) - 1)) + " |")
            for row in rows:
                cells = _label_cells(part, row) + _cells(row, table.metrics, reference, lambda s: f"**{s}**")
                lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        lines.append("")
    lines += [f"{n}  " for n in _footnotes(table)]
    return "\n".join(lines).rstrip() + "\n"


_B0, _B1 = "\x02", "\x03"  # bold markers that survive escaping


def _marked(text: str) -> str:
    return f"{_B0}{text}{_B1}"


def _tex(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                 ("±", r"$\pm$"), ("Δ", r"$\Delta$"), ("✓", r"\checkmark"), (">", r"$>$"), ("<", r"$<$")):
        text = text.replace(a, b)
    return text


def _latex(table: Table, reference: bool) -> str:
    out = [f"% {table.title}"]
    for part in table.parts:
        head = _header(part, table.metrics, reference)
        n_label = len(head) - len(table.metrics) * (3 if reference else 1)
        out += [r"\begin{table}[t]", r"\centering"]
        if part.title:
            out.append(rf"\caption{{{_tex(part.title)}}}")
        out += [r"\begin{tabular}{" + "l" * n_label + "c" * (len(head) - n_label) + "}", r"\toprule",
                " & ".join(_tex(h) for h in head) + r" \\", r"\midrule"]
        for g, (title, rows) in enumerate(part.groups):
            if g:
                out.append(r"\midrule")
            if title:
                out.append(rf"\multicolumn{{{len(head)}}}{{l}}{{\textit{{{_tex(title)}}}}} \\")
            for row in rows:
                label = [_tex(c) for c in _label_cells(part, row)]
                cells = [_tex(c).replace(_B0, r"\textbf{").replace(_B1, "}")
                         for c in _cells(row, table.metrics, reference, _marked)]
                out.append(" & ".join(label + cells) + r" \\")
        out += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    out += [f"% {_tex(n)}" for n in _footnotes(table)]
    return "\n".join(out).rstrip() + "\n"


def _html(table: Table, reference: bool) -> str:
    esc = html.escape
    out = [f"<h2>{esc(table.title)}</h2>"]
    for part in table.parts:
        head = _header(part, table.metrics, reference)
        if part.title:
            out.append(f"<h3>{esc(part.title)}</h3>")
        out += ["<table>", "<thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr></thead>", "<tbody>"]
        for title, rows in part.groups:
            if title:
                out.append(f'<tr><th colspan="{len(head)}" style="text-align:left"><i>{esc(title)}</i></th></tr>')
            for row in rows:
                label = [esc(c) for c in _label_cells(part, row)]
                cells = [esc(c).replace(_B0, "<b>").replace(_B1, "</b>")
                         for c in _cells(row, table.metrics, reference, _marked)]
                out.append("<tr>" + "".join(f"<td>{c}</td>" for c in label + cells) + "</tr>")
        out += ["</tbody>", "</table>"]
    out += [f"<p>{esc(n)}</p>" for n in _footnotes(table)]
    return "\n".join(out) + "\n"


def _csv(table: Table, reference: bool) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    label_cols = sorted({c for p in table.parts for c in p.label_columns}, key=str)
    metric_cols = []
    for m in table.metrics:
        metric_cols += [m, f"{m}_std"] + ([f"{m}_paper", f"{m}_delta"] if reference else [])
    writer.writerow(["table", "group", "label", *label_cols, "status", "seeds_done", "seeds_total", *metric_cols])

    def num(x):
        return "" if x is None else f"{x:.2f}"

    for part in table.parts:
        for title, rows in part.groups:
            for row in rows:
                values = []
                for m in table.metrics:
                    c = row.values[m]
                    values += [num(c.mean), num(c.std)] + ([num(c.paper), num(c.delta)] if reference else [])
                writer.writerow([part.title, title, row.label, *[row.cells.get(c, "") for c in label_cols],
                                 row.status, row.seeds_done, row.seeds_total, *values])
    return buf.getvalue()


def study_table(study: Study, profile: str | None = None, fmt: str = "md", reference: bool = False,
                workspace=None, tracking_uri: str | None = None) -> str:
    """Render the study's table from MLflow (and log it to the parent run when there is one)."""
    from ablation.tracking import resolve_tracking_uri, workspace_dir

    profile = profile or study.default_profile()
    expand(study, profile)  # an unknown profile is an error before anything is read
    uri = resolve_tracking_uri(tracking_uri, workspace_dir(workspace))
    text = render(build_table(study, profile, fetch_records(uri, study.name)), fmt, reference)
    parent = find_parent(uri, study.name, profile)
    if parent:
        log_table(uri, parent, text, fmt, profile)
    return text


__all__ = ["study_table", "RunRecord", "fetch_records", "count_runs", "find_parent", "log_table", "build_table",
           "render",
           "Table", "FORMATS"]
