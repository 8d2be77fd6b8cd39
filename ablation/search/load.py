"""Search files (`studies/search_*.yaml`): the schema and its validation, with the study loader's file:line errors.

A search resolves each trial like one study row whose values Optuna proposes (`resolve.trial_config`):

    base  <-  `overrides`  <-  profile `configs` / `overrides`  <-  the trial's `space` values  <-  train.seed = `seed`

Schema (top level):  name, description, base (path or inline config), overrides, profiles {NAME: {configs,
overrides, seeds, description}} (as a study's), space, objective, sampler, pruner, trials, seed, rerun.
  space:      {NAME: {key: dotted.config.key, type: float | int | categorical, low, high, log, step, choices}}.
              float / int: low < high, both included (log: low > 0, no step); int: integer bounds and step
              (default 1); categorical: a non-empty `choices` list. Keys are unique; train.seed is `seed`'s.
  objective:  a metric ("AP"), {metric, direction: maximize | minimize}, or a list of two of these (a
              multi-objective search: no pruner). A metric is a val metric of `study.load.METRIC_NAMES`
              (VOC / extra ones only where the profile's eval settings compute them) or a logged run metric
              with its prefix ("time/step_s"), which must give its direction. Default: AP, maximize.
  sampler:    {name: tpe | random | grid | cmaes, seed, options {...: the sampler's constructor}} or a name;
              default tpe, seed 0. cmaes samples no categorical; grid needs every parameter categorical or int.
  pruner:     {name: median | hyperband | percentile | threshold | none, options} or a name; default median
              (none for two objectives).
  trials:     default of `anchorlab search run --trials` (>= 1);  seed: the trials' train.seed (default 0).
  rerun:      {top: N >= 1, seeds: [..]}: the N best configurations trained again with each seed.

`parse_search` checks the schema; `load_search` also resolves, under every profile, one trial config per
sample of the space (every number at its low, then each number at its high and each other choice), so an
unknown config key or an invalid value is reported at its parameter's line before anything trains:

    studies/search_x.yaml:14: space: unknown key 'assign.paa.topkk'; valid keys here: iou_thresh, ...
"""
from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

from ablation.search.resolve import trial_config
from ablation.search.spec import (DIRECTIONS, PARAM_KINDS, Objective, Param, PrunerSpec, RerunSpec, SamplerSpec,
                                  Search)
from ablation.study.load import METRIC_NAMES, NAME_RE, _load_base, _parse_profiles, _parse_seeds, read_top
from ablation.study.source import Ctx, error_key, find_line, line_of, nest, plain
from detector.config import ConfigError, check_delta
from detector.evaluation import extra
from detector.evaluation.voc_eval import METRIC_NAMES as VOC_METRIC_NAMES, metric_names

TOP_KEYS = ("name", "description", "base", "overrides", "profiles", "space", "objective", "sampler", "pruner",
            "trials", "seed", "rerun")
PARAM_KEYS = ("key", "type", "low", "high", "log", "step", "choices")
NUMBER_KEYS = ("key", "type", "low", "high", "log", "step")
KIND_KEYS = {"float": NUMBER_KEYS, "int": NUMBER_KEYS, "categorical": ("key", "type", "choices")}
OBJECTIVE_KEYS = ("metric", "direction")
SAMPLERS = ("tpe", "random", "grid", "cmaes")
PRUNERS = ("median", "hyperband", "percentile", "threshold", "none")  # `space.PRUNERS`
RERUN_KEYS = ("top", "seeds")
OPTUNA_CLASSES = {"tpe": ("samplers", "TPESampler"), "random": ("samplers", "RandomSampler"),
                  "grid": ("samplers", "GridSampler"), "cmaes": ("samplers", "CmaEsSampler"),
                  "median": ("pruners", "MedianPruner"), "hyperband": ("pruners", "HyperbandPruner"),
                  "percentile": ("pruners", "PercentilePruner"), "threshold": ("pruners", "ThresholdPruner")}
DOTTED_RE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


def _int(ctx: Ctx, value: Any, line: int, key: str, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ctx.error(line, key, f"expected an integer >= {least}, got {value!r}")
    return value


def _number(ctx: Ctx, node: dict, field: str, key: str, kind: str) -> float | int:
    if field not in node:
        raise ctx.error(line_of(node), key, f"missing '{field}' (a {kind} parameter needs low and high)")
    value, line = node[field], line_of(node, field)
    if kind == "int" and (isinstance(value, bool) or not isinstance(value, int)):
        raise ctx.error(line, f"{key}.{field}", f"expected an integer (type int), got {value!r}")
    ctx.expect(value, (int, float), line, f"{key}.{field}", "a number")
    return value if kind == "int" else float(value)


def _parse_param(ctx: Ctx, space: dict, name: Any) -> Param:
    key, line, node = f"space.{name}", line_of(space, name), space[name]
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ctx.error(line, key, "parameter names are letters, digits, '_', '-', '.'")
    ctx.expect(node, dict, line, key, "a mapping with key, type and low/high or choices")
    ctx.keys(node, PARAM_KEYS, key)
    for required in ("key", "type"):
        if required not in node:
            raise ctx.error(line, key, f"missing '{required}'")
    dotted, kind = node["key"], node["type"]
    if not isinstance(dotted, str) or not DOTTED_RE.match(dotted):
        raise ctx.error(line_of(node, "key"), f"{key}.key", f"expected a dotted config key like assign.paa.topk, "
                        f"got {dotted!r}")
    if dotted == "train.seed":
        raise ctx.error(line_of(node, "key"), f"{key}.key", "train.seed is the search's 'seed' (and rerun.seeds), "
                        "not a searched parameter")
    if kind not in PARAM_KINDS:
        raise ctx.error(line_of(node, "type"), f"{key}.type", f"'{kind}' is not one of {', '.join(PARAM_KINDS)}")
    for field in node:
        if field not in KIND_KEYS[kind]:
            raise ctx.error(line_of(node, field), f"{key}.{field}", f"not used by type {kind}; its fields: "
                            f"{', '.join(KIND_KEYS[kind])}")
    if kind == "categorical":
        choices = node.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ctx.error(line_of(node, "choices"), f"{key}.choices", f"a categorical parameter needs a non-empty "
                            f"'choices' list, got {choices!r}")
        values = plain(choices)
        for i, value in enumerate(values):
            if value in values[:i]:
                raise ctx.error(line_of(choices, i), f"{key}.choices", f"{value!r} repeats")
        return Param(name, dotted, kind, choices=values, line=line)
    low, high = _number(ctx, node, "low", key, kind), _number(ctx, node, "high", key, kind)
    if not low < high:
        raise ctx.error(line_of(node, "high"), key, f"low ({low}) must be < high ({high})")
    log = ctx.expect(node.get("log", False), bool, line_of(node, "log"), f"{key}.log", "true or false")
    if log and low <= 0:
        raise ctx.error(line_of(node, "low"), f"{key}.low", f"a log scale needs low > 0, got {low}")
    step = node.get("step", 1 if kind == "int" else None)
    if step is not None:
        if kind == "int":
            step = _int(ctx, step, line_of(node, "step"), f"{key}.step", 1)
        elif isinstance(step, bool) or not isinstance(step, (int, float)) or step <= 0:
            raise ctx.error(line_of(node, "step"), f"{key}.step", f"expected a number > 0, got {step!r}")
        if log and (kind == "float" or step != 1):
            raise ctx.error(line_of(node, "step"), f"{key}.step", "a log scale takes no step (Optuna samples it "
                            "continuously, or every integer for type int)")
    return Param(name, dotted, kind, low, high, log, step if kind == "int" else (None if step is None else float(step)),
                 line=line)


def _parse_space(ctx: Ctx, raw: dict) -> list[Param]:
    space = raw.get("space")
    ctx.expect(space, dict, line_of(raw, "space"), "space", "a mapping NAME -> {key, type, low, high | choices}")
    if not space:
        raise ctx.error(line_of(raw, "space"), "space", "needs at least one parameter")
    params: list[Param] = []
    for name in space:
        param = _parse_param(ctx, space, name)
        for other in params:
            if param.key == other.key or param.key.startswith(other.key + ".") or other.key.startswith(param.key + "."):
                raise ctx.error(line_of(space[name], "key"), f"space.{name}.key", f"'{param.key}' is also set by "
                                f"space.{other.name} ('{other.key}', line {other.line})")
        params.append(param)
    return params


def _parse_objectives(ctx: Ctx, raw: dict) -> list[Objective]:
    if raw.get("objective") is None:
        return [Objective()]
    node, line = raw["objective"], line_of(raw, "objective")
    if isinstance(node, list) and not 1 <= len(node) <= 2:
        raise ctx.error(line, "objective", f"one objective, or two for a multi-objective search; got {len(node)}")
    items = node if isinstance(node, list) else [node]
    out: list[Objective] = []
    for i, item in enumerate(items):
        key, iline = (f"objective[{i}]", line_of(node, i)) if isinstance(node, list) else ("objective", line)
        direction = None
        if isinstance(item, dict):
            ctx.keys(item, OBJECTIVE_KEYS, key)
            if "metric" not in item:
                raise ctx.error(iline, key, "missing 'metric'")
            metric, direction, iline = item["metric"], item.get("direction"), line_of(item, "metric")
        else:
            metric = item
        if not isinstance(metric, str) or (metric not in METRIC_NAMES and "/" not in metric):
            raise ctx.error(iline, key, f"{metric!r} is not a metric: one of {', '.join(METRIC_NAMES)}, or a logged "
                            "run metric with its prefix (time/step_s)")
        if direction is None and "/" in metric:
            raise ctx.error(iline, key, f"the logged metric '{metric}' needs a direction: {{metric: {metric}, "
                            "direction: minimize}} (or maximize)")
        if direction is not None and direction not in DIRECTIONS:
            raise ctx.error(line_of(item, "direction"), f"{key}.direction", f"{direction!r} is not one of "
                            f"{', '.join(DIRECTIONS)}")
        if any(o.metric == metric for o in out):
            raise ctx.error(iline, key, f"'{metric}' is already an objective")
        out.append(Objective(metric, direction or "maximize"))
    return out


def _parse_named(ctx: Ctx, raw: dict, key: str, names: tuple[str, ...], extra_keys: tuple[str, ...],
                 default: str) -> tuple[str, dict, dict]:
    """A sampler / pruner: a name, or {name, options, ...}; -> (name, options, the mapping)."""
    node = raw.get(key)
    node = {"name": node} if isinstance(node, str) else ({} if node is None else node)
    ctx.expect(node, dict, line_of(raw, key), key, f"a name ({', '.join(names)}) or a mapping with name, options")
    ctx.keys(node, ("name", *extra_keys, "options"), key)
    name = node.get("name", default)
    if name not in names:
        raise ctx.error(line_of(node, "name") or line_of(raw, key), f"{key}.name",
                        f"{name!r} is not one of {', '.join(names)}")
    options = node.get("options") or {}
    ctx.expect(options, dict, line_of(node, "options"), f"{key}.options", "a mapping of constructor arguments")
    if name in OPTUNA_CLASSES:
        import optuna  # noqa: PLC0415 - only to read the constructor's arguments

        module, cls = OPTUNA_CLASSES[name]
        valid = [a for a in inspect.signature(getattr(getattr(optuna, module), cls)).parameters
                 if a not in ("self", "seed", "search_space")]  # the seed is `sampler.seed`; the grid is `space`'s
        for option in options:
            if option not in valid:
                raise ctx.error(line_of(options, option), f"{key}.options.{option}", f"not an argument of optuna."
                                f"{module}.{cls}; its arguments: {', '.join(valid) or 'none'}")
    return name, plain(options), node


def _parse_rerun(ctx: Ctx, raw: dict) -> RerunSpec:
    node = raw.get("rerun")
    if node is None:
        return RerunSpec()
    ctx.expect(node, dict, line_of(raw, "rerun"), "rerun", "a mapping with top, seeds")
    ctx.keys(node, RERUN_KEYS, "rerun")
    default = RerunSpec()
    top = _int(ctx, node.get("top", default.top), line_of(node, "top"), "rerun.top", 1)
    seeds = default.seeds if "seeds" not in node else _parse_seeds(ctx, node["seeds"], line_of(node, "seeds"),
                                                                     "rerun.seeds")
    if any(s < 0 for s in seeds):
        raise ctx.error(line_of(node, "seeds"), "rerun.seeds", f"seeds are >= 0, got {seeds}")
    return RerunSpec(top, seeds)


def _check_cross(ctx: Ctx, raw: dict, search: Search, pruner_node: dict) -> None:
    for p in search.space:
        if search.sampler.name == "cmaes" and p.kind == "categorical":
            raise ctx.error(p.line, f"space.{p.name}", "the cmaes sampler cannot sample a categorical parameter; use "
                            "sampler tpe or random, or a float / int range")
        if search.sampler.name == "grid" and p.kind == "float":
            raise ctx.error(p.line, f"space.{p.name}", "the grid sampler needs a finite grid, and a float is "
                            "continuous: make it type int (with a step) or categorical with choices")
    if len(search.objectives) == 2 and search.pruner.name != "none":
        raise ctx.error(line_of(pruner_node, "name") or line_of(raw, "pruner"), "pruner",
                        f"Optuna cannot prune a multi-objective search; set pruner: none (got {search.pruner.name})")
    for where, lines in [("overrides", search.common_lines)] + [(f"profiles.{n}", p.lines)
                                                              for n, p in search.profiles.items()]:
        if find_line("train.seed", lines) is not None:
            raise ctx.error(find_line("train.seed", lines), where, "train.seed is set by the search's 'seed'")
    try:
        check_delta(search.common)
    except ConfigError as exc:
        message = str(exc).splitlines()[0]
        raise ctx.error(find_line(error_key(message), search.common_lines) or 0, "overrides", message) from None


def parse_search(path: str | Path) -> Search:
    """Parse and validate a search file's schema (`load_search` also resolves trial configs); raise `StudyError`."""
    path = Path(path)
    ctx, raw, name = read_top(path, "search", TOP_KEYS, "name, base, space, profiles")
    if "base" not in raw:
        raise ctx.error(raw.line, "base", "missing: a config file (studies/configs/paa.yaml) or an inline config")
    base, base_name = _load_base(ctx, raw["base"], line_of(raw, "base"), "base")
    common, common_lines = nest(ctx, raw.get("overrides"), "overrides", line_of(raw, "overrides"))
    profiles = _parse_profiles(ctx, raw)
    space = _parse_space(ctx, raw)
    objectives = _parse_objectives(ctx, raw)
    sampler_name, sampler_options, sampler_node = _parse_named(ctx, raw, "sampler", SAMPLERS, ("seed",), "tpe")
    sampler_seed = _int(ctx, sampler_node.get("seed", 0), line_of(sampler_node, "seed"), "sampler.seed", 0)
    pruner_name, pruner_options, pruner_node = _parse_named(ctx, raw, "pruner", PRUNERS, (),
                                                            "none" if len(objectives) == 2 else "median")
    trials = _int(ctx, raw.get("trials", 16), line_of(raw, "trials"), "trials", 1)
    seed = _int(ctx, raw.get("seed", 0), line_of(raw, "seed"), "seed", 0)
    search = Search(path, name, str(raw.get("description") or ""), base, base_name, common, common_lines, profiles,
                    space, objectives, SamplerSpec(sampler_name, sampler_seed, sampler_options),
                    PrunerSpec(pruner_name, pruner_options), trials, seed, _parse_rerun(ctx, raw))
    _check_cross(ctx, raw, search, pruner_node)
    return search


def _top(p: Param) -> float | int:
    """The largest value Optuna can propose for a number: high, or the last step of the grid below it."""
    if p.step is None:
        return p.high
    top = p.low + p.step * int((p.high - p.low) // p.step)
    return int(top) if p.kind == "int" else top


def sample_values(search: Search) -> list[dict[str, Any]]:
    """Values covering the space's edges: every number at its low (categoricals at their first choice), then
    one parameter at a time at its top value or at each other choice."""
    first = {p.name: p.choices[0] if p.kind == "categorical" else p.low for p in search.space}
    out = [first]
    for p in search.space:
        for value in (p.choices[1:] if p.kind == "categorical" else [_top(p)]):
            out.append({**first, p.name: value})
    return out


def check_profile(search: Search, profile: str) -> None:
    """Resolve the samples' trial configs under `profile`; the objectives must be metrics its evaluation reports."""
    ctx = Ctx(search.path)
    for values in sample_values(search):
        cfg = trial_config(search, profile, values)
    prof = search.profiles[profile]
    for objective in search.objectives:
        metric = objective.metric
        if metric in VOC_METRIC_NAMES and metric not in metric_names(cfg.eval.voc_metric):
            raise ctx.error(prof.line, f"profiles.{profile}", f"the objective {metric} is not computed with "
                            f"eval.voc_metric='{cfg.eval.voc_metric}'; set eval.voc_metric (11point, area, both)")
        if metric in extra.METRIC_NAMES and metric not in extra.metric_names(cfg.eval):
            raise ctx.error(prof.line, f"profiles.{profile}", f"the objective {metric} is not computed: set "
                            f"eval.{extra.switch_of(metric)}: true")


def load_search(path: str | Path) -> Search:
    """`parse_search`, then `check_profile` under every profile: a search that loads can start."""
    search = parse_search(path)
    for profile in search.profiles:
        check_profile(search, profile)
    return search


__all__ = ["parse_search", "load_search", "check_profile", "sample_values", "SAMPLERS", "PRUNERS"]
