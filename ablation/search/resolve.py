"""One trial's config: base <- search overrides <- profile <- the trial's parameter values <- train.seed.

The trial's values come after the profile (a profile may not undo what is searched); an error names the
search file's line that set the offending key, or the parameter's line for a value the space proposed.
"""
from __future__ import annotations

from typing import Any

from ablation.search.spec import Search
from ablation.study.source import Ctx, error_key, find_line
from detector.config import Config, ConfigError, build_config, deep_merge


def nested(dotted: dict[str, Any]) -> dict:
    """{"a.b": 1, "a.c": 2} -> {"a": {"b": 1, "c": 2}}."""
    out: dict = {}
    for key, value in dotted.items():
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def trial_config(search: Search, profile: str, values: dict[str, Any]) -> Config:
    """The config of a trial whose parameters (by `Param.name`) take `values`; raises the search's
    `StudyError` (file:line: key: message) when the result is not a valid config."""
    ctx = Ctx(search.path)
    prof = search.profiles[profile]
    by_name = {p.name: p for p in search.space}
    unknown = set(values) - set(by_name)
    if unknown:
        raise ctx.error(0, "space", f"no parameter named {', '.join(sorted(unknown))}")
    trial = nested({by_name[n].key: v for n, v in values.items()})
    data = deep_merge(deep_merge(deep_merge(search.base, search.common), prof.data), trial)
    data = deep_merge(data, {"train": {"seed": search.seed}})
    try:
        return build_config(data)
    except ConfigError as exc:
        message = str(exc).splitlines()[0]
        key = error_key(message)
        params = {p.key: p.line for p in search.space if p.name in values}
        for where, lines in (("space", params), (f"profiles.{profile}", prof.lines), ("overrides", search.common_lines)):
            line = find_line(key, lines)
            if line is not None:
                raise ctx.error(line, where, message) from None
        raise ctx.error(0, f"base ({search.base_name})", message) from None


__all__ = ["trial_config", "nested"]
