"""`anchorlab ui --study FILE --profile P` seen in a real browser: a real smoke study (2 rows x 1 seed of the tiny
config) in a real MLflow SQLite store, the real CLI serving it on a free port, and headless Chromium (Debian's)
fetching the link the CLI prints, taking a screenshot, and clicking from that link to MLflow's comparison page.

What Chromium showed here (MLflow 3.17.2, Chromium 150), recorded so the assertions below can be read:
- the printed link (`#/experiments/<id>/runs?workflowType=machine_learning&viewStateShareKey=anchorlab-rows-smoke`)
  opens "Runs - Experiment <id> - MLflow": the switch on "Model training", the saved view "anchorlab: rows · smoke"
  with its shared-view banner, the filter `tags.role = 'row' and tags.profile = 'smoke'`, "Sort: val/AP", the two
  runs "ATSS · seed 0" and "Max IoU · seed 0" (not the parent "demo [smoke]"), "2 matching runs", and columns
  Run Name, Created, Duration, then Metrics val/AP, val/AP50, val/AP75, then Tags method, row, seed (MLflow puts
  metrics before tags and sorts tags by name; the grid renders only the columns in the window: at 1400 px wide,
  with the MLflow Assistant panel open on the right, the tag columns are off-screen and `seed` is not even in
  the DOM, hence the wide window for the DOM checks). The MLflow Assistant panel is open on every page.
- the plain experiment URL `#/experiments/<id>` in a fresh browser opens "Overview - Experiment <id> - MLflow":
  the GenAI overview (Observability; Usage / Quality / Tool calls; Traces, Latency, Errors, "Token Usage",
  "Tokens per Trace", "Cost Breakdown", "Detect Issues") and no run at all, although the experiment is tagged
  `mlflow.experimentKind = custom_model_development`. Its strings below are absent from the runs page.
- from the link to a side-by-side comparison: one click on each row's checkbox, then "Compare" (3 clicks for
  2 rows; the header's "Select all runs" checkbox makes it 2); the comparison page "Comparing 2 Runs from 1
  Experiment" lists both run names, their params and tags side by side; its metrics table is a 300 px scroll
  box sorted by name, where val/* come last, below the assign/* and loss metrics.
"""
from __future__ import annotations

import json
import os
import re
import select
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import quote, unquote

import pytest
from PIL import Image

from ablation.study.expand import load_study
from tests.conftest import data_workspace
from tests.test_report import _not_blank
from tests.test_study import empty_store, with_store, write_study  # noqa: F401  (empty_store: a fixture)
from tests.test_ui import _free_port, _kill_all, _start_ui, _tree, _wait_for_banner

CHROMIUM = Path("/usr/bin/chromium")
SHOT = Path("/tmp/anchorlab-ui-shot.png")  # a stable place for a person to look at
ITERATIONS = 20
WINDOW = (1400, 1000)
WIDE = (2400, 1000)  # every column of the saved view in the grid's DOM (it renders only what fits the window)
VIEW_COLUMNS = ("tags.`row`", "tags.`method`", "tags.`seed`", "metrics.`val/AP`")
# Shown by MLflow 3.17's GenAI experiment overview only (module doc); the runs page has none of them.
GENAI_OVERVIEW = ("Tokens per Trace", "Cost Breakdown", "Token Usage", "Detect Issues")
BUDGETS_MS = (10000, 30000, 60000)  # virtual time: waits for the page's fetches, then runs its timers
CLICK_TIMEOUT_S = 60.0
DUMP_TIMEOUT_S = 180
BODY_TEXT = "document.body ? document.body.innerText : ''"

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="headless Chromium not installed (/usr/bin/chromium; "
                                                              "Debian: apt-get install chromium)")


def _flags(profile: Path, window: tuple[int, int]) -> list[str]:
    """A fresh browser profile each time: MLflow keeps the GenAI / Model training switch in the browser."""
    shutil.rmtree(profile, ignore_errors=True)
    return [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
            f"--window-size={window[0]},{window[1]}"]


def _killpg(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)  # the browser and its zygote, renderer and GPU processes
    except (ProcessLookupError, PermissionError):
        pass


def _dump(url: str, tmp: Path, ready: tuple[str, ...], window=WIDE, shot: Path | None = None) -> str:
    """The DOM of `url` once one of `ready` is in it (a longer virtual-time budget per try, on a busy machine)."""
    dom = ""
    for budget in BUDGETS_MS:
        extra = [f"--screenshot={shot}"] if shot else []
        proc = subprocess.Popen([*_flags(tmp / "profile", window), f"--virtual-time-budget={budget}", *extra,
                                 "--dump-dom", url], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                start_new_session=True)
        try:
            dom = proc.communicate(timeout=DUMP_TIMEOUT_S)[0]
        except subprocess.TimeoutExpired:
            dom = ""
        finally:
            _killpg(proc.pid)
            proc.wait(timeout=30)
        if any(marker in dom for marker in ready):
            return dom
    return dom


def _title(dom: str) -> str:
    found = re.search(r"<title>([^<]*)</title>", dom)
    return found.group(1) if found else ""


class _Browser:
    """Headless Chromium driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`: JSON messages
    ended by NUL, Chromium reading fd 3 and writing fd 4), so a test clicks as a user does, with no extra package."""

    def __init__(self, profile: Path, window=WINDOW):
        to_browser, self._out = os.pipe()
        self._in, from_browser = os.pipe()
        line = shlex.join([*_flags(profile, window), "--remote-debugging-pipe", "about:blank"])
        self.proc = subprocess.Popen(["bash", "-c", f"exec {line} 3<&{to_browser} 4>&{from_browser}"],
                                     pass_fds=(to_browser, from_browser), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        os.close(to_browser)
        os.close(from_browser)
        self._buffer, self._id, self.session = b"", 0, None
        try:
            target = self.send("Target.createTarget", url="about:blank")["targetId"]
            self.session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
            self.send("Emulation.setDeviceMetricsOverride", width=window[0], height=window[1], deviceScaleFactor=1,
                      mobile=False)
        except BaseException:
            self.close()
            raise

    def send(self, method: str, **params) -> dict:
        self._id += 1
        message = {"id": self._id, "method": method, "params": params}
        if self.session and not method.startswith("Target."):
            message["sessionId"] = self.session
        os.write(self._out, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + 60
        while True:  # events and other replies are skipped
            while b"\0" not in self._buffer:
                left = deadline - time.monotonic()
                assert left > 0 and select.select([self._in], [], [], left)[0], f"no answer to {method}"
                chunk = os.read(self._in, 1 << 16)
                assert chunk, f"Chromium closed the pipe (exit {self.proc.poll()})"
                self._buffer += chunk
            raw, _, self._buffer = self._buffer.partition(b"\0")
            reply = json.loads(raw)
            if reply.get("id") == self._id:
                assert "error" not in reply, (method, reply["error"])
                return reply["result"]

    def js(self, expression: str):
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    def until(self, expression: str, what: str, timeout=CLICK_TIMEOUT_S):
        """The first truthy value of `expression`, polled (a page still loading may throw: not yet)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.js(f"(() => {{ try {{ return {expression}; }} catch (e) {{ return null; }} }})()")
            if value:
                return value
            time.sleep(0.25)
        pytest.fail(f"{what}: not within {timeout:.0f} s; the page says: {self.js(BODY_TEXT)[:1500]}")

    def click(self, selector_js: str, what: str) -> None:
        """A mouse press and release at the middle of the element `selector_js` evaluates to, as a user clicks."""
        x, y = self.until(f"(() => {{ const e = {selector_js}; if (!e) return null; e.scrollIntoView({{block: "
                          "'center', inline: 'center'}); const r = e.getBoundingClientRect(); "
                          "return r.width && r.height ? [r.x + r.width / 2, r.y + r.height / 2] : null; })()", what)
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    def close(self) -> None:
        try:
            self.send("Browser.close")
            self.proc.wait(timeout=20)
        except (AssertionError, OSError, subprocess.TimeoutExpired):
            pass
        _killpg(self.proc.pid)  # whatever is left of its session
        self.proc.wait(timeout=30)
        os.close(self._in)
        os.close(self._out)


@pytest.fixture(scope="module")
def ui(tmp_path_factory, synth_data, empty_store):  # noqa: F811
    """The study trained once, then `anchorlab ui --study FILE --profile smoke` serving it on a free port."""
    from mlflow import MlflowClient

    from ablation.execution.launcher import RunnerSettings, run_study

    root = tmp_path_factory.mktemp("ui_browser")
    ws = data_workspace(root / "ws", synth_data)
    uri = with_store(ws, empty_store)
    profiles = {"smoke": {"overrides": {"train.iterations": ITERATIONS, "train.checkpoint_every": 0}}}
    study = load_study(write_study(root, profiles=profiles))
    result = run_study(study, "smoke", RunnerSettings(workers=1, poll_s=0.5), ws, uri)
    assert result.counts["finished"] == 2, result.table
    rows = {r.info.run_name: r.info.run_id for r in MlflowClient(uri).search_runs(
        [MlflowClient(uri).get_experiment_by_name(study.name).experiment_id], "tags.role = 'row'")}

    port = _free_port()
    proc, out, err = _start_ui(root, "--study", str(study.path), "--profile", "smoke", "--port", str(port),
                               "--workers", "1")
    tree: dict[int, int] = {}
    try:
        lines = _wait_for_banner(proc, port, out, err)
        tree = _tree(proc.pid)
        link = next(line for line in lines if line.startswith("runs of ")).split(": ", 1)[1]
        exp_id = re.fullmatch(rf"http://127\.0\.0\.1:{port}/#/experiments/(\d+)/runs\?.*", link).group(1)
        yield SimpleNamespace(root=root, port=port, link=link, exp_id=exp_id, rows=rows,
                              parent=(result.parent_run_id, f"{study.name} [smoke]"))
    finally:
        _kill_all(proc, {**tree, **_tree(proc.pid)} if proc.poll() is None else tree)


def test_the_link_lists_the_studys_rows_not_the_genai_overview(ui, tmp_path):
    assert sorted(ui.rows) == ["ATSS · seed 0", "Max IoU · seed 0"]  # what the study names its row runs
    assert "workflowType=machine_learning" in ui.link and "viewStateShareKey=anchorlab-rows-smoke" in ui.link
    dom = _dump(ui.link, tmp_path, ready=("matching runs", *GENAI_OVERVIEW))
    assert _title(dom) == f"Runs - Experiment {ui.exp_id} - MLflow", _title(dom)
    for name, run_id in ui.rows.items():
        assert f'row-id="{run_id}"' in dom and f">{name}</span></a>" in dom, name
    parent_id, parent_name = ui.parent
    assert f'row-id="{parent_id}"' not in dom and parent_name not in dom  # the view lists the rows alone
    assert re.search(r">2</[^>]*>\s*(<[^>]*>\s*)*matching runs", dom), "not '2 matching runs'"
    for column in VIEW_COLUMNS:  # the saved view's columns, each in the grid's header
        assert f'col-id="{column}"' in dom, column
    for value in ("max_iou", "atss", "Max IoU", "ATSS"):  # row and method tags in their cells
        assert f">{value}<" in dom, value
    assert "anchorlab: rows · smoke" in dom and "Sort: val/AP" in dom
    shown = [marker for marker in GENAI_OVERVIEW if marker in dom]
    assert not shown, f"the GenAI overview is shown: {shown}"

    # The same experiment without the link's query, in a fresh browser: MLflow opens its GenAI overview, which
    # shows the strings asserted absent above (were it to open the runs, those absences would prove nothing).
    plain = _dump(f"http://127.0.0.1:{ui.port}/#/experiments/{ui.exp_id}", tmp_path, ready=GENAI_OVERVIEW)
    assert _title(plain) == f"Overview - Experiment {ui.exp_id} - MLflow", _title(plain)
    assert all(marker in plain for marker in GENAI_OVERVIEW), [m for m in GENAI_OVERVIEW if m not in plain]
    assert not any(name in plain for name in ui.rows)


def test_a_screenshot_of_the_link_shows_the_runs_page(ui, tmp_path):
    shot = tmp_path / "runs.png"
    dom = _dump(ui.link, tmp_path, ready=("matching runs", *GENAI_OVERVIEW), window=WINDOW, shot=shot)
    assert shot.is_file(), "Chromium wrote no screenshot"
    image = Image.open(shot)
    assert image.size == WINDOW and _not_blank(image)
    # the same page load's DOM: the screenshot is of the runs page with both rows in view
    assert _title(dom) == f"Runs - Experiment {ui.exp_id} - MLflow" and all(name in dom for name in ui.rows)
    assert not [marker for marker in GENAI_OVERVIEW if marker in dom]
    shutil.copy(shot, SHOT)
    print(f"screenshot of {ui.link}: {SHOT}")


ROW_CHECKBOX = ("document.querySelector('.ag-pinned-left-cols-container [row-id=\"{run_id}\"] "
                ".ag-selection-checkbox input')")
COMPARE_BUTTON = ("[...document.querySelectorAll('button')].find(b => b.innerText.trim() === 'Compare' "
                  "&& !b.disabled)")


SELECT_ALL = "document.querySelector('input[aria-label=\"Select all runs\"]')"


def _clicks_to_compare(profile: Path, link: str, checkboxes: list[str]) -> tuple[int, str, str]:
    """A new browser opens `link`, clicks each checkbox, then Compare: (clicks, the comparison's URL, its text).
    A new one each time: the UI keeps a selection across its pages, so a second visit would start selected."""
    browser = _Browser(profile)
    try:
        browser.send("Page.navigate", url=link)
        browser.until("document.body.innerText.includes('matching runs')", "the runs table")
        assert browser.js(COMPARE_BUTTON.replace("&& !b.disabled", "")) is None  # no Compare before a selection
        clicks = 0
        for checkbox in checkboxes:
            clicks += 1
            for attempt in range(3):  # a click that lands while the grid is still wiring its handlers is lost (seen
                browser.click(checkbox, f"the checkbox {checkbox}")  # on a loaded machine): a user clicks again
                try:
                    browser.until(f"{checkbox}.checked", f"{checkbox} checked", timeout=20 if attempt < 2 else 60)
                    break
                except pytest.fail.Exception:
                    if attempt == 2:
                        raise
        browser.click(COMPARE_BUTTON, "the Compare button")
        clicks += 1
        url = browser.until("location.hash.startsWith('#/compare-runs') && location.href", "the comparison page")
        browser.until("document.body.innerText.includes('Comparing 2 Runs')", "the comparison rendered")
        return clicks, unquote(url), browser.js(BODY_TEXT)
    finally:
        browser.close()


def test_from_the_link_a_comparison_of_the_rows_takes_one_click_per_row_and_compare(ui, tmp_path):
    """As a user: each row's checkbox, then Compare (3 clicks); the header's 'Select all runs' makes it 2."""
    by_row = _clicks_to_compare(tmp_path / "cdp", ui.link, [ROW_CHECKBOX.format(run_id=i) for i in ui.rows.values()])
    by_all = _clicks_to_compare(tmp_path / "cdp", ui.link, [SELECT_ALL])
    assert (by_row[0], by_all[0]) == (len(ui.rows) + 1, 2) == (3, 2)
    for clicks, url, text in (by_row, by_all):
        runs = json.loads(re.search(r"runs=(\[[^\]]*\])", url).group(1))
        assert sorted(runs) == sorted(ui.rows.values()), url  # the rows, and not the parent run
        assert all(name in text for name in ui.rows) and "Comparing 2 Runs from 1 Experiment" in text


def test_the_comparison_url_of_the_row_runs_renders_both(ui, tmp_path):
    runs = quote(json.dumps(sorted(ui.rows.values()), separators=(",", ":")))
    url = f"http://127.0.0.1:{ui.port}/#/compare-runs?runs={runs}&experiments={quote(json.dumps([ui.exp_id]))}"
    dom = _dump(url, tmp_path, ready=("Comparing 2 Runs",))
    assert _title(dom) == "Compare Runs - MLflow" and "Comparing 2 Runs from 1 Experiment" in dom
    for name, run_id in ui.rows.items():
        assert name in dom and run_id in dom, name
    assert ">atss<" in dom and ">max_iou<" in dom  # the method tag side by side
