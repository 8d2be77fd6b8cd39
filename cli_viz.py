"""`anchorlab viz`: figures from what tracked runs stored, and of what a method (or every point rule) picks on one
image.

`viz assign` has two forms, told apart by -c: `viz assign RUN_ID` draws a run's stored records (as it always
did), `viz assign -c CONFIG [--image ID] [--checkpoint PATH]` draws one image's assignment.

Thin typer commands, like `cli.py` (which registers `viz_app`); heavy imports inside the commands.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from cli_errors import fail, user_errors

viz_app = typer.Typer(no_args_is_help=True,
                      help="Figures: from tracked runs' records, and of a method's assignment on one image.")

# The four point rules at the papers' settings (Li et al., CVPRW 2021): the configs beside this file.
POINT_CONFIGS = tuple(Path(__file__).resolve().parent / "studies" / "configs" / f"{name}.yaml"
                      for name in ("fcos_inside", "pseudo_iou", "scaled_box", "centerness_threshold"))


@viz_app.command("assign")
def viz_assign(
    run_id: Optional[str] = typer.Argument(None, help="MLflow run id: draw its stored records (printed by "
                                           "'anchorlab train', shown in the UI). Leave out with -c."),
    config: List[Path] = typer.Option([], "--config", "-c", help="Config YAML; repeat to layer (later wins), as "
                                      "'anchorlab train -c': draw the method's assignment on one image instead."),
    set_: List[str] = typer.Option([], "--set", help="Override (with -c), e.g. --set assign.atss.topk=5."),
    image: Optional[int] = typer.Option(None, "--image", "--image-id", help="Image id (with -c; default: the "
                                        "split's first image with >= 3 GTs)."),
    checkpoint: Optional[Path] = typer.Option(None, help="Checkpoint trained with the config (with -c): its "
                                              "model's assignment; needed by paa and free_anchor."),
    split: str = typer.Option("val", help="Dataset split of --image (with -c): val or train."),
    boxes: str = typer.Option("none", help="Boxes around the positives (with -c): none, anchors, or predicted "
                              "(needs --checkpoint)."),
    out: Optional[Path] = typer.Option(None, help="With -c: the PNG file (default figures/assign_<config>_<image "
                                       "id>.png). With RUN_ID: the folder for the PNG files (default figures)."),
    log: bool = typer.Option(True, help="With RUN_ID: also store the figures with the run (beside its records)."),
    workspace: Optional[Path] = typer.Option(None, help="Workspace (default $ANCHORLAB_HOME or ./anchorlab-runs)."),
    tracking_uri: Optional[str] = typer.Option(None),
):
    """Assignment figures. With RUN_ID: positives per GT and (PAA) GMM fits from a run's stored records. With -c
    CONFIG: the positive (coloured by GT), ignored and negative anchors of the config's method on one image."""
    if config and run_id is not None:
        fail(f"give either RUN_ID ({run_id}) or -c CONFIG, not both: RUN_ID draws a run's records, -c one image")
    if not config and run_id is None:
        fail("give RUN_ID (a run's records) or -c CONFIG --image ID (one image's assignment)")
    if config:
        _assign_image(config, set_, image, checkpoint, split, boxes, out, workspace)
        return
    from ablation.tracking.reader import RunNotFound
    from ablation.tracking.store import resolve_tracking_uri, workspace_dir
    from dashboards.run_figures import draw_run_figures

    folder = out or Path("figures")
    with user_errors():  # an unwritable workspace or --out: one line
        uri = resolve_tracking_uri(tracking_uri, workspace_dir(workspace))
        try:
            paths = draw_run_figures(uri, run_id, folder / run_id, log=log)
        except RunNotFound as exc:
            fail(str(exc))
    logged = " and logged them to the run" if log and paths else ""
    typer.echo(f"wrote {len(paths)} figures to {folder / run_id}{logged}")


def _assign_image(config: List[Path], set_: List[str], image: Optional[int], checkpoint: Optional[Path], split: str,
                  boxes: str, out: Optional[Path], workspace: Optional[Path]) -> None:
    """`viz assign -c`: load and validate the config as `anchorlab train` does, draw, print the counts."""
    if out is not None and out.suffix.lower() != ".png":
        fail(f"--out {out}: expected a .png file")
    with user_errors():
        from ablation.tracking.store import workspace_dir
        from dashboards.assign_image import BOX_CHOICES, plot_assignment
        from dashboards.checkpoint_image import SPLITS
        from dashboards.image_assignment import image_assignment
        from detector.config import load_config
        from detector.engine.checkpoint import CheckpointError

        if split not in SPLITS:
            fail(f"--split '{split}' is not one of {', '.join(SPLITS)}")
        if boxes not in BOX_CHOICES:
            fail(f"--boxes '{boxes}' is not one of {', '.join(BOX_CHOICES)}")
        if boxes == "predicted" and checkpoint is None:
            raise CheckpointError("--boxes predicted needs --checkpoint: without a model there are no predicted boxes")
        cfg = load_config([str(p) for p in config], set_)
        drawn = image_assignment(cfg, workspace_dir(workspace), image, checkpoint, split)
        path = out or Path("figures") / f"assign_{cfg.name}_{drawn.image_id}.png"
        plot_assignment(drawn, path, boxes)
    c = drawn.counts
    at = "no checkpoint" if drawn.iteration is None else f"checkpoint at iteration {drawn.iteration}"
    typer.echo(f"{drawn.method} on {split} image {drawn.image_id} ({at}): {c['positives']} positive, "
               f"{c['ignored']} ignored, {c['negatives']} negative {drawn.unit}; {c['gts_without']} of "
               f"{len(drawn.gt_boxes)} GTs without a positive")
    typer.echo(f"wrote {path}")


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
