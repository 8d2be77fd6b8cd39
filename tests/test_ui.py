"""`anchorlab ui` with real processes: the real CLI starts a real MLflow server on a free port, and real
signals stop it. Every process a test starts is killed in a `finally`, whatever the assertions said."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 240.0  # four uvicorn workers and MLflow's job runner start slowly on a busy 2-core machine
STOP_TIMEOUT_S = 60.0
# An API page rather than /health: MLflow checks the Host header on every page except its health check.
API_PAGE = "/ajax-api/2.0/mlflow/experiments/search?max_results=1"
CREATE_PAGE = "/ajax-api/2.0/mlflow/experiments/create"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_ui(tmp_path: Path, *args: str) -> tuple[subprocess.Popen, Path, Path]:
    """The installed `anchorlab` script in a session of its own (so a leftover server can be found and killed)."""
    exe = Path(sys.executable).parent / "anchorlab"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "cli"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_SERVER_ALLOWED_HOSTS"):
        env.pop(name, None)
    out, err = tmp_path / "ui.out", tmp_path / "ui.err"
    with open(out, "wb") as o, open(err, "wb") as e:
        proc = subprocess.Popen([*cmd, "ui", "--workspace", str(tmp_path / "ws"), *args], cwd=REPO, env=env,
                                stdout=o, stderr=e, start_new_session=True)
    return proc, out, err


def _request(port: int, path: str, host_header: str | None = None, origin: str | None = None,
             body: dict | None = None) -> int:
    """The HTTP status of a GET (or, with `body`, a JSON POST) to the server, as a browser at `host_header` sends it."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if host_header:
        request.add_header("Host", host_header)
    if origin:
        request.add_header("Origin", origin)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _wait_for_banner(proc: subprocess.Popen, port: int, out: Path, err: Path) -> list[str]:
    """stdout's lines once the CLI has printed where the UI is; the server must answer at that moment already."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"anchorlab ui exited with {proc.returncode}: {err.read_text()[-2000:]}"
        lines = out.read_text().splitlines()
        if any(line.startswith("MLflow UI:") for line in lines):
            assert _request(port, "/health") == 200, "the URL was printed before the server answered"
            return lines
        time.sleep(0.2)
    pytest.fail(f"anchorlab ui printed no URL within {START_TIMEOUT_S:.0f} s")


def _processes() -> dict[int, tuple[int, int, str]]:
    """pid -> (parent pid, process group, state) of every process on this machine (Linux /proc)."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # the command name may hold spaces and parentheses
        out[int(entry.name)] = (int(fields[1]), int(fields[2]), fields[0])
    return out


def _tree(root: int) -> dict[int, int]:
    """pid -> process group of `root`'s descendants."""
    procs = _processes()
    found, frontier = {}, [root]
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, pgid, _) in procs.items():
            if ppid == parent and pid not in found:
                found[pid] = pgid
                frontier.append(pid)
    return found


def _survivors(tree: dict[int, int]) -> list[int]:
    """Live (not zombie) processes that were in the tree, or that are in one of its process groups now."""
    groups = set(tree.values()) - {os.getpgrp()}
    return sorted(pid for pid, (_, pgid, state) in _processes().items()
                  if state != "Z" and (pid in tree or pgid in groups))


def _kill_all(proc: subprocess.Popen, tree: dict[int, int]) -> None:
    """Whatever the test left: the CLI's session, the server's, and each process seen in the tree."""
    groups = {proc.pid, *tree.values()} - {os.getpgrp()}
    for pgid in groups:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    for pid in tree:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    proc.wait(timeout=30)


def _port_closed(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def _stop_and_check(proc: subprocess.Popen, signum: int, port: int, err: Path) -> dict[int, int]:
    """Send `signum` to the CLI alone; once it exits, nothing of the server it started may be left."""
    tree = _tree(proc.pid)
    assert len(tree) >= 2, f"expected the MLflow server's processes under the CLI, found {tree}"
    proc.send_signal(signum)
    proc.wait(timeout=STOP_TIMEOUT_S)
    assert _survivors(tree) == [], f"processes of the server survived {signal.Signals(signum).name}"
    assert _port_closed(port), f"port {port} still answers after {signal.Signals(signum).name}"
    assert "Traceback" not in err.read_text()
    return tree


def test_sigterm_stops_the_whole_server_tree(tmp_path):
    """Also: the URL and the experiment's link come once the server answers, and MLflow's own start-up lines go
    to the log file, not to the terminal."""
    from ablation.tracking.store import ensure_experiment

    ws = tmp_path / "ws"
    ws.mkdir()
    exp_id = ensure_experiment("demo", f"sqlite:///{ws}/mlflow.db", ws)
    port = _free_port()
    proc, out, err = _start_ui(tmp_path, "--port", str(port), "--workers", "2", "--experiment", "demo")
    tree: dict[int, int] = {}
    try:
        lines = _wait_for_banner(proc, port, out, err)
        assert lines[0] == f"MLflow UI: http://127.0.0.1:{port}  (Ctrl-C to stop)"
        assert lines[1] == (f"runs of demo: http://127.0.0.1:{port}/#/experiments/{exp_id}/runs"
                            "?workflowType=machine_learning")
        log = ws / f"mlflow-ui-{port}.log"
        assert err.read_text().splitlines() == [f"starting the MLflow server (its output: {log}) ..."]
        assert "INFO" in log.read_text() and "INFO" not in out.read_text()
        tree = _tree(proc.pid)
        _stop_and_check(proc, signal.SIGTERM, port, err)
    finally:
        _kill_all(proc, {**tree, **_tree(proc.pid)} if proc.poll() is None else tree)


def test_any_other_host_warns_shows_real_addresses_and_sigint_stops_the_tree(tmp_path):
    port = _free_port()
    hostname = socket.gethostname()
    proc, out, err = _start_ui(tmp_path, "--host", "0.0.0.0", "--port", str(port), "--workers", "1", "--verbose")
    tree: dict[int, int] = {}
    try:
        lines = _wait_for_banner(proc, port, out, err)
        warnings = [line for line in err.read_text().splitlines() if line.startswith("warning:")]
        assert len(warnings) == 1 and "no authentication" in warnings[0], err.read_text()[-2000:]
        assert "INFO" in err.read_text()  # --verbose: MLflow's own start-up lines reach the terminal
        assert not (tmp_path / "ws" / f"mlflow-ui-{port}.log").exists()
        shown = next(line for line in lines if line.startswith("MLflow UI:"))
        assert shown.startswith(f"MLflow UI: http://{hostname}:{port}"), shown
        assert not shown.startswith(f"MLflow UI: http://127.0.0.1"), shown
        # the address shown is served: MLflow's Host-header check would refuse the machine's name by default
        here = f"{hostname}:{port}"
        assert _request(port, API_PAGE, host_header=here) == 200
        assert _request(port, API_PAGE, host_header=f"evil.example:{port}") == 403
        # the UI opened at that address may write (its own origin); a page of another site may not
        assert _request(port, CREATE_PAGE, here, origin=f"http://{here}", body={"name": "from-the-lan"}) == 200
        assert _request(port, CREATE_PAGE, here, origin="http://evil.example", body={"name": "evil"}) == 403
        tree = _tree(proc.pid)
        _stop_and_check(proc, signal.SIGINT, port, err)
    finally:
        _kill_all(proc, {**tree, **_tree(proc.pid)} if proc.poll() is None else tree)


# ---------------------------------------------------------------- addresses and the command line, no server
def test_loopback_hosts():
    from dashboards.ui_address import is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1") and is_loopback("127.0.0.2")
    assert not is_loopback("0.0.0.0") and not is_loopback("::") and not is_loopback("192.0.2.7")


def test_urls_show_where_the_server_listens():
    from dashboards.ui_address import ui_urls

    assert ui_urls("127.0.0.1", 5000) == ["http://127.0.0.1:5000"]
    assert ui_urls("::1", 5000) == ["http://[::1]:5000"]
    assert ui_urls("192.0.2.7", 5123) == ["http://192.0.2.7:5123"]
    everywhere = ui_urls("0.0.0.0", 5123)
    assert everywhere[0] == f"http://{socket.gethostname()}:5123"
    assert all("127.0.0.1" not in url and "0.0.0.0" not in url for url in everywhere), everywhere


def test_ui_command_reads_the_workspace_store(tmp_path, monkeypatch):
    from ablation.tracking.store import artifact_root
    from dashboards.ui import ui_command

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cmd = ui_command(tmp_path, host="0.0.0.0", port=5123, workers=2)
    assert cmd[1:4] == ["-m", "mlflow", "ui"]
    assert cmd[cmd.index("--backend-store-uri") + 1] == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert cmd[cmd.index("--default-artifact-root") + 1] == artifact_root(tmp_path)
    assert cmd[cmd.index("--host") + 1] == "0.0.0.0" and cmd[cmd.index("--port") + 1] == "5123"
    assert cmd[cmd.index("--workers") + 1] == "2"
    assert "--workers" not in ui_command(tmp_path)


def test_server_env_admits_exactly_the_addresses_shown():
    from dashboards.ui_address import server_env, ui_urls

    assert server_env("127.0.0.1", 5000) == {} and server_env("localhost", 5000) == {}
    env = server_env("0.0.0.0", 5123)
    hosts = env["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
    assert f"{socket.gethostname()}:*" in hosts and "localhost:*" in hosts and "[[]::1]:*" in hosts and "10.*" in hosts
    assert env["MLFLOW_SERVER_CORS_ALLOWED_ORIGINS"].split(",") == ui_urls("0.0.0.0", 5123)


def test_a_port_in_use_is_one_error_line_and_starts_nothing(tmp_path):
    """MLflow logs the failed bind among its start-up lines and exits 0; anchorlab says it first, in one line."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        proc, out, err = _start_ui(tmp_path, "--port", str(port))
        try:
            code = proc.wait(timeout=STOP_TIMEOUT_S)
        finally:
            _kill_all(proc, {})
    assert code == 2, (code, out.read_text()[-500:])
    assert err.read_text().splitlines() == [f"error: cannot listen on 127.0.0.1:{port} (Address already in use); "
                                            "choose another --port or --host"]
    assert out.read_text() == ""


def test_a_server_that_dies_at_start_is_one_error_line_with_its_reason(tmp_path):
    """MLflow's traceback stays in the log file; the CLI quotes its last line and exits non-zero, printing no URL."""
    proc, out, err = _start_ui(tmp_path, "--port", str(_free_port()), "--tracking-uri", "bogus://nowhere")
    try:
        code = proc.wait(timeout=START_TIMEOUT_S)
    finally:
        _kill_all(proc, {})
    lines = err.read_text().splitlines()
    assert code == 1 and out.read_text() == "", (code, lines)
    assert lines[0].startswith("starting the MLflow server (its output: ") and len(lines) == 2, lines
    assert lines[1].startswith("error: the MLflow server exited with code 1 before it answered: ") and \
        "bogus://nowhere" in lines[1] and "Traceback" not in err.read_text()
