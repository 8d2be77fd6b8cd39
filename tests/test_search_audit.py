"""`anchorlab search audit`: a search's pruned trials trained to the end, with real Optuna journal storage, a
real MLflow SQLite store and real tiny trainings (the smoke setting of tests/test_search_run.py)."""
from __future__ import annotations

from typer.testing import CliRunner

from ablation.search.audit import Audit, AuditRow, audit_pruning, format_audit
from ablation.search.spec import PrunerSpec
from tests.test_search_run import _runs, _search, _study


def test_pruned_trials_train_to_the_end_once_and_stay_pruned(tmp_path, workspace, one_thread):
    from ablation.search.run import run_search

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    run_search(_search(tmp_path, "s_audit", trials=2), "smoke", workspace=workspace, tracking_uri=uri, rerun=False)
    # the same search continued under a pruner that stops every trial at its first evaluation (AP <= 100)
    search = _search(tmp_path, "s_audit", trials=3, pruner=PrunerSpec("threshold", {"lower": 101.0}))
    run_search(search, "smoke", workspace=workspace, tracking_uri=uri, rerun=False)
    study = _study(workspace, search)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE", "PRUNED"]
    parent = study.user_attrs["parent_run_id"]

    events = []
    audit = audit_pruning(search, "smoke", study, parent, workspace, uri, lambda k, d: events.append((k, d)))
    (row,) = audit.rows
    assert (row.number, row.step, row.trained) == (2, 10, True) and row.final is not None and 0 <= row.final <= 100
    assert row.at_prune == study.trials[2].intermediate_values[10]
    assert sorted(audit.complete) == [0, 1] and audit.top == 3
    assert [k for k, _ in events if k != "iter"] == ["audit-start", "audit-end"]
    assert any(k == "iter" for k, _ in events)
    (run,) = _runs(uri, "s_audit", "audit")
    assert run.info.status == "FINISHED" and run.data.tags["trial"] == "2"
    assert run.data.tags["mlflow.parentRunId"] == parent
    assert run.data.metrics["val/AP"] == row.final
    pruned = [r for r in _runs(uri, "s_audit", "trial") if r.data.tags["trial"] == "2"]
    assert [(r.info.status, r.data.tags["outcome"]) for r in pruned] == [("KILLED", "PRUNED")]  # untouched
    text = format_audit(audit)
    assert "| 2 | 10 |" in text and "rank of 3" in text and "1 of 1 pruned trials trained to the end" in text

    from dashboards.importance_spread import with_finals

    at_end = with_finals(study, {2: row.final})  # the importances over every trial at the end
    assert [(t.state.name, t.value) for t in at_end.trials] == \
        [("COMPLETE", study.trials[0].value), ("COMPLETE", study.trials[1].value), ("COMPLETE", row.final)]
    assert [t.params for t in at_end.trials] == [t.params for t in study.trials]

    again = audit_pruning(search, "smoke", study, parent, workspace, uri)  # trains nothing new
    assert not again.rows[0].trained and again.rows[0].final == row.final
    assert len(_runs(uri, "s_audit", "audit")) == 1


def test_a_pruned_trial_that_would_have_made_the_top_is_named_lost():
    rows = [AuditRow(5, 10, 1.0, final=0.9), AuditRow(6, 10, 0.5, final=0.6), AuditRow(7, 10, 0.4, reason="diverged")]
    audit = Audit("AP", True, 2, rows, {0: 0.5, 1: 0.8, 2: 0.95})
    assert audit.bar == 0.8 and [r.number for r in audit.lost] == [5]
    assert [n for n, _, _ in audit.ranking()] == [2, 5, 1, 6, 0]
    text = format_audit(audit)
    assert "pruning lost 1 that would have entered them: trial 5 (0.9)" in text and "| 7 | 10 | 0.4 | diverged |  |" in text
    assert "2 of 3 pruned trials trained to the end" in text
    low = Audit("time/step_s", False, 1, [AuditRow(3, 10, 0.2, final=0.25)], {0: 0.3, 1: 0.4})
    assert low.bar == 0.3 and [r.number for r in low.lost] == [3]  # smaller is better
    assert "pruning lost no trial that would have entered them" in format_audit(Audit("AP", True, 3, [AuditRow(1, 10, 0.1, final=0.1)], {0: 0.5}))


def test_cli_audit_before_the_search_ran(tmp_path):
    from cli import app
    from tests.test_search_report import _yaml

    result = CliRunner().invoke(app, ["search", "audit", str(_yaml(tmp_path)), "--profile", "smoke",
                                      "--workspace", str(tmp_path / "ws")])
    assert result.exit_code == 2 and result.output.strip().splitlines()[-1] == \
        f"error: no trials yet: run anchorlab search run {tmp_path / 'search_cli.yaml'} --profile smoke"
