"""A study's table in a few numbers: what its parent run in MLflow shows without opening an artifact.

MLflow's runs table and compare page show a run's metrics, params and tags, not the table logged as a
file; and the parent run of a study was an empty, collapsed row there. So, every time the table is made,
the parent gets (`ablation.tracking.summary`, the MLflow side): each row's mean over its finished seeds of
the study's first metric and of AP, the best row by the first metric (the first in the paper's order on a tie;
and whether the table calls it significantly best), and what the table covers (study, profile, seeds, rows,
baseline). Plain data here; no MLflow.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ablation.study.expand import expand
from ablation.study.load import Study
from ablation.tables.build import DIFF_METRIC, Table, TableRow

NO_BASELINE = "none"


@dataclass
class Summary:
    """A table in a few numbers (module doc). Values in percent, as the table prints them."""

    values: dict[str, dict[str, float]] = field(default_factory=dict)  # metric -> row label -> mean over seeds
    params: dict[str, str] = field(default_factory=dict)  # study, profile, seeds, rows, baseline
    tags: dict[str, str] = field(default_factory=dict)  # best_row, best_metric, best_significant
    markdown: str = ""  # the rendered table, for the run's description


def _rows(table: Table) -> list[TableRow]:
    """Each row of the table once, in the paper's order."""
    seen: dict[str, TableRow] = {}
    for part in table.parts:
        for _, rows in part.groups:
            for row in rows:
                seen.setdefault(row.label, row)
    return list(seen.values())


def summarize(table: Table, study: Study, profile: str, markdown: str = "") -> Summary:
    """The parent run's summary of `table`, the study's table under `profile` (module doc)."""
    runs = expand(study, profile)
    rows = _rows(table)
    first = table.metrics[0] if table.metrics else DIFF_METRIC
    out = Summary(markdown=markdown)
    for metric in dict.fromkeys([first, DIFF_METRIC]):
        means = {r.label: r.values[metric].mean for r in rows if metric in r.values}
        out.values[metric] = {label: mean for label, mean in means.items() if mean is not None}
    out.params = {"study": study.name, "profile": profile,
                  "seeds": ",".join(str(s) for s in sorted({r.seed for r in runs})),
                  "rows": str(len({r.label for r in runs})), "baseline": study.baseline or NO_BASELINE}
    ranked = sorted(out.values[first].items(), key=lambda item: -item[1])
    if ranked:
        best = next(r for r in rows if r.label == ranked[0][0])
        out.tags = {"best_row": best.label, "best_metric": f"{first} {ranked[0][1]:.1f}",
                    "best_significant": "true" if best.values[first].best else "false"}
    return out


__all__ = ["Summary", "summarize", "NO_BASELINE"]
