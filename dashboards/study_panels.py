"""The figure sections of a study report, one function each: `(ReportData, folder) -> Section | None`.

A panel reads what it needs through `ablation.tracking.reader` (curves and records come from the run that
trained: a link run's source), draws PNGs into `folder` and returns a `study_page.Section`; None when the
study has nothing of the kind (no PAA row: no GMM section). Missing data is a one-line note in the section,
never an exception. `PANELS` is the order of the page; a new figure is one more function appended there.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from ablation.study.expand import StudyRun
from ablation.study.load import Study
from ablation.tables.build import DIFF_METRIC, Table, TableRow
from ablation.tables.stats import LEVEL, mean_interval
from ablation.tracking import reader
from ablation.tracking.reader import RunRecord
from dashboards.assign_figures import plot_bag_confidence, plot_gmm_fits
from dashboards.study_figures import (RowValue, plot_assignment_over_training, plot_grouped, plot_metric_per_row,
                                      plot_recall_by_iou)
from dashboards.study_page import Section
from detector.evaluation.buckets import ASPECT_NAMES, CROWD_NAMES
from detector.evaluation.nms_recall import METRIC_NAMES as NR_NAMES

GMM_ITERATIONS = 3  # record iterations drawn per PAA row: the first, the last and evenly between
PANELS_PER_FIGURE = 4  # sampled GTs drawn per record figure (GMM fits, bags)
COLUMNS = 2  # of those panels per line: a figure as wide as the page, its text at the size of the others
POSITIVES_METRIC = "assign/pos_per_gt_mean"  # logged every train.log_every iterations
WITHOUT_METRIC = "assign/gt_without_pos"
PAPER_PROFILE = "paper"  # the profile whose runs are comparable with the paper's values


@dataclass
class RowRuns:
    """A study row and its finished runs under the profile."""

    label: str
    method: str  # assign.name of the row's config
    runs: dict[int, RunRecord] = field(default_factory=dict)  # seed -> FINISHED run

    def source(self, seed: int) -> str:
        """The run holding the curves and records of `seed`'s run (a link run's are with the run it reuses)."""
        rec = self.runs[seed]
        return rec.reused_from or rec.run_id


@dataclass
class ReportData:
    study: Study
    profile: str
    tracking_uri: str
    table: Table
    rows: list[RowRuns]
    runs: list[StudyRun]
    workspace: Path

    def table_rows(self) -> list[TableRow]:
        """Each study row's table row once, in study order (a row may appear in several parts of a layout)."""
        found = {r.label: r for p in self.table.parts for _, rs in p.groups for r in rs}
        return [found[r.label] for r in self.rows if r.label in found]

    def no_run(self, label: str) -> str:
        """The one note every section gives for a row without a finished run."""
        return f"{label}: no finished run under profile {self.profile}"

    def missing(self) -> list[str]:
        return [self.no_run(r.label) for r in self.rows if not r.runs]


def _stem(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower() or "row"


def _row_value(label: str, values: dict[int, float], paper: float | None = None) -> RowValue:
    if not values:
        return RowValue(label, None, None, {}, paper)
    iv = mean_interval(list(values.values()))
    return RowValue(label, iv.estimate, iv.half, dict(values), paper)


# ---------------------------------------------------------------- AP per row
def metric_panel(data: ReportData, folder: Path) -> Section:
    """AP (and the table's first metric when it is another) per row, with 95% intervals over seeds; the paper's
    value marked where the profile is the paper's."""
    metrics = list(dict.fromkeys([DIFF_METRIC, data.study.metrics[0]]))
    paper = data.profile == PAPER_PROFILE
    section = Section("AP per row", f"Mean over the finished seeds with its {LEVEL:.0%} interval (Student t), each "
                      "seed as a dot" + ("; the paper's value as a red cross" if paper else
                                         f"; profile {data.profile} is not the paper's setting, so the paper's "
                                         "values are not drawn") + "; bars reaching past 0 or 100% are cut at the "
                      "frame.", notes=data.missing())
    rows = data.table_rows()
    for metric in metrics:
        values = [RowValue(r.label, r.values[metric].mean, r.values[metric].half, r.values[metric].by_seed,
                           r.values[metric].paper if paper else None) for r in rows if metric in r.values]
        if not any(v.mean is not None for v in values):
            section.notes.append(f"{metric}: no row has a value yet")
            continue
        path = plot_metric_per_row(values, metric, folder / f"metric_{_stem(metric)}.png")
        section.figures.append((path, f"{metric} per row, profile {data.profile}"))
    if any(len(r.runs) == 1 for r in data.rows):
        section.notes.append("rows with 1 finished seed have no interval")
    return section


# ---------------------------------------------------------------- positives per GT over training
def assignment_panel(data: ReportData, folder: Path) -> Section:
    """Positives per GT and the share of GTs without a positive over training, every row on one plot (PAA Fig. 4b)."""
    section = Section("Positives per GT over training", "Logged every train.log_every iterations from the "
                      "assignment of each batch; curves averaged in windows, the band spans the seeds.")
    positives: dict[str, dict] = {}
    without: dict[str, dict] = {}
    for row in data.rows:
        if not row.runs:
            section.notes.append(data.no_run(row.label))
            continue
        positives[row.label] = {s: reader.metric_history(data.tracking_uri, row.source(s), POSITIVES_METRIC)
                                for s in row.runs}
        without[row.label] = {s: reader.metric_history(data.tracking_uri, row.source(s), WITHOUT_METRIC)
                              for s in row.runs}
        if not any(positives[row.label].values()):
            section.notes.append(f"{row.label}: no {POSITIVES_METRIC} logged")
    if any(c for runs in positives.values() for c in runs.values()):
        path = plot_assignment_over_training(positives, without, folder / "positives_over_training.png")
        section.figures.append((path, "positive anchors per GT (left) and GTs without a positive (right) over "
                                      "training, every row"))
    shares = [f"{r.label} {100 * r.gt_without_pos:.1f}%" for r in data.table_rows() if r.gt_without_pos is not None]
    if shares:
        section.text += " Share of GTs without a positive, mean over the run and the seeds: " + ", ".join(shares) + "."
    return section


# ---------------------------------------------------------------- PAA GMM fits
def _spread(iterations: list[int], n: int) -> list[int]:
    """Up to `n` of `iterations`: the first, the last and evenly spaced between."""
    if len(iterations) <= n:
        return iterations
    return sorted({iterations[round(i * (len(iterations) - 1) / (n - 1))] for i in range(n)})


def _seed_records(data: ReportData, row: RowRuns, kind: str, pick) -> tuple[int, list[tuple[int, list]]]:
    """(the row's lowest finished seed, its non-empty records of `kind` at the iterations `pick` chooses from
    those stored); no records when the run that trained it is gone."""
    seed = min(row.runs)
    source = row.source(seed)
    try:
        picked = pick(reader.record_iterations(data.tracking_uri, source, kind))
        records = reader.run_records(data.tracking_uri, source, kind, picked) if picked else []
    except reader.RunNotFound:
        records = []
    return seed, [(it, recs) for it, recs in records if recs]


def gmm_panel(data: ReportData, folder: Path) -> Section | None:
    """PAA rows: candidate-score histograms with the two fitted components and the boundary for sampled GTs, at
    several iterations of one seed (PAA Fig. 1)."""
    rows = [r for r in data.rows if r.method == "paa"]
    if not rows:
        return None
    section = Section("GMM fits (PAA)", f"Sampled GTs of one seed's training batches at up to {GMM_ITERATIONS} "
                      "iterations: each GT's candidate-anchor scores, the two-component fit and the boundary that "
                      "splits positives from the rest.")
    for row in rows:
        if not row.runs:
            section.notes.append(data.no_run(row.label))
            continue
        seed, records = _seed_records(data, row, "gmm_fits", lambda its: _spread(its, GMM_ITERATIONS))
        if not records:
            section.notes.append(f"{row.label}: no GMM records (train.record_every = 0, or no GT had 2 candidates)")
        for it, recs in records:
            title = f"{row.label} · seed {seed} · iteration {it}"
            path = plot_gmm_fits(recs[:PANELS_PER_FIGURE], folder / f"gmm_{_stem(row.label)}_{it:07d}.png", title,
                                 COLUMNS)
            section.figures.append((path, f"GMM fits of {row.label}, seed {seed}, iteration {it}"))
    return section


# ---------------------------------------------------------------- FreeAnchor metrics and bags
def _values(data: ReportData, names: tuple[str, ...]) -> list[tuple[str, dict[str, RowValue]]]:
    """Per row with a finished run: metric -> its value over seeds (percent; COCO's -1 "no data" left out)."""
    out = []
    for row in data.rows:
        found = {}
        for name in names:
            by_seed = {s: r.metrics[f"val/{name}"] for s, r in row.runs.items()  # percent already (`reader`)
                       if r.metrics.get(f"val/{name}", -1) >= 0}
            if by_seed:
                found[name] = _row_value(row.label, by_seed)
        if found:
            out.append((row.label, found))
    return out


def extra_metrics_panel(data: ReportData, folder: Path) -> Section | None:
    """NMS recall against the IoU threshold and AP per object shape and image crowdedness (FreeAnchor Table 1,
    Fig. 5, 6), where the runs computed them (`eval.nms_recall`, `aspect_ap`, `crowd_ap`)."""
    recall = _values(data, tuple(n for n in NR_NAMES if n != "NR"))
    aspect, crowd = _values(data, ASPECT_NAMES), _values(data, CROWD_NAMES)
    if not (recall or aspect or crowd):
        return None
    section = Section("NMS recall, slender and crowded objects (FreeAnchor)",
                      f"Means with {LEVEL:.0%} intervals over seeds, in percent (cut at 0 and 100%).")
    if recall:
        by_iou = [(label, {int(n[2:]) / 100: v for n, v in values.items()}) for label, values in recall]
        section.figures.append((plot_recall_by_iou(by_iou, folder / "nms_recall.png"),
                                "NMS recall against the IoU threshold (FreeAnchor Table 1)"))
    for names, rows, what, stem in ((ASPECT_NAMES, aspect, "object aspect ratio (FreeAnchor Fig. 5)", "aspect"),
                                    (CROWD_NAMES, crowd, "image crowdedness (FreeAnchor Fig. 6)", "crowd")):
        if not rows:
            continue
        section.figures.append((plot_grouped(rows, list(names), folder / f"ap_{stem}.png", "AP (%)"), f"AP by {what}"))
        empty = [n for n in names if not any(n in values for _, values in rows)]
        if empty:
            section.notes.append(f"{', '.join(empty)}: no val object in that bucket (COCO's 'no data')")
    return section


def bag_panel(data: ReportData, folder: Path) -> Section | None:
    """FreeAnchor rows: the bag confidence of sampled objects at the last record of one seed."""
    rows = [r for r in data.rows if r.method == "free_anchor"]
    if not rows:
        return None
    section = Section("Bag confidence (FreeAnchor)", "Per sampled object, its bag's matching confidence and the "
                      "anchors' parts of the Mean-max likelihood, sorted largest first, at the last record.")
    for row in rows:
        if not row.runs:
            section.notes.append(data.no_run(row.label))
            continue
        seed, records = _seed_records(data, row, "bag_confidence", lambda its: its[-1:])
        if not records:
            section.notes.append(f"{row.label}: no bag-confidence records")
            continue
        it, recs = records[0]
        path = plot_bag_confidence(recs[:PANELS_PER_FIGURE], folder / f"bags_{_stem(row.label)}.png",
                                   f"{row.label} · seed {seed} · iteration {it}", COLUMNS)
        section.figures.append((path, f"bag confidence of {row.label}, seed {seed}, iteration {it}"))
    return section


# ---------------------------------------------------------------- point rules (Pseudo-IoU Fig. 1)
def point_rules_panel(data: ReportData, folder: Path) -> Section | None:
    """Rows whose method is a point rule: the positive points each picks on one val image (no model needed)."""
    from dashboards.point_rules_figure import draw_point_rules, is_point_rule, point_rule_positives
    from detector.config import ConfigError
    from detector.data.coco import DataError

    configs = {}
    for run in data.runs:  # one config per row (its first seed): the rule's geometry does not depend on the seed
        if is_point_rule(run.config.assign.name) and run.label not in configs:
            configs[run.label] = run.config
    if not configs:
        return None
    section = Section("Positive points per rule (Pseudo-IoU Fig. 1)", "Each point rule's positives on one val "
                      "image, from the methods' own assign functions; dashed: a GT without a positive point.")
    try:
        drawn = point_rule_positives(list(configs.values()), data.workspace)
    except (ConfigError, DataError, OSError) as exc:
        section.notes.append(f"not drawn: {str(exc).splitlines()[0]}")
        return section
    for rule, label in zip(drawn.rules, configs):
        rule.rule = label
    path = draw_point_rules(drawn.image, drawn.gt_boxes, drawn.rules, folder / "point_rules.png",
                            f"val image {drawn.image_id}: positive points")
    section.figures.append((path, f"positive points of each point rule on val image {drawn.image_id}"))
    return section


# The page's figure sections, in order; a new one is one more function (ReportData, folder) -> Section | None.
# The image sections (a row's assignment on one val image, detections) follow: `study_image_panels.IMAGE_PANELS`.
PANELS = (metric_panel, assignment_panel, gmm_panel, extra_metrics_panel, bag_panel, point_rules_panel)

__all__ = ["RowRuns", "ReportData", "PANELS", "metric_panel", "assignment_panel", "gmm_panel", "extra_metrics_panel",
           "bag_panel", "point_rules_panel", "GMM_ITERATIONS", "PANELS_PER_FIGURE"]
