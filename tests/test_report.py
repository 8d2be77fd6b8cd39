"""`anchorlab report`: a study's self-contained HTML page, from a real smoke study (2 rows x 2 seeds of the tiny
config, one of them PAA, trained here on a real MLflow SQLite store), checked for valid embedded figures, no
network reference, the caption of what ran, the copy on the parent run, and rendered in headless Chromium.
"""
from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess
from html import unescape
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image, ImageStat
from typer.testing import CliRunner

from ablation.study.expand import load_study
from tests.conftest import TINY, data_workspace
from tests.test_study import empty_store, with_store, write_study  # noqa: F401  (empty_store: a fixture)

CHROMIUM = Path("/usr/bin/chromium")
ITERATIONS = 30
PAPER_CAPTION = "Table 9: COCO minival, ResNet-50, 135k iterations"
ROWS = [{"label": "ATSS", "overrides": {"assign.name": "atss", "model.head.aux": "centerness"},
         "reference": {"AP": 39.4, "AP50": 57.4}},
        {"label": "PAA", "overrides": {"assign.name": "paa", "model.head.aux": "iou"},
         "reference": {"AP": 41.0, "AP50": 59.1}}]
EVAL = {"nms_recall": True, "aspect_ap": True, "crowd_ap": True}  # FreeAnchor's metrics, cheap on 4 val images


def _write(folder: Path, rows=ROWS) -> Path:
    profiles = {"smoke": {"description": "seconds per run", "overrides": {
        "train.iterations": ITERATIONS, "train.record_every": 10, "train.checkpoint_every": 0}},
        "other": {"overrides": {"train.iterations": 5}}, "paper": {"overrides": {"train.iterations": 135000}}}
    layout = [{"title": PAPER_CAPTION, "label_header": "Method", "rows": [r["label"] for r in rows]}]
    return write_study(folder, rows=rows, name="report_demo", base={**TINY, "eval": EVAL}, seeds=[0, 1],
                       metrics=["AP", "AP50", "NR", "AP_slender"], profiles=profiles, layout=layout)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, synth_data, empty_store):  # noqa: F811
    """The study trained once for the module, and its report written by the CLI."""
    from ablation.execution.launcher import RunnerSettings, run_study
    from cli import app

    root = tmp_path_factory.mktemp("report")
    ws = data_workspace(root / "ws", synth_data)
    uri = with_store(ws, empty_store)
    study = load_study(_write(root))
    result = run_study(study, "smoke", RunnerSettings(workers=1, poll_s=0.5), ws, uri)
    assert result.counts["finished"] == 4, result.table
    out = root / "page"
    cli = CliRunner().invoke(app, ["report", str(study.path), "--profile", "smoke", "--reference", "--out", str(out),
                                   "--workspace", str(ws), "--tracking-uri", uri])
    assert cli.exit_code == 0, cli.output
    return SimpleNamespace(root=root, ws=ws, uri=uri, study=study, parent=result.parent_run_id, page=out / "index.html",
                           output=cli.output)


def _images(html: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)]


def _not_blank(image: Image.Image) -> bool:
    """More than one colour and a spread of grey levels: something was drawn."""
    stat = ImageStat.Stat(image.convert("L"))
    colours = image.convert("RGB").getcolors(image.width * image.height)
    return stat.stddev[0] > 5 and len(colours) > 20


def test_the_page_holds_every_figure_as_a_valid_png(smoke):
    html = smoke.page.read_text(encoding="utf-8")
    images = _images(html)
    # AP per row, positives over training, 3 GMM iterations (1, 20, 30), NMS recall, AP by aspect and by
    # crowdedness; each row's assignment on one val image (ATSS, PAA) and the best row's detections
    assert len(images) == 11 == html.count("<img ")
    assert "Assignment on one val image" in html and "Detections on sample val images" in html
    for data in images:
        image = Image.open(io.BytesIO(data))
        image.verify()  # a truncated or corrupt PNG raises
        image = Image.open(io.BytesIO(data))
        assert image.format == "PNG" and image.width > 300 and image.height > 200 and _not_blank(image)
    assert f"wrote {smoke.page}" in smoke.output and "11 figures embedded" in smoke.output


def test_the_page_is_self_contained(smoke):
    html = smoke.page.read_text(encoding="utf-8")
    assert '<meta charset="utf-8">' in html and "default-src 'none'" in html
    assert not re.search(r"https?://", html)
    assert "<link" not in html and "<script" not in html and "@import" not in html and "url(" not in html
    for attribute in re.findall(r'(?:src|href)="([^"]*)"', html):
        assert attribute.startswith("data:image/png;base64,"), attribute[:80]


def test_the_caption_says_what_ran_not_the_papers_setting(smoke):
    html = smoke.page.read_text(encoding="utf-8")
    caption = html[html.index('<div class="caption">'): html.index("</div>")]
    assert "Profile smoke: seconds per run" in caption
    assert f"{ITERATIONS} iterations at batch 2" in caption and "Seeds: 0, 1 (4 runs: 2 rows x 2 seeds)" in caption
    assert "embedded synthetic benchmark, 8 train / 4 val images of 96 px" in caption and "test 96 px" in caption
    assert PAPER_CAPTION not in html and "135k" not in html
    # the table with intervals, significance notes and, with --reference, the paper's values beside ours
    assert "<th>AP paper</th>" in html and "<td>39.4</td>" in html and "confidence half-width" in html
    assert "GMM fits (PAA)" in html and "NMS recall" in html and "Positives per GT over training" in html
    # `study table` under the smoke profile leaves the paper's caption out too; under paper it is the table's title
    from ablation.execution.launcher import study_table

    smoke_md = study_table(smoke.study, "smoke", "md", workspace=smoke.ws, tracking_uri=smoke.uri, log=False)
    assert PAPER_CAPTION not in smoke_md and "profile smoke" in smoke_md
    assert PAPER_CAPTION in study_table(smoke.study, "paper", "md", workspace=smoke.ws, tracking_uri=smoke.uri, log=False)


def test_the_page_is_logged_to_the_parent_run(smoke, tmp_path):
    import mlflow.artifacts
    from mlflow import MlflowClient

    assert "report/index.html" in {f.path for f in MlflowClient(smoke.uri).list_artifacts(smoke.parent, "report")}
    local = mlflow.artifacts.download_artifacts(run_id=smoke.parent, artifact_path="report/index.html",
                                                dst_path=str(tmp_path), tracking_uri=smoke.uri)
    assert Path(local).read_bytes() == smoke.page.read_bytes()
    assert f"logged it to the MLflow parent run {smoke.parent}" in smoke.output


def test_gmm_records_name_the_image_and_class_and_viz_still_draws_them(smoke, tmp_path):
    from ablation.tracking.reader import by_key, record_iterations, run_records, runs_frame
    from cli import app

    runs = [r for r in by_key(runs_frame(smoke.uri, smoke.study.name, "tags.role = 'row'")).values()
            if r.tags["row"] == "PAA"]
    assert len(runs) == 2
    run_id = runs[0].run_id
    assert record_iterations(smoke.uri, run_id, "gmm_fits") == [1, 10, 20, 30]
    records = run_records(smoke.uri, run_id, "gmm_fits", [30])
    assert [it for it, _ in records] == [30]
    for rec in records[0][1]:
        assert isinstance(rec["image_id"], int) and rec["class_name"] and not rec["class_name"].isdigit()
    result = CliRunner().invoke(app, ["viz", "assign", run_id, "--out", str(tmp_path), "--no-log",
                                      "--workspace", str(smoke.ws), "--tracking-uri", smoke.uri])
    assert result.exit_code == 0, result.output
    drawn = sorted((tmp_path / run_id / "gmm_fits").glob("*.png"))
    assert len(drawn) == 4 and all(Image.open(p).info.get("dpi", (0, 0))[0] == pytest.approx(150, abs=1)
                                   for p in drawn)


def test_missing_rows_and_profiles_are_notes_not_errors(smoke, tmp_path):
    from dashboards.study_report import build_study_report

    extra = [{"label": "ATSS top 5", "overrides": {"assign.name": "atss", "assign.atss.topk": 5,
                                                  "model.head.aux": "centerness"}},
             {"label": "FCOS inside", "overrides": {"assign.name": "fcos_inside"}}]
    study = load_study(_write(tmp_path, ROWS + extra))  # same experiment, two rows that never ran
    report = build_study_report(study, "smoke", smoke.ws, smoke.uri, tmp_path / "more", log=False)
    assert "ATSS top 5: no finished run under profile smoke" in report.notes
    assert "<td>ATSS top 5</td><td>pending</td>" in report.html and not report.logged
    rules = next(s for s in report.sections if s.title.startswith("Positive points per rule"))
    assert len(rules.figures) == 1  # geometry only: drawn without a trained model
    never = build_study_report(study, "other", smoke.ws, smoke.uri, tmp_path / "other")
    assert never.parent_run_id is None and not never.logged and len(never.figures) == 1  # the point rules
    assert "Profile other" in never.html and "no row has a value yet" in never.html
    paper = build_study_report(study, "paper", smoke.ws, smoke.uri, tmp_path / "paper")
    assert "135000 iterations" in paper.html and PAPER_CAPTION in paper.html  # under the paper profile it is true
    assert "the paper's value as a red cross" in unescape(paper.html)


def _chromium(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    base = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
            "--enable-logging=stderr", "--v=0"]
    return subprocess.run(base + args, capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(not CHROMIUM.exists(), reason="headless Chromium not installed (/usr/bin/chromium; Debian: "
                                                   "apt-get install chromium)")
def test_chromium_renders_the_page_with_every_image_loaded(smoke, tmp_path):
    shot = tmp_path / "page.png"
    done = _chromium([f"--screenshot={shot}", "--window-size=1280,2000", smoke.page.as_uri()], tmp_path)
    assert shot.is_file(), done.stderr[-2000:]
    image = Image.open(shot)
    assert image.size == (1280, 2000) and _not_blank(image)
    shutil.copy(shot, smoke.root / "screenshot.png")  # kept with the module's files, for a look

    # The same page with one inline script (allowed by a widened CSP, nothing else) that counts decoded images
    html = smoke.page.read_text(encoding="utf-8")
    csp = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
    probe = ("<script>window.addEventListener('load', function () { var all = Array.from(document.images); "
             "document.body.setAttribute('data-loaded', all.filter(function (i) { return i.complete && "
             "i.naturalWidth > 0; }).length + '/' + all.length); });</script>")
    page = tmp_path / "probe.html"
    page.write_text(html.replace(csp, csp + "; script-src 'unsafe-inline'").replace("</body>", probe + "</body>"),
                    encoding="utf-8")
    done = _chromium(["--dump-dom", page.as_uri()], tmp_path)
    assert 'data-loaded="11/11"' in done.stdout, done.stderr[-2000:]
    console = [line for line in done.stderr.splitlines() if "CONSOLE" in line]
    assert not console, console  # a blocked or failed load is reported here ("violates ... Content Security Policy")
    assert "<table>" in done.stdout and "pending" not in done.stdout


# ---------------------------------------------------------------- figures from plain data (nothing trains)
def test_record_names_and_figures_of_older_or_missing_data(tmp_path):
    import torch

    from dashboards.assign_figures import panel_title, plot_gmm_fits
    from dashboards.study_figures import RowValue, plot_assignment_over_training, plot_metric_per_row
    from detector.engine.records import with_names

    recs = [{"image": 1, "gt": 0, "label": 2, "scores": [0.2, 0.3, 0.9, 1.0], "positive": [True, True, False, False],
             "means": [0.25, 0.95], "stds": [0.05, 0.05], "weights": [0.5, 0.5], "n_candidates": 4, "n_positives": 2,
             "boundary": 0.3}]
    named = with_names(recs, torch.tensor([17, 42]), ["circle", "square", "ring"])
    assert named[0]["image_id"] == 42 and named[0]["class_name"] == "ring" and "image_id" not in recs[0]
    assert with_names({"counts": [1]}, torch.tensor([1]), []) == {"counts": [1]}
    assert panel_title(named[0]) == "image 42 · ring" and panel_title(recs[0]) == "batch image 1 · class 2"
    for name, data in (("named", named), ("older", recs)):
        path = plot_gmm_fits(data, tmp_path / f"{name}.png", "t")
        assert Image.open(path).info["dpi"][0] == pytest.approx(150, abs=1)
    values = [RowValue("a", 30.0, 2.0, {0: 29.0, 1: 31.0}, 35.0), RowValue("never ran", None, None)]
    assert _not_blank(Image.open(plot_metric_per_row(values, "AP", tmp_path / "ap.png")))
    curves = {"a": {0: [(1, 3.0), (2, 4.0)], 1: [(1, 5.0)]}, "no curve": {0: []}}
    path = plot_assignment_over_training(curves, {"a": {0: [(1, 0.1)]}}, tmp_path / "curves.png")
    assert _not_blank(Image.open(path))


def test_the_freeanchor_panel_plots_the_tables_values_in_percent(smoke):
    from dashboards.study_panels import _values
    from dashboards.study_report import report_data

    data = report_data(smoke.study, "smoke", smoke.ws, smoke.uri)
    cells = {r.label: r.values for r in data.table_rows()}
    plotted = dict(_values(data, ("NR", "AP_slender")))
    assert plotted, "no row has NR"
    for label, found in plotted.items():
        for name, value in found.items():
            assert 0 <= value.mean <= 100 and value.mean == pytest.approx(cells[label][name].mean), (label, name)
