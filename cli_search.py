"""`anchorlab search`: Optuna searches over a config's parameters, each trial one tracked run.

Thin typer commands, like `cli.py` (which registers `search_app`); heavy imports inside the commands.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cli_errors import fail, user_errors
from cli_output import note, progress_every_option, setup_logging, warn

search_app = typer.Typer(no_args_is_help=True, help="Searches: Optuna proposes each trial; every trial is one run.")


@search_app.command("run")
def search_run(
    file: Path = typer.Argument(..., help="Search file, e.g. studies/search_paa_lambda.yaml."),
    profile: Optional[str] = typer.Option(None, help="paper, quick (CPU), smoke (tests), or the search's; default: paper "
                                          "on a machine with a CUDA GPU, quick without one (said in one line)."),
    trials: Optional[int] = typer.Option(None, min=1, help="Trials that complete or are pruned, counting those "
                                         "already in the storage (default: the file's `trials`)."),
    workers: int = typer.Option(1, min=1, help="Local worker processes; CPU threads are split among them."),
    storage: Optional[str] = typer.Option(None, help="Optuna storage: a journal file path, or a PostgreSQL URL that "
                                          "several machines share (default: <workspace>/queue/search-<name>-"
                                          "<profile>.journal)."),
    workspace: Optional[Path] = typer.Option(None, help="Workspace (default $ANCHORLAB_HOME or ./anchorlab-runs)."),
    tracking_uri: Optional[str] = typer.Option(None, help="MLflow tracking URI (default: SQLite in the workspace)."),
    rerun: bool = typer.Option(True, help="After the trials, train the best configurations and the default with "
                               "the rerun seeds, for the answer's interval."),
    progress_every: float = progress_every_option(),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
):
    """Run a search: each trial is a child run of one MLflow parent run per profile.

    Re-running the same command resumes it: trials that completed or were pruned count toward --trials,
    a trial whose worker died is run again (its run resumed from the last checkpoint), and a search that
    has its trials starts nothing. A trial whose config already finished anywhere in the workspace reuses
    that run. Into a log (stdout not a terminal), a progress line per running trial every --progress-every
    seconds.
    """
    setup_logging(verbose)  # before mlflow is imported: its INFO lines only with --verbose
    from ablation.execution.queue import QueueError
    from ablation.search.space import SpaceError

    with user_errors():
        from rich import get_console

        from ablation.display.log_progress import WorkerLines
        from ablation.profiles import random_backbone_warning
        from ablation.search.resolve import trial_config
        from ablation.search.run import format_result, run_search, trial_line

        search, profile = _search_and_profile(file, profile)
        backbone = random_backbone_warning([trial_config(search, profile, {})], profile)  # the search's defaults
        if backbone:
            warn(backbone)
        metrics = [o.metric for o in search.objectives]
        lines = None if get_console().is_terminal else WorkerLines(progress_every, typer.echo)

        def display(worker: int, kind: str, data: dict) -> None:
            if kind == "iter" and lines is not None:
                lines.update(worker, f"trial {data['number']}" if "number" in data else f"rerun {data['rerun']}", data)
            elif kind == "log":
                typer.echo(f"  worker {worker}: {data['text']}", err=True)
            if kind in ("end", "rerun-end") and lines is not None:
                lines.done(worker)
            if kind == "end":
                typer.echo(trial_line(data["number"], data["outcome"], metrics, data.get("values"), data["params"],
                                      data.get("step", 0), data.get("reason", ""), data.get("reused", False)))
            elif kind == "rerun-start":
                typer.echo(f"  rerun {data['candidate']} · seed {data['seed']} ...")
            elif kind == "rerun-end":
                value = data.get("value")
                typer.echo(f"  rerun {data['candidate']} · seed {data['seed']} {data['status']}"
                           + (f" {metrics[0]} {value:.4g}" if value is not None else f" {data.get('reason', '')}")
                           + ("" if data.get("trained", True) else " (an existing run: nothing trained)"))
            elif kind == "died":
                typer.secho(f"warning: worker {worker} died (exit code {data['code']}); its trial runs again",
                            fg=typer.colors.YELLOW, err=True)

        budget = trials or search.trials
        typer.echo(f"search {search.name} [{profile}]: {budget} trials, {workers} worker(s)")
        try:
            result = run_search(search, profile, trials, workers, storage, workspace, tracking_uri, display, rerun=rerun)
        except (QueueError, SpaceError) as exc:
            fail(str(exc).splitlines()[0])
    typer.echo("")
    typer.echo("\n".join(format_result(result, trials=False).strip().splitlines()[2:]))  # without its title
    if result.rerun is not None:
        from ablation.search.rerun import format_rerun

        typer.echo("")
        typer.echo(format_rerun(search, result.rerun))
    typer.echo(f"tracked in {result.tracking_uri} (experiment '{result.search}', parent run {result.parent_run_id}); "
               f"Optuna study '{result.study_name}' in {result.storage}")
    if result.interrupted:
        typer.echo("interrupted: run the same command again to resume")
        raise typer.Exit(130)
    if result.counts["complete"] + result.counts["pruned"] < result.budget:
        raise typer.Exit(1)


def _search_and_profile(file: Path, profile: Optional[str]):
    """The loaded search file (validated, nothing trains) and the profile, or one error line; a profile chosen for
    the user is said on stderr (`ablation.profiles`)."""
    from ablation.search.load import load_search

    search = load_search(file)
    choice = search.profile_choice(profile)
    if choice.note:
        note(choice.note)
    profile = choice.name
    if profile not in search.profiles:
        fail(f"{file}: no profile '{profile}' (the search has {', '.join(search.profiles)})")
    return search, profile


def _stored_study(file: Path, search, profile: str, storage: Optional[str], workspace: Optional[Path]):
    """(the search's Optuna study, its storage location), or one error line when it has no trials or other
    directions than the file's."""
    from ablation.execution.queue import QueueError
    from dashboards.search_report import NoTrials, load_study

    try:
        return load_study(search, profile, storage, workspace)
    except NoTrials:
        fail(f"no trials yet: run anchorlab search run {file} --profile {profile}")
    except QueueError as exc:
        fail(str(exc).splitlines()[0])


@search_app.command("report")
def search_report(
    file: Path = typer.Argument(..., help="Search file, e.g. studies/search_paa_lambda.yaml."),
    profile: Optional[str] = typer.Option(None, help="The profile it ran under (default: as `search run`'s)."),
    storage: Optional[str] = typer.Option(None, help="Optuna storage the search ran on (default: <workspace>/queue/"
                                          "search-<name>-<profile>.journal)."),
    workspace: Optional[Path] = typer.Option(None, help="Workspace (default $ANCHORLAB_HOME or ./anchorlab-runs)."),
    tracking_uri: Optional[str] = typer.Option(None, help="MLflow tracking URI (default: SQLite in the workspace)."),
    out: Optional[Path] = typer.Option(None, help="Folder for report.md and the figures (default: <workspace>/search/"
                                       "<name>-<profile>/)."),
):
    """Report a search: best trials, counts, importances, reruns, and its figures (history, importances, parallel
    coordinates, slices, intermediate values, Pareto front), written as files and logged to its parent run."""
    with user_errors():
        from dashboards.search_report import build_report

        search, profile = _search_and_profile(file, profile)
        study, location = _stored_study(file, search, profile, storage, workspace)
        report = build_report(search, profile, study, location, workspace, tracking_uri, out)
    typer.echo(report.markdown)
    typer.echo(f"wrote {report.report_file}")
    for path in report.figures.values():
        typer.echo(f"wrote {path}")
    if report.logged:
        typer.echo(f"logged report.md and the figures to the MLflow parent run {report.parent_run_id} (report/)")


@search_app.command("audit")
def search_audit(
    file: Path = typer.Argument(..., help="Search file, e.g. studies/search_paa_lambda.yaml."),
    profile: Optional[str] = typer.Option(None, help="The profile it ran under (default: as `search run`'s)."),
    storage: Optional[str] = typer.Option(None, help="Optuna storage the search ran on (default: the workspace's "
                                          "journal)."),
    workspace: Optional[Path] = typer.Option(None, help="Workspace (default $ANCHORLAB_HOME or ./anchorlab-runs)."),
    tracking_uri: Optional[str] = typer.Option(None, help="MLflow tracking URI (default: SQLite in the workspace)."),
    progress_every: float = progress_every_option(),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
):
    """Measure what pruning cost: train the search's pruned trials to the end (one run each, under its parent run)
    and say which would have entered its best complete trials. Running it again trains nothing new."""
    setup_logging(verbose)
    with user_errors():
        from rich import get_console

        from ablation.display.log_progress import WorkerLines
        from ablation.search.audit import audit_pruning, format_audit
        from ablation.tracking.store import resolve_tracking_uri, workspace_dir

        search, profile = _search_and_profile(file, profile)
        if len(search.objectives) != 1:
            fail(f"{file}: a two-objective search does not prune; nothing to audit")
        study, _ = _stored_study(file, search, profile, storage, workspace)
        parent = study.user_attrs.get("parent_run_id")
        if not parent:
            fail(f"the search has no MLflow parent run yet: run anchorlab search run {file} --profile {profile}")
        lines = None if get_console().is_terminal else WorkerLines(progress_every, typer.echo)
        metric = search.objectives[0].metric

        def display(kind: str, data: dict) -> None:
            if kind == "iter" and lines is not None:
                lines.update(0, data["rerun"], data)
            elif kind == "audit-start":
                typer.echo(f"  trial {data['trial']} to the end ...")
            elif kind == "audit-end":
                if lines is not None:
                    lines.done(0)
                value = data["value"]
                typer.echo(f"  trial {data['trial']} {data['status']}"
                           + (f" {metric} {value:.4g}" if value is not None else f" {data['reason']}")
                           + ("" if data["trained"] else " (an existing run: nothing trained)"))

        ws = workspace_dir(workspace)
        audit = audit_pruning(search, profile, study, parent, ws, resolve_tracking_uri(tracking_uri, ws), display)
    if not audit.rows:
        typer.echo("no pruned trial: nothing to audit")
        return
    typer.echo("")
    typer.echo(format_audit(audit))
    from dashboards.importance_spread import importance_spread, with_finals
    from dashboards.search_figures import IMPORTANCE_SEED, format_importances, param_importances

    at_end = with_finals(study, {r.number: r.final for r in audit.rows if r.final is not None})
    importances, why = param_importances(at_end, search)
    typer.echo(f"\nParameter importances (fANOVA) over the {len(at_end.trials)} trials at the end:")
    if importances:
        spread = importance_spread(at_end, search, list(next(iter(importances.values()))), IMPORTANCE_SEED)
        typer.echo("\n".join(format_importances(importances, spread)))
    else:
        typer.echo(f"skipped: {why}")


@search_app.command("dashboard")
def search_dashboard(
    file: Path = typer.Argument(..., help="Search file, e.g. studies/search_paa_lambda.yaml."),
    profile: Optional[str] = typer.Option(None, help="The profile it ran under (default: as `search run`'s)."),
    port: int = typer.Option(8080, help="Port on 127.0.0.1."),
    storage: Optional[str] = typer.Option(None, help="Optuna storage the search ran on (default: the workspace's "
                                          "journal)."),
    workspace: Optional[Path] = typer.Option(None, help="Workspace (default $ANCHORLAB_HOME or ./anchorlab-runs)."),
):
    """Serve optuna-dashboard (an optional extra: pip install optuna-dashboard) over the search's storage on
    127.0.0.1 until Ctrl-C."""
    import importlib.util
    import shutil
    import subprocess

    with user_errors():
        from ablation.search import storage as st
        from ablation.tracking.store import workspace_dir

        search, profile = _search_and_profile(file, profile)
        location = storage or st.default_location(workspace_dir(workspace), search.name, profile)
    module = importlib.util.find_spec("optuna_dashboard") is not None
    exe = shutil.which("optuna-dashboard")
    if not module and exe is None:
        typer.echo("optuna-dashboard is an optional extra and is not installed: pip install optuna-dashboard", err=True)
        raise typer.Exit(1)
    if "://" not in location and not Path(location).expanduser().is_file():
        fail(f"no trials yet: run anchorlab search run {file} --profile {profile}")
    typer.echo(f"optuna-dashboard on http://127.0.0.1:{port} over {location} (study '{search.name}:{profile}'); "
               "Ctrl-C stops it")
    try:
        if module:
            from optuna_dashboard import run_server

            from ablation.execution.queue import QueueError

            try:
                opened = st.open_search_storage(location)
            except QueueError as exc:
                fail(str(exc).splitlines()[0])
            run_server(opened, host="127.0.0.1", port=port)
        else:
            code = subprocess.call([exe, location, "--host", "127.0.0.1", "--port", str(port)])
            if code:
                raise typer.Exit(code)
    except KeyboardInterrupt:
        typer.echo("stopped optuna-dashboard")
