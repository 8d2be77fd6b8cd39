"""Study files: one-line file:line errors, expansion, dry-run, and tables rendered from a real MLflow store."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from ablation.study.expand import expand, load_study, spec_hash, with_seeds
from ablation.study.source import StudyError
from ablation.tables.build import build_table
from ablation.tables.render import render
from ablation.tracking.reader import runs_frame
from tests.conftest import TINY

REPO = Path(__file__).resolve().parents[1]
SMOKE = {"overrides": {"train.iterations": 4, "train.checkpoint_every": 2}}


def write_study(folder: Path, rows=None, name="demo", **extra) -> Path:
    """A study over the TINY config with a `smoke` profile; max_iou / atss rows (rows=False: none)."""
    body = {
        "name": name, "description": "test study", "paper": {"title": "T", "table": "Table 9", "file": "x.txt"},
        "base": TINY, "seeds": [0], "metrics": ["AP", "AP50", "AP75"], "profiles": {"smoke": SMOKE},
        "rows": rows if rows is not None else [
            {"label": "Max IoU", "overrides": {"assign.name": "max_iou"}, "reference": {"AP": 30.0, "AP50": 50.0}},
            {"label": "ATSS", "overrides": {"assign": {"name": "atss"}}},
        ],
    }
    body.update(extra)
    if rows is False:
        del body["rows"]
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False, allow_unicode=True))
    return path


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory) -> Path:
    """An initialised MLflow SQLite file, copied into workspaces (creating one takes seconds)."""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("store") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


def with_store(workspace: Path, empty_store: Path) -> str:
    shutil.copy(empty_store, workspace / "mlflow.db")
    return f"sqlite:///{workspace / 'mlflow.db'}"


# ---------------------------------------------------------------- schema errors
def _lines_of(text: str, needle: str) -> int:
    """Line of the first occurrence of `needle` ('text#2': of the second)."""
    needle, _, nth = needle.partition("#")
    hits = [i for i, line in enumerate(text.splitlines(), 1) if needle in line]
    return hits[int(nth or 1) - 1]


@pytest.mark.parametrize("case", [
    # (what, study body edits, text on the offending line, expected message part)
    ("row typo", {"rows": [{"label": "A"}, {"label": "B", "overrides": {"train.iteratons": 5}}]}, "iteratons",
     "rows[1].overrides: unknown key 'train.iteratons'; valid keys here: iterations, batch_size"),
    ("nested typo", {"rows": [{"label": "A", "overrides": {"model": {"head": {"widht": 8}}}}]}, "widht",
     "rows[0].overrides: unknown key 'model.head.widht'; valid keys here: num_convs"),
    ("wrong type", {"rows": [{"label": "A", "overrides": {"train.batch_size": "many"}}]}, "many",
     "rows[0].overrides: train.batch_size: expected an integer, got 'many'"),
    ("unknown assigner", {"rows": [{"label": "A", "overrides": {"assign.name": "nope"}}]}, "nope",
     "rows[0].overrides: assign.name: 'nope' is not one of max_iou, atss"),
    ("profile typo", {"profiles": {"smoke": {"overrides": {"train.iterationz": 3}}}}, "iterationz",
     "profiles.smoke: unknown key 'train.iterationz'"),
    ("profile key", {"profiles": {"smoke": {"override": {}}}}, "override:",
     "profiles.smoke.override: unknown key 'override'; valid keys here: description, configs, overrides, seeds"),
    ("missing base file", {"base": "studies/configs/nope.yaml"}, "nope.yaml", "base: config file not found"),
    ("duplicate label", {"rows": [{"label": "A"}, {"label": "A", "overrides": {"assign.name": "atss"}}]},
     "- label: A#2", "rows[1].label: 'A' repeats rows[0]"),
    ("same config twice", {"rows": [{"label": "A"}, {"label": "B"}]}, "- label: B",
     "rows[1]: 'B' resolves to the same config as 'A'"),
    ("seed in a row", {"rows": [{"label": "A", "overrides": {"train.seed": 11}}]}, "seed: 11",
     "train.seed is set by the study's 'seeds'"),
    ("bad metric", {"metrics": ["AP", "mAP"]}, "mAP", "metrics: 'mAP' is not one of AP, AP50"),
    ("bad reference", {"rows": [{"label": "A", "reference": {"APx": 3}}]}, "APx",
     "rows[0].reference.APx: not a metric"),
    ("layout label", {"layout": [{"title": "L", "rows": ["Max IoU", "Nope"]}]}, "Nope", "no row is labelled 'Nope'"),
    ("both rows and axes", {"axes": {"values": {"assign.atss.topk": [5, 9]}}}, None,
     "give either 'rows' (explicit) or 'axes' (generated)"),
    ("seeds", {"seeds": [0, "one"]}, "seeds:", "seeds: expected a non-empty list of integers"),
    ("baseline label", {"baseline": "Nope"}, "baseline: Nope",
     "baseline: no row is labelled 'Nope'; labels: Max IoU, ATSS"),
])
def test_schema_errors_are_one_line_with_file_and_line(tmp_path, case):
    what, edits, needle, expected = case
    path = write_study(tmp_path, **edits)
    with pytest.raises(StudyError) as info:
        load_study(path)
    message = str(info.value)
    assert "\n" not in message, message
    assert expected in message, message
    if needle is not None:
        line = _lines_of(path.read_text(), needle)
        assert message.startswith(f"{path}:{line}: "), (message, line)


@pytest.mark.parametrize("what, edits, needle, expected", [
    ("row value", {"rows": [{"label": "A", "overrides": {"train.iterations": "twenty"}}]}, "twenty",
     "rows[0].overrides: train.iterations: expected an integer, got 'twenty'"),
    ("row section", {"rows": [{"label": "A", "overrides": {"train": "fast"}}]}, "fast",
     "rows[0].overrides: train: expected a mapping, got 'fast'"),
    ("study value", {"overrides": {"train": {"log_every": "often"}}}, "often",
     "overrides: train.log_every: expected an integer, got 'often'"),
    ("row range", {"rows": [{"label": "A", "overrides": {"train.iterations": -5}}]}, "-5",
     "rows[0].overrides: train.iterations: must be >= 1, got -5"),
])
def test_override_types_are_checked_even_when_every_profile_replaces_them(tmp_path, what, edits, needle, expected):
    """A wrong value that no resolved config keeps is still a mistake in the file: one line, at its line."""
    replacing = {"train.iterations": 3, "train.log_every": 1}
    profiles = {"smoke": {"overrides": {**SMOKE["overrides"], **replacing}}, "other": {"overrides": replacing}}
    path = write_study(tmp_path, profiles=profiles, **edits)
    with pytest.raises(StudyError) as info:
        load_study(path)
    message = str(info.value)
    assert "\n" not in message, message
    assert message.startswith(f"{path}:{_lines_of(path.read_text(), needle)}: {expected}"), message


def test_duplicate_yaml_key_and_malformed_yaml(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nseeds: [0]\nseeds: [1]\n")
    with pytest.raises(StudyError, match=r"bad.yaml:3: malformed YAML \(duplicate key 'seeds'\)"):
        load_study(path)
    path.write_text("name: x\nrows: [a, b\n")
    with pytest.raises(StudyError, match=r"bad.yaml:\d+: malformed YAML"):
        load_study(path)


# ---------------------------------------------------------------- expansion
def test_expansion_order_seeds_and_profiles(tmp_path):
    path = write_study(
        tmp_path, seeds=[0, 1], overrides={"train.base_lr": 0.02},
        rows=[{"label": "Max IoU", "overrides": {"assign.name": "max_iou", "train.iterations": 99}},
              {"label": "ATSS", "overrides": {"assign.name": "atss", "model.anchors.octave_base_scale": 6.0}}],
        profiles={"smoke": SMOKE, "other": {"overrides": {"train.batch_size": 1}, "seeds": [7]}},
    )
    study = load_study(path)
    specs = expand(study, "smoke")
    assert [(s.label, s.seed, s.row) for s in specs] == [("Max IoU", 0, 0), ("Max IoU", 1, 0), ("ATSS", 0, 1),
                                                          ("ATSS", 1, 1)]
    first = specs[0].config
    assert first.train.iterations == 4  # the profile is applied after the row
    assert first.train.base_lr == 0.02 and first.assign.name == "max_iou"
    assert specs[2].config.model.anchors.octave_base_scale == 6.0
    assert specs[1].config.train.seed == 1
    assert len({s.key for s in specs}) == 4
    warnings = study.warnings["smoke"]
    assert any("profile 'smoke' replaces it with 4" in w and "train.iterations=99" in w for w in warnings)
    assert [s.seed for s in expand(study, "other")] == [7, 7]
    assert spec_hash(study, "smoke") != spec_hash(study, "other")
    with pytest.raises(StudyError, match="choose a profile with --profile: smoke, other"):
        expand(study)
    with pytest.raises(StudyError, match="no profile 'paper'; profiles: smoke, other"):
        expand(study, "paper")


def test_row_profile_overrides_apply_after_the_profile_without_a_warning(tmp_path):
    """A row whose axis is what profiles set (a schedule length) gives its value per profile."""
    rows = [{"label": "Short", "overrides": {"assign.name": "atss"},
             "profile_overrides": {"smoke": {"train.iterations": 2}, "other": {"train": {"iterations": 30}}}},
            {"label": "Long", "overrides": {"assign.name": "atss"}, "profile_overrides": {"smoke": {"train.iterations": 6}}}]
    path = write_study(tmp_path, rows=rows, profiles={"smoke": SMOKE, "other": {"overrides": {"train.iterations": 9}}})
    study = load_study(path)
    assert [s.config.train.iterations for s in expand(study, "smoke")] == [2, 6]
    assert [s.config.train.iterations for s in expand(study, "other")] == [30, 9]
    assert expand(study, "smoke")[0].config.train.checkpoint_every == 2  # the rest of the profile still applies
    assert study.warnings["smoke"] == [] and study.warnings["other"] == []


@pytest.mark.parametrize("rows, needle, expected", [
    ([{"label": "A", "profile_overrides": {"papr": {"train.iterations": 3}}}], "papr",
     "rows[0].profile_overrides: no profile 'papr'; profiles: smoke"),
    ([{"label": "A", "profile_overrides": {"smoke": {"train.iterations": "ten"}}}], "ten",
     "rows[0].profile_overrides.smoke: train.iterations: expected an integer, got 'ten'"),
    ([{"label": "A", "profile_overrides": {"smoke": {"train.seed": 3}}}], "train.seed",
     "rows[0].profile_overrides.smoke: train.seed is set by the study's 'seeds'"),
    ([{"label": "A", "profile_overrides": {"smoke": {"train.iteratons": 3}}}], "iteratons",
     "unknown key"),
])
def test_row_profile_overrides_errors_name_the_key_and_line(tmp_path, rows, needle, expected):
    path = write_study(tmp_path, rows=rows)
    with pytest.raises(StudyError) as info:
        load_study(path)
    message = str(info.value)
    assert "\n" not in message and expected in message, message
    if needle != "papr":  # an unknown profile is reported at its row
        assert message.startswith(f"{path}:{_lines_of(path.read_text(), needle)}: "), message


def test_seeds_replace_a_profiles_seeds_in_a_copy(tmp_path):
    from cli import app

    path = write_study(tmp_path, seeds=[0, 1, 2], profiles={"smoke": SMOKE})
    study = load_study(path)
    one = with_seeds(study, "smoke", [0])
    assert [s.seed for s in expand(one, "smoke")] == [0, 0]
    assert [s.seed for s in expand(study, "smoke")] == [0, 1, 2, 0, 1, 2]  # the original is untouched
    # the same run keys as the full profile's seed-0 runs: a one-seed run is reused by the three-seed one
    assert {s.key for s in expand(one, "smoke")} <= {s.key for s in expand(study, "smoke")}
    assert [s.seed for s in expand(with_seeds(study, "smoke", [5, 3]), "smoke")] == [5, 3, 5, 3]
    for bad in ([], [1, 1], [-1]):
        with pytest.raises(StudyError, match="--seeds"):
            with_seeds(study, "smoke", bad)
    result = CliRunner().invoke(app, ["study", "run", str(path), "--profile", "smoke", "--seeds", "0,x", "--dry-run",
                                      "--workspace", str(tmp_path / "ws")])
    assert result.exit_code != 0 and "--seeds: expected comma-separated integers" in result.output
    result = CliRunner().invoke(app, ["study", "run", str(path), "--profile", "smoke", "--seeds", "1", "--dry-run",
                                      "--workspace", str(tmp_path / "ws")])
    assert result.exit_code == 0 and "2 pending" in result.output, result.output


def test_axes_grid_zip_labels_and_references(tmp_path):
    axes = {"values": {"assign.atss.topk": [5, 9], "model.anchors.octave_base_scale": [4.0, 8.0]},
            "label": "K={assign.atss.topk} s={model.anchors.octave_base_scale}",
            "reference": {"K=5 s=4.0": {"AP": 40.0}}}
    path = write_study(tmp_path, rows=False, axes=axes, overrides={"assign.name": "atss"})
    study = load_study(path)
    assert [r.label for r in study.rows] == ["K=5 s=4.0", "K=5 s=8.0", "K=9 s=4.0", "K=9 s=8.0"]
    assert study.rows[0].reference == {"AP": 40.0}
    assert expand(study, "smoke")[3].config.assign.atss.topk == 9
    path = write_study(tmp_path, rows=False, axes={**axes, "mode": "zip"}, overrides={"assign.name": "atss"})
    assert [r.label for r in load_study(path).rows] == ["K=5 s=4.0", "K=9 s=8.0"]


def test_row_bases_relative_to_the_study_or_the_repo(tmp_path):
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "mine.yaml").write_text(yaml.safe_dump({**TINY, "assign": {"name": "atss"}}))
    path = write_study(tmp_path, rows=[
        {"label": "local", "base": "cfg/mine.yaml"},
        {"label": "repo", "base": "studies/configs/retinanet_iou.yaml"},
        {"label": "inline", "base": {**TINY, "assign": {"name": "max_iou"}}},
    ])
    specs = expand(load_study(path), "smoke")
    assert [s.config.assign.name for s in specs] == ["atss", "max_iou", "max_iou"]
    assert specs[1].config.model.anchors.scales_per_octave == 3  # from the repo's retinanet config


def test_dry_run_lists_runs_and_creates_nothing(tmp_path, monkeypatch):
    from cli import app

    ws = tmp_path / "ws"
    path = write_study(tmp_path, seeds=[0, 1])
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    result = CliRunner().invoke(app, ["study", "run", str(path), "--profile", "smoke", "--dry-run", "--workspace",
                                      str(ws)])
    assert result.exit_code == 0, result.output
    specs = expand(load_study(path), "smoke")
    for spec in specs:
        line = next(x for x in result.output.splitlines() if spec.key in x)
        assert spec.label in line and f" {spec.seed} " in line and "pending" in line and line.rstrip().endswith("run")
    assert "4 pending" in result.output
    assert not (ws / "mlflow.db").exists() and not (ws / "queue").exists()


def test_malformed_study_is_one_line_cli_error(tmp_path):
    from cli import app

    path = write_study(tmp_path, rows=[{"label": "A", "overrides": {"train.iteratons": 5}}])
    result = CliRunner().invoke(app, ["study", "run", str(path), "--profile", "smoke", "--workspace",
                                      str(tmp_path / "ws")])
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0
    assert "error: " in result.output and "unknown key 'train.iteratons'" in result.output


# ---------------------------------------------------------------- tables from a real store
def _fake_run(client, exp_id, spec, status, ap=None, parent=None, reason=""):
    tags = {"role": "row", "run_key": spec.key, "study": spec.study, "row": spec.label}
    if parent:
        tags["mlflow.parentRunId"] = parent
    run = client.create_run(exp_id, tags=tags, run_name=spec.run_name)
    if ap is not None:
        for name, value in (("val/AP", ap), ("val/AP50", ap + 0.2), ("val/AP75", ap - 0.1)):
            client.log_metric(run.info.run_id, name, value)
    if reason:
        client.set_tag(run.info.run_id, "failure_reason", reason)
    client.set_terminated(run.info.run_id, status)
    return run.info.run_id


def test_table_from_a_real_store(tmp_path, empty_store, monkeypatch):
    from mlflow import MlflowClient

    from cli import app

    ws = tmp_path / "ws"
    ws.mkdir()
    uri = with_store(ws, empty_store)
    rows = [{"label": "Max IoU", "overrides": {"assign.name": "max_iou"}, "reference": {"AP": 30.0, "AP50": 50.0}},
            {"label": "ATSS", "overrides": {"assign.name": "atss"}},
            {"label": "FSR (>0.3)", "overrides": {"assign.name": "atss", "assign.atss.topk": 3},
             "reference": "training failed"},
            {"label": "Fig.3 (a)", "overrides": {"assign.name": "atss", "assign.atss.topk": 5}}]
    layout = [{"title": "left", "label_header": "Anchor Sep.",
               "groups": [{"title": "", "rows": ["Max IoU", "ATSS"]}, {"title": "FSR", "rows": ["FSR (>0.3)"]}]},
              {"title": "right", "rows": ["Fig.3 (a)"]}]
    study = load_study(write_study(tmp_path, rows=rows, seeds=[0, 1], layout=layout))
    specs = expand(study, "smoke")
    client = MlflowClient(uri)
    exp_id = client.create_experiment(study.name, artifact_location=(tmp_path / "artifacts").as_uri())
    parent = client.create_run(exp_id, tags={"role": "study", "profile": "smoke"}).info.run_id
    by = {(s.label, s.seed): s for s in specs}
    _fake_run(client, exp_id, by["Max IoU", 0], "FINISHED", 0.30, parent)
    _fake_run(client, exp_id, by["Max IoU", 1], "FINISHED", 0.32, parent)
    _fake_run(client, exp_id, by["ATSS", 0], "FINISHED", 0.40, parent)
    _fake_run(client, exp_id, by["ATSS", 1], "FAILED", reason="diverged at iteration 3")
    _fake_run(client, exp_id, by["FSR (>0.3)", 0], "FAILED", reason="diverged at iteration 2")
    _fake_run(client, exp_id, by["FSR (>0.3)", 1], "FAILED", reason="diverged at iteration 2")
    _fake_run(client, exp_id, by["FSR (>0.3)", 1], "KILLED")  # an older attempt: FAILED/KILLED, not FINISHED

    table = build_table(study, "smoke", runs_frame(uri, study.name, "tags.role = 'row'"))
    md = render(table, "md", reference=True)
    assert "| Anchor Sep. | AP | AP paper | ΔAP |" in md
    # mean ± 95% half-width over 2 seeds: t(0.975, 1) * stdev / sqrt(2) = 12.706 * 1.414 / 1.414
    assert "| Max IoU | 31.0 ± 12.7 | 30.0 | +1.0 | 51.0 ± 12.7 | 50.0 | +1.0 |" in md
    # one seed of two finished: no interval (†), and no bold: ATSS shares one seed with the runner-up
    assert "| ATSS | 40.0*† | - |  | 60.0*† |" in md
    assert "| FSR (>0.3) | training failed | training failed |" in md
    assert "| Fig.3 (a) | pending |" in md
    assert "* mean over the finished seeds only" in md and "FSR (>0.3): diverged at iteration 2" in md
    assert "± 95% confidence half-width over the finished seeds (Student t)" in md and "† 1 seed: no interval" in md
    assert ("no bold in AP, AP50, AP75 (left): the best and the runner-up share fewer than 2 finished seeds"
            in md) and "**" not in md.split("\n", 1)[1]
    assert md.index("*left*") < md.index("Max IoU") < md.index("*FSR*") < md.index("*right*") < md.index("Fig.3 (a)")
    latex = render(table, "latex")
    assert r"40.0*$^\dagger$" in latex and r"31.0 $\pm$ 12.7" in latex and r"\midrule" in latex
    assert r"\textbf" not in latex
    html = render(table, "html")
    assert "<td>40.0*†</td>" in html and "<b>" not in html
    csv_text = render(table, "csv", reference=True).splitlines()
    assert csv_text[0].startswith("table,group,label,status,seeds_done,seeds_total,AP,AP_ci95,AP_n,AP_best,AP_paper,")
    assert csv_text[1].startswith("left,,Max IoU,done,2,2,31.00,12.71,2,0,30.00,1.00")
    assert csv_text[2].startswith("left,,ATSS,partial,1,2,40.00,,1,0,,")

    out = tmp_path / "t.tex"
    result = CliRunner().invoke(app, ["study", "table", str(study.path), "--profile", "smoke", "--format", "latex",
                                      "--out", str(out), "--workspace", str(ws), "--tracking-uri", uri])
    assert result.exit_code == 0, result.output
    assert r"40.0*$^\dagger$" in out.read_text()
    assert "tables/smoke.tex" in {a.path for a in client.list_artifacts(parent, "tables")}
    result = CliRunner().invoke(app, ["study", "table", str(study.path), "--profile", "smoke", "--workspace", str(ws),
                                      "--tracking-uri", uri])
    assert result.exit_code == 0 and "| Max IoU | 31.0 ± 12.7 |" in result.output


def test_status_reports_states_from_the_store(tmp_path, empty_store):
    from mlflow import MlflowClient

    from ablation.execution.launcher import RunnerSettings, plan
    from cli import app

    ws = tmp_path / "ws"
    ws.mkdir()
    uri = with_store(ws, empty_store)
    study = load_study(write_study(tmp_path, rows=[
        {"label": "A", "overrides": {"assign.name": "max_iou"}}, {"label": "B", "overrides": {"assign.name": "atss"}},
        {"label": "C", "overrides": {"assign.name": "atss", "assign.atss.topk": 3}}]))
    a, b, c = expand(study, "smoke")
    client = MlflowClient(uri)
    exp_id = client.create_experiment(study.name, artifact_location=(tmp_path / "artifacts").as_uri())
    _fake_run(client, exp_id, a, "FINISHED", 0.25)
    _fake_run(client, exp_id, b, "FAILED", reason="diverged at iteration 2")
    entries, running = plan(study, "smoke", ws, uri, RunnerSettings())
    assert [(e.state, e.action) for e in entries] == [("finished", "reuse (AP 25.0%)"),
                                                      ("failed", "skip: diverged at iteration 2"), ("pending", "run")]
    assert running == []
    entries, _ = plan(study, "smoke", ws, uri, RunnerSettings(retry_failed=True))
    assert entries[1].action == "retry"
    result = CliRunner().invoke(app, ["study", "status", str(study.path), "--profile", "smoke", "--workspace", str(ws),
                                      "--tracking-uri", uri])
    assert result.exit_code == 0, result.output
    assert a.key in result.output and "1 finished, 1 failed, 1 pending" in result.output


def test_shipped_studies_validate_with_paper_and_quick_profiles():
    paths = sorted(p for p in (REPO / "studies").glob("*.yaml") if not p.name.startswith("search_"))  # searches: their own loader
    assert len(paths) >= 6
    for path in paths:
        study = load_study(path)
        assert {"paper", "quick"} <= set(study.profiles), path
        assert study.paper.get("table") and study.paper.get("file"), path
        for profile in ("paper", "quick"):
            assert expand(study, profile), path
        assert all(s.config.model.backbone.name == "tiny" for s in expand(study, "quick")), path


def test_study_yaml_reads_exponent_floats_with_line_numbers(tmp_path):
    from ablation.study.source import read_yaml

    path = tmp_path / "s.yaml"
    path.write_text("name: s\noverrides: {train.base_lr: 1e-4, train.weight_decay: 2.5e-5}\n")
    raw = read_yaml(path)
    assert raw["overrides"] == {"train.base_lr": 1e-4, "train.weight_decay": 2.5e-5}
    assert raw.lines["overrides"] == 2
