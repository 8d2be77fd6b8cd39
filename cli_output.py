"""How anchorlab commands talk besides their results: log lines, notes, warnings, the progress-line option.

Shared by `cli.py` and `cli_search.py`. Results go to stdout; notes (which profile ran and why) and warnings
go to stderr, so `anchorlab study table F > table.md` holds the table only.
"""
from __future__ import annotations

import logging
import os
import sys

import typer

PROGRESS_HELP = ("Seconds between plain progress lines (run, iteration, loss, it/s, ETA) when stdout is not a "
                 "terminal, e.g. `nohup ... > log`; a terminal shows a live bar instead.")


class _CurrentStderr(logging.StreamHandler):
    """A handler writing to `sys.stderr` as it is at each record, not as it was at start-up: while rich shows a
    live bar or panel, that is rich's proxy, which prints the line above the bar instead of through it."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # logging sets it once at construction; the property always reads sys.stderr
        pass


def setup_logging(verbose: bool) -> None:
    """WARNING and up (INFO with --verbose; anchorlab's own INFO always) on the current stderr."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s",
                        handlers=[_CurrentStderr()])
    logging.getLogger("anchorlab").setLevel(logging.INFO)
    if not verbose:  # MLflow's INFO lines (creating / upgrading the store's tables) are noise in a study's output;
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # read when mlflow is first imported (workers too)


def progress_every_option() -> float:
    """The `--progress-every` option (env ANCHORLAB_PROGRESS_EVERY), one per command that trains."""
    from ablation.display.log_progress import DEFAULT_EVERY_S, ENV

    return typer.Option(DEFAULT_EVERY_S, "--progress-every", envvar=ENV, min=0.1, help=PROGRESS_HELP)


def note(text: str) -> None:
    """A line about what the command chose for the user (e.g. the profile), on stderr."""
    typer.echo(text, err=True)


def warn(text: str) -> None:
    typer.secho(f"warning: {text}", fg=typer.colors.YELLOW, err=True)


__all__ = ["setup_logging", "progress_every_option", "note", "warn", "PROGRESS_HELP"]
