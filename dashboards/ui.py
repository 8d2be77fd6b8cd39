"""The MLflow UI over the workspace's store, as one server that starts and stops as a whole.

`mlflow ui` is a tree of processes: the MLflow command, uvicorn's supervisor and its workers, MLflow's
job runner and its huey consumers. Killing the command alone leaves the rest serving the port, so the
server starts in a session (and process group) of its own, and stopping it signals that whole group:
SIGTERM, then SIGKILL for whatever is still there after `STOP_GRACE_S`. `serve` turns SIGTERM and SIGHUP
(a closed terminal, which no longer reaches the server's own session) into that same stop, like Ctrl-C.
A SIGKILL of the caller cannot be caught: the server then outlives it.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from ablation.tracking.store import artifact_root, resolve_tracking_uri
# check_can_listen, exposure_warning and ui_banner are imported for the CLI, which needs one import line.
from dashboards.ui_address import check_can_listen, exposure_warning, server_env, ui_banner  # noqa: F401

STOP_GRACE_S = 10.0  # uvicorn finishes open requests on SIGTERM; a stuck worker gets SIGKILL after this
POLL_S = 0.1
STOP_SIGNALS = ("SIGTERM", "SIGHUP")  # SIGINT already arrives as KeyboardInterrupt


class Stopped(Exception):
    """A stop signal arrived; carries its name."""


def ui_command(workspace: Path, tracking_uri: str | None = None, host: str = "127.0.0.1", port: int = 5000,
               workers: int | None = None) -> list[str]:
    """The `mlflow ui` command line for the workspace's store (`workers`: None keeps MLflow's default)."""
    uri = resolve_tracking_uri(tracking_uri, workspace)
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
           "--default-artifact-root", artifact_root(workspace), "--host", host, "--port", str(port)]
    return cmd + (["--workers", str(workers)] if workers is not None else [])


def launch_ui(workspace: Path, tracking_uri: str | None = None, host: str = "127.0.0.1", port: int = 5000,
              workers: int | None = None) -> subprocess.Popen:
    """Start the server in its own session; the caller stops it with `stop_tree`."""
    env = {**server_env(host, port), **os.environ}  # security lists the user set win over ours
    return subprocess.Popen(ui_command(workspace, tracking_uri, host, port, workers), env=env,
                            start_new_session=True)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a member we may not signal still exists
        return True
    return True


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        pass


def stop_tree(proc: subprocess.Popen, grace_s: float = STOP_GRACE_S) -> None:
    """Stop every process of the server's group: SIGTERM, then SIGKILL after `grace_s`; returns when none is left.

    The group id is the server's pid (it leads its own session), and outlives it while any member lives.
    """
    pgid = proc.pid
    _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        proc.poll()  # reap the leader: a zombie still counts as a member of the group
        if not _group_alive(pgid):
            return
        time.sleep(POLL_S)
    _signal_group(pgid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + grace_s  # orphans are reaped by init, not by us: give it a moment
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(POLL_S)


def _raise_stopped(signum: int, _frame) -> None:
    raise Stopped(signal.Signals(signum).name)


def serve(workspace: Path, tracking_uri: str | None = None, host: str = "127.0.0.1", port: int = 5000,
          workers: int | None = None) -> tuple[int, str | None]:
    """Run the UI until it exits or a stop signal (Ctrl-C, SIGTERM, SIGHUP) arrives; then stop its whole tree.

    Returns (the server's exit code, None) when it exited by itself, or (0, the signal's name) when stopped.
    """
    wanted = [getattr(signal, name) for name in STOP_SIGNALS if hasattr(signal, name)]
    previous = {signal.SIGINT: signal.getsignal(signal.SIGINT)}
    previous.update({signum: signal.signal(signum, _raise_stopped) for signum in wanted})
    proc = None
    try:
        proc = launch_ui(workspace, tracking_uri, host, port, workers)
        return proc.wait(), None
    except KeyboardInterrupt:
        return 0, "SIGINT"
    except Stopped as stop:
        return 0, str(stop)
    finally:
        # A second signal must not cut the stop short and leave the group running.
        for signum in previous:
            signal.signal(signum, signal.SIG_IGN)
        if proc is not None:
            stop_tree(proc)
        for signum, handler in previous.items():
            if handler is not None:  # None: a handler set outside Python, which cannot be put back
                signal.signal(signum, handler)


__all__ = ["ui_command", "launch_ui", "stop_tree", "serve", "STOP_GRACE_S", "check_can_listen", "exposure_warning",
           "ui_banner"]
