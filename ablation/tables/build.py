"""A study's table as data: its runs (a DataFrame from `ablation.tracking.reader.runs_frame`) laid out in
the paper's order with its labels.

Each row of the study is represented by the run of each of its run keys that `reader.by_key` picks
(FINISHED over the newest other): the mean over the finished seeds with its 95% confidence half-width
(Student t over seeds, `stats.py`; one seed has none), metrics in percent as papers print them (and as
`RunRecord.metrics` holds them, for runs logged in fractions too),
"failed" when no seed finished and one failed, "pending" when none ran, and the paper's value beside
each metric. A column's best value is marked only when it is significantly above the runner-up's
(paired t over the seeds both finished, at least 2); `Table.notes` says where it is not, and why.
Each row also carries two figures over its finished seeds, which `render.py` prints as note lines: the
mean share of GTs without a positive anchor (`GT_WITHOUT_POS_METRIC`, logged once per run at its end;
runs from before it lack it) and the mean time per run, from the MLflow run's start to its end (only
runs that trained: a link run, tag `reused_from`, took no time here).

With a study `baseline`, every other row gets its AP difference to it (`Comparison`): a paired t
interval over seeds matched by seed value, and a paired bootstrap over the val images, which re-scores
the same detections of both rows on resampled image sets from their per-image matching
(`detector.evaluation.bootstrap`). The caller reads the runs' detections and passes the matchings in
as plain data (run id -> `ImageMatches`); nothing here reads MLflow. `render.py` writes the table out.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field, replace
from typing import Mapping

import numpy as np
import pandas as pd

from ablation.study.expand import expand
from ablation.study.load import FAILED_REFERENCE, Study
from ablation.tables.stats import LEVEL, Interval, mean_interval, paired_interval
from ablation.tracking.reader import RunRecord, by_key
from detector.engine.hooks import GT_WITHOUT_POS_MEAN, RUN_SECONDS
from detector.evaluation.bootstrap import (ImageMatches, coco_ap, difference_interval, resample_counts,
                                           resampled_ap, same_images)

DIFF_METRIC = "AP"  # the metric compared with the baseline
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0  # the same resamples for every row: the table is reproducible
NO_PAIRED_SEEDS = "no paired seeds"
NO_IMAGE_DATA = "no per-image data"
OTHER_IMAGES = "different val images"
GT_WITHOUT_POS_METRIC = GT_WITHOUT_POS_MEAN  # share in [0, 1], logged once at the end of a run


# ---------------------------------------------------------------- the table as data
@dataclass
class Cell:
    mean: float | None = None  # percent
    half: float | None = None  # 95% confidence half-width over seeds; None with fewer than 2
    n: int = 0  # finished seeds behind the mean
    paper: float | None = None
    best: bool = False  # significantly above the runner-up of its column
    by_seed: dict[int, float] = field(default_factory=dict)  # seed -> value (percent)

    @property
    def delta(self) -> float | None:
        return None if self.mean is None or self.paper is None else self.mean - self.paper


@dataclass
class Comparison:
    """A row's `DIFF_METRIC` minus the baseline row's, in points."""

    estimate: float | None = None  # mean over the paired seeds (without any: difference of the means)
    seeds: Interval | None = None  # paired t interval over seeds matched by value; None below 2 pairs
    paired: int = 0  # seeds both rows finished
    images: Interval | None = None  # paired bootstrap over val images (n: seed pairs with per-image data)
    image_note: str = ""  # why `images` is None
    is_baseline: bool = False


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
    run_ids: dict[int, str] = field(default_factory=dict)  # seed -> FINISHED run id
    comparison: Comparison | None = None  # against the study's baseline, when it has one
    gt_without_pos: float | None = None  # mean share of GTs without a positive anchor over the seeds that have it
    minutes: float | None = None  # mean training wall time per run (minutes) over the seeds that trained


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
    baseline: str | None = None
    notes: list[str] = field(default_factory=list)  # e.g. why a column has no bold value
    resamples: int = BOOTSTRAP_RESAMPLES


PAPER_PROFILE = "paper"  # the profile whose runs are the paper's setting


def as_run(table: Table, profile: str) -> Table:
    """The table as printed under `profile`: under another profile than the paper's, a one-part layout's title
    (the paper's caption, naming its data and schedule, e.g. "COCO minival, ResNet-50, 135k iterations") is left
    out, since it would describe runs that were not made; the heading still names the study and profile."""
    if profile == PAPER_PROFILE or len(table.parts) != 1:
        return table
    return replace(table, parts=[replace(table.parts[0], title="")])


def build_table(study: Study, profile: str, runs: pd.DataFrame, per_image: Mapping[str, ImageMatches] | None = None,
                resamples: int = BOOTSTRAP_RESAMPLES) -> Table:
    """Lay the profile's runs (rows of `runs`, tagged with their run key) out as the paper's table.

    `per_image`: run id -> its detections matched per image, for the bootstrap against the baseline
    (runs missing from it get "no per-image data").
    """
    records = by_key(runs)
    by_label: dict[str, list[tuple[int, RunRecord | None]]] = {}
    for run in expand(study, profile):
        by_label.setdefault(run.label, []).append((run.seed, records.get(run.key)))
    rows = {label: _row(study, label, recs) for label, recs in by_label.items()}
    parts, notes = [], []
    for part in study.layout:
        groups = [(title, [rows[label] for label in labels]) for title, labels in part.groups]
        where = f" ({part.title})" if part.title and len(study.layout) > 1 else ""
        notes += _mark_best([r for _, rs in groups for r in rs], study.metrics, where)
        parts.append(TablePart(part.title, part.label_header, part.label_columns, groups))
    if study.baseline is not None:
        _compare(rows, study.baseline, per_image or {}, resamples)
    title = " · ".join(x for x in (study.paper.get("table", ""), study.name, f"profile {profile}") if x)
    return Table(title, list(study.metrics), parts, study.baseline, notes, resamples)


def _row(study: Study, label: str, recs: list[tuple[int, RunRecord | None]]) -> TableRow:
    row = study.row(label)
    done = [(seed, r) for seed, r in recs if r is not None and r.status == "FINISHED"]
    failed = [r for _, r in recs if r is not None and r.status == "FAILED"]
    if done:
        status = "done" if len(done) == len(recs) else "partial"
    else:
        status = "failed" if failed else "pending"
    ref = row.reference if isinstance(row.reference, dict) else {}
    out = TableRow(label, row.cells, status, len(done), len(recs), paper_failed=row.reference == FAILED_REFERENCE,
                   reasons=[r.reason for r in failed if r.reason], run_ids={seed: r.run_id for seed, r in done})
    shares = [r.metrics[GT_WITHOUT_POS_METRIC] for _, r in done if GT_WITHOUT_POS_METRIC in r.metrics]
    out.gt_without_pos = statistics.fmean(shares) if shares else None
    minutes = [m for m in (_minutes(r) for _, r in done) if m is not None]
    out.minutes = statistics.fmean(minutes) if minutes else None
    for metric in dict.fromkeys([*study.metrics, DIFF_METRIC]):
        # percent, and without COCO's "no data", whatever unit the run logged (`reader.records_of`)
        by_seed = {seed: r.metrics[f"val/{metric}"] for seed, r in done if f"val/{metric}" in r.metrics}
        cell = Cell(paper=ref.get(metric), by_seed=by_seed)
        if by_seed:
            interval = mean_interval(list(by_seed.values()))
            cell.mean, cell.half, cell.n = interval.estimate, interval.half, interval.n
        out.values[metric] = cell
    return out


def _minutes(rec: RunRecord) -> float | None:
    """Training + evaluation time of a run that trained, over its processes (`RUN_SECONDS`: a kill's pause
    and the work it threw away not counted); for a run from before that metric, start to end (spanning any
    pause). None for a link run or a run without either."""
    if rec.reused_from is not None:
        return None
    if RUN_SECONDS in rec.metrics:
        return rec.metrics[RUN_SECONDS] / 60
    if rec.end_time is None or not 0 < rec.start_time < rec.end_time:
        return None
    return (rec.end_time - rec.start_time) / 60_000


# ---------------------------------------------------------------- best per column
FEW_SEEDS = "the best and the runner-up share fewer than 2 finished seeds"
NOT_SIGNIFICANT = f"the best is not significantly above the runner-up (paired t over seeds, {LEVEL:.0%})"


def _mark_best(rows: list[TableRow], metrics: list[str], where: str) -> list[str]:
    """Mark each column's best cell when it is significantly above the runner-up; notes for the others."""
    unmarked: dict[str, list[str]] = {}
    for metric in metrics:
        ranked = sorted((r.values[metric] for r in rows if r.values[metric].mean is not None), key=lambda c: -c.mean)
        if len(ranked) < 2:
            continue
        diff = paired_interval(ranked[0].by_seed, ranked[1].by_seed)
        if diff is None or diff.low is None:
            unmarked.setdefault(FEW_SEEDS, []).append(metric)
        elif diff.low > 0:
            ranked[0].best = True
        else:
            unmarked.setdefault(NOT_SIGNIFICANT, []).append(metric)
    return [f"no bold in {', '.join(names)}{where}: {reason}" for reason, names in unmarked.items()]


# ---------------------------------------------------------------- against the baseline
def _compare(rows: dict[str, TableRow], baseline: str, per_image: Mapping[str, ImageMatches], resamples: int) -> None:
    base = rows[baseline]
    base.comparison = Comparison(is_baseline=True)
    cache: dict[tuple[str, int], np.ndarray] = {}  # (run id, images) -> AP per resample
    for label, row in rows.items():
        a, b = row.values[DIFF_METRIC].by_seed, base.values[DIFF_METRIC].by_seed
        if label == baseline or not a or not b:
            continue
        paired = paired_interval(a, b)
        c = Comparison(paired=paired.n if paired else 0)
        c.estimate = paired.estimate if paired else statistics.fmean(a.values()) - statistics.fmean(b.values())
        c.seeds = paired if paired is not None and paired.low is not None else None
        seeds = sorted(set(a) & set(b))
        pairs = [(row.run_ids[s], base.run_ids[s]) for s in seeds
                 if row.run_ids[s] in per_image and base.run_ids[s] in per_image]
        c.images, c.image_note = _image_interval(pairs, per_image, cache, resamples)
        if not seeds:
            c.image_note = NO_PAIRED_SEEDS
        row.comparison = c


def _image_interval(pairs: list[tuple[str, str]], per_image: Mapping[str, ImageMatches],
                    cache: dict[tuple[str, int], np.ndarray], resamples: int) -> tuple[Interval | None, str]:
    """The paired bootstrap over val images of (row run, baseline run) pairs, in points, or why there is none."""
    if not pairs:
        return None, NO_IMAGE_DATA
    runs = [per_image[x] for pair in pairs for x in pair]
    if not same_images(runs):
        return None, OTHER_IMAGES
    n = len(runs[0].image_ids)
    missing = [x for pair in pairs for x in pair if (x, n) not in cache]
    if missing:  # every row draws the same resamples (same count, seed): a run is scored once per table
        counts = resample_counts(n, resamples, BOOTSTRAP_SEED)
        for x in missing:
            cache[x, n] = resampled_ap(per_image[x], counts)
    estimate = (statistics.fmean(coco_ap(per_image[x])["AP"] for x, _ in pairs)
                - statistics.fmean(coco_ap(per_image[y])["AP"] for _, y in pairs))
    found = difference_interval([cache[x, n] for x, _ in pairs], [cache[y, n] for _, y in pairs], estimate, LEVEL)
    if found is None:
        return None, NO_IMAGE_DATA
    return Interval(100 * found.estimate, 100 * found.low, 100 * found.high, len(pairs)), ""


__all__ = ["Cell", "Comparison", "TableRow", "TablePart", "Table", "build_table", "DIFF_METRIC",
           "BOOTSTRAP_RESAMPLES", "GT_WITHOUT_POS_METRIC"]
