"""`anchorlab report`: one self-contained HTML page per study and profile, the papers' figures for our own runs.

`build_study_report` reads the study's runs (`ablation.tracking.reader`), builds its table exactly as
`study table` does (`ablation.tables`, with the baseline's paired bootstrap when the study has one), draws the
figure sections (`study_panels.PANELS`), writes `index.html` (figures embedded: `study_page`) with the PNGs
beside it in `<workspace>/reports/<study>-<profile>/` (or `out_dir`), and logs the page to the study's parent
run under `report/` when the store holds one.

The caption says what was actually run, read from the runs' resolved configs (profile, data, model,
iterations, image size, seeds); the paper's caption (a layout part's title such as "COCO minival, ResNet-50,
135k iterations") is shown only under the paper profile, where it describes the runs.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

from ablation.execution.launcher import ROWS_FILTER, per_image_matches
from ablation.study.expand import StudyRun, expand
from ablation.study.load import Study
from ablation.tables.build import Table, as_run, build_table
from ablation.tables.render import render
from ablation.tracking import reader, writer
from ablation.tracking.store import git_info, resolve_tracking_uri, workspace_dir
from dashboards.study_page import Section, page
from dashboards.study_image_panels import IMAGE_PANELS
from dashboards.study_panels import PANELS, PAPER_PROFILE, ReportData, RowRuns

REPORTS = "reports"  # <workspace>/reports/<study>-<profile>/index.html
PAGE = "index.html"
ARTIFACTS = "report"  # the parent run's folder for the page


@dataclass
class StudyReport:
    html: str
    page: Path  # index.html
    figures: list[Path]
    sections: list[Section]
    parent_run_id: str | None  # the study's parent run under the profile, when the store holds one
    logged: bool = False
    notes: list[str] = field(default_factory=list)  # every section's notes (missing data), for the CLI

    @property
    def size(self) -> int:
        return self.page.stat().st_size


def _one_or_many(values: dict[str, str]) -> str:
    """"x" when every row has x; else "a (row 1), b (row 2)" over the distinct values."""
    distinct = list(dict.fromkeys(values.values()))
    if len(distinct) == 1:
        return distinct[0]
    return ", ".join(f"{v} ({', '.join(k for k, w in values.items() if w == v)})" for v in distinct)


def _data(cfg) -> str:
    d = cfg.data
    if d.dataset == "synth":
        return (f"embedded synthetic benchmark, {d.synth.train} train / {d.synth.val} val images of {d.synth.size} px "
                f"(seed {d.synth.seed})")
    if d.dataset == "voc":
        return f"VOC-style {Path(d.voc.root).name or d.voc.root}: {d.voc.train_split} / {d.voc.val_split}"
    return f"COCO-format {Path(d.train_json).name} / {Path(d.val_json).name}"


def _model(cfg) -> str:
    b = cfg.model.backbone
    name = f"tiny backbone (width {b.tiny_width}, depth {b.tiny_depth})" if b.name == "tiny" else b.name
    return f"{name}, {'pretrained weights' if b.weights else 'random init'}, FPN/head width {cfg.model.head.width}"


def _size(cfg) -> str:
    d = cfg.data
    train = "/".join(str(s) for s in d.min_size)
    return f"train {train} px (longer side <= {d.max_size}), test {d.test_min_size} px"


def what_was_run(study: Study, profile: str, runs: list[StudyRun]) -> list[str]:
    """The caption: the profile and what its runs' resolved configs hold (module doc)."""
    first = {}
    for run in runs:
        first.setdefault(run.label, run.config)
    seeds = sorted({run.seed for run in runs})
    prof = study.profiles.get(profile)
    lines = [f"Profile {profile}" + (f": {prof.description}" if prof is not None and prof.description else "")]
    lines.append("Data: " + _one_or_many({k: _data(c) for k, c in first.items()}) + "; image size: "
                 + _one_or_many({k: _size(c) for k, c in first.items()}))
    lines.append("Model: " + _one_or_many({k: _model(c) for k, c in first.items()}) + "; training: "
                 + _one_or_many({k: f"{c.train.iterations} iterations at batch {c.train.batch_size}"
                                 for k, c in first.items()}))
    lines.append(f"Seeds: {', '.join(map(str, seeds))} ({len(runs)} runs: {len(first)} rows x {len(seeds)} "
                 f"seed{'s' if len(seeds) > 1 else ''})")
    paper = study.paper
    if paper.get("title"):
        setting = [p.title for p in study.layout if p.title] if profile == PAPER_PROFILE else []
        lines.append(f"Rows and reference values: {paper['title']}" + (f", {paper['table']}" if paper.get("table")
                                                                       else "")
                     + (f" ({'; '.join(setting)})" if setting else ""))
    return lines


def report_data(study: Study, profile: str, ws: Path, uri: str) -> ReportData:
    """The table and each row's finished runs, read once for every panel."""
    runs = expand(study, profile)
    frame = reader.runs_frame(uri, study.name, ROWS_FILTER)
    per_image = per_image_matches(study, profile, frame, uri, ws) if study.baseline is not None else None
    table = build_table(study, profile, frame, per_image)
    records = reader.by_key(frame)
    rows: dict[str, RowRuns] = {}
    for run in runs:
        row = rows.setdefault(run.label, RowRuns(run.label, run.config.assign.name))
        rec = records.get(run.key)
        if rec is not None and rec.status == "FINISHED":
            row.runs[run.seed] = rec
    return ReportData(study, profile, uri, table, list(rows.values()), runs, ws)


def build_study_report(study: Study, profile: str, workspace=None, tracking_uri: str | None = None,
                       out_dir: str | Path | None = None, reference: bool = False, log: bool = True) -> StudyReport:
    """Write the study's page (module doc) and return where it is and what it holds."""
    ws = workspace_dir(workspace)
    uri = resolve_tracking_uri(tracking_uri, ws)
    out = Path(out_dir) if out_dir is not None else ws / REPORTS / f"{study.name}-{profile}"
    folder = out / "figures"
    folder.mkdir(parents=True, exist_ok=True)
    data = report_data(study, profile, ws, uri)
    sections = [s for s in (panel(data, folder) for panel in (*PANELS, *IMAGE_PANELS)) if s is not None]
    parent = reader.find_parent(uri, study.name, profile)
    git = git_info()
    footer = (f"anchorlab report {study.path.name} --profile {profile} · {dt.datetime.now():%Y-%m-%d %H:%M} · "
              f"store {uri}" + (f" · parent run {parent}" if parent else " · no parent run")
              + f" · code {git['git_sha'][:12]}{' (dirty)' if git['git_dirty'] == 'true' else ''}")
    text = page(f"{study.name} · profile {profile}", what_was_run(study, profile, data.runs),
                render(as_run(data.table, profile), "html", reference), sections, footer)
    out.mkdir(parents=True, exist_ok=True)
    path = out / PAGE
    path.write_text(text, encoding="utf-8")
    report = StudyReport(text, path, [p for s in sections for p, _ in s.figures], sections, parent,
                         notes=[n for s in sections for n in s.notes])
    if parent is not None and log:
        writer.log_files(uri, parent, [path], ARTIFACTS)
        report.logged = True
    return report


__all__ = ["StudyReport", "build_study_report", "report_data", "what_was_run", "REPORTS", "PAGE", "ARTIFACTS"]
