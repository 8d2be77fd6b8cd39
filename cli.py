"""anchorlab command line: thin typer commands over library functions.

Heavy imports (torch, mlflow) happen inside the commands so `anchorlab --help` stays fast.
"""
from __future__ import annotations

import contextlib
import shlex
import tempfile
from pathlib import Path
from typing import List, Optional

import typer

from cli_errors import fail as _fail
from cli_errors import user_errors as _user_errors
from cli_output import note, progress_every_option, setup_logging, warn
from cli_report import report
from cli_search import search_app
from cli_ui import ui, ui_hint
from cli_viz import viz_app

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Label-assignment ablations for dense detectors.")
data_app = typer.Typer(no_args_is_help=True, help="The embedded synthetic benchmark and dataset statistics.")
app.add_typer(data_app, name="data")


# Defaults of `data synth` that `detector.config.SynthConfig` also holds (tests check they agree; the CLI
# module does not import torch at start-up).
SYNTH_CLUTTER = 0.2
SYNTH_MIN_OBJECT_SIZE = 16.0


@data_app.command("synth")
def data_synth(
    out: Path = typer.Option(..., help="Folder to write the dataset into: new, empty, or a dataset written here "
                             "before (replaced)."),
    train: int = typer.Option(2000, help="Training images."),
    val: int = typer.Option(500, help="Validation images."),
    seed: int = typer.Option(0),
    size: int = typer.Option(320, help="Image side in pixels."),
    slender_share: float = typer.Option(0.15, help="Share of slender objects (aspect up to 1:8)."),
    acentric_share: float = typer.Option(0.25, help="Share of rings, L-shapes and crescents."),
    crowding: float = typer.Option(0.3, help="Probability of a crowded cluster in an image."),
    clutter: float = typer.Option(SYNTH_CLUTTER, help="Density of distractors and background texture (0-1)."),
    min_object_size: float = typer.Option(SYNTH_MIN_OBJECT_SIZE, help="Smallest object, sqrt(w*h) in pixels."),
    workers: int = typer.Option(2, help="Generator processes."),
    force: bool = typer.Option(False, "--force", help="Replace --out even when it holds files that 'data synth' did "
                               "not write (they are deleted)."),
):
    """Generate the deterministic synthetic detection benchmark (COCO JSON + PNG images)."""
    import time

    from rich.progress import Progress

    from detector.config import SynthConfig
    from detector.config.ranges import check_synth
    from detector.data.staging import check_destination
    from detector.data.synth import generate, written_by_synth

    cfg = SynthConfig(train=train, val=val, size=size, seed=seed, slender_share=slender_share,
                      acentric_share=acentric_share, crowding=crowding, clutter=clutter,
                      min_object_size=min_object_size)
    options = {"train", "val", "seed", "size", "slender_share", "acentric_share", "crowding", "clutter",
               "min_object_size"}
    try:  # the config's own rules, naming this command's options (other fields keep their defaults)
        check_synth(cfg, label=lambda f: "--" + f.replace("_", "-") if f in options else f"data.synth.{f}")
    except ValueError as exc:
        _fail(str(exc))
    t0 = time.perf_counter()
    with _user_errors():
        check_destination(out, force, written_by_synth)  # before the progress bar: a refusal is one clean line
        with Progress() as progress:
            task = progress.add_task("generating", total=train + val)
            path = generate(out, cfg, workers=workers, force=force,
                            progress=lambda done, total: progress.update(task, completed=done))
    typer.echo(f"wrote {train} train / {val} val images to {path} in {time.perf_counter() - t0:.1f}s")


@data_app.command("stats")
def data_stats(path: Path = typer.Argument(..., help="Dataset folder (or one instances JSON).")):
    """Objects per image, size and aspect-ratio histograms per split."""
    from detector.data.stats import dataset_stats, format_stats

    if not path.exists():
        _fail(f"not found: {path}")
    with _user_errors():
        stats = dataset_stats(path)
    typer.echo(format_stats(stats))


def _load(config: List[Path], overrides: List[str]):
    from detector.config import load_config

    return load_config([str(p) for p in config], overrides)


def _print_metrics(metrics: dict) -> None:
    """The metrics as two aligned lines, in percent (said in the first column), readable in logs as in terminals."""
    names = ["val (%)", *metrics]
    cells = ["", *(f"{100 * v:.1f}" if v >= 0 else "-" for v in metrics.values())]
    widths = [max(len(n), len(c)) for n, c in zip(names, cells)]
    typer.echo("  ".join(n.rjust(w) for n, w in zip(names, widths)))
    typer.echo("  ".join(c.rjust(w) for c, w in zip(cells, widths)))


@app.command()
def train(
    config: List[Path] = typer.Option(..., "--config", "-c", help="Config YAML; repeat to layer (later wins)."),
    set_: List[str] = typer.Option([], "--set", help="Override, e.g. --set train.iterations=100."),
    resume: bool = typer.Option(False, help="Resume the interrupted run of this config (same run key) from its last "
                                "checkpoint; a FAILED run is never resumed (without one, a new run starts)."),
    workspace: Optional[Path] = typer.Option(None, help="Workspace (default $ANCHORLAB_HOME or ./anchorlab-runs)."),
    tracking_uri: Optional[str] = typer.Option(None, help="MLflow tracking URI (default: SQLite in the workspace)."),
    experiment: str = typer.Option("anchorlab", help="MLflow experiment name."),
    run_name: Optional[str] = typer.Option(None),
    nproc: Optional[int] = typer.Option(None, min=1, help="Processes (GPUs) of this one run, started by torchrun; "
                                        "train.batch_size stays the global batch (sets train.nproc)."),
    progress_every: float = progress_every_option(),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
):
    """Train one detector as one tracked MLflow run, then evaluate it on the val split.

    On a terminal a live bar shows the progress; into a log, a plain line every --progress-every seconds."""
    import cli_dist

    setup_logging(verbose)
    with _user_errors():
        cfg = _load(config, [*set_, *([f"train.nproc={nproc}"] if nproc else [])])
        cli_dist.relaunch_if_needed(cfg.train.nproc)  # outside torchrun: becomes torchrun, never returns
        cli_dist.check_world(cfg.train.nproc)
        if cli_dist.secondary():
            raise typer.Exit(cli_dist.train_secondary(cfg, workspace))
        from rich import get_console

        from ablation.display.log_progress import LogProgressHooks
        from ablation.display.run_progress import RichProgressHooks, make_progress
        from ablation.execution.run import SAME_COMMAND_RESTARTS, RunSpec, execute
        from ablation.profiles import random_backbone_warning
        from ablation.tracking.store import resolve_tracking_uri, workspace_dir
        from detector.config import ConfigError
        from detector.data.errors import DataError
        from detector.engine.checkpoint_errors import CheckpointError

        ws = workspace_dir(workspace)
        backbone = random_backbone_warning([cfg])
        if backbone:
            warn(backbone)
        spec = RunSpec(cfg, run_name or cfg.name, experiment, resume=resume, restart_hint=SAME_COMMAND_RESTARTS)
        terminal = get_console().is_terminal  # the console rich's bar draws on (stdout)
        with make_progress() if terminal else contextlib.nullcontext() as progress:
            hooks = (RichProgressHooks(progress, cfg.train.iterations) if terminal
                     else LogProgressHooks(spec.label, cfg.train.iterations, progress_every))
            say = progress.console.print if terminal else typer.echo
            outcome = execute(spec, ws, tracking_uri, hooks=hooks,
                              on_wait=lambda: say(f"waiting: another process is training run key {spec.key}"))
    if outcome.status != "FINISHED":
        user_error = isinstance(outcome.error, (ConfigError, DataError, FileNotFoundError, CheckpointError))
        _fail(f"run {outcome.run_id} {outcome.status}: {outcome.reason}", code=2 if user_error else 1)
    result, uri = outcome.result, resolve_tracking_uri(tracking_uri, ws)
    if result.metrics:
        _print_metrics(result.metrics)
    with tempfile.TemporaryDirectory() as tmp:  # drawn after training, from the stored records; kept in MLflow
        from dashboards.run_figures import draw_run_figures

        figures = draw_run_figures(uri, outcome.run_id, tmp)
    typer.echo(f"run {outcome.run_id} finished in {result.wall_time:.0f}s; checkpoint {result.checkpoint}; "
               f"{len(figures)} assignment figures stored with the run")
    words = ["anchorlab", "ui", "--experiment", experiment] + (["--workspace", str(workspace)] if workspace else [])
    words += ["--tracking-uri", tracking_uri] if tracking_uri else []
    typer.echo(f"tracked in {uri} (experiment '{experiment}'); open it with: {shlex.join(words)}")


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

        from ablation.tracking.store import workspace_dir
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


app.command()(ui)  # `anchorlab ui`: cli_ui.py
app.add_typer(viz_app, name="viz")  # `anchorlab viz ...`: cli_viz.py
app.add_typer(search_app, name="search")  # `anchorlab search ...`: cli_search.py
app.command("report")(report)  # `anchorlab report FILE`: cli_report.py


# ---------------------------------------------------------------- studies
study_app = typer.Typer(no_args_is_help=True, help="Ablation studies: one tracked run per row x seed, one paper table.")
app.add_typer(study_app, name="study")
_WORKSPACE_HELP = "Workspace (default $ANCHORLAB_HOME or ./anchorlab-runs)."
_URI_HELP = "MLflow tracking URI (default: SQLite in the workspace)."
_QUEUE_HELP = ("Work queue: a journal file path, or a PostgreSQL URL that several machines share "
               "(default: <workspace>/queue/<study>.<profile>.journal).")


@contextlib.contextmanager
def _study_errors():
    from ablation.execution.queue import QueueError

    with _user_errors():
        try:
            yield
        except QueueError as exc:
            _fail(str(exc))


_SEEDS_HELP = "Seeds to run, e.g. 0 or 0,1,2, instead of the profile's (quick profiles: 0,1,2)."


_PROFILE_HELP = ("paper, quick (CPU), smoke (tests), or the file's; default: paper on a machine with a CUDA GPU, "
                 "quick without one (said in one line)")


def _load_study(file: Path, profile: Optional[str], seeds: Optional[str], workspace: Optional[Path]):
    """The study and the profile name, with `--seeds` applied; a profile chosen for the user is said on stderr,
    once the study file and the workspace are known to be usable (a refusal stays one line)."""
    from ablation.study.expand import load_study, parse_seeds, with_seeds
    from ablation.tracking.store import workspace_dir

    study = load_study(file)
    workspace_dir(workspace)
    choice = study.profile_choice(profile)
    if choice.note:
        note(choice.note)
    profile = choice.name
    return (study if seeds is None else with_seeds(study, profile, parse_seeds(seeds))), profile


@study_app.command("run")
def study_run(
    file: Path = typer.Argument(..., help="Study file, e.g. studies/paa_table2_methods.yaml."),
    profile: Optional[str] = typer.Option(None, help=_PROFILE_HELP),
    seeds: Optional[str] = typer.Option(None, help=_SEEDS_HELP),
    workers: int = typer.Option(1, min=1, help="Local worker processes; CPU threads are split among them."),
    gpus: Optional[str] = typer.Option(None, help="GPU ids, e.g. 0,1: one worker per GPU with CUDA_VISIBLE_DEVICES "
                                       "pinned (instead of --workers)."),
    gpus_per_run: int = typer.Option(1, "--gpus-per-run", "--procs-per-run", min=1,
                                     help="Processes that train each row together (DDP): with --gpus, K GPUs per row "
                                     "(one worker per K GPUs); on the CPU, K gloo processes per worker."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List every run (label, seed, run key, state) only."),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Train failed runs again from scratch (default: "
                                      "they stay failed)."),
    queue_storage: Optional[str] = typer.Option(None, help=_QUEUE_HELP),
    heartbeat: float = typer.Option(10.0, min=0.1, help="Seconds between worker heartbeats; a run whose worker misses "
                                    "6 is handed out again (at once when the worker was on this machine and is gone)."),
    workspace: Optional[Path] = typer.Option(None, help=_WORKSPACE_HELP),
    tracking_uri: Optional[str] = typer.Option(None, help=_URI_HELP),
    progress_every: float = progress_every_option(),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
):
    """Run a study: each row x seed is one tracked MLflow run under one parent run per profile.

    Re-running the same command reuses finished runs (same run key, in this study or any other in the
    workspace), resumes interrupted ones from their last checkpoint and leaves failed ones failed (unless
    --retry-failed, which starts them again from scratch). Several invocations, or
    machines sharing --queue-storage and the tracking store, can work on one study: each run goes to
    exactly one worker. Prints the paper-style table at the end. Progress: a live panel on a terminal; into a
    log, a plain line per running run every --progress-every seconds.
    """
    setup_logging(verbose)
    with _study_errors():
        from ablation.display.study_progress import ProgressDisplay
        from ablation.execution.launcher import RunnerSettings, format_plan, plan, run_study
        from ablation.profiles import random_backbone_warning
        from ablation.study.expand import expand

        study, profile = _load_study(file, profile, seeds, workspace)
        gpu_ids = [g.strip() for g in gpus.split(",") if g.strip()] if gpus else []
        if len(gpu_ids) % gpus_per_run:
            _fail(f"--gpus {gpus}: {len(gpu_ids)} GPU(s) cannot be split into groups of --gpus-per-run {gpus_per_run}")
        settings = RunnerSettings(workers=workers, gpus=gpu_ids, procs_per_run=gpus_per_run, retry_failed=retry_failed,
                                  queue_storage=queue_storage, heartbeat_s=heartbeat)
        for warning in study.warnings.get(profile, []) if profile in study.profiles else []:
            warn(warning)
        backbone = random_backbone_warning([r.config for r in expand(study, profile)], profile)
        if backbone:
            warn(backbone)
        if dry_run:
            entries, _ = plan(study, profile, workspace, tracking_uri, settings)
            typer.echo(format_plan(study, profile, entries))
            return
        result = run_study(study, profile, settings, workspace, tracking_uri,
                           display=ProgressDisplay(every_s=progress_every))
    typer.echo("")
    typer.echo(result.table)
    counts = ", ".join(f"{n} {k}" for k, n in result.counts.items() if n)
    typer.echo(f"{counts}; tracked in {result.tracking_uri} (experiment '{result.experiment}', parent run "
               f"{result.parent_run_id})")
    typer.echo(ui_hint(file, profile, workspace, tracking_uri, result.tracking_uri, result.experiment, study.metrics))
    report = ["anchorlab", "report", str(file), "--profile", profile] + (["--workspace", str(workspace)] if workspace
                                                                          else [])
    typer.echo(f"its figures on one HTML page: {shlex.join(report)}")
    if result.interrupted:
        typer.echo("interrupted: run the same command again to resume")
        raise typer.Exit(130)
    if result.counts["finished"] + result.counts["failed"] < sum(result.counts.values()):
        raise typer.Exit(1)


@study_app.command("status")
def study_status(
    file: Path = typer.Argument(..., help="Study file."),
    profile: Optional[str] = typer.Option(None, help=_PROFILE_HELP),
    seeds: Optional[str] = typer.Option(None, help=_SEEDS_HELP),
    queue_storage: Optional[str] = typer.Option(None, help=_QUEUE_HELP),
    workspace: Optional[Path] = typer.Option(None, help=_WORKSPACE_HELP),
    tracking_uri: Optional[str] = typer.Option(None, help=_URI_HELP),
):
    """Every run of the study with its state (from MLflow) and the workers holding runs now (from the queue)."""
    with _study_errors():
        from ablation.execution.launcher import RunnerSettings, format_plan, plan

        study, profile = _load_study(file, profile, seeds, workspace)
        entries, running = plan(study, profile, workspace, tracking_uri, RunnerSettings(queue_storage=queue_storage))
    typer.echo(format_plan(study, profile, entries))
    for trial in running:
        item, worker = trial.user_attrs["item"], trial.user_attrs.get("worker", {})
        typer.echo(f"  live: {item['label']} · seed {item['seed']} on {worker.get('host', '?').split('/')[0]} "
                   f"pid {worker.get('pid', '?')}")


@study_app.command("table")
def study_table(
    file: Path = typer.Argument(..., help="Study file."),
    profile: Optional[str] = typer.Option(None, help=_PROFILE_HELP),
    seeds: Optional[str] = typer.Option(None, help=_SEEDS_HELP),
    format_: str = typer.Option("md", "--format", help="md | latex | csv | html"),
    out: Optional[Path] = typer.Option(None, help="Write here instead of stdout."),
    reference: bool = typer.Option(False, "--reference", help="Put the paper's values and our difference beside ours."),
    workspace: Optional[Path] = typer.Option(None, help=_WORKSPACE_HELP),
    tracking_uri: Optional[str] = typer.Option(None, help=_URI_HELP),
):
    """The study's table from MLflow: paper order and labels, mean ± std over seeds, best in bold.

    Failed rows read "training failed", rows without runs "pending". Also logged to the parent run.
    """
    with _study_errors():
        from ablation.execution.launcher import log_table
        from ablation.execution.launcher import study_table as build
        from ablation.tables.render import FORMATS

        if format_ not in FORMATS:
            _fail(f"--format '{format_}' is not one of {', '.join(FORMATS)}")
        study, profile = _load_study(file, profile, seeds, workspace)
        text = build(study, profile, format_, reference, workspace, tracking_uri, log=False)
        if out is None:
            typer.echo(text, nl=False)
        else:
            out.write_text(text)
            typer.echo(f"wrote {out}")
        log_table(study, profile, format_, text, workspace, tracking_uri)  # after the answer: writing loads mlflow


if __name__ == "__main__":
    app()
