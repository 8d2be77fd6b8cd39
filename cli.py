"""anchorlab command line: thin typer commands over library functions.

Heavy imports (torch, mlflow) happen inside the commands so `anchorlab --help` stays fast.
"""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import List, Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Label-assignment ablations for dense detectors.")
data_app = typer.Typer(no_args_is_help=True, help="The embedded synthetic benchmark and dataset statistics.")
app.add_typer(data_app, name="data")


def _fail(message: str, code: int = 2) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


@contextlib.contextmanager
def _user_errors():
    """Turn the errors a user can cause (bad config, bad data, missing files) into one line, no traceback."""
    from detector.config import ConfigError
    from detector.data.coco import DataError

    try:
        yield
    except (ConfigError, DataError, FileNotFoundError) as exc:
        _fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("anchorlab").setLevel(logging.INFO)


@data_app.command("synth")
def data_synth(
    out: Path = typer.Option(..., help="Folder to write the dataset into."),
    train: int = typer.Option(2000, help="Training images."),
    val: int = typer.Option(500, help="Validation images."),
    seed: int = typer.Option(0),
    size: int = typer.Option(320, help="Image side in pixels."),
    slender_share: float = typer.Option(0.15, help="Share of slender objects (aspect up to 1:8)."),
    acentric_share: float = typer.Option(0.25, help="Share of rings, L-shapes and crescents."),
    crowding: float = typer.Option(0.3, help="Probability of a crowded cluster in an image."),
    clutter: float = typer.Option(0.5, help="Density of distractors and background texture (0-1)."),
    workers: int = typer.Option(2, help="Generator processes."),
):
    """Generate the deterministic synthetic detection benchmark (COCO JSON + PNG images)."""
    import time

    from rich.progress import Progress

    from detector.config import SynthConfig
    from detector.data.synth import generate

    cfg = SynthConfig(train=train, val=val, size=size, seed=seed, slender_share=slender_share,
                      acentric_share=acentric_share, crowding=crowding, clutter=clutter)
    t0 = time.perf_counter()
    with Progress() as progress:
        task = progress.add_task("generating", total=train + val)
        path = generate(out, cfg, workers=workers, progress=lambda done, total: progress.update(task, completed=done))
    typer.echo(f"wrote {train} train / {val} val images to {path} in {time.perf_counter() - t0:.1f}s")


@data_app.command("stats")
def data_stats(path: Path = typer.Argument(..., help="Dataset folder (or one instances JSON).")):
    """Objects per image, size and aspect-ratio histograms per split."""
    from detector.data.stats import dataset_stats, format_stats

    if not path.exists():
        _fail(f"not found: {path}")
    typer.echo(format_stats(dataset_stats(path)))


def _load(config: List[Path], overrides: List[str]):
    from detector.config import load_config

    return load_config([str(p) for p in config], overrides)


def _print_metrics(metrics: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="COCO val")
    for name in metrics:
        table.add_column(name, justify="right")
    table.add_row(*[f"{100 * v:.1f}" if v >= 0 else "-" for v in metrics.values()])
    Console().print(table)


@app.command()
def train(
    config: List[Path] = typer.Option(..., "--config", "-c", help="Config YAML; repeat to layer (later wins)."),
    set_: List[str] = typer.Option([], "--set", help="Override, e.g. --set train.iterations=100."),
    resume: bool = typer.Option(False, help="Resume the unfinished run of this config from its last checkpoint."),
    workspace: Optional[Path] = typer.Option(None, help="Workspace (default $ANCHORLAB_HOME or ./anchorlab-runs)."),
    tracking_uri: Optional[str] = typer.Option(None, help="MLflow tracking URI (default: SQLite in the workspace)."),
    experiment: str = typer.Option("anchorlab", help="MLflow experiment name."),
    run_name: Optional[str] = typer.Option(None),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
):
    """Train one detector as one tracked MLflow run, then evaluate it on the val split."""
    _setup_logging(verbose)
    with _user_errors():
        cfg = _load(config, set_)
        from ablation.progress import RichProgressHooks, make_progress
        from ablation.train_run import train_tracked

        with make_progress() as progress:
            outcome = train_tracked(
                cfg, workspace, tracking_uri, experiment, run_name, resume,
                extra_hooks=RichProgressHooks(progress, cfg.train.iterations),
            )
    result = outcome.result
    if result.status != "FINISHED":
        typer.secho(f"run {outcome.run_id} FAILED: {result.reason}", fg=typer.colors.RED)
        raise typer.Exit(1)
    if result.metrics:
        _print_metrics(result.metrics)
    typer.echo(f"run {outcome.run_id} finished in {result.wall_time:.0f}s; checkpoint {result.checkpoint}")
    typer.echo(f"tracked in {outcome.tracking_uri} (experiment '{outcome.experiment}'); open it with: anchorlab ui")


@app.command("eval")
def eval_(
    config: List[Path] = typer.Option(..., "--config", "-c", help="Config YAML(s) the checkpoint was trained with."),
    checkpoint: Path = typer.Option(..., help="Checkpoint (.pt) to evaluate."),
    set_: List[str] = typer.Option([], "--set", help="Override, e.g. --set inference.nms_thresh=0.6."),
    out: Path = typer.Option(Path("eval-out"), help="Folder for detections.json and metrics.json."),
    workspace: Optional[Path] = typer.Option(None),
):
    """Evaluate a checkpoint on the val split: COCO results JSON + the 12 COCO metrics."""
    with _user_errors():
        cfg = _load(config, set_)
        from rich.progress import Progress

        from ablation.tracking import workspace_dir
        from detector.engine.evaluate import evaluate_model
        from detector.engine.predictor import load_detector

        ws = workspace_dir(workspace)
        model, val_set, device = load_detector(cfg, checkpoint, ws)
        with Progress() as progress:
            task = progress.add_task("eval", total=len(val_set))
            metrics, files = evaluate_model(
                model, val_set, cfg, device, out, progress=lambda d, t: progress.update(task, completed=d)
            )
    _print_metrics(metrics)
    typer.echo(f"wrote {files['detections']} and {files['metrics']}")


@app.command()
def ui(
    workspace: Optional[Path] = typer.Option(None),
    tracking_uri: Optional[str] = typer.Option(None),
    port: int = typer.Option(5000),
    host: str = typer.Option("127.0.0.1"),
):
    """Open the MLflow UI over the workspace's store (Ctrl-C to stop)."""
    from ablation.tracking import launch_ui, ui_url, workspace_dir

    proc = launch_ui(workspace_dir(workspace), tracking_uri, host=host, port=port)
    typer.echo(f"MLflow UI: {ui_url(host, port)}  (Ctrl-C to stop)")
    try:
        proc.wait()
    except KeyboardInterrupt:
        proc.terminate()


if __name__ == "__main__":
    app()
