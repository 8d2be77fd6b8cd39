"""Figures of a tracked run, drawn after training from the records it stored (never during training).

`MlflowHooks.on_records` keeps each record set as JSON (`<kind>/<kind>_<iteration>.json`); here each
kind is drawn by its plot function, written under `out_dir/<kind>/`, and optionally logged back to
the run beside its JSON, where the MLflow UI shows it.
"""
from __future__ import annotations

from pathlib import Path

from ablation.tracking.reader import run_records
from ablation.tracking.writer import log_files
from dashboards.assign_figures import plot_bag_confidence, plot_gmm_fits, plot_positives_histogram

# record kind -> how to draw one record set (records, path, title)
PLOTS = {
    "positives_per_gt": lambda records, path, title: plot_positives_histogram(records["counts"], path, title),
    "gmm_fits": plot_gmm_fits,
    "bag_confidence": plot_bag_confidence,  # FreeAnchor
}


def draw_run_figures(tracking_uri: str, run_id: str, out_dir: str | Path, log: bool = True) -> list[Path]:
    """Draw every stored record set of `run_id`; returns the PNG paths (sorted by kind, iteration)."""
    out_dir = Path(out_dir)
    drawn: list[Path] = []
    for kind, plot in PLOTS.items():
        paths = []
        for iteration, records in run_records(tracking_uri, run_id, kind):
            if not records:
                continue
            path = out_dir / kind / f"{kind}_{iteration:07d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            paths.append(plot(records, path, title=f"iteration {iteration}"))
        if log and paths:
            log_files(tracking_uri, run_id, paths, kind)
        drawn += paths
    return drawn


__all__ = ["PLOTS", "draw_run_figures"]
