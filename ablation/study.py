"""Study files (`studies/*.yaml`): schema, validation with file:line errors, expansion into runs.

A study is a paper table: rows (explicit, or generated from `axes`) x `seeds`, under a `profile`.
One row resolves to one config, in this order (later wins):

    base (the study's, or the row's own)  <-  study `overrides`  <-  row `overrides`
        <-  profile `configs` (files)  <-  profile `overrides`  <-  train.seed = seed

That is one level of inheritance: a base plus deltas (DESIGN.md). Profiles are machine settings
(`paper`, `quick`, `smoke`) applied after the row, so a profile key that replaces a value a row sets
is reported in `Study.warnings`. Every config goes through `detector.config.build_config`; its
one-line errors come back prefixed with the study file, the line and the key that caused them:

    studies/x.yaml:12: rows[3].overrides: unknown key 'train.iteratons'; valid keys here: ...

Schema (top level):  name, description, paper {title, table, file}, base (path or inline config),
overrides, rows | axes, seeds, profiles {NAME: {configs, overrides, seeds, description}}, metrics,
layout [{title, label_header, label_columns, rows | groups [{title, rows}]}].
A row: {label, base, overrides, reference ({METRIC: value} or "training failed"), cells}.
Axes: {values {dotted.key: [..]}, mode grid|zip, label "K={assign.paa.topk}", reference {label: ..}}.
Paths are relative to the study file, else to the repository root. Exponent numbers (1e-4, 1.0e12)
are floats here (YAML 1.2), where PyYAML alone would read them as strings.
"""
from __future__ import annotations

import copy
import hashlib
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from detector.config import Config, ConfigError, build_config, config_hash, deep_merge, flatten, load_yaml
from detector.evaluation.coco_eval import STAT_NAMES

REPO_ROOT = Path(__file__).resolve().parents[1]
TOP_KEYS = ("name", "description", "paper", "base", "overrides", "rows", "axes", "seeds", "profiles",
            "metrics", "layout")
ROW_KEYS = ("label", "base", "overrides", "reference", "cells")
AXES_KEYS = ("values", "mode", "label", "reference")
PROFILE_KEYS = ("description", "configs", "overrides", "seeds")
PAPER_KEYS = ("title", "table", "file")
LAYOUT_KEYS = ("title", "label_header", "label_columns", "rows", "groups")
GROUP_KEYS = ("title", "rows")
DEFAULT_METRICS = ["AP", "AP50", "AP75", "APs", "APm", "APl"]
FAILED_REFERENCE = "training failed"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class StudyError(ConfigError):
    """A study-file problem, one line: 'FILE:LINE: KEY: message'."""


# ---------------------------------------------------------------- YAML with line numbers
class LineDict(dict):
    """A mapping that remembers the 1-based line of itself (`line`) and of each key (`lines`)."""

    line = 0

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.lines: dict = {}


class LineList(list):
    """A sequence that remembers its own line and each item's line."""

    line = 0

    def __init__(self, *args):
        super().__init__(*args)
        self.lines: list[int] = []


class _LineLoader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> LineDict:
    loader.flatten_mapping(node)
    out = LineDict()
    out.line = node.start_mark.line + 1
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in out:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        out[key] = loader.construct_object(value_node, deep=True)
        out.lines[key] = key_node.start_mark.line + 1
    return out


def _construct_sequence(loader: _LineLoader, node: yaml.SequenceNode) -> LineList:
    out = LineList(loader.construct_object(child, deep=True) for child in node.value)
    out.line = node.start_mark.line + 1
    out.lines = [child.start_mark.line + 1 for child in node.value]
    return out


# YAML 1.2 exponent floats (1e-4, 1.0e12): PyYAML (YAML 1.1) would read them as strings.
_LineLoader.add_implicit_resolver("tag:yaml.org,2002:float",
                                  re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))
_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


def _plain(value: Any) -> Any:
    """LineDict/LineList -> dict/list, recursively (for hashing and configs)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


# ---------------------------------------------------------------- the parsed study
@dataclass
class Row:
    label: str
    index: int
    line: int
    base: dict  # resolved base config (plain dict)
    base_name: str  # the file it came from, or "inline"
    overrides: dict  # nested plain dict
    override_lines: dict[str, int]  # dotted key -> line
    reference: dict[str, float | str] | str | None = None
    cells: dict[str, str] = field(default_factory=dict)


@dataclass
class Profile:
    name: str
    line: int
    data: dict  # configs merged, then overrides (nested plain dict)
    lines: dict[str, int]  # dotted key -> line
    seeds: list[int] | None = None
    description: str = ""


@dataclass
class LayoutPart:
    title: str
    label_header: str
    label_columns: list[str]
    groups: list[tuple[str, list[str]]]  # (group title, row labels)


@dataclass
class Study:
    path: Path
    name: str
    description: str
    paper: dict[str, str]
    rows: list[Row]
    seeds: list[int]
    profiles: dict[str, Profile]
    metrics: list[str]
    layout: list[LayoutPart]
    warnings: dict[str, list[str]] = field(default_factory=dict)  # profile -> messages
    specs: dict[str, list[RunSpec]] = field(default_factory=dict)  # profile -> runs (filled by load_study)

    def default_profile(self) -> str:
        if "paper" in self.profiles:
            return "paper"
        if len(self.profiles) == 1:
            return next(iter(self.profiles))
        raise StudyError(f"{self.path}: choose a profile with --profile: {', '.join(self.profiles)}")

    def row(self, label: str) -> Row:
        return next(r for r in self.rows if r.label == label)


@dataclass
class RunSpec:
    """One tracked run of a study: a row at one seed under one profile."""

    study: str
    profile: str
    label: str
    row: int  # index of the row in paper order
    seed: int
    config: Config
    config_hash: str

    @property
    def run_name(self) -> str:
        return f"{self.label} [seed {self.seed}]"


# ---------------------------------------------------------------- validation helpers
class _Ctx:
    """Where we are in the file, to build `FILE:LINE: KEY: message` errors."""

    def __init__(self, path: Path):
        self.path = path

    def error(self, line: int, key: str, message: str) -> StudyError:
        where = f"{self.path}:{line}" if line else str(self.path)
        return StudyError(f"{where}: {key}: {message}" if key else f"{where}: {message}")

    def keys(self, node: dict, valid: tuple[str, ...], key: str) -> None:
        for k in node:
            if k not in valid:
                name = f"{key}.{k}" if key else str(k)
                raise self.error(_line(node, k), name, f"unknown key '{k}'; valid keys here: {', '.join(valid)}")

    def expect(self, value: Any, types: type | tuple, line: int, key: str, what: str) -> Any:
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in _tuple(types)):
            raise self.error(line, key, f"expected {what}, got {value!r}")
        return value


def _tuple(types) -> tuple:
    return types if isinstance(types, tuple) else (types,)


def _line(node: Any, key: Any = None) -> int:
    if key is not None and isinstance(node, LineDict):
        return node.lines.get(key, node.line)
    if key is not None and isinstance(node, LineList) and isinstance(key, int) and key < len(node.lines):
        return node.lines[key]
    return getattr(node, "line", 0)


def _nest(ctx: _Ctx, node: Any, key: str, line: int) -> tuple[dict, dict[str, int]]:
    """Overrides with dotted or nested keys -> (nested dict, {dotted key: line})."""
    if node is None:
        return {}, {}
    ctx.expect(node, dict, line, key, "a mapping of config keys")
    out: dict = {}
    lines: dict[str, int] = {}

    def walk(mapping: dict, prefix: str) -> None:
        for k, value in mapping.items():
            if not isinstance(k, str) or not k:
                raise ctx.error(_line(mapping, k), key, f"config keys are strings, got {k!r}")
            dotted = f"{prefix}.{k}" if prefix else k
            if isinstance(value, dict) and value:
                walk(value, dotted)
                continue
            if dotted in lines or any(dotted.startswith(p + ".") or p.startswith(dotted + ".") for p in lines):
                raise ctx.error(_line(mapping, k), key, f"'{dotted}' is set twice")
            lines[dotted] = _line(mapping, k)
            node_ = out
            parts = dotted.split(".")
            for part in parts[:-1]:
                node_ = node_.setdefault(part, {})
            node_[parts[-1]] = _plain(value)

    walk(node, "")
    return out, lines


def _resolve_file(ctx: _Ctx, value: Any, line: int, key: str) -> Path:
    ctx.expect(value, str, line, key, "a file path")
    for root in (ctx.path.parent, REPO_ROOT, Path.cwd()):
        candidate = (root / value).resolve()
        if candidate.is_file():
            return candidate
    raise ctx.error(line, key, f"config file not found: {value} (looked next to the study file and in {REPO_ROOT})")


def _load_base(ctx: _Ctx, value: Any, line: int, key: str) -> tuple[dict, str]:
    """A base is a config file path or an inline config mapping."""
    if isinstance(value, dict):
        return _plain(value), "inline"
    path = _resolve_file(ctx, value, line, key)
    try:
        return load_yaml(path), str(value)
    except ConfigError as exc:
        raise ctx.error(line, key, str(exc)) from None


_KEY_IN_ERROR = (re.compile(r"unknown key '([^']+)'"), re.compile(r"^([A-Za-z_][\w.]*)"))


def _error_key(message: str) -> str:
    for pattern in _KEY_IN_ERROR:
        m = pattern.search(message)
        if m:
            return m.group(1)
    return ""


def _find_line(key: str, lines: dict[str, int]) -> int | None:
    """The line of `key`, of a parent of it, or of a child of it, in an override line map."""
    parts = key.split(".")
    for n in range(len(parts), 0, -1):
        prefix = ".".join(parts[:n])
        if prefix in lines:
            return lines[prefix]
    children = [ln for k, ln in lines.items() if k.startswith(key + ".")] if key else []
    return min(children) if children else None


# ---------------------------------------------------------------- parsing
def _parse_rows(ctx: _Ctx, raw: dict, base: tuple[dict, str] | None, metrics: list[str]) -> list[Row]:
    rows_node = raw.get("rows")
    ctx.expect(rows_node, list, _line(raw, "rows"), "rows", "a list of rows")
    if not rows_node:
        raise ctx.error(_line(raw, "rows"), "rows", "needs at least one row")
    rows = []
    for i, node in enumerate(rows_node):
        key = f"rows[{i}]"
        line = _line(rows_node, i)
        ctx.expect(node, dict, line, key, "a mapping with label, overrides, reference")
        ctx.keys(node, ROW_KEYS, key)
        if "label" not in node:
            raise ctx.error(line, key, "missing 'label' (the row's name as the paper prints it)")
        label = node["label"]
        ctx.expect(label, (str, int, float), _line(node, "label"), f"{key}.label", "a string")
        label = str(label)
        if "base" in node:
            row_base = _load_base(ctx, node["base"], _line(node, "base"), f"{key}.base")
        elif base is not None:
            row_base = base
        else:
            raise ctx.error(line, key, "no base config: give the study a 'base' or the row its own")
        overrides, lines = _nest(ctx, node.get("overrides"), f"{key}.overrides", _line(node, "overrides"))
        reference = _parse_reference(ctx, node.get("reference"), _line(node, "reference"), f"{key}.reference", metrics)
        cells = node.get("cells") or {}
        ctx.expect(cells, dict, _line(node, "cells"), f"{key}.cells", "a mapping column -> text")
        rows.append(Row(label, i, line, row_base[0], row_base[1], overrides, lines, reference,
                        {str(k): "" if v is None else str(v) for k, v in cells.items()}))
    return rows


def _parse_reference(ctx: _Ctx, node: Any, line: int, key: str, metrics: list[str]):
    if node is None:
        return None
    if isinstance(node, str):
        if node != FAILED_REFERENCE:
            raise ctx.error(line, key, f"a metric mapping or '{FAILED_REFERENCE}', got {node!r}")
        return node
    ctx.expect(node, dict, line, key, f"a mapping metric -> value (metrics: {', '.join(metrics)})")
    out: dict[str, float | str] = {}
    for name, value in node.items():
        if name not in metrics:
            raise ctx.error(_line(node, name), f"{key}.{name}", f"not a metric column; columns: {', '.join(metrics)}")
        if value is None or value == "-":
            continue
        ctx.expect(value, (int, float), _line(node, name), f"{key}.{name}", "a number (the paper's value)")
        out[name] = float(value)
    return out


_AXIS_FIELD = re.compile(r"\{([A-Za-z_][\w.]*)\}")


def _parse_axes(ctx: _Ctx, raw: dict, base: tuple[dict, str] | None, metrics: list[str]) -> list[Row]:
    node = raw["axes"]
    line = _line(raw, "axes")
    ctx.expect(node, dict, line, "axes", "a mapping with values, mode, label")
    ctx.keys(node, AXES_KEYS, "axes")
    if base is None:
        raise ctx.error(line, "axes", "axes need a study 'base'")
    values = node.get("values")
    ctx.expect(values, dict, _line(node, "values"), "axes.values", "a mapping dotted.key -> list of values")
    if not values:
        raise ctx.error(_line(node, "values"), "axes.values", "needs at least one axis")
    for k, v in values.items():
        ctx.expect(v, list, _line(values, k), f"axes.values.{k}", "a non-empty list")
        if not v:
            raise ctx.error(_line(values, k), f"axes.values.{k}", "expected a non-empty list")
    mode = node.get("mode", "grid")
    if mode not in ("grid", "zip"):
        raise ctx.error(_line(node, "mode"), "axes.mode", f"'{mode}' is not one of grid, zip")
    keys = list(values)
    if mode == "zip":
        lengths = {len(values[k]) for k in keys}
        if len(lengths) > 1:
            raise ctx.error(_line(node, "values"), "axes.values", "zip needs lists of equal length")
        combos = list(zip(*(values[k] for k in keys)))
    else:
        combos = list(itertools.product(*(values[k] for k in keys)))
    template = node.get("label")
    if template is not None:
        ctx.expect(template, str, _line(node, "label"), "axes.label", "a label template like 'K={assign.paa.topk}'")
        for name in _AXIS_FIELD.findall(template):
            if name not in keys:
                raise ctx.error(_line(node, "label"), "axes.label",
                                f"'{{{name}}}' is not an axis; axes: {', '.join(keys)}")
    rows = []
    for i, combo in enumerate(combos):
        setting = dict(zip(keys, combo))
        if template is None:
            label = ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in setting.items())
        else:
            label = _AXIS_FIELD.sub(lambda m: str(setting[m.group(1)]), template)
        overrides, _ = _nest(ctx, setting, "axes.values", _line(node, "values"))
        lines = {k: _line(values, k) for k in keys}
        rows.append(Row(label, i, _line(node, "values"), base[0], base[1], overrides, lines))
    refs = node.get("reference") or {}
    ctx.expect(refs, dict, _line(node, "reference"), "axes.reference", "a mapping label -> metrics")
    by_label = {r.label: r for r in rows}
    for label, ref in refs.items():
        if str(label) not in by_label:
            raise ctx.error(_line(refs, label), "axes.reference", f"no generated row is labelled '{label}'; labels: "
                            f"{', '.join(by_label)}")
        by_label[str(label)].reference = _parse_reference(ctx, ref, _line(refs, label), f"axes.reference.{label}",
                                                          metrics)
    return rows


def _parse_profiles(ctx: _Ctx, raw: dict) -> dict[str, Profile]:
    node = raw.get("profiles")
    if node is None:
        raise ctx.error(0, "profiles", "missing (at least one, e.g. paper: {} and quick: {configs: [...]})")
    ctx.expect(node, dict, _line(raw, "profiles"), "profiles", "a mapping name -> profile")
    out = {}
    for name, prof in node.items():
        key = f"profiles.{name}"
        line = _line(node, name)
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise ctx.error(line, key, "profile names are letters, digits, '_', '-', '.'")
        prof = {} if prof is None else prof
        ctx.expect(prof, dict, line, key, "a mapping with configs, overrides, seeds")
        ctx.keys(prof, PROFILE_KEYS, key)
        data: dict = {}
        lines: dict[str, int] = {}
        configs = prof.get("configs", [])
        if isinstance(configs, str):
            configs = [configs]
        ctx.expect(configs, list, _line(prof, "configs"), f"{key}.configs", "a list of config files")
        for j, item in enumerate(configs):
            path = _resolve_file(ctx, item, _line(prof, "configs"), f"{key}.configs[{j}]")
            try:
                loaded = load_yaml(path)
            except ConfigError as exc:
                raise ctx.error(_line(prof, "configs"), f"{key}.configs[{j}]", str(exc)) from None
            data = deep_merge(data, loaded)
            lines.update({k: _line(prof, "configs") for k in flatten(loaded)})
        overrides, override_lines = _nest(ctx, prof.get("overrides"), f"{key}.overrides", _line(prof, "overrides"))
        data = deep_merge(data, overrides)
        lines.update(override_lines)
        seeds = _parse_seeds(ctx, prof["seeds"], _line(prof, "seeds"), f"{key}.seeds") if "seeds" in prof else None
        out[name] = Profile(name, line, data, lines, seeds, str(prof.get("description", "")))
    if not out:
        raise ctx.error(_line(raw, "profiles"), "profiles", "needs at least one profile")
    return out


def _parse_seeds(ctx: _Ctx, node: Any, line: int, key: str) -> list[int]:
    ctx.expect(node, list, line, key, "a list of integers")
    if not node or any(isinstance(s, bool) or not isinstance(s, int) for s in node):
        raise ctx.error(line, key, f"expected a non-empty list of integers, got {node!r}")
    if len(set(node)) != len(node):
        raise ctx.error(line, key, "seeds repeat")
    return list(node)


def _parse_layout(ctx: _Ctx, raw: dict, rows: list[Row]) -> list[LayoutPart]:
    labels = [r.label for r in rows]
    node = raw.get("layout")
    if node is None:
        return [LayoutPart("", "Method", [], [("", labels)])]
    ctx.expect(node, list, _line(raw, "layout"), "layout", "a list of sub-tables")
    parts, placed = [], {}
    for i, part in enumerate(node):
        key = f"layout[{i}]"
        ctx.expect(part, dict, _line(node, i), key, "a mapping with title and rows or groups")
        ctx.keys(part, LAYOUT_KEYS, key)
        if ("rows" in part) == ("groups" in part):
            raise ctx.error(_line(node, i), key, "give either 'rows' or 'groups'")
        groups_node = [{"title": "", "rows": part["rows"]}] if "rows" in part else part["groups"]
        ctx.expect(groups_node, list, _line(part, "groups"), f"{key}.groups", "a list of {title, rows}")
        groups = []
        for j, group in enumerate(groups_node):
            gkey = f"{key}.groups[{j}]" if "groups" in part else f"{key}.rows"
            ctx.expect(group, dict, _line(groups_node, j), gkey, "a mapping with title and rows")
            ctx.keys(group, GROUP_KEYS, gkey)
            members = group.get("rows") or []
            ctx.expect(members, list, _line(group, "rows") or _line(part, "rows"), gkey, "a list of row labels")
            for k, label in enumerate(members):
                where = _line(members, k)
                if str(label) not in labels:
                    raise ctx.error(where, gkey, f"no row is labelled '{label}'; labels: {', '.join(labels)}")
                if str(label) in placed:
                    raise ctx.error(where, gkey, f"row '{label}' is already placed at line {placed[str(label)]}")
                placed[str(label)] = where
            groups.append((str(group.get("title") or ""), [str(x) for x in members]))
        columns = part.get("label_columns") or []
        ctx.expect(columns, list, _line(part, "label_columns"), f"{key}.label_columns", "a list of column names")
        parts.append(LayoutPart(str(part.get("title") or ""), str(part.get("label_header") or "Method"),
                                [str(c) for c in columns], groups))
    missing = [label for label in labels if label not in placed]
    if missing:
        raise ctx.error(_line(raw, "layout"), "layout", f"rows not placed in any sub-table: {', '.join(missing)}")
    return parts


def load_study(path: str | Path) -> Study:
    """Parse and fully validate a study file (every row under every profile); raise `StudyError`."""
    path = Path(path)
    if not path.is_file():
        raise StudyError(f"study file not found: {path}")
    ctx = _Ctx(path)
    try:
        raw = yaml.load(path.read_text(), Loader=_LineLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise StudyError(f"{path}:{mark.line + 1 if mark else 0}: malformed YAML ({problem})") from None
    if not isinstance(raw, dict):
        raise StudyError(f"{path}:1: the top level must be a mapping with name, base, rows, profiles")
    ctx.keys(raw, TOP_KEYS, "")
    name = raw.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ctx.error(_line(raw, "name"), "name", f"expected a name of letters, digits, '_', '-', '.', got {name!r}")
    paper = raw.get("paper") or {}
    ctx.expect(paper, dict, _line(raw, "paper"), "paper", "a mapping with title, table, file")
    ctx.keys(paper, PAPER_KEYS, "paper")
    metrics = raw.get("metrics", DEFAULT_METRICS)
    ctx.expect(metrics, list, _line(raw, "metrics"), "metrics", "a list of metric names")
    for i, m in enumerate(metrics):
        if m not in STAT_NAMES:
            raise ctx.error(_line(metrics, i), "metrics", f"'{m}' is not one of {', '.join(STAT_NAMES)}")
    metrics = [str(m) for m in metrics]
    base = _load_base(ctx, raw["base"], _line(raw, "base"), "base") if "base" in raw else None
    common, common_lines = _nest(ctx, raw.get("overrides"), "overrides", _line(raw, "overrides"))
    if ("rows" in raw) == ("axes" in raw):
        raise ctx.error(raw.line, "", "give either 'rows' (explicit) or 'axes' (generated), not both or neither")
    rows = _parse_rows(ctx, raw, base, metrics) if "rows" in raw else _parse_axes(ctx, raw, base, metrics)
    seen: dict[str, int] = {}
    for row in rows:
        if row.label in seen:
            raise ctx.error(row.line, f"rows[{row.index}].label", f"'{row.label}' repeats rows[{seen[row.label]}]")
        seen[row.label] = row.index
    seeds = _parse_seeds(ctx, raw["seeds"], _line(raw, "seeds"), "seeds") if "seeds" in raw else [0]
    study = Study(path, name, str(raw.get("description") or ""), {k: str(v) for k, v in paper.items()}, rows,
                  seeds, _parse_profiles(ctx, raw), metrics, _parse_layout(ctx, raw, rows))
    for profile in study.profiles.values():
        study.specs[profile.name], study.warnings[profile.name] = _expand(ctx, study, profile, common, common_lines)
    return study


# ---------------------------------------------------------------- expansion
def _build(ctx: _Ctx, data: dict, sources: list[tuple[str, dict[str, int]]], fallback: tuple[int, str]) -> Config:
    """build_config with the error located at the first source whose line map names the key."""
    try:
        return build_config(data)
    except ConfigError as exc:
        message = str(exc).splitlines()[0]
        key = _error_key(message)
        for where, lines in sources:
            line = _find_line(key, lines)
            if line is not None:
                raise ctx.error(line, where, message) from None
        raise ctx.error(fallback[0], fallback[1], message) from None


def _expand(ctx: _Ctx, study: Study, profile: Profile, common: dict, common_lines: dict[str, int]):
    specs: list[RunSpec] = []
    warnings: list[str] = []
    by_hash: dict[str, str] = {}
    seeds = profile.seeds or study.seeds
    for row in study.rows:
        key = f"rows[{row.index}]"
        row_lines = {**common_lines, **row.override_lines}
        if _find_line("train.seed", row_lines) is not None:
            raise ctx.error(_find_line("train.seed", row_lines), f"{key}.overrides",
                            "train.seed is set by the study's 'seeds'")
        data = deep_merge(deep_merge(row.base, common), row.overrides)
        ours = flatten(deep_merge(common, row.overrides))
        for dotted, value in flatten(profile.data).items():
            if dotted in ours and ours[dotted] != value:
                warnings.append(f"{ctx.path}:{row_lines[dotted] if dotted in row_lines else row.line}: {key} "
                                f"'{row.label}' sets {dotted}={ours[dotted]!r}; profile '{profile.name}' replaces it "
                                f"with {value!r}")
        data = deep_merge(data, profile.data)
        base_where = f"{key}.base ({row.base_name})" if row.base_name != "inline" else f"{key}.base"
        sources = [(f"{key}.overrides", row.override_lines), ("overrides", common_lines),
                   (f"profiles.{profile.name}", profile.lines)]
        cfg = _build(ctx, data, sources, (row.line, base_where))
        for seed in seeds:
            run_cfg = copy.deepcopy(cfg)
            run_cfg.train.seed = seed
            chash = config_hash(run_cfg)
            if chash in by_hash:
                raise ctx.error(row.line, key, f"'{row.label}' resolves to the same config as '{by_hash[chash]}' "
                                f"under profile '{profile.name}' (seed {seed}); rows must differ")
            by_hash[chash] = row.label
            specs.append(RunSpec(study.name, profile.name, row.label, row.index, seed, run_cfg, chash))
    return specs, warnings


def expand(study: Study, profile: str | None = None) -> list[RunSpec]:
    """The runs of `study` under `profile` (default: `Study.default_profile`), in paper order."""
    name = profile or study.default_profile()
    if name not in study.profiles:
        raise StudyError(f"{study.path}: no profile '{name}'; profiles: {', '.join(study.profiles)}")
    return study.specs[name]


def spec_hash(study: Study, profile: str) -> str:
    """Hash of what a profile of the study runs: name, labels, seeds, config hashes, table shape."""
    payload = {
        "name": study.name, "profile": profile, "metrics": study.metrics,
        "runs": [(s.label, s.seed, s.config_hash) for s in expand(study, profile)],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


__all__ = ["Study", "Row", "Profile", "LayoutPart", "RunSpec", "StudyError", "load_study", "expand", "spec_hash",
           "DEFAULT_METRICS", "FAILED_REFERENCE"]
