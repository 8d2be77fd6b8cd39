"""A parsed search file (`studies/search_*.yaml`): what `load.parse_search` returns and `run.run_search` executes.

A search is a study whose rows are decided at run time: Optuna proposes values for the named parameters of
`space`, each trial is one run of base <- overrides <- profile <- the trial's values <- train.seed, trained
through the one execution path (`ablation.execution.run.execute`), and its objective(s) read from the run's
final validation metrics. Afterwards the `rerun.top` best configurations are trained again with `rerun.seeds`
so that the answer comes with an interval (`report`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ablation.profiles import ProfileChoice, choose_profile
from ablation.study.load import Profile

PARAM_KINDS = ("float", "int", "categorical")
DIRECTIONS = ("maximize", "minimize")


@dataclass
class Param:
    """One searched parameter: `name` (Optuna's) sets the config key `key` (dotted)."""

    name: str
    key: str
    kind: str  # one of PARAM_KINDS
    low: float | int | None = None  # float / int: bounds, both included
    high: float | int | None = None
    log: bool = False  # float / int: sample on a log scale
    step: float | int | None = None  # int (default 1) / float (None: continuous)
    choices: list[Any] = field(default_factory=list)  # categorical: the values (scalars or lists)
    line: int = 0  # in the search file


@dataclass
class Objective:
    """A value read from a finished trial's run: `metric` is a val metric name ("AP", "AP50", "VOC07_mAP"...) or
    a logged run metric with its prefix ("time/step_s", "assign/pos_per_gt_mean")."""

    metric: str = "AP"
    direction: str = "maximize"  # one of DIRECTIONS


@dataclass
class SamplerSpec:
    name: str = "tpe"  # tpe | random | grid | cmaes
    seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)  # passed to the sampler's constructor


@dataclass
class PrunerSpec:
    name: str = "median"  # median | hyperband | none
    options: dict[str, Any] = field(default_factory=dict)  # passed to the pruner's constructor


@dataclass
class RerunSpec:
    top: int = 3  # configurations re-run after the trials
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])


@dataclass
class Search:
    path: Path
    name: str  # also the MLflow experiment and the storage's study name (with the profile)
    description: str
    base: dict  # resolved base config (plain nested dict)
    base_name: str
    common: dict  # search-level `overrides` (nested plain dict)
    common_lines: dict[str, int]  # their dotted keys -> line
    profiles: dict[str, Profile]  # as a study's (configs, overrides, seeds: a profile's replace `rerun.seeds`)
    space: list[Param]
    objectives: list[Objective]  # one, or two for a multi-objective search (then no pruning)
    sampler: SamplerSpec = field(default_factory=SamplerSpec)
    pruner: PrunerSpec = field(default_factory=PrunerSpec)
    trials: int = 16  # default of `anchorlab search run --trials`
    seed: int = 0  # the seed every trial trains with
    rerun: RerunSpec = field(default_factory=RerunSpec)

    def rerun_seeds(self, profile: str) -> list[int]:
        return self.profiles[profile].seeds or self.rerun.seeds

    def profile_choice(self, given: str | None = None) -> ProfileChoice:
        """`given`, or the default: `paper` with a CUDA GPU, `quick` without, else the first (`ablation.profiles`)."""
        return choose_profile(self.profiles, given, self.path, single_only=False)

    def default_profile(self) -> str:
        return self.profile_choice().name


__all__ = ["Param", "Objective", "SamplerSpec", "PrunerSpec", "RerunSpec", "Search", "PARAM_KINDS", "DIRECTIONS"]
