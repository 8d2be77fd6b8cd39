"""What a study looks like in MLflow: experiments that open on their runs, a parent run that carries the table's
summary, child runs named and tagged by row, method and seed, AP in percent for old and new runs alike, the
dataset's counts as params, and the links `anchorlab ui` prints. Real MLflow SQLite stores, real Optuna journals
and a real (tiny) smoke study; no mocks."""
from __future__ import annotations

import json

import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from ablation.study.expand import expand, load_study
from ablation.tables.build import build_table
from ablation.tables.render import render
from ablation.tracking import reader
from ablation.tracking.store import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, ensure_experiment
from ablation.tracking.units import eval_in_percent, in_percent, is_percent_metric, is_percent_name
from ablation.tracking.writer import link_run, tracked_run
from tests.test_study import empty_store, with_store, write_study  # noqa: F401 (a fixture)


# ---------------------------------------------------------------- units
def test_every_ap_type_metric_detector_reports_is_logged_in_percent():
    from detector.evaluation import extra
    from detector.evaluation.coco_eval import STAT_NAMES
    from detector.evaluation.voc_eval import METRIC_NAMES as VOC

    for name in (*STAT_NAMES, *extra.METRIC_NAMES, *VOC):
        assert is_percent_name(name) and is_percent_metric(f"val/{name}"), name
    for key in ("val/iou_pred_error", "val/iou_pred_error_tp", "loss", "assign/gt_without_pos", "AP"):
        assert not is_percent_metric(key), key
    values, no_data = eval_in_percent({"AP": 0.112, "APl": -1.0, "NR50": 0.5, "iou_pred_error": 0.2})
    assert values == {"AP": pytest.approx(11.2), "NR50": 50.0, "iou_pred_error": 0.2} and no_data == ["APl"]
    old = in_percent({"val/AP": 0.3, "val/APl": -1.0, "loss": 0.5}, {})
    assert old == {"val/AP": 30.0, "loss": 0.5}
    assert in_percent({"val/AP": 30.0}, {"metric_unit": "percent"}) == {"val/AP": 30.0}


def _old_style_run(client, exp_id, spec, ap: float) -> str:
    """A FINISHED row run as anchorlab logged it before units: fractions, COCO's -1, data counts as metrics."""
    tags = {"role": "row", "run_key": spec.key, "study": spec.study, "row": spec.label, "checkpoint_iteration": "4"}
    run_id = client.create_run(exp_id, tags=tags, run_name=spec.run_name).info.run_id
    for name, value in (("val/AP", ap), ("val/AP50", ap + 0.2), ("val/AP75", ap - 0.1), ("val/APl", -1.0),
                        ("data/train_images", 8.0)):
        client.log_metric(run_id, name, value)
    client.set_tag(run_id, "outcome", "FINISHED")
    client.set_terminated(run_id, "FINISHED")
    return run_id


def test_old_fraction_runs_and_new_percent_runs_read_alike_in_one_table(tmp_path, empty_store):
    ws = tmp_path / "ws"
    ws.mkdir()
    uri = with_store(ws, empty_store)
    study = load_study(write_study(tmp_path))
    old_spec, new_spec = expand(study, "smoke")
    client = MlflowClient(uri)
    exp_id = ensure_experiment(study.name, uri, ws)
    old = _old_style_run(client, exp_id, old_spec, 0.30)
    with tracked_run(new_spec.config, uri, study.name, ws, new_spec.run_name, new_spec.tags) as hooks:
        hooks.on_eval(4, {"AP": 0.40, "AP50": 0.60, "AP75": 0.30, "APl": -1.0}, {})
    new = hooks.run_id
    assert client.get_run(new).data.metrics["val/AP"] == pytest.approx(40.0)  # stored in percent
    assert client.get_run(old).data.metrics["val/AP"] == pytest.approx(0.30)  # stored in fractions

    md = render(build_table(study, "smoke", reader.runs_frame(uri, study.name, "tags.role = 'row'")), "md")
    assert "| Max IoU | 30.0† | 50.0† | 20.0† |" in md and "| ATSS | 40.0† | 60.0† | 30.0† |" in md
    records = {r.run_id: r for r in reader.records_of(reader.runs_frame(uri, study.name))}
    assert records[old].metrics["val/AP"] == pytest.approx(30.0) and "val/APl" not in records[old].metrics
    assert records[new].metrics["val/AP"] == pytest.approx(40.0) and "val/APl" not in records[new].metrics
    assert reader.run_metrics(uri, old)["val/AP"] == pytest.approx(30.0)
    assert records[old].metrics["data/train_images"] == 8.0  # not an AP: never scaled

    # a link run reusing the old run copies its metrics in percent, with the tag that says so
    link = client.get_run(link_run(old, old_spec.config, uri, "other", ws, old_spec.run_name, old_spec.tags))
    assert link.data.tags["metric_unit"] == "percent" and link.data.metrics["val/AP"] == pytest.approx(30.0)
    assert "val/APl" not in link.data.metrics and link.data.params["data/train_images"] == "8"
    assert not [k for k in link.data.metrics if k.startswith("data/")]


def test_a_run_resumed_from_before_units_keeps_its_fractions(tmp_path, empty_store):
    ws = tmp_path / "ws"
    ws.mkdir()
    uri = with_store(ws, empty_store)
    study = load_study(write_study(tmp_path))
    spec = expand(study, "smoke")[0]
    client = MlflowClient(uri)
    exp_id = ensure_experiment(study.name, uri, ws)
    run_id = client.create_run(exp_id, tags={"run_key": spec.key}).info.run_id
    client.log_metric(run_id, "val/AP", 0.25, step=2)  # an evaluation during training, before a kill
    client.set_terminated(run_id, "KILLED")
    with tracked_run(spec.config, uri, study.name, ws, run_id=run_id) as hooks:
        hooks.on_eval(4, {"AP": 0.35}, {})
    run = client.get_run(run_id)
    assert "metric_unit" not in run.data.tags and run.data.metrics["val/AP"] == pytest.approx(0.35)
    assert reader.run_metrics(uri, run_id)["val/AP"] == pytest.approx(35.0)


def test_rerun_results_and_searches_stored_in_fractions(tmp_path):
    import optuna

    from ablation.execution.queue import QueueError
    from ablation.search import storage as st
    from ablation.search.rerun import from_dict

    old = {"metric": "AP", "maximize": True, "candidates": [
        {"label": "default", "trial": None, "values": {}, "search_value": None, "by_seed": {"0": 0.3, "1": 0.32},
         "failed": {}}]}
    assert from_dict(old).candidates[0].by_seed == {0: pytest.approx(30.0), 1: pytest.approx(32.0)}
    assert from_dict({**old, "unit": "percent"}).candidates[0].by_seed == {0: 0.3, 1: 0.32}
    assert from_dict({**old, "metric": "time/step_s"}).candidates[0].by_seed == {0: 0.3, 1: 0.32}

    storage = st.open_search_storage(str(tmp_path / "s.journal"))
    fresh, created = st.open_study(storage, "fresh:smoke", ["maximize"])
    assert created and fresh.user_attrs["metric_unit"] == "percent"
    before = optuna.create_study(storage=storage, study_name="old:smoke", direction="maximize")
    before.enqueue_trial({})
    trial = before.ask()
    before.tell(trial, 0.31)  # a trial's AP as a fraction, from before units
    with pytest.raises(QueueError, match="holds its objective as fractions"):
        st.open_study(storage, "old:smoke", ["maximize"], metrics=["AP"])
    study, _ = st.open_study(storage, "old:smoke", ["maximize"], metrics=["time/step_s"])  # not an AP: same unit
    assert study.user_attrs["metric_unit"] == "percent"


# ---------------------------------------------------------------- experiments and the parent's summary
def test_experiments_are_tagged_as_model_training(tmp_path, empty_store):
    ws = tmp_path / "ws"
    ws.mkdir()
    uri = with_store(ws, empty_store)
    client = MlflowClient(uri)
    created = ensure_experiment("new", uri, ws)
    assert client.get_experiment(created).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND == "custom_model_development"
    before = client.create_experiment("before")  # made by an older anchorlab: tagged when opened
    assert EXPERIMENT_KIND_TAG not in client.get_experiment(before).tags
    assert ensure_experiment("before", uri, ws) == before
    assert client.get_experiment(before).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND
    chosen = client.create_experiment("chosen", tags={EXPERIMENT_KIND_TAG: "genai_development"})
    ensure_experiment("chosen", uri, ws)  # someone chose another kind: left alone
    assert client.get_experiment(chosen).tags[EXPERIMENT_KIND_TAG] == "genai_development"


def test_summary_params_keep_their_first_values_and_say_the_latest(tmp_path, empty_store):
    from ablation.tracking.summary import log_study_summary, metric_name

    ws = tmp_path / "ws"
    ws.mkdir()
    uri = with_store(ws, empty_store)
    client = MlflowClient(uri)
    run_id = client.create_run(ensure_experiment("s", uri, ws)).info.run_id
    labels = ["FSR (>0.3)", "FSR 0.3", "a/b", "..", "ATSS · PAA"]
    log_study_summary(uri, run_id, {"AP": {label: 1.0 + i for i, label in enumerate(labels)}},
                      {"seeds": "0", "rows": "5"}, {"best_row": "FSR 0.3"}, "| table |", "About.")
    run = client.get_run(run_id)
    assert run.data.metrics == {"AP/FSR 0.3": 1.0, "AP/FSR 0.3_2": 2.0, "AP/a b": 3.0, "AP/row": 4.0,
                                "AP/ATSS PAA": 5.0}
    assert run.data.params == {"seeds": "0", "rows": "5"} and run.data.tags["best_row"] == "FSR 0.3"
    assert run.data.tags["mlflow.note.content"] == "About.\n\n| table |"
    log_study_summary(uri, run_id, {"AP": {"FSR 0.3": 2.5}}, {"seeds": "0,1,2", "rows": "5"}, {})
    run = client.get_run(run_id)
    assert run.data.params["seeds"] == "0" and run.data.tags["latest.seeds"] == "0,1,2"
    assert run.data.metrics["AP/FSR 0.3"] == 2.5 and "latest.rows" not in run.data.tags
    log_study_summary(uri, run_id, {}, {"seeds": "0"}, {})
    assert "latest.seeds" not in client.get_run(run_id).data.tags
    assert metric_name("AP", "x", {"AP/x"}) == "AP/x_2"


def test_a_smoke_study_in_mlflow(tmp_path, workspace, empty_store):
    """Two rows, one seed: the parent carries the table's summary; each child is named and tagged by row,
    method and seed, logs AP in percent, no COCO "no data" value and its dataset counts as params."""
    from ablation.execution.launcher import run_study

    uri = with_store(workspace, empty_store)
    study = load_study(write_study(tmp_path, baseline="Max IoU"))
    result = run_study(study, "smoke", workspace=workspace, tracking_uri=uri)
    assert result.counts["finished"] == 2, result.table
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(study.name)
    assert exp.tags[EXPERIMENT_KIND_TAG] == "custom_model_development"
    runs = client.search_runs([exp.experiment_id])
    children = {r.data.tags["row"]: r for r in runs if r.data.tags.get("role") == "row"}
    parent = client.get_run(result.parent_run_id)

    assert set(children) == {"Max IoU", "ATSS"}
    for label, method in (("Max IoU", "max_iou"), ("ATSS", "atss")):
        run = children[label]
        assert run.info.run_name == f"{label} · seed 0"
        assert (run.data.tags["method"], run.data.tags["seed"], run.data.tags["metric_unit"]) == (method, "0", "percent")
        assert not [k for k in run.data.metrics if k.startswith("data/")]
        assert int(run.data.params["data/train_images"]) == 8 and int(run.data.params["data/val_images"]) == 4
        assert all(v != -1.0 for v in run.data.metrics.values()), run.data.metrics
        assert 0.0 <= run.data.metrics["val/AP"] <= 100.0
        # the parent's AP per row is the table's mean over the finished seeds (one here: the run's own)
        assert parent.data.metrics[f"AP/{label}"] == pytest.approx(run.data.metrics["val/AP"])
    assert parent.data.params == {"study": "demo", "profile": "smoke", "seeds": "0", "rows": "2",
                                  "baseline": "Max IoU"}
    best = max(["Max IoU", "ATSS"], key=lambda label: children[label].data.metrics["val/AP"])  # ties: paper order
    assert parent.data.tags["best_row"] == best and parent.data.tags["best_significant"] == "false"
    assert parent.data.tags["best_metric"] == f"AP {children[best].data.metrics['val/AP']:.1f}"
    assert parent.data.tags["mlflow.note.content"].startswith("test study\n\n") and "| ATSS |" in parent.data.tags[
        "mlflow.note.content"]
    # the experiment's saved view of the profile's rows: what the link from `anchorlab ui --study` opens
    view = json.loads(exp.tags["mlflow.sharedViewState.anchorlab-rows-smoke"])
    assert view["name"] == "anchorlab: rows · smoke" and isinstance(view["createdAt"], int)
    assert json.loads(view["state"]) == {
        "searchFilter": "tags.role = 'row' and tags.profile = 'smoke'", "orderByKey": "metrics.`val/AP`",
        "orderByAsc": False, "selectedColumns": ["tags.`row`", "tags.`method`", "tags.`seed`", "metrics.`val/AP`"]}


# ---------------------------------------------------------------- links to the runs
def test_the_link_opens_the_experiments_runs_as_model_training():
    from dashboards.ui_address import runs_url

    assert runs_url("http://127.0.0.1:5000", "3") == \
        "http://127.0.0.1:5000/#/experiments/3/runs?workflowType=machine_learning"
    assert runs_url("http://h:1/", "3", "quick") == ("http://h:1/#/experiments/3/runs?workflowType=machine_learning"
                                                     "&searchFilter=tags.profile%20%3D%20%27quick%27")
    # a saved view carries its own filter: the UI would ignore it beside one in the link
    assert runs_url("http://h:1", "3", "quick", "anchorlab-rows-quick") == \
        "http://h:1/#/experiments/3/runs?workflowType=machine_learning&viewStateShareKey=anchorlab-rows-quick"


def test_the_rows_view_is_written_once_and_kept_up_to_date(tmp_path, empty_store):
    from ablation.tracking.views import ensure_rows_view

    ws = tmp_path / "ws"
    ws.mkdir()
    uri = with_store(ws, empty_store)
    client = MlflowClient(uri)
    exp_id = ensure_experiment("demo", uri, ws)
    assert ensure_rows_view(uri, exp_id, None, ["VOC07_mAP", "AP"]) == "anchorlab-rows"
    first = json.loads(client.get_experiment(exp_id).tags["mlflow.sharedViewState.anchorlab-rows"])
    state = json.loads(first["state"])
    assert state["searchFilter"] == "tags.role = 'row'" and state["orderByKey"] == "metrics.`val/VOC07_mAP`"
    assert state["selectedColumns"][:4] == ["tags.`row`", "tags.`method`", "tags.`seed`", "tags.`profile`"]
    ensure_rows_view(uri, exp_id, None, ["VOC07_mAP", "AP"])  # unchanged: not rewritten
    assert json.loads(client.get_experiment(exp_id).tags["mlflow.sharedViewState.anchorlab-rows"]) == first
    ensure_rows_view(uri, exp_id, None, ["AP"])  # the study's metrics changed: same view, new state
    again = json.loads(client.get_experiment(exp_id).tags["mlflow.sharedViewState.anchorlab-rows"])
    assert again["createdAt"] == first["createdAt"] and json.loads(again["state"])["orderByKey"] == "metrics.`val/AP`"


def test_ui_hint_and_unknown_experiments_are_one_line(tmp_path, empty_store):
    from cli import app
    from cli_ui import study_link, ui_hint

    ws = tmp_path / "ws"
    ws.mkdir()
    uri = with_store(ws, empty_store)
    exp_id = ensure_experiment("demo", uri, ws)
    assert study_link("http://127.0.0.1:5000", uri, "demo", "smoke", ["AP"]) == (
        f"http://127.0.0.1:5000/#/experiments/{exp_id}/runs?workflowType=machine_learning"
        "&viewStateShareKey=anchorlab-rows-smoke")
    assert "mlflow.sharedViewState.anchorlab-rows-smoke" in MlflowClient(uri).get_experiment(exp_id).tags
    study_file = tmp_path / "my study.yaml"
    assert ui_hint(study_file, "smoke", None, None, uri, "demo", ["AP"]) == \
        f"open its runs in the MLflow UI with: anchorlab ui --study '{study_file}' --profile smoke"
    assert ui_hint(study_file, "quick", ws, None, uri, "demo", ["AP"]).endswith(f"--profile quick --workspace {ws}")
    runner = CliRunner()
    for args, needle in ((["--experiment", "nope"], "no experiment 'nope' in "),
                         (["--profile", "smoke"], "--profile needs --study"),
                         (["--experiment", "demo", "--study", str(study_file)], "give one")):
        result = runner.invoke(app, ["ui", "--workspace", str(ws), "--port", "0", *args])
        assert result.exit_code == 2 and result.output.count("\n") == 1 and needle in result.output, result.output
