"""The image sections of a study report: each row's assignment on one val image, and detections on sample images.

Both read a row's checkpoint from the run that trained it (`<workspace>/checkpoints/<key>/<run id>/last.pt`; a
link run's source) and go through the methods' own assign / loss (`assign_image`, `detections_figure`). Runs
keep their last checkpoint only, so the assignment is the one at the end of training (PAA Fig. 4a / 6 show it
at several iterations: `anchorlab viz assign -c CONFIG --checkpoint PATH` draws any checkpoint one has kept).
"""
from __future__ import annotations

from pathlib import Path

from dashboards.study_page import Section
from dashboards.study_panels import ReportData, RowRuns, _stem
from detector.engine.checkpoint import LAST
from detector.run_key import run_dir


def _first_runs(data: ReportData) -> list[tuple[RowRuns, object, Path]]:
    """(row, its config, the checkpoint of its lowest finished seed) per row that has one."""
    out = []
    for row in data.rows:
        if not row.runs:
            continue
        seed = min(row.runs)
        run = next((r for r in data.runs if r.label == row.label and r.seed == seed), None)
        if run is not None:
            out.append((row, run.config, run_dir(data.workspace, run.key, row.source(seed)) / LAST))
    return out


def assignment_image_panel(data: ReportData, folder: Path) -> Section | None:
    """Every row's positive, ignored and negative anchors on the same val image, with its trained model."""
    from dashboards.assign_image import draw_assignment

    runs = _first_runs(data)
    if not runs:
        return None
    section = Section("Assignment on one val image (PAA Fig. 4a / 6)",
                      "Positive anchors or points (coloured by their GT, larger on coarser levels), ignored and "
                      "negative ones of each row's method on the same val image, with the row's trained model "
                      "(lowest finished seed, end of training).")
    for row, cfg, ckpt in runs:
        if not ckpt.is_file():
            section.notes.append(f"{row.label}: no checkpoint at {ckpt}")
            continue
        try:
            path = draw_assignment(cfg, None, ckpt, folder / f"assign_{_stem(row.label)}.png",
                                   workspace=data.workspace)
        except Exception as exc:  # one row's figure failing must not lose the page
            section.notes.append(f"{row.label}: not drawn: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
            continue
        section.figures.append((path, f"{row.label}: assignment on a val image"))
    return section


def detections_panel(data: ReportData, folder: Path) -> Section | None:
    """Detections of the row with the best mean AP on sample val images (PAA Fig. 8)."""
    from dashboards.detections_figure import draw_detections

    runs = {row.label: (row, cfg, ckpt) for row, cfg, ckpt in _first_runs(data) if ckpt.is_file()}
    scored = [(r.values["AP"].mean, r.label) for r in data.table_rows()
              if r.label in runs and "AP" in r.values and r.values["AP"].mean is not None]
    if not scored:
        return None
    label = max(scored)[1]
    row, cfg, ckpt = runs[label]
    section = Section("Detections on sample val images (PAA Fig. 8)",
                      f"{label} (the best mean AP), lowest finished seed: detections scoring >= 0.3 and the GT "
                      "boxes (dashed).")
    try:
        path = draw_detections(cfg, ckpt, None, folder / f"detections_{_stem(label)}.png", workspace=data.workspace)
    except Exception as exc:  # the page is still written without it
        section.notes.append(f"not drawn: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
        return section
    section.figures.append((path, f"{label}: detections on sample val images"))
    return section


# After `study_panels.PANELS` on the page (`study_report`).
IMAGE_PANELS = (assignment_image_panel, detections_panel)

__all__ = ["IMAGE_PANELS", "assignment_image_panel", "detections_panel"]
