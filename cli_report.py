"""`anchorlab report FILE`: a study's self-contained HTML page (table, figures) from what its runs stored.

A thin typer command, like `cli.py` (which registers `report`); heavy imports inside the command.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cli_errors import fail, user_errors


def report(
    file: Path = typer.Argument(..., help="Study file, e.g. studies/paa_table2_methods.yaml."),
    profile: Optional[str] = typer.Option(None, help="The profile it ran under (default: paper, or the study's only "
                                          "one)."),
    seeds: Optional[str] = typer.Option(None, help="The seeds it ran with, e.g. 0 or 0,1,2, when not the profile's "
                                        "(as given to 'study run --seeds')."),
    out: Optional[Path] = typer.Option(None, help="Folder for index.html and its figures (default: "
                                       "<workspace>/reports/<study>-<profile>/)."),
    reference: bool = typer.Option(False, "--reference", help="Put the paper's values and our difference beside ours "
                                   "in the table."),
    log: bool = typer.Option(True, help="Also store the page with the study's MLflow parent run (report/)."),
    workspace: Optional[Path] = typer.Option(None, help="Workspace (default $ANCHORLAB_HOME or ./anchorlab-runs)."),
    tracking_uri: Optional[str] = typer.Option(None, help="MLflow tracking URI (default: SQLite in the workspace)."),
):
    """Write one HTML page per study and profile: the table with intervals under a caption saying what ran, AP per
    row, positives per GT over training, PAA's GMM fits, FreeAnchor's metrics and bags where present. Figures are
    embedded: the page opens with no network. Rows without runs are notes on the page, not errors."""
    with user_errors():
        from ablation.study.expand import expand, load_study, parse_seeds, with_seeds
        from dashboards.study_report import build_study_report

        study = load_study(file)
        profile = profile or study.default_profile()
        if profile not in study.profiles:
            fail(f"{file}: no profile '{profile}' (the study has {', '.join(study.profiles)})")
        if seeds is not None:
            study = with_seeds(study, profile, parse_seeds(seeds))
        expand(study, profile)  # a study that does not resolve is one error line before anything is read
        result = build_study_report(study, profile, workspace, tracking_uri, out, reference, log)
    for note in dict.fromkeys(result.notes):
        typer.echo(f"note: {note}")
    typer.echo(f"wrote {result.page} ({result.size / 1e6:.1f} MB, {len(result.figures)} figures embedded)")
    if result.logged:
        typer.echo(f"logged it to the MLflow parent run {result.parent_run_id} (report/index.html)")
    elif result.parent_run_id is None:
        typer.echo(f"no MLflow parent run of {study.name} [{profile}] yet: the page was not logged")
