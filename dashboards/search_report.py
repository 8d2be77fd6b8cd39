"""`anchorlab search report`: a search's figures and its markdown summary, from its storage and MLflow.

`load_study` opens the search's Optuna study read-only (no storage or study is created: a search that never
ran raises `NoTrials`); `build_report` draws the figures (`search_figures.py`), writes `report.md` beside them
in `<workspace>/search/<name>-<profile>/` (or `out_dir`) and, when the study names an MLflow parent run that
the store holds, logs both to it under `report/`. The report holds:

* the counts of complete / pruned / failed trials (`run.search_result`, whose rules it shares) and the mean
  iterations trained by complete vs. pruned trials (trial attribute `step`; a pruned trial without it: the
  last step it reported; reused runs, which trained nothing here, are left out), and the training time pruning
  saved (`pruning_saved`: each pruned trial counted at the complete trials' mean wall time);
* the best trials as a table (single objective: the top `TOP` complete ones; two objectives: the Pareto front);
* the fANOVA importance ranking (or why there is none);
* the rerun table, from the result `search run` stored on the parent (`rerun.RERUN_JSON`: each candidate's
  objective per seed), ranked and rendered by `rerun.rank` / `rerun.format_rerun`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from ablation.execution.queue import QueueError
from ablation.search import storage as st
from ablation.search.rerun import RERUN_JSON, RerunResult, format_rerun, from_dict
from ablation.search.run import SearchResult, search_result
from ablation.search.spec import Search
from ablation.tracking import reader, writer
from ablation.tracking.store import resolve_tracking_uri, store_exists, workspace_dir
from dashboards.importance_spread import importance_spread
from dashboards.search_figures import IMPORTANCE_SEED, draw_search_figures, format_importances, param_importances

TOP = 5  # best trials shown for a single-objective search
ARTIFACTS = "report"  # the parent run's folder for report.md and the figures


class NoTrials(LookupError):
    """The search has no trial in its storage (it never ran there)."""


@dataclass
class Report:
    markdown: str
    out_dir: Path
    report_file: Path
    figures: dict[str, Path]
    skipped: dict[str, str]
    parent_run_id: str | None  # the MLflow parent, when the store holds it
    logged: bool = False
    result: SearchResult | None = None
    rerun: RerunResult | None = None
    importances: dict[str, dict[str, float]] = field(default_factory=dict)


def study_name(search: Search, profile: str) -> str:
    return f"{search.name}:{profile}"  # as `run.run_search` names it


def load_study(search: Search, profile: str, storage: str | None = None, workspace=None):
    """(the search's Optuna study, its storage location); `NoTrials` when it holds no trial, `QueueError` when
    its directions are not the file's."""
    import optuna

    location = storage or st.default_location(workspace_dir(workspace), search.name, profile)
    if "://" not in location and not Path(location).expanduser().is_file():
        raise NoTrials(location)  # opening a missing journal would create it
    try:
        study = optuna.load_study(study_name=study_name(search, profile), storage=st.open_search_storage(location))
    except KeyError:
        raise NoTrials(location) from None
    directions = [d.name.lower() for d in study.directions]
    if directions != [o.direction for o in search.objectives]:
        raise QueueError(f"the stored search '{study.study_name}' has directions {directions}, the file "
                         f"{[o.direction for o in search.objectives]}; use its --storage or another profile")
    if not study.get_trials(deepcopy=False):
        raise NoTrials(location)
    return study, location


def _parent(study, uri: str) -> str | None:
    parent = study.user_attrs.get("parent_run_id")
    return parent if parent and store_exists(uri) and reader.run_active(uri, parent) else None


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def mean_steps(study, result: SearchResult) -> dict[str, tuple[float, int]]:
    """state -> (mean iterations trained, trials counted), for COMPLETE and PRUNED trials (module doc)."""
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    out = {}
    for state in ("COMPLETE", "PRUNED"):
        steps = []
        for r in result.trials:
            if r.state != state or r.reused_from is not None:
                continue
            inter = trials[r.number].intermediate_values
            step = r.step or (max(inter) if state == "PRUNED" and inter else 0)
            if step:
                steps.append(step)
        if steps:
            out[state] = (sum(steps) / len(steps), len(steps))
    return out


def pruning_saved(result: SearchResult) -> tuple[float, float, int] | None:
    """(seconds pruning saved, seconds the trials took, pruned trials counted): each pruned trial that trained here
    would have taken the mean wall time of the complete ones that trained here; None without both kinds."""
    ran = [r for r in result.trials if r.reused_from is None and r.wall_s]
    complete = [r.wall_s for r in ran if r.state == "COMPLETE"]
    pruned = [r.wall_s for r in ran if r.state == "PRUNED"]
    if not complete or not pruned:
        return None
    full = sum(complete) / len(complete)
    return sum(max(0.0, full - w) for w in pruned), sum(complete) + sum(pruned), len(pruned)


def best_table(search: Search, result: SearchResult) -> list[str]:
    """The best trials as markdown rows (module doc)."""
    metrics = [o.metric for o in search.objectives]
    sign = -1.0 if search.objectives[0].direction == "maximize" else 1.0  # best first by the first objective
    if len(metrics) == 1:
        done = [r for r in result.trials if r.state == "COMPLETE" and r.values]
        rows = sorted(done, key=lambda r: (sign * r.values[0], r.number))[:TOP]
    else:
        rows = sorted(result.best, key=lambda r: (sign * r.values[0] if r.values else math.inf, r.number))
    names = [p.name for p in search.space]
    lines = [f"| trial | state | {' | '.join(names)} | {' | '.join(metrics)} |",
             "|--:|:--|" + "--:|" * (len(names) + len(metrics))]
    for r in rows:
        values = " | ".join(_fmt(v) for v in (r.values or []))
        lines.append(f"| {r.number} | {r.state} | {' | '.join(_fmt(r.params.get(n, '')) for n in names)} | {values} |")
    return lines


def rerun_from_runs(search: Search, profile: str, study, uri: str, parent: str, workspace: Path) -> RerunResult | None:
    """The reruns' result as `search run` stored it on the parent run (`rerun.RERUN_JSON`), ranked by
    `rerun.rank`; None when the search has not been rerun (yet)."""
    data = reader.json_artifact(uri, parent, RERUN_JSON.format(profile=profile))
    if data is None:
        return None
    result = from_dict(data)
    best_file = Path(workspace) / "search" / f"{search.name}-{profile}-best.yaml"
    result.best_file = best_file if best_file.is_file() else None
    return result


def build_report(search: Search, profile: str, study, location: str, workspace=None, tracking_uri: str | None = None,
                 out_dir: str | Path | None = None, log: bool = True) -> Report:
    """Draw the figures, write report.md, log both to the parent run when it exists (module doc)."""
    ws = workspace_dir(workspace)
    uri = resolve_tracking_uri(tracking_uri, ws)
    out = Path(out_dir) if out_dir is not None else ws / "search" / f"{search.name}-{profile}"
    out.mkdir(parents=True, exist_ok=True)
    parent = _parent(study, uri)
    result = search_result(study, search, profile, search.trials, location, parent or "", uri)
    importances = param_importances(study, search)
    figures, skipped = draw_search_figures(study, search, out, importances)
    rerun = rerun_from_runs(search, profile, study, uri, parent, ws) if parent else None

    c = result.counts
    lines = [f"# search {search.name} [{profile}]", ""]
    if search.description:
        lines += [search.description, ""]
    lines += [f"Optuna study `{study.study_name}` in {location}; "
              + (f"MLflow parent run {parent} ({uri})" if parent else "no MLflow parent run in " + uri), "",
              "## Trials", "",
              f"{c['complete']} complete, {c['pruned']} pruned, {c['failed']} failed"
              + "".join(f", {c[k]} {k}" for k in ("retried", "running", "waiting") if c[k])
              + f" (the file's budget: {search.trials})"]
    for state, (mean, n) in mean_steps(study, result).items():
        lines.append(f"- {state.lower()} trials trained {mean:.0f} iterations on average ({n} trials)")
    saved = pruning_saved(result)
    if saved is not None:
        lines.append(f"- pruning saved about {saved[0] / 60:.0f} min of training time: the trials took {saved[1] / 60:.0f} "
                     f"min, {100 * saved[0] / (saved[0] + saved[1]):.0f}% less than without pruning ({saved[2]} pruned "
                     "trials, each counted at the mean time of the complete ones)")
    lines += ["", "## Best trials" if len(search.objectives) == 1 else "## Pareto front", ""]
    lines += best_table(search, result) if result.best else ["no complete trial yet"]
    lines += ["", "## Parameter importances (fANOVA)", ""]
    if importances[0]:
        varied = list(next(iter(importances[0].values())))
        lines += format_importances(importances[0], importance_spread(study, search, varied, IMPORTANCE_SEED))
    else:
        lines.append(f"skipped: {importances[1]}")
    if rerun is not None:
        lines += ["", f"## Reruns ({len(search.rerun_seeds(profile))} seeds per candidate)", "",
                  format_rerun(search, rerun)]
    lines += ["", "## Figures", ""]
    lines += [f"- {name}: {path.name}" for name, path in figures.items()]
    lines += [f"- {name}: skipped, {why}" for name, why in skipped.items()]
    markdown = "\n".join(lines) + "\n"
    report_file = out / "report.md"
    report_file.write_text(markdown)
    report = Report(markdown, out, report_file, figures, skipped, parent, False, result, rerun, importances[0])
    if parent and log:
        writer.log_text(uri, parent, markdown, f"{ARTIFACTS}/report.md")
        writer.log_files(uri, parent, list(figures.values()), ARTIFACTS)
        report.logged = True
    return report


__all__ = ["NoTrials", "Report", "load_study", "build_report", "rerun_from_runs", "best_table", "mean_steps",
           "study_name", "TOP", "ARTIFACTS"]
