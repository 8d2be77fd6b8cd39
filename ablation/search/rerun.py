"""The noise-aware answer of a search: its best configurations trained again with several seeds.

A trial's objective is one training at one seed; on a noisy objective the best trial is partly the luckiest.
So after the trials, the `rerun.top` best COMPLETE trials with distinct configs, and the search's default (the
base config with no searched value changed, what a paper would use), are each trained with every seed of
`Search.rerun_seeds(profile)` (a trial's own seed reuses its run: `eval_every` does not enter the run key).
Each candidate gets its mean with a 95% Student t interval over seeds; the answer is the best mean, with
paired t intervals over seeds against the runner-up and against the default, "not separable" when the
interval holds 0. Reruns are child runs of the search's parent (tag role=rerun), through `execute`.

The best configuration is written as a YAML file of the searched keys only, to layer with `-c` on the
search's base and profile, and printed as a study row.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ablation.execution.run import RunSpec, execute
from ablation.execution.worker import ProgressEvents
from ablation.search.resolve import nested, trial_config
from ablation.search.space import decode
from ablation.search.spec import Search
from ablation.tables.stats import Interval, mean_interval, paired_interval
from ablation.tracking.units import PERCENT, is_percent_name
from detector.run_key import run_key

DEFAULT = "default"
RERUN_JSON = "search/{profile}-rerun.json"  # the result on the search's parent run


@dataclass
class Candidate:
    label: str  # "default" or "trial N"
    trial: int | None
    values: dict  # the searched parameters' values, by name (the default: none changed)
    search_value: float | None = None  # the trial's own objective
    by_seed: dict[int, float] = field(default_factory=dict)  # objective per seed (finished reruns)
    failed: dict[int, str] = field(default_factory=dict)  # seed -> reason

    @property
    def interval(self) -> Interval | None:
        return mean_interval(list(self.by_seed.values())) if self.by_seed else None


@dataclass
class RerunResult:
    metric: str
    maximize: bool
    candidates: list[Candidate]  # best mean first; the default among them
    vs_runner_up: Interval | None = None  # best minus runner-up, paired over seeds
    vs_default: Interval | None = None  # best minus the default, paired over seeds
    best_file: Path | None = None

    @property
    def best(self) -> Candidate | None:
        return self.candidates[0] if self.candidates and self.candidates[0].by_seed else None


def _better(maximize: bool):
    return (lambda v: -v) if maximize else (lambda v: v)


def top_trials(study, search: Search, profile: str, n: int) -> list[Candidate]:
    """The `n` best COMPLETE trials by the first objective, one per distinct config (run key)."""
    from optuna.trial import TrialState

    maximize = search.objectives[0].direction == "maximize"
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.values]
    done.sort(key=lambda t: (_better(maximize)(t.values[0]), t.number))
    out, keys = [], {run_key(trial_config(search, profile, {}))}  # the default is a candidate of its own
    for t in done:
        values = decode(search.space, t.params)
        key = run_key(trial_config(search, profile, values))
        if key in keys:
            continue
        keys.add(key)
        out.append(Candidate(f"trial {t.number}", t.number, values, float(t.values[0])))
        if len(out) == n:
            break
    return out


def rerun_top(search: Search, profile: str, study, parent_run_id: str, workspace, tracking_uri: str,
              display=None) -> RerunResult:
    """Train the best trials and the default with every rerun seed (module doc) and rank them by mean."""
    metric = search.objectives[0].metric
    maximize = search.objectives[0].direction == "maximize"
    candidates = top_trials(study, search, profile, search.rerun.top) + [Candidate(DEFAULT, None, {})]
    for cand in candidates:
        base = trial_config(search, profile, cand.values)
        for seed in search.rerun_seeds(profile):
            cfg = copy.deepcopy(base)
            cfg.train.seed = seed
            tags = {"role": "rerun", "search": search.name, "profile": profile, "candidate": cand.label,
                    "seed": str(seed), **({"trial": str(cand.trial)} if cand.trial is not None else {})}
            spec = RunSpec(cfg, f"{cand.label} · seed {seed}", search.name, parent_run_id, tags, reuse=True,
                           resume=True, restart_hint="the same command trains it again")
            if display is not None:
                display("rerun-start", {"candidate": cand.label, "seed": seed})
            value, reason, outcome = train_for_value(spec, metric, workspace, tracking_uri, display, spec.label)
            if value is None:
                cand.failed[seed] = reason
            else:
                cand.by_seed[seed] = value
            if display is not None:
                display("rerun-end", {"candidate": cand.label, "seed": seed, "status": outcome.status,
                                      "value": value, "reason": reason, "trained": outcome.result is not None})
    return rank(candidates, metric, maximize)


def train_for_value(spec: RunSpec, metric: str, workspace, tracking_uri: str, display=None, label: str = ""):
    """Execute `spec` ("iter" progress events under `label` to `display(kind, data)`) -> (its finite `metric`
    or None, why it is missing, the outcome). `outcome.result` is None when an existing run answered."""
    hooks = None if display is None else ProgressEvents(lambda kind, **data: display(kind, data),
                                                        spec.config.train.iterations, rerun=label)
    outcome = execute(spec, workspace, tracking_uri, hooks=hooks)
    value = outcome.metrics.get(metric) if outcome.status == "FINISHED" else None
    if value is None or not math.isfinite(value):
        return None, outcome.reason or f"{metric} not reported", outcome
    return float(value), "", outcome


def rank(candidates: list[Candidate], metric: str, maximize: bool) -> RerunResult:
    """Candidates best mean first (those without a finished seed last), with the paired differences of the
    best to the runner-up and to the default."""
    ranked = sorted(candidates, key=lambda c: (not c.by_seed, _better(maximize)(c.interval.estimate)
                                               if c.by_seed else 0.0))
    result = RerunResult(metric, maximize, ranked)
    best = result.best
    if best is not None:
        sign = 1.0 if maximize else -1.0  # differences read "how much better"
        runner = next((c for c in ranked[1:] if c.by_seed), None)
        default = next((c for c in ranked if c.label == DEFAULT), None)
        result.vs_runner_up = _diff(best, runner, sign) if runner is not None else None
        result.vs_default = _diff(best, default, sign) if default is not None and default is not best else None
    return result


def to_dict(result: RerunResult) -> dict:
    """Plain data for JSON (`search/<profile>-rerun.json` on the search's parent run): what `from_dict` reads.
    "unit": AP-type objectives are in percent (JSON written before holds fractions and has no "unit")."""
    return {"metric": result.metric, "maximize": result.maximize, "unit": PERCENT,
            "candidates": [{"label": c.label, "trial": c.trial, "values": c.values, "search_value": c.search_value,
                            "by_seed": {str(k): v for k, v in c.by_seed.items()},
                            "failed": {str(k): v for k, v in c.failed.items()}} for c in result.candidates]}


def from_dict(data: dict) -> RerunResult:
    """The result `to_dict` stored; an AP-type objective stored before units (fractions) comes back in percent."""
    scale = 100.0 if data.get("unit") != PERCENT and is_percent_name(data["metric"]) else 1.0
    cands = [Candidate(c["label"], c["trial"], dict(c["values"]),
                       None if c["search_value"] is None else scale * c["search_value"],
                       {int(k): scale * float(v) for k, v in c["by_seed"].items()},
                       {int(k): v for k, v in c["failed"].items()})
             for c in data["candidates"]]
    return rank(cands, data["metric"], bool(data["maximize"]))


def _diff(a: Candidate, b: Candidate, sign: float) -> Interval | None:
    return paired_interval({s: sign * v for s, v in a.by_seed.items()}, {s: sign * v for s, v in b.by_seed.items()})


def best_config_yaml(search: Search, cand: Candidate) -> str:
    """The best candidate's searched keys as a config file to layer on the search's base and profile."""
    keys = {p.name: p.key for p in search.space}
    body = yaml.safe_dump(nested({keys[n]: v for n, v in cand.values.items()}), sort_keys=True)
    return (f"# {search.name}: {cand.label} (mean of {len(cand.by_seed)} seeds); layer it last, e.g.\n"
            f"#   anchorlab train -c {search.base_name} -c <profile configs> -c THIS_FILE\n" + (body if cand.values else "{}\n"))


def study_row(search: Search, cand: Candidate) -> str:
    """The best candidate as a row of a study file (its `overrides`)."""
    keys = {p.name: p.key for p in search.space}
    inner = ", ".join(f"{keys[n]}: {v!r}" for n, v in cand.values.items())
    return f"  - label: {search.name} {cand.label}\n    overrides: {{{inner}}}"


def write_best(search: Search, profile: str, result: RerunResult, workspace: Path) -> Path | None:
    """`<workspace>/search/<name>-<profile>-best.yaml` for the best candidate (None when none finished)."""
    if result.best is None:
        return None
    path = Path(workspace) / "search" / f"{search.name}-{profile}-best.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(best_config_yaml(search, result.best))
    result.best_file = path
    return path


def _fmt(iv: Interval | None) -> str:
    if iv is None or iv.low is None:
        return "n/a (fewer than 2 paired seeds)"
    tag = "" if iv.significant else " (not separable)"
    return f"{iv.estimate:+.3f} [{iv.low:+.3f}, {iv.high:+.3f}]{tag}"


def format_rerun(search: Search, result: RerunResult, scale: float = 1.0) -> str:
    """A markdown table of the candidates (mean ± 95% half-width over seeds, per-seed values) and the verdict.
    Values as the objective holds them (AP-type ones in percent), times `scale`."""
    unit = " (%)" if is_percent_name(result.metric) and scale == 1.0 else ("" if scale == 1.0 else f" (x{scale:g})")
    keys = [p.name for p in search.space]
    lines = [f"| candidate | {' | '.join(keys)} | search {result.metric} | {result.metric}{unit} over seeds |",
             "|:--|" + "--:|" * (len(keys) + 2)]
    for c in result.candidates:
        iv = c.interval
        cell = "failed" if iv is None else (f"{scale * iv.estimate:.2f}" + (f" ± {scale * iv.half:.2f}" if iv.half is not None else " (1 seed)"))
        seeds = ", ".join(f"{scale * v:.2f}" for _, v in sorted(c.by_seed.items()))
        params = " | ".join(_param(c.values.get(k)) for k in keys)
        search_value = "" if c.search_value is None else f"{scale * c.search_value:.2f}"
        lines.append(f"| {c.label} | {params} | {search_value} | {cell} ({seeds}) |")
    best = result.best
    if best is not None:
        lines += ["", f"best over the seeds: {best.label}; vs runner-up {_scaled(result.vs_runner_up, scale)}; "
                      f"vs default {_scaled(result.vs_default, scale)}"]
        if result.best_file is not None:
            lines.append(f"best config: {result.best_file}")
        lines += ["as a study row:", study_row(search, best)]
    return "\n".join(lines)


def _param(v) -> str:
    return "(default)" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))


def _scaled(iv: Interval | None, scale: float) -> str:
    if iv is None or iv.low is None:
        return "n/a (fewer than 2 paired seeds)"
    return _fmt(Interval(scale * iv.estimate, scale * iv.low, scale * iv.high, iv.n))


__all__ = ["Candidate", "RerunResult", "top_trials", "rerun_top", "train_for_value", "rank", "to_dict", "from_dict", "RERUN_JSON", "write_best", "format_rerun", "best_config_yaml",
           "study_row", "DEFAULT"]
