"""The MLflow UI over the workspace's store, as one server that starts and stops as a whole.

`mlflow ui` is a tree of processes: the MLflow command, uvicorn's supervisor and its workers, MLflow's
job runner and its huey consumers. Killing the command alone leaves the rest serving the port, so the
server starts in a session (and process group) of its own, and stopping it signals that whole group:
SIGTERM, then SIGKILL for whatever is still there after `STOP_GRACE_S`. `serve` turns SIGTERM and SIGHUP
(a closed terminal, which no longer reaches the server's own session) into that same stop, like Ctrl-C.
A SIGKILL of the caller cannot be caught: the server then outlives it.

The server takes from seconds to a minute to listen, and prints a page of start-up lines (INFO logs, a
deprecation warning, one access line per request). `serve` calls `on_ready` only once the server answers
(so the URL it shows works), and, unless `verbose`, sends the server's output to a log file in the
workspace (`ui_log`), whose end the CLI shows when the server stops by itself.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ablation.tracking.store import artifact_root, resolve_tracking_uri
# check_can_listen, exposure_warning and ui_banner are imported for the CLI, which needs one import line.
from dashboards.ui_address import (WILDCARD_HOSTS, check_can_listen, exposure_warning, runs_url,  # noqa: F401
                                   server_env, ui_banner)

STOP_GRACE_S = 10.0  # uvicorn finishes open requests on SIGTERM; a stuck worker gets SIGKILL after this
POLL_S = 0.1
STOP_SIGNALS = ("SIGTERM", "SIGHUP")  # SIGINT already arrives as KeyboardInterrupt
START_TIMEOUT_S = 600.0  # a busy 2-core machine took ~50 s; past this the server is stopped and the CLI fails
READY_POLL_S = 0.5
HEALTH_PAGE = "/health"  # the one page MLflow serves whatever the Host header


@dataclass
class Served:
    """How `serve` ended: the server's exit code (0 when stopped), the stop signal's name, whether it answered,
    and whether it was stopped for not answering within the start timeout."""

    code: int
    stopped_by: str | None
    ready: bool
    timed_out: bool = False


class Stopped(Exception):
    """A stop signal arrived; carries its name."""


def ui_command(workspace: Path, tracking_uri: str | None = None, host: str = "127.0.0.1", port: int = 5000,
               workers: int | None = None) -> list[str]:
    """The `mlflow ui` command line for the workspace's store (`workers`: None keeps MLflow's default)."""
    uri = resolve_tracking_uri(tracking_uri, workspace)
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
           "--default-artifact-root", artifact_root(workspace), "--host", host, "--port", str(port)]
    return cmd + (["--workers", str(workers)] if workers is not None else [])


def ui_log(workspace: Path, port: int) -> Path:
    """Where a quiet server's output goes: `<workspace>/mlflow-ui-<port>.log` (replaced at each start)."""
    return Path(workspace) / f"mlflow-ui-{port}.log"


def launch_ui(workspace: Path, tracking_uri: str | None = None, host: str = "127.0.0.1", port: int = 5000,
              workers: int | None = None, log: Path | None = None) -> subprocess.Popen:
    """Start the server in its own session; the caller stops it with `stop_tree`. Its stdout and stderr go to
    `log` when given, else to this process's."""
    env = {**server_env(host, port), **os.environ}  # security lists the user set win over ours
    cmd = ui_command(workspace, tracking_uri, host, port, workers)
    if log is None:
        return subprocess.Popen(cmd, env=env, start_new_session=True)
    with open(log, "wb") as out:
        return subprocess.Popen(cmd, env=env, start_new_session=True, stdout=out, stderr=subprocess.STDOUT)


def probe_url(host: str, port: int) -> str:
    """The health page of a server bound to `host`: over loopback for a wildcard host, else at `host` itself."""
    target = {"::": "::1"}.get(host, "127.0.0.1") if host in WILDCARD_HOSTS else host
    return f"http://[{target}]:{port}{HEALTH_PAGE}" if ":" in target else f"http://{target}:{port}{HEALTH_PAGE}"


def answers(url: str, timeout_s: float = 2.0) -> bool:
    """True when `url` answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.status == 200
    except (OSError, urllib.error.URLError, ValueError):
        return False


def wait_ready(proc: subprocess.Popen, url: str, timeout_s: float = START_TIMEOUT_S) -> bool:
    """Poll `url` until it answers (True), the server exits or `timeout_s` passes (False)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        if answers(url):
            return True
        time.sleep(READY_POLL_S)
    return False


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
          workers: int | None = None, verbose: bool = False, on_ready: Callable[[], None] | None = None,
          start_timeout_s: float = START_TIMEOUT_S) -> Served:
    """Run the UI until it exits or a stop signal (Ctrl-C, SIGTERM, SIGHUP) arrives; then stop its whole tree.

    `on_ready` is called once the server answers (module doc); one that never answers within `start_timeout_s`
    is stopped. Unless `verbose`, the server's output goes to `ui_log(workspace, port)`.
    """
    wanted = [getattr(signal, name) for name in STOP_SIGNALS if hasattr(signal, name)]
    previous = {signal.SIGINT: signal.getsignal(signal.SIGINT)}
    previous.update({signum: signal.signal(signum, _raise_stopped) for signum in wanted})
    proc, ready = None, False
    try:
        proc = launch_ui(workspace, tracking_uri, host, port, workers, None if verbose else ui_log(workspace, port))
        ready = wait_ready(proc, probe_url(host, port), start_timeout_s)
        if not ready:
            code = proc.poll()
            return Served(code or 0, None, False, timed_out=code is None)
        if on_ready is not None:
            on_ready()
        return Served(proc.wait(), None, True)
    except KeyboardInterrupt:
        return Served(0, "SIGINT", ready)
    except Stopped as stop:
        return Served(0, str(stop), ready)
    finally:
        # A second signal must not cut the stop short and leave the group running.
        for signum in previous:
            signal.signal(signum, signal.SIG_IGN)
        if proc is not None:
            stop_tree(proc)
        for signum, handler in previous.items():
            if handler is not None:  # None: a handler set outside Python, which cannot be put back
                signal.signal(signum, handler)


__all__ = ["ui_command", "launch_ui", "stop_tree", "serve", "Served", "ui_log", "probe_url", "answers", "wait_ready",
           "STOP_GRACE_S", "START_TIMEOUT_S", "check_can_listen", "exposure_warning", "ui_banner", "runs_url"]
