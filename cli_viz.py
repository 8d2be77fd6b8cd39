"""`anchorlab viz`: figures from what tracked runs stored, and of what the point rules pick on one image.

Thin typer commands, like `cli.py` (which registers `viz_app`); heavy imports inside the commands.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from cli_errors import fail, user_errors

viz_app = typer.Typer(no_args_is_help=True, help="Figures: from tracked runs' records, and of the point rules.")

# The four point rules at the papers' settings (Li et al., CVPRW 2021): the configs beside this file.
POINT_CONFIGS = tuple(Path(__file__).resolve().parent / "studies" / "configs" / f"{name}.yaml"
                      for name in ("fcos_inside", "pseudo_iou", "scaled_box", "centerness_threshold"))


@viz_app.command("assign")
def viz_assign(
    run_id: str = typer.Argument(..., help="MLflow run id (printed by 'anchorlab train', shown in the UI)."),
    out: Path = typer.Option(Path("figures"), help="Folder for the PNG files."),
    log: bool = typer.Option(True, help="Also store the figures with the run (beside its records)."),
    workspace: Optional[Path] = typer.Option(None),
    tracking_uri: Optional[str] = typer.Option(None),
):
    """Assignment figures of a run: positives per GT and (PAA) GMM fits, from its stored records."""
    from ablation.tracking.reader import RunNotFound
    from ablation.tracking.store import resolve_tracking_uri, workspace_dir
    from dashboards.run_figures import draw_run_figures

    with user_errors():  # an unwritable workspace or --out: one line
        uri = resolve_tracking_uri(tracking_uri, workspace_dir(workspace))
        try:
            paths = draw_run_figures(uri, run_id, out / run_id, log=log)
        except RunNotFound as exc:
            fail(str(exc))
    logged = " and logged them to the run" if log and paths else ""
    typer.echo(f"wrote {len(paths)} figures to {out / run_id}{logged}")


@viz_app.command("rules")
def viz_rules(
    config: List[Path] = typer.Option([], "--config", "-c", help="A point-rule method config, one panel each; repeat "
                                      "(default: fcos_inside, pseudo_iou, scaled_box, centerness_threshold at the "
                                      "paper's settings)."),
    layer: List[Path] = typer.Option([], "--layer", help="Config layered on every --config, e.g. "
                                     "studies/configs/quick.yaml (its 320 px input)."),
    set_: List[str] = typer.Option([], "--set", help="Override for every config, e.g. "
                                   "--set assign.pseudo_iou.threshold=0.6."),
    image_id: Optional[int] = typer.Option(None, help="Val image id (default: the first val image with >= 3 GTs)."),
    out: Optional[Path] = typer.Option(None, help="PNG file (default: figures/point_rules_<image id>.png)."),
    workspace: Optional[Path] = typer.Option(None, help="Workspace (default $ANCHORLAB_HOME or ./anchorlab-runs)."),
):
    """The positive points each point rule picks for the GTs of one val image, one panel per rule (no model)."""
    if out is not None and out.suffix.lower() != ".png":
        fail(f"--out {out}: expected a .png file")
    with user_errors():
        from ablation.tracking.store import workspace_dir
        from dashboards.point_rules_figure import draw_point_rules, point_rule_positives
        from detector.config import load_config

        configs = [load_config([str(p), *map(str, layer)], set_) for p in config or POINT_CONFIGS]
        drawn = point_rule_positives(configs, workspace_dir(workspace), image_id)
        path = out or Path("figures") / f"point_rules_{drawn.image_id}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        h, w = drawn.image.shape[:2]
        draw_point_rules(drawn.image, drawn.gt_boxes, drawn.rules, path,
                         title=f"val image {drawn.image_id} ({w}x{h} px, {len(drawn.gt_boxes)} GTs): positive points")
    for rule in drawn.rules:
        typer.echo(rule.title)
    typer.echo(f"wrote {path}")
