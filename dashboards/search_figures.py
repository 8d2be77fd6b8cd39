"""Figures of a search, drawn after its trials from the Optuna study that `anchorlab search run` fills.

`draw_search_figures(study, search, out_dir)` writes one PNG per figure into `out_dir` and returns
({name: path}, {name: why it was skipped}):

  history       objective per trial (one panel per objective): COMPLETE trials as dots, PRUNED trials as
                crosses at the last value they reported, the best so far as a step line
  importances   fANOVA parameter importances (`param_importances`: seeded, so the same study gives the same
                ranking); needs >= 2 COMPLETE trials and >= 2 parameters that vary among them
  parallel      parallel coordinates of the COMPLETE trials, coloured by the (first) objective
  slice         one panel per parameter: the (first) objective against its value, pruned trials as crosses
  intermediate  the values each trial reported at its evaluations (the pruner's curves), pruned ones dashed
  pareto        the two objectives against each other, the Pareto front marked (two-objective searches only)

Optuna's matplotlib plots draw parallel and pareto, in ggplot style as Optuna means them (its colour scales
end in white) inside an `rc_context`: most of them switch the global style, which must not leak to the
caller. The others are plain matplotlib (Optuna's history and intermediate plots show no pruned values, its
slice plot's colour bar lands on the panels once laid out). Nothing here trains or tracks.
"""
from __future__ import annotations

import contextlib
import math
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402

import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from ablation.search.spec import Search  # noqa: E402
from dashboards.assign_figures import save_figure  # noqa: E402
from dashboards.importance_spread import spread_lines  # noqa: E402

FIGURES = ("history", "importances", "parallel", "slice", "intermediate", "pareto")
IMPORTANCE_SEED = 0  # the fANOVA forest's seed


def trials_in(study, *states: str) -> list:
    from optuna.trial import TrialState

    return study.get_trials(deepcopy=False, states=tuple(getattr(TrialState, s) for s in states))


def last_value(trial) -> float | None:
    """A trial's first objective, or the last value a pruned (or unfinished) trial reported."""
    if trial.values:
        return float(trial.values[0])
    if trial.intermediate_values:
        return float(trial.intermediate_values[max(trial.intermediate_values)])
    return None


@contextlib.contextmanager
def _quiet_optuna():
    """Optuna's plots: ggplot style, no experimental-API warning, and the caller's style back afterwards."""
    import optuna

    with warnings.catch_warnings(), matplotlib.rc_context(), plt.style.context("ggplot"):
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # cosmetic: colour bars and twin axes vs. tight_layout, a parameter with a single value so far
        warnings.filterwarnings("ignore", message=".*(tight_layout|identical low and high).*", category=UserWarning)
        yield


def param_importances(study, search: Search) -> tuple[dict[str, dict[str, float]], str]:
    """({objective metric: {param: importance}, largest first}, "") by fANOVA, or ({}, why it cannot be computed)."""
    complete = trials_in(study, "COMPLETE")
    if len(complete) < 2:
        return {}, f"needs >= 2 complete trials, the search has {len(complete)}"
    varied = [p.name for p in search.space
              if len({repr(t.params[p.name]) for t in complete if p.name in t.params}) >= 2]
    if len(varied) < 2:
        return {}, (f"needs >= 2 parameters that vary among the complete trials, has {len(varied)}"
                    + (f" ({', '.join(varied)})" if varied else ""))
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances

    out = {}
    with _quiet_optuna():
        for i, objective in enumerate(search.objectives):
            try:
                out[objective.metric] = get_param_importances(
                    study, evaluator=FanovaImportanceEvaluator(seed=IMPORTANCE_SEED), params=varied,
                    target=lambda t, i=i: t.values[i])
            except (ValueError, RuntimeError) as exc:
                return {}, f"Optuna could not compute them: {str(exc).splitlines()[0]}"
    return out, ""


def _history(study, search: Search, path: Path) -> Path:
    n = len(search.objectives)
    fig, axes = plt.subplots(1, n, figsize=(5.2 * n, 3.4), squeeze=False)
    complete, pruned = trials_in(study, "COMPLETE"), trials_in(study, "PRUNED")
    failed = len(trials_in(study, "FAIL"))
    for i, (ax, objective) in enumerate(zip(axes.flat, search.objectives)):
        xs = [t.number for t in complete]
        ys = [t.values[i] for t in complete]
        ax.plot(xs, ys, "o", color="tab:blue", ms=4, label=f"complete ({len(xs)})")
        if i == 0 and pruned:
            shown = [(t.number, last_value(t)) for t in pruned if last_value(t) is not None]
            ax.plot([x for x, _ in shown], [y for _, y in shown], "x", color="tab:orange", ms=6,
                    label=f"pruned, last reported ({len(pruned)})")
        if xs:
            pick = np.maximum.accumulate if objective.direction == "maximize" else np.minimum.accumulate
            ax.step(xs, pick(np.asarray(ys, dtype=float)), where="post", color="tab:red", lw=1.2, label="best so far")
        ax.set_xlabel("trial")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(f"{objective.metric} ({objective.direction})")
        ax.legend(fontsize=7)
        ax.tick_params(labelsize=7)
    title = f"{search.name}: optimisation history" + (f" ({failed} failed trials not shown)" if failed else "")
    return save_figure(fig, path, title)


def _importances(importances: dict[str, dict[str, float]], search: Search, path: Path) -> Path:
    n = len(importances)
    fig, axes = plt.subplots(1, n, figsize=(4.6 * n, 0.45 * len(search.space) + 1.6), squeeze=False)
    for ax, (metric, values) in zip(axes.flat, importances.items()):
        names = list(values)[::-1]  # largest on top
        ax.barh(names, [values[k] for k in names], color="tab:blue")
        for y, name in enumerate(names):
            ax.text(values[name], y, f" {values[name]:.2f}", va="center", fontsize=7)
        ax.set_xlim(0, 1.1)
        ax.set_xlabel(f"importance for {metric}")
        ax.tick_params(labelsize=7)
    return save_figure(fig, path, f"{search.name}: parameter importances (fANOVA, seed {IMPORTANCE_SEED})")


def _figure_of(axes):
    return np.ravel(np.asarray(axes, dtype=object))[0].figure


def _optuna_plot(kind: str, study, search: Search, path: Path) -> Path:
    from optuna.visualization import matplotlib as ovm

    metrics = [o.metric for o in search.objectives]
    target = dict(target=lambda t: t.values[0], target_name=metrics[0])
    with _quiet_optuna():
        if kind == "parallel":
            axes = ovm.plot_parallel_coordinate(study, params=[p.name for p in search.space], **target)
        else:
            axes = ovm.plot_pareto_front(study, target_names=metrics)
        return save_figure(_figure_of(axes), path, f"{search.name}: {kind}")


def _slice(study, search: Search, path: Path) -> Path:
    """One panel per parameter: the first objective against its value; pruned trials at their last report."""
    from ablation.search.space import encode_choice

    n = len(search.space)
    cols = min(3, n)
    fig, axes = plt.subplots(math.ceil(n / cols), cols, figsize=(3.4 * cols, 2.8 * math.ceil(n / cols)),
                             squeeze=False, sharey=True)
    for ax in axes.flat[n:]:
        ax.axis("off")
    groups = ((trials_in(study, "COMPLETE"), "o", "tab:blue", "complete"),
              (trials_in(study, "PRUNED"), "x", "tab:orange", "pruned, last reported"))
    for ax, p in zip(axes.flat, search.space):
        where = {repr(encode_choice(p, c)): i for i, c in enumerate(p.choices)}
        for trials, marker, color, label in groups:
            pts = [(t.params[p.name], last_value(t)) for t in trials
                   if p.name in t.params and last_value(t) is not None]
            xs = [where.get(repr(x), -1) if p.kind == "categorical" else x for x, _ in pts]
            if pts:
                ax.plot(xs, [y for _, y in pts], marker, color=color, ms=5, ls="none", label=label)
        ax.tick_params(labelsize=7)
        if p.kind == "categorical":
            ax.set_xticks(range(len(p.choices)), [str(c) for c in p.choices], rotation=20, fontsize=7)
            ax.set_xlim(-0.5, len(p.choices) - 0.5)
        elif p.log:
            ax.set_xscale("log")
            ax.tick_params(axis="x", which="both", labelsize=6, labelrotation=30)
        ax.set_xlabel(f"{p.name} ({p.key})", fontsize=8)
    axes[0][0].set_ylabel(search.objectives[0].metric)
    axes[0][0].legend(fontsize=7)
    return save_figure(fig, path, f"{search.name}: {search.objectives[0].metric} against each parameter")


def _intermediate(study, search: Search, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(5.6, 3.4))
    styles = {"COMPLETE": ("tab:blue", "-"), "PRUNED": ("tab:orange", "--")}
    seen = set()
    for t in study.get_trials(deepcopy=False):
        if not t.intermediate_values:
            continue
        steps = sorted(t.intermediate_values)
        color, ls = styles.get(t.state.name, ("tab:gray", ":"))
        label = t.state.name.lower() if t.state.name not in seen else None
        seen.add(t.state.name)
        ax.plot(steps, [t.intermediate_values[s] for s in steps], ls, color=color, lw=1, marker=".", ms=3, label=label)
        if t.state.name == "PRUNED":
            ax.plot(steps[-1], t.intermediate_values[steps[-1]], "x", color=color, ms=6)
            ax.annotate(str(t.number), (steps[-1], t.intermediate_values[steps[-1]]), fontsize=6,
                        xytext=(3, 2), textcoords="offset points")
    ax.set_xlabel("iteration")
    ax.set_ylabel(f"val {search.objectives[0].metric}")
    ax.legend(fontsize=7)
    ax.tick_params(labelsize=7)
    return save_figure(fig, path, f"{search.name}: intermediate values (pruned trials end with x)")


def draw_search_figures(study, search: Search, out_dir: str | Path,
                        importances: tuple[dict, str] | None = None) -> tuple[dict[str, Path], dict[str, str]]:
    """Every figure of `FIGURES` that the study can give, one PNG each in `out_dir` (module doc);
    `importances`: `param_importances`'s answer when the caller already has it."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    done, skipped = {}, {}
    complete = trials_in(study, "COMPLETE")
    finished = complete + trials_in(study, "PRUNED")
    importances = importances if importances is not None else param_importances(study, search)
    two = len(search.objectives) == 2
    reasons = {
        "history": "" if finished else "no complete or pruned trial yet",
        "importances": importances[1],
        "parallel": "" if complete else "no complete trial yet",
        "slice": "" if finished else "no complete or pruned trial yet",
        "intermediate": ("a two-objective search reports no intermediate values (it is not pruned)" if two else
                         "" if any(t.intermediate_values for t in study.get_trials(deepcopy=False)) else
                         "no trial reported an intermediate value (train.eval_every is off)"),
        "pareto": ("" if complete else "no complete trial yet") if two else
                  "a single-objective search has no Pareto front",
    }
    draw = {
        "history": lambda p: _history(study, search, p),
        "importances": lambda p: _importances(importances[0], search, p),
        "parallel": lambda p: _optuna_plot("parallel", study, search, p),
        "slice": lambda p: _slice(study, search, p),
        "intermediate": lambda p: _intermediate(study, search, p),
        "pareto": lambda p: _optuna_plot("pareto", study, search, p),
    }
    for name in FIGURES:
        if reasons[name]:
            skipped[name] = reasons[name]
            continue
        try:
            done[name] = draw[name](out_dir / f"{name}.png")
        except (ValueError, RuntimeError, TypeError) as exc:  # one figure Optuna refuses must not lose the others
            plt.close("all")
            skipped[name] = f"could not draw it: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return done, skipped


def format_importances(importances: dict[str, dict[str, float]], spreads: dict | None = None) -> list[str]:
    """'1. lr 0.73' lines per objective (a heading per objective when there are two); with `spreads`
    (`importance_spread.importance_spread`), each value's range without one trial and whether the order holds."""
    lines = []
    for metric, values in importances.items():
        if len(importances) > 1:
            lines.append(f"{metric}:")
        lines += spread_lines(values, (spreads or {}).get(metric))
    return lines


__all__ = ["FIGURES", "IMPORTANCE_SEED", "draw_search_figures", "param_importances", "format_importances",
           "last_value", "trials_in"]
