"""`anchorlab ui`: the MLflow UI over the workspace's store, and the link to a study's runs in it.

Thin, like `cli.py` (which registers `ui`); the server is `dashboards.ui`'s, the link `dashboards.ui_address`'s.
"""
from __future__ import annotations

import shlex
from pathlib import Path
from typing import Optional

import typer

from cli_errors import fail, user_errors

LAST_LINE_CHARS = 300  # of a quiet server's last output line, quoted when it stops by itself


def _experiment(study_file: Optional[Path], profile: Optional[str],
                experiment: Optional[str]) -> tuple[str | None, str | None, list[str] | None]:
    """(experiment name, profile, the study's metrics: None for a plain experiment) from `--study FILE [--profile
    P]` or `--experiment NAME`."""
    if study_file is None:
        return experiment, None, None
    from ablation.study.expand import load_study

    study = load_study(study_file)
    if profile is not None and profile not in study.profiles:
        fail(f"{study_file}: no profile '{profile}' (the study has {', '.join(study.profiles)})")
    return study.name, profile, list(study.metrics)


def study_link(base: str, tracking_uri: str, experiment: str, profile: str | None,
               metrics: list[str] | None = None) -> str:
    """The UI's page of `experiment`'s runs under `base`: for a study (`metrics` given), its rows view
    (`ablation.tracking.views`, written now if missing; a store that refuses the write gets the plain link).
    A one-line error when the store holds no such experiment."""
    from ablation.tracking.reader import experiment_id
    from ablation.tracking.views import ensure_rows_view
    from dashboards.ui_address import runs_url

    found = experiment_id(tracking_uri, experiment)
    if found is None:
        fail(f"no experiment '{experiment}' in {tracking_uri}: run the study first (anchorlab study run FILE)")
    view = ensure_rows_view(tracking_uri, found, profile, metrics) if metrics is not None else None
    return runs_url(base, found, profile, view)


def ui_hint(study_file: Path, profile: str, workspace: Optional[Path], tracking_uri: Optional[str], resolved_uri: str,
            experiment: str, metrics: list[str]) -> str:
    """What `study run` prints last: the link itself for a tracking server, else the `anchorlab ui` command."""
    if resolved_uri.startswith(("http://", "https://")):
        return f"its runs in the MLflow UI: {study_link(resolved_uri, resolved_uri, experiment, profile, metrics)}"
    words = ["anchorlab", "ui", "--study", str(study_file), "--profile", profile]
    words += ["--workspace", str(workspace)] if workspace else []
    words += ["--tracking-uri", tracking_uri] if tracking_uri else []
    return f"open its runs in the MLflow UI with: {shlex.join(words)}"


def _last_line(path: Path) -> str:
    """The last line a quiet server wrote (its error, when it died): quoted in the CLI's one error line."""
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1][:LAST_LINE_CHARS] if lines else ""


def ui(
    workspace: Optional[Path] = typer.Option(None),
    tracking_uri: Optional[str] = typer.Option(None),
    port: int = typer.Option(5000),
    host: str = typer.Option("127.0.0.1", help="Interface to listen on; any but loopback exposes the server."),
    workers: Optional[int] = typer.Option(None, min=1, help="Server worker processes (default: MLflow's, 4)."),
    study: Optional[Path] = typer.Option(None, help="Also print the link to this study's runs (its experiment)."),
    profile: Optional[str] = typer.Option(None, help="With --study: link to this profile's runs only."),
    experiment: Optional[str] = typer.Option(None, help="Also print the link to this experiment's runs."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show the MLflow server's own output (default: it "
                                 "goes to <workspace>/mlflow-ui-<port>.log)."),
):
    """Open the MLflow UI over the workspace's store (Ctrl-C or SIGTERM stops the whole server).

    The URL is printed once the server answers. With --study or --experiment, also the link that opens that
    experiment's runs as model training (MLflow 3's UI otherwise starts on its GenAI pages).
    """
    from ablation.tracking.store import resolve_tracking_uri, workspace_dir
    from dashboards.ui import START_TIMEOUT_S, check_can_listen, exposure_warning, serve, ui_banner, ui_log
    from dashboards.ui_address import ui_urls

    if study is not None and experiment is not None:
        fail("--study and --experiment name the experiment twice: give one")
    if profile is not None and study is None:
        fail("--profile needs --study")
    with user_errors():  # an unwritable workspace, a port in use, a bad study file: one line each
        ws = workspace_dir(workspace)
        check_can_listen(host, port)
        name, only, metrics = _experiment(study, profile, experiment)
        uri = resolve_tracking_uri(tracking_uri, ws)
        link = study_link(ui_urls(host, port)[0], uri, name, only, metrics) if name else None
    if exposure_warning(host, port):
        typer.secho(f"warning: {exposure_warning(host, port)}", fg=typer.colors.YELLOW, err=True)
    log = ui_log(ws, port)
    typer.echo(f"starting the MLflow server{'' if verbose else f' (its output: {log})'} ...", err=True)

    def ready() -> None:
        typer.echo(ui_banner(host, port))
        if link:
            typer.echo(f"runs of {name}{f' [{only}]' if only else ''}: {link}")

    served = serve(ws, tracking_uri, host=host, port=port, workers=workers, verbose=verbose, on_ready=ready)
    if served.stopped_by is None:  # it ended by itself: never what a user wants of a server (e.g. a lost port race)
        if served.timed_out:
            state = f"did not answer within {START_TIMEOUT_S:.0f} s and was stopped"
        else:
            state = (f"exited with code {served.code}" if served.code else "exited") + \
                ("" if served.ready else " before it answered")
        last = "" if verbose else _last_line(log)
        where = "its output is above" if verbose else f"all its output: {log}"
        fail(f"the MLflow server {state}{f': {last}' if last else ''} ({where})", max(served.code, 1))
    typer.echo(f"stopped the MLflow UI ({served.stopped_by})")


__all__ = ["ui", "ui_hint", "study_link"]
