"""How far a search's parameter importances can be trusted: fANOVA again with each COMPLETE trial left out.

A search of a dozen single-seed trials gives fANOVA a dozen noisy points; its ranking can hinge on one trial.
`importance_spread(study, search, varied)` recomputes the importances once per left-out complete trial and
returns, per objective, each parameter's (lowest, highest) importance and the parameters that came first in
some recomputation. `spread_lines` says it in words under the ranking: "holds" when one parameter leads in
every recomputation, else "unsettled" with the leaders. Skipped (None) with fewer than 4 complete trials (too
few to leave one out) or more than `MAX_TRIALS` (each recomputation is a forest fit; one trial moves little
there). Nothing here trains or tracks.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

MIN_TRIALS = 4  # leaving one out keeps >= 3 points
MAX_TRIALS = 30


@dataclass
class Spread:
    """One objective's importances recomputed without each complete trial in turn."""

    n: int  # complete trials (= recomputations attempted)
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)  # param -> (lowest, highest)
    leaders: list[str] = field(default_factory=list)  # params ranked first in some recomputation, most often first

    @property
    def holds(self) -> bool:
        return len(self.leaders) == 1


def importance_spread(study, search, varied: list[str], seed: int = 0) -> dict[str, Spread] | None:
    """{objective metric: Spread} (module doc), or None when the number of complete trials is out of range."""
    import optuna
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances
    from optuna.trial import TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not MIN_TRIALS <= len(complete) <= MAX_TRIALS:
        return None
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        verbosity = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        try:
            for i, objective in enumerate(search.objectives):
                lows, highs, firsts = {}, {}, {}
                for left in complete:
                    sub = optuna.create_study(directions=study.directions)
                    sub.add_trials([t for t in complete if t.number != left.number])
                    try:
                        values = get_param_importances(sub, evaluator=FanovaImportanceEvaluator(seed=seed),
                                                       params=varied, target=lambda t, i=i: t.values[i])
                    except (ValueError, RuntimeError):  # e.g. a parameter no longer varies
                        continue
                    values = {k: v for k, v in values.items() if math.isfinite(v)}
                    if not values:
                        continue
                    for name, v in values.items():
                        lows[name] = min(lows.get(name, v), v)
                        highs[name] = max(highs.get(name, v), v)
                    first = max(values, key=values.get)
                    firsts[first] = firsts.get(first, 0) + 1
                leaders = sorted(firsts, key=lambda k: -firsts[k])
                out[objective.metric] = Spread(len(complete), {k: (float(lows[k]), float(highs[k])) for k in lows},
                                               leaders)
        finally:
            optuna.logging.set_verbosity(verbosity)
    return out


def spread_lines(values: dict[str, float], spread: Spread | None) -> list[str]:
    """'1. lr 0.730 (0.61-0.80 without one trial)' lines, largest first, and the verdict line."""
    ranked = [(k, v) for k, v in sorted(values.items(), key=lambda kv: -kv[1]) if math.isfinite(v)]
    if spread is None or not spread.leaders:
        return [f"{i}. {name} {value:.3f}" for i, (name, value) in enumerate(ranked, 1)]
    lines = []
    for i, (name, value) in enumerate(ranked, 1):
        lo, hi = spread.ranges.get(name, (value, value))
        lines.append(f"{i}. {name} {value:.3f} ({lo:.2f}-{hi:.2f} without one trial)")
    if spread.holds:
        lines.append(f"{spread.leaders[0]} comes first whichever of the {spread.n} complete trials is left out.")
    else:
        lines.append(f"Unsettled: leaving out one of the {spread.n} complete trials puts "
                     f"{', '.join(spread.leaders)} first; read the order as within the noise.")
    return lines




def with_finals(study, finals: dict[int, float]):
    """An in-memory single-objective study of `study`'s COMPLETE trials plus its PRUNED trials counted COMPLETE
    at the objective they reached when trained to the end (`finals`: trial number -> value; `search audit`)."""
    import optuna
    from optuna.trial import TrialState, create_trial

    out = optuna.create_study(direction=study.direction)
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        value = t.value if t.state == TrialState.COMPLETE else finals.get(t.number)
        if value is not None and math.isfinite(value):
            out.add_trial(create_trial(params=t.params, distributions=t.distributions, value=value,
                                       state=TrialState.COMPLETE))
    return out


__all__ = ["Spread", "importance_spread", "spread_lines", "with_finals", "MIN_TRIALS", "MAX_TRIALS"]
