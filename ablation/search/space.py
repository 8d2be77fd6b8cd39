"""A search's space, sampler and pruner as Optuna objects: what `run.py` asks trials with.

* `suggest(trial, params)` draws one value per `Param` on an Optuna trial. Optuna stores a categorical
  choice only as None/bool/int/float/str, so a parameter whose choices include a list or a mapping (anchor
  aspect ratios, a loss's weights) has every choice encoded as its `repr` string (`encode_choice`) and
  decoded on the way out with `ast.literal_eval` (`decode_choice`): the storage, the samplers and a
  re-enqueued trial all see strings; configs see the value.
* `build_sampler` / `build_pruner` map a `SamplerSpec` / `PrunerSpec` name to its Optuna class through
  one explicit dict each (`SAMPLERS`, `PRUNERS`); the spec's `options` go to the constructor as keywords.
  Samplers are seeded (`seed` overrides the spec's, so that concurrent workers and resumed searches do
  not propose the same values: `run.py`); the grid sampler gets its grid from the parameters.
"""
from __future__ import annotations

import ast
from collections.abc import Callable
from typing import Any

from ablation.search.spec import Param, PrunerSpec, SamplerSpec

SCALARS = (type(None), bool, int, float, str)


class SpaceError(ValueError):
    """A sampler, pruner or parameter Optuna cannot build (one line)."""


def encoded(param: Param) -> bool:
    """True when the choices of a categorical `param` are stored as repr strings (one is not a scalar)."""
    return param.kind == "categorical" and any(not isinstance(c, SCALARS) for c in param.choices)


def encode_choice(param: Param, value: Any) -> Any:
    """A config value -> what Optuna stores for `param` (its repr for an encoded parameter)."""
    return repr(value) if encoded(param) else value


def decode_choice(param: Param, value: Any) -> Any:
    """What Optuna stored for `param` -> the config value (inverse of `encode_choice`)."""
    return ast.literal_eval(value) if encoded(param) and isinstance(value, str) else value


def decode(params: list[Param], stored: dict[str, Any]) -> dict[str, Any]:
    """A trial's stored params (Optuna's `trial.params`) -> {name: config value}; unknown names pass as is."""
    by_name = {p.name: p for p in params}
    return {n: decode_choice(by_name[n], v) if n in by_name else v for n, v in stored.items()}


def suggest(trial, params: list[Param]) -> dict[str, Any]:
    """Draw every parameter on `trial` (an `optuna.Trial`): {name: value}, categorical values decoded.

    Floats: `low..high`, `log` scale or a `step` grid (not both, Optuna's rule); ints likewise, step 1 by
    default. A value fixed on the trial (an enqueued retry) comes back as it was enqueued.
    """
    out: dict[str, Any] = {}
    for p in params:
        if p.kind == "float":
            step = None if p.log else p.step
            out[p.name] = trial.suggest_float(p.name, float(p.low), float(p.high), log=p.log,
                                              step=None if step is None else float(step))
        elif p.kind == "int":
            step = 1 if p.log or p.step is None else int(p.step)
            out[p.name] = trial.suggest_int(p.name, int(p.low), int(p.high), log=p.log, step=step)
        elif p.kind == "categorical":
            choice = trial.suggest_categorical(p.name, [encode_choice(p, c) for c in p.choices])
            out[p.name] = decode_choice(p, choice)
        else:
            raise SpaceError(f"space.{p.name}: unknown parameter type '{p.kind}'")
    return out


def grid_space(params: list[Param]) -> dict[str, list]:
    """The grid sampler's search space: {name: the values}, as Optuna stores them (encoded choices).

    Ints: every `step` from `low` to `high`; floats need a `step` (a continuous range has no grid).
    """
    space: dict[str, list] = {}
    for p in params:
        if p.kind == "categorical":
            space[p.name] = [encode_choice(p, c) for c in p.choices]
        elif p.kind == "int":
            space[p.name] = list(range(int(p.low), int(p.high) + 1, int(p.step or 1)))
        elif p.step:
            n = int(round((float(p.high) - float(p.low)) / float(p.step)))
            space[p.name] = [float(p.low) + i * float(p.step) for i in range(n + 1)]
        else:
            raise SpaceError(f"space.{p.name}: the grid sampler needs a finite grid; give the float a step, "
                             "or make it categorical")
    return space


def _tpe(options: dict, params: list[Param], seed: int):
    from optuna.samplers import TPESampler

    return TPESampler(seed=seed, **options)


def _random(options: dict, params: list[Param], seed: int):
    from optuna.samplers import RandomSampler

    return RandomSampler(seed=seed, **options)


def _grid(options: dict, params: list[Param], seed: int):
    from optuna.samplers import GridSampler

    return GridSampler(grid_space(params), seed=seed, **options)


def _cmaes(options: dict, params: list[Param], seed: int):
    from optuna.samplers import CmaEsSampler

    try:
        import cmaes  # noqa: F401  (Optuna's CmaEsSampler only fails at the first trial without it)
    except ImportError:
        raise SpaceError("the cmaes sampler needs the 'cmaes' package (pip install cmaes); "
                         "or use sampler tpe") from None
    return CmaEsSampler(seed=seed, **options)


# name -> (options, params, seed) -> an optuna.samplers.BaseSampler
SAMPLERS: dict[str, Callable] = {"tpe": _tpe, "random": _random, "grid": _grid, "cmaes": _cmaes}


# name -> Optuna's class name (the classes are imported when built). `threshold` prunes a trial whose
# intermediate value leaves [lower, upper] (options {lower, upper, n_warmup_steps}): diverged runs.
PRUNERS: dict[str, str] = {"median": "MedianPruner", "percentile": "PercentilePruner",
                           "hyperband": "HyperbandPruner", "threshold": "ThresholdPruner", "none": "NopPruner"}


def build_sampler(spec: SamplerSpec, params: list[Param], seed: int | None = None):
    """The Optuna sampler of `spec`, seeded with `seed` (default `spec.seed`); SpaceError when it cannot be."""
    if spec.name not in SAMPLERS:
        raise SpaceError(f"sampler '{spec.name}' is not one of {', '.join(SAMPLERS)}")
    try:
        return SAMPLERS[spec.name](dict(spec.options), params, spec.seed if seed is None else int(seed))
    except TypeError as exc:  # an option the constructor does not take
        raise SpaceError(f"sampler {spec.name}: {exc}") from None


def build_pruner(spec: PrunerSpec):
    """The Optuna pruner of `spec` (`none`: NopPruner); SpaceError for an unknown name or option."""
    if spec.name not in PRUNERS:
        raise SpaceError(f"pruner '{spec.name}' is not one of {', '.join(PRUNERS)}")
    try:
        import optuna.pruners

        return getattr(optuna.pruners, PRUNERS[spec.name])(**dict(spec.options))
    except (TypeError, ValueError) as exc:
        raise SpaceError(f"pruner {spec.name}: {exc}") from None


__all__ = ["suggest", "decode", "encode_choice", "decode_choice", "encoded", "grid_space", "build_sampler",
           "build_pruner", "SAMPLERS", "PRUNERS", "SpaceError"]
