"""The per-image matching of a study's finished runs, for the paired bootstrap over val images (`tables.build`).

Detections come from the run's own checkpoint folder in the workspace when it is here (no mlflow import),
else from MLflow's copy (`reader.run_detections`).
"""
from __future__ import annotations

import json
from pathlib import Path

from ablation.study.expand import expand
from ablation.study.load import Study
from ablation.tracking import reader
from detector.data.build import dataset_paths
from detector.evaluation.bootstrap import ImageMatches, load_gt, match_detections
from detector.run_key import run_dir


def per_image_matches(study: Study, profile: str, frame, uri: str, ws: Path) -> dict[str, ImageMatches]:
    """run id -> its detections matched per image (`detector.evaluation.bootstrap`), for each finished run of
    the profile that kept its detections; the GT is the val annotation file of the run's config. Runs
    without detections, or whose detections do not fit that file, are left out ("no per-image data")."""
    records = reader.by_key(frame)
    gts: dict[Path, dict] = {}
    out: dict[str, ImageMatches] = {}
    for run in expand(study, profile):
        rec = records.get(run.key)
        if rec is None or rec.status != "FINISHED" or rec.run_id in out:
            continue
        detections = workspace_detections(ws, rec)
        try:
            detections = reader.run_detections(uri, rec.run_id) if detections is None else detections
        except reader.RunNotFound:  # the source of a link run was deleted
            continue
        if detections is None:
            continue
        gt_path = dataset_paths(run.config, ws)["val_json"]
        if not gt_path.is_file():
            continue
        if gt_path not in gts:
            gts[gt_path] = load_gt(gt_path)
        try:
            out[rec.run_id] = match_detections(gts[gt_path], detections)
        except ValueError:  # detections of images the val file lacks: another val set
            continue
    return out


def workspace_detections(ws: Path, rec: reader.RunRecord) -> list[dict] | None:
    """The final evaluation's detections kept in this workspace by the run that trained `rec` (a link run's
    source): `checkpoints/<key>/<run id>/eval/`, the file MLflow holds a copy of. None when that folder is
    not here (trained in another workspace): MLflow's copy is read then, which loads mlflow (1.5-3 s)."""
    path = run_dir(ws, rec.key, rec.reused_from or rec.run_id) / reader.DETECTIONS_ARTIFACT  # same path in both
    return json.loads(path.read_text()) if path.is_file() else None


__all__ = ["per_image_matches", "workspace_detections"]
