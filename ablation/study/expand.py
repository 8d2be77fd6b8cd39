"""A study expanded into runs: one resolved config per row x seed under a profile, keyed by its run key.

The resolution order is `ablation/study/load.py`'s (base <- study overrides <- row overrides <- profile
configs <- profile overrides <- seed). Every config goes through `build_config`; an error comes back at
the line of the study file that set the offending key.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from ablation.study.load import Profile, Study, parse_study
from ablation.study.source import Ctx, StudyError, error_key, find_line
from detector.config import Config, ConfigError, build_config, check_delta, deep_merge, flatten
from detector.evaluation import extra
from detector.evaluation.voc_eval import METRIC_NAMES as VOC_METRIC_NAMES, metric_names
from detector.run_key import run_key


@dataclass
class StudyRun:
    """One run of a study: a row at one seed under one profile, with its resolved config and run key."""

    study: str
    profile: str
    label: str
    row: int  # index of the row in paper order
    seed: int
    config: Config
    key: str

    @property
    def run_name(self) -> str:
        """What MLflow's runs table shows first: "ATSS · seed 1" (the row label, then the seed)."""
        return f"{self.label} · seed {self.seed}"

    @property
    def tags(self) -> dict[str, str]:
        """The MLflow tags of its run (role=row marks the runs a study table reads; `row`, `method` and `seed`
        are the columns to compare rows by in the UI; every tracked run also gets `method`, `writer._new_run`)."""
        return {"role": "row", "study": self.study, "profile": self.profile, "row": self.label,
                "row_index": str(self.row), "seed": str(self.seed), "method": self.config.assign.name}


def _build(ctx: Ctx, data: dict, sources: list[tuple[str, dict[str, int]]], fallback: tuple[int, str]) -> Config:
    """build_config with the error located at the first source whose line map names the key."""
    try:
        return build_config(data)
    except ConfigError as exc:
        message = str(exc).splitlines()[0]
        key = error_key(message)
        for where, lines in sources:
            line = find_line(key, lines)
            if line is not None:
                raise ctx.error(line, where, message) from None
        raise ctx.error(fallback[0], fallback[1], message) from None


def _check_overrides(ctx: Ctx, study: Study) -> None:
    """Keys, types and choices of each override mapping on its own: the study's, then each row's.

    Expansion validates resolved configs, where a key that a profile sets no longer holds the row's value:
    a row's `train.iterations: twenty` would pass unseen whenever every profile sets train.iterations.
    """
    mappings = [("overrides", study.common, study.common_lines)]
    mappings += [(f"rows[{row.index}].overrides", row.overrides, row.override_lines) for row in study.rows]
    mappings += [(f"rows[{row.index}].profile_overrides.{name}", data, lines)
                 for row in study.rows for name, (data, lines) in row.profile_overrides.items()]
    for where, data, lines in mappings:
        try:
            check_delta(data)
        except ConfigError as exc:
            message = str(exc).splitlines()[0]
            raise ctx.error(find_line(error_key(message), lines) or 0, where, message) from None


def _expand(ctx: Ctx, study: Study, profile: Profile) -> tuple[list[StudyRun], list[str]]:
    runs: list[StudyRun] = []
    warnings: list[str] = []
    by_key: dict[str, str] = {}
    seeds = profile.seeds or study.seeds
    for row in study.rows:
        where = f"rows[{row.index}]"
        row_lines = {**study.common_lines, **row.override_lines}
        for name, (_, lines) in [("overrides", ({}, row_lines))] + [
                (f"profile_overrides.{p}", v) for p, v in row.profile_overrides.items()]:
            if find_line("train.seed", lines) is not None:
                raise ctx.error(find_line("train.seed", lines), f"{where}.{name}",
                                "train.seed is set by the study's 'seeds'")
        data = deep_merge(deep_merge(row.base, study.common), row.overrides)
        ours = flatten(deep_merge(study.common, row.overrides))
        mine, mine_lines = row.profile_overrides.get(profile.name, ({}, {}))
        for dotted, value in flatten(profile.data).items():
            if dotted in ours and ours[dotted] != value and dotted not in mine_lines:
                warnings.append(f"{ctx.path}:{row_lines[dotted] if dotted in row_lines else row.line}: {where} "
                                f"'{row.label}' sets {dotted}={ours[dotted]!r}; profile '{profile.name}' replaces it "
                                f"with {value!r}")
        data = deep_merge(deep_merge(data, profile.data), mine)
        base_where = f"{where}.base ({row.base_name})" if row.base_name != "inline" else f"{where}.base"
        sources = [(f"{where}.profile_overrides.{profile.name}", mine_lines), (f"{where}.overrides", row.override_lines),
                   ("overrides", study.common_lines), (f"profiles.{profile.name}", profile.lines)]
        cfg = _build(ctx, data, sources, (row.line, base_where))
        missing = [m for m in study.metrics if m in VOC_METRIC_NAMES and m not in metric_names(cfg.eval.voc_metric)]
        if missing:  # else its column would stay empty
            raise ctx.error(row.line, where, f"metrics name {', '.join(missing)}, which eval.voc_metric="
                            f"'{cfg.eval.voc_metric}' does not compute; set eval.voc_metric (11point, area, both)")
        missing = [m for m in study.metrics if m in extra.METRIC_NAMES and m not in extra.metric_names(cfg.eval)]
        if missing:
            switches = list(dict.fromkeys(f"eval.{extra.switch_of(m)}" for m in missing))
            raise ctx.error(row.line, where, f"metrics name {', '.join(missing)}, which {', '.join(switches)}=false "
                            f"does not compute; set {', '.join(k + ': true' for k in switches)}")
        for seed in seeds:
            run_cfg = copy.deepcopy(cfg)
            run_cfg.train.seed = seed
            try:
                key = run_key(run_cfg)
            except ConfigError as exc:  # e.g. a COCO annotation file that is not there
                raise ctx.error(row.line, where, str(exc)) from None
            if key in by_key:
                raise ctx.error(row.line, where, f"'{row.label}' resolves to the same config as '{by_key[key]}' "
                                f"under profile '{profile.name}' (seed {seed}); rows must differ")
            by_key[key] = row.label
            runs.append(StudyRun(study.name, profile.name, row.label, row.index, seed, run_cfg, key))
    return runs, warnings


def load_study(path: str | Path) -> Study:
    """Parse and fully validate a study file, resolving every row x seed under every profile."""
    study = parse_study(path)
    ctx = Ctx(study.path)
    _check_overrides(ctx, study)
    for profile in study.profiles.values():
        study.runs[profile.name], study.warnings[profile.name] = _expand(ctx, study, profile)
    return study


def parse_seeds(text: str) -> list[int]:
    """`--seeds` as given on the command line ("0,1,2") as a list of ints."""
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise StudyError(f"--seeds: expected comma-separated integers, got '{text}'") from None


def with_seeds(study: Study, profile: str, seeds: list[int]) -> Study:
    """`study` with `profile` run over `seeds` instead of its own (a copy; e.g. one seed where three do not
    fit the time at hand: tables then say "1 seed" rather than inventing an interval)."""
    if profile not in study.profiles:
        raise StudyError(f"{study.path}: no profile '{profile}'; profiles: {', '.join(study.profiles)}")
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise StudyError(f"--seeds: expected distinct seeds >= 0, got {seeds}")
    out = copy.copy(study)
    out.profiles, out.runs, out.warnings = dict(study.profiles), dict(study.runs), dict(study.warnings)
    out.profiles[profile] = dataclasses.replace(study.profiles[profile], seeds=list(seeds))
    out.runs[profile], out.warnings[profile] = _expand(Ctx(study.path), out, out.profiles[profile])
    return out


def expand(study: Study, profile: str | None = None) -> list[StudyRun]:
    """The runs of `study` under `profile` (default: `Study.default_profile`), in paper order."""
    name = profile or study.default_profile()
    if name not in study.profiles:
        raise StudyError(f"{study.path}: no profile '{name}'; profiles: {', '.join(study.profiles)}")
    return study.runs[name]


def spec_hash(study: Study, profile: str) -> str:
    """Hash of what a profile of the study runs: name, labels, seeds, run keys, metric columns."""
    payload = {
        "name": study.name, "profile": profile, "metrics": study.metrics,
        "runs": [(r.label, r.seed, r.key) for r in expand(study, profile)],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


__all__ = ["StudyRun", "load_study", "expand", "spec_hash"]
