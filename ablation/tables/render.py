"""A study's table written out: Markdown, LaTeX (booktabs), CSV and HTML, optionally with the paper's
values and our difference beside each metric.

A metric cell reads `mean ± half-width` (95% Student t over seeds), `mean†` for one seed (no
interval), bold when significantly above its column's runner-up. With a baseline, three columns
follow: the AP difference, its interval over seeds and its interval over val images, each interval
marked "n.s." when it contains 0. Under the table, note lines: first the metrics' unit (percent), then among
others two per-row figures, each row that has one: the share of GTs without a positive anchor (%) and the
time per run (min), each named with its unit. The
CSV keeps the numbers (mean, half-width, seeds, best flag, interval bounds, significance, and those two
figures) in columns of their own."""
from __future__ import annotations

import csv
import html
import io

from ablation.study.load import FAILED_REFERENCE
from ablation.tables.build import DIFF_METRIC, NO_PAIRED_SEEDS, Cell, Comparison, Table, TablePart, TableRow
from ablation.tables.stats import LEVEL, Interval

FORMATS = ("md", "latex", "csv", "html")
EXTENSIONS = {"md": "md", "latex": "tex", "csv": "csv", "html": "html"}
PENDING_TEXT = "pending"
PARTIAL_MARK = "*"
SINGLE_MARK = "†"
NOT_SIGNIFICANT = "n.s."
BASELINE_TEXT = "baseline"
GT_WITHOUT_POS_TEXT = "GTs without a positive anchor (%)"
TIME_TEXT = "Time per run (min)"


def _number(cell: Cell, partial: bool) -> str:
    text = f"{cell.mean:.1f}" + (f" ± {cell.half:.1f}" if cell.half is not None else "")
    return text + (PARTIAL_MARK if partial else "") + (SINGLE_MARK if cell.n == 1 else "")


def _interval(iv: Interval) -> str:
    return f"[{iv.low:+.1f}, {iv.high:+.1f}]" + ("" if iv.significant else f" {NOT_SIGNIFICANT}")


def _seeds_note(c: Comparison) -> str:
    return "1 paired seed" if c.paired == 1 else NO_PAIRED_SEEDS


def _comparison_cells(c: Comparison | None) -> list[str]:
    """Difference to the baseline, its interval over seeds, its interval over val images."""
    if c is None:
        return ["", "", ""]
    if c.is_baseline:
        return [BASELINE_TEXT, "", ""]
    return ["-" if c.estimate is None else f"{c.estimate:+.1f}", _interval(c.seeds) if c.seeds else _seeds_note(c),
            _interval(c.images) if c.images else c.image_note]


def _cells(row: TableRow, table: Table, reference: bool, bold) -> list[str]:
    """The value cells of one row, already formatted (`bold` wraps a best value)."""
    out = []
    for i, metric in enumerate(table.metrics):
        cell = row.values[metric]
        if row.status in ("failed", "pending"):
            ours = (FAILED_REFERENCE if row.status == "failed" else PENDING_TEXT) if i == 0 else ""
        elif cell.mean is None:
            ours = "-"
        else:
            ours = _number(cell, row.status == "partial")
            ours = bold(ours) if cell.best else ours
        out.append(ours)
        if reference:
            paper = (FAILED_REFERENCE if i == 0 else "") if row.paper_failed else (
                "-" if cell.paper is None else f"{cell.paper:.1f}")
            out += [paper, "" if cell.delta is None else f"{cell.delta:+.1f}"]
    return out + (_comparison_cells(row.comparison) if table.baseline is not None else [])


def _value_columns(table: Table, reference: bool) -> list[str]:
    head = []
    for metric in table.metrics:
        head += [metric, f"{metric} paper", f"Δ{metric}"] if reference else [metric]
    if table.baseline is not None:
        head += [f"Δ{DIFF_METRIC} vs {table.baseline}", f"{LEVEL:.0%} CI seeds", f"{LEVEL:.0%} CI images"]
    return head


def _header(part: TablePart, table: Table, reference: bool) -> list[str]:
    return (list(part.label_columns) or [part.label_header]) + _value_columns(table, reference)


def _label_cells(part: TablePart, row: TableRow) -> list[str]:
    return [row.cells.get(c, "") for c in part.label_columns] if part.label_columns else [row.label]


def _row_figures(rows: list[TableRow]) -> list[str]:
    """A line per figure (GTs without a positive anchor, time per run) naming each row that has it, in order."""
    unique = list({r.label: r for r in rows}.values())  # a row shown in several parts: once
    shares = [f"{r.label} {100 * r.gt_without_pos:.1f}" for r in unique if r.gt_without_pos is not None]
    times = [f"{r.label} {r.minutes:.1f}" for r in unique if r.minutes is not None]
    return [f"{title}: {', '.join(items)}" for title, items in ((GT_WITHOUT_POS_TEXT, shares), (TIME_TEXT, times))
            if items]


def _footnotes(table: Table) -> list[str]:
    rows = [r for p in table.parts for _, rs in p.groups for r in rs]
    shown = [r.values[m] for r in rows if r.status in ("done", "partial") for m in table.metrics]
    notes = [f"{', '.join(table.metrics)}: in % (the evaluation's fractions x 100)"] if shown else []
    if any(c.half is not None for c in shown):
        notes.append(f"± {LEVEL:.0%} confidence half-width over the finished seeds (Student t)")
    if any(c.n == 1 for c in shown):
        notes.append(f"{SINGLE_MARK} 1 seed: no interval")
    if any(r.status == "partial" for r in rows):
        notes.append(f"{PARTIAL_MARK} mean over the finished seeds only")
    notes += table.notes
    notes += _row_figures(rows)
    if table.baseline is not None:
        notes.append(f"Δ{DIFF_METRIC} vs {table.baseline}: in points, over the seeds both rows finished; seeds: "
                     f"paired t interval of the per-seed differences (seeds matched by value); images: paired "
                     f"bootstrap over the val images ({table.resamples} resamples of the same detections); "
                     f"{NOT_SIGNIFICANT}: the {LEVEL:.0%} interval contains 0")
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
        head = _header(part, table, reference)
        n_values = len(_value_columns(table, reference))
        lines += ["| " + " | ".join(head) + " |",
                  "|" + "|".join([":--"] * (len(head) - n_values) + ["--:"] * n_values) + "|"]
        for title, rows in part.groups:
            if title:
                lines.append("| " + " | ".join([f"*{title}*"] + [""] * (len(head) - 1)) + " |")
            for row in rows:
                cells = _label_cells(part, row) + _cells(row, table, reference, lambda s: f"**{s}**")
                lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        lines.append("")
    lines += [f"{n}  " for n in _footnotes(table)]
    return "\n".join(lines).rstrip() + "\n"


_B0, _B1 = "\x02", "\x03"  # bold markers that survive escaping


def _marked(text: str) -> str:
    return f"{_B0}{text}{_B1}"


def _tex(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                 ("±", r"$\pm$"), ("Δ", r"$\Delta$"), ("✓", r"\checkmark"), (SINGLE_MARK, r"$^\dagger$"),
                 (">", r"$>$"), ("<", r"$<$")):
        text = text.replace(a, b)
    return text


def _latex(table: Table, reference: bool) -> str:
    out = [f"% {table.title}"]
    for part in table.parts:
        head = _header(part, table, reference)
        n_label = len(head) - len(_value_columns(table, reference))
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
                         for c in _cells(row, table, reference, _marked)]
                out.append(" & ".join(label + cells) + r" \\")
        out += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    out += [f"% {_tex(n)}" for n in _footnotes(table)]
    return "\n".join(out).rstrip() + "\n"


def _html(table: Table, reference: bool) -> str:
    esc = html.escape
    out = [f"<h2>{esc(table.title)}</h2>"]
    for part in table.parts:
        head = _header(part, table, reference)
        if part.title:
            out.append(f"<h3>{esc(part.title)}</h3>")
        out += ["<table>", "<thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr></thead>", "<tbody>"]
        for title, rows in part.groups:
            if title:
                out.append(f'<tr><th colspan="{len(head)}" style="text-align:left"><i>{esc(title)}</i></th></tr>')
            for row in rows:
                label = [esc(c) for c in _label_cells(part, row)]
                cells = [esc(c).replace(_B0, "<b>").replace(_B1, "</b>")
                         for c in _cells(row, table, reference, _marked)]
                out.append("<tr>" + "".join(f"<td>{c}</td>" for c in label + cells) + "</tr>")
        out += ["</tbody>", "</table>"]
    out += [f"<p>{esc(n)}</p>" for n in _footnotes(table)]
    return "\n".join(out) + "\n"


def _csv_comparison(c: Comparison | None) -> list:
    """estimate, seeds low / high / n / significant, images low / high / n / significant, note."""
    if c is None or c.is_baseline:
        return [""] * 9 + [BASELINE_TEXT if c is not None else ""]
    out = [_num(c.estimate)]
    for iv, n in ((c.seeds, c.paired), (c.images, c.images.n if c.images else 0)):
        out += [_num(iv.low), _num(iv.high), n, int(iv.significant)] if iv else ["", "", n, ""]
    notes = ([] if c.seeds else [_seeds_note(c)]) + ([] if c.images else [c.image_note])
    return out + ["; ".join(notes)]


def _num(x) -> str:
    return "" if x is None else f"{x:.2f}"


def _csv(table: Table, reference: bool) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    label_cols = sorted({c for p in table.parts for c in p.label_columns}, key=str)
    metric_cols = []
    for m in table.metrics:
        metric_cols += [m, f"{m}_ci95", f"{m}_n", f"{m}_best"] + ([f"{m}_paper", f"{m}_delta"] if reference else [])
    if table.baseline is not None:
        d = f"{DIFF_METRIC}_vs_baseline"
        metric_cols += [d] + [f"{d}_{side}_{x}" for side in ("seeds", "images")
                              for x in ("low", "high", "n", "significant")]
        metric_cols.append(f"{d}_note")
    writer.writerow(["table", "group", "label", *label_cols, "status", "seeds_done", "seeds_total", *metric_cols,
                     "gt_without_pos_pct", "minutes_per_run"])
    for part in table.parts:
        for title, rows in part.groups:
            for row in rows:
                values = []
                for m in table.metrics:
                    c = row.values[m]
                    values += [_num(c.mean), _num(c.half), c.n, int(c.best)]
                    values += [_num(c.paper), _num(c.delta)] if reference else []
                if table.baseline is not None:
                    values += _csv_comparison(row.comparison)
                share = None if row.gt_without_pos is None else 100 * row.gt_without_pos
                writer.writerow([part.title, title, row.label, *[row.cells.get(c, "") for c in label_cols],
                                 row.status, row.seeds_done, row.seeds_total, *values, _num(share), _num(row.minutes)])
    return buf.getvalue()


__all__ = ["FORMATS", "EXTENSIONS", "render"]
