"""A study's table written out: Markdown, LaTeX (booktabs), CSV and HTML, optionally with the paper's
values and our difference beside each metric."""
from __future__ import annotations

import csv
import html
import io

from ablation.study.load import FAILED_REFERENCE
from ablation.tables.build import Cell, Table, TablePart, TableRow

FORMATS = ("md", "latex", "csv", "html")
EXTENSIONS = {"md": "md", "latex": "tex", "csv": "csv", "html": "html"}
PENDING_TEXT = "pending"
PARTIAL_MARK = "*"


def _number(cell: Cell) -> str:
    text = f"{cell.mean:.1f}"
    return f"{text} ± {cell.std:.1f}" if cell.std is not None else text


def _cells(row: TableRow, metrics: list[str], reference: bool, bold) -> list[str]:
    """The metric cells of one row, already formatted (`bold` wraps a best value)."""
    out = []
    for i, metric in enumerate(metrics):
        cell = row.values[metric]
        if row.status in ("failed", "pending"):
            ours = (FAILED_REFERENCE if row.status == "failed" else PENDING_TEXT) if i == 0 else ""
        elif cell.mean is None:
            ours = "-"
        else:
            ours = _number(cell) + (PARTIAL_MARK if row.status == "partial" else "")
            ours = bold(ours) if cell.best else ours
        out.append(ours)
        if reference:
            paper = (FAILED_REFERENCE if i == 0 else "") if row.paper_failed else (
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


__all__ = ["FORMATS", "EXTENSIONS", "render"]
