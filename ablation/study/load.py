"""Study files (`studies/*.yaml`): the schema and its validation, with file:line errors.

A study is a paper table: rows (explicit, or generated from `axes`) x `seeds`, under a `profile`.
One row resolves to one config, in this order (later wins):

    base (the study's, or the row's own)  <-  study `overrides`  <-  row `overrides`
        <-  profile `configs` (files)  <-  profile `overrides`  <-  row `profile_overrides[profile]`
        <-  train.seed = seed

That is one level of inheritance: a base plus deltas (DESIGN.md). Profiles are machine settings
(`paper`, `quick`, `smoke`) applied after the row, so a profile key that replaces a value a row sets
is reported in `Study.warnings`. Every config goes through `detector.config.build_config`; its
one-line errors come back prefixed with the study file, the line and the key that caused them:

    studies/x.yaml:12: rows[3].overrides: unknown key 'train.iteratons'; valid keys here: ...

Schema (top level):  name, description, paper {title, table, file}, base (path or inline config),
overrides, rows | axes, seeds, profiles {NAME: {configs, overrides, seeds, description}}, metrics (of COCO's
12 stats, VOC07_mAP / VOC07_mAP_area when every run sets eval.voc_metric, `evaluation.extra`'s NR..., AP_square...,
AP_sparse... when every run sets eval.nms_recall, aspect_ap, crowd_ap), layout [{title, label_header,
label_columns, rows | groups [{title, rows}]}], baseline (a row label: the table adds every other row's AP
difference to it, with intervals over seeds and over val images).
A row: {label, base, overrides, profile_overrides {PROFILE: overrides}, reference ({METRIC: value} or
"training failed"), cells}. `profile_overrides` is for a row whose very axis is what profiles set (a schedule
length, a batch size): its value per profile, applied after the profile.
Axes: {values {dotted.key: [..]}, mode grid|zip, label "K={assign.paa.topk}", reference {label: ..}}.
Paths are relative to the study file, else to the repository root. Exponent numbers (1e-4, 1.0e12)
are floats here (YAML 1.2), where PyYAML alone would read them as strings.
"""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ablation.profiles import ProfileChoice, choose_profile
from ablation.study.source import NAME_RE, Ctx, StudyError, line_of, nest, plain, read_top
from detector.config import ConfigError, deep_merge, flatten, load_yaml
from detector.evaluation.coco_eval import STAT_NAMES
from detector.evaluation.extra import METRIC_NAMES as EXTRA_METRIC_NAMES
from detector.evaluation.voc_eval import METRIC_NAMES as VOC_METRIC_NAMES

REPO_ROOT = Path(__file__).resolve().parents[2]
TOP_KEYS = ("name", "description", "paper", "base", "overrides", "rows", "axes", "seeds", "profiles",
            "metrics", "layout", "baseline")
ROW_KEYS = ("label", "base", "overrides", "profile_overrides", "reference", "cells")
AXES_KEYS = ("values", "mode", "label", "reference")
PROFILE_KEYS = ("description", "configs", "overrides", "seeds")
PAPER_KEYS = ("title", "table", "file")
LAYOUT_KEYS = ("title", "label_header", "label_columns", "rows", "groups")
GROUP_KEYS = ("title", "rows")
DEFAULT_METRICS = ["AP", "AP50", "AP75", "APs", "APm", "APl"]
METRIC_NAMES = (*STAT_NAMES, *VOC_METRIC_NAMES, *EXTRA_METRIC_NAMES)  # VOC / extra: only when computed (expand.py)
FAILED_REFERENCE = "training failed"


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
    # profile name -> (nested overrides applied after that profile, dotted key -> line)
    profile_overrides: dict[str, tuple[dict, dict[str, int]]] = field(default_factory=dict)


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
    common: dict = field(default_factory=dict)  # study-level `overrides` (nested plain dict)
    common_lines: dict[str, int] = field(default_factory=dict)  # their dotted keys -> line
    warnings: dict[str, list[str]] = field(default_factory=dict)  # profile -> messages (filled by expansion)
    runs: dict[str, list] = field(default_factory=dict)  # profile -> [expand.StudyRun] (filled by expansion)
    baseline: str | None = None  # the row label other rows are compared with (no comparison when None)

    def profile_choice(self, given: str | None = None) -> ProfileChoice:
        """`given`, or the default: `paper` with a GPU, `quick` without, else the only one (`ablation.profiles`)."""
        return choose_profile(self.profiles, given, self.path)

    def default_profile(self) -> str:
        return self.profile_choice().name

    def row(self, label: str) -> Row:
        return next(r for r in self.rows if r.label == label)


# ---------------------------------------------------------------- validation helpers
def _resolve_file(ctx: Ctx, value: Any, line: int, key: str) -> Path:
    ctx.expect(value, str, line, key, "a file path")
    for root in (ctx.path.parent, REPO_ROOT, Path.cwd()):
        candidate = (root / value).resolve()
        if candidate.is_file():
            return candidate
    raise ctx.error(line, key, f"config file not found: {value} (looked next to the study file and in {REPO_ROOT})")


def _load_base(ctx: Ctx, value: Any, line: int, key: str) -> tuple[dict, str]:
    """A base is a config file path or an inline config mapping."""
    if isinstance(value, dict):
        return plain(value), "inline"
    path = _resolve_file(ctx, value, line, key)
    try:
        return load_yaml(path), str(value)
    except ConfigError as exc:
        raise ctx.error(line, key, str(exc)) from None


# ---------------------------------------------------------------- parsing
def _parse_rows(ctx: Ctx, raw: dict, base: tuple[dict, str] | None, metrics: list[str]) -> list[Row]:
    rows_node = raw.get("rows")
    ctx.expect(rows_node, list, line_of(raw, "rows"), "rows", "a list of rows")
    if not rows_node:
        raise ctx.error(line_of(raw, "rows"), "rows", "needs at least one row")
    rows = []
    for i, node in enumerate(rows_node):
        key = f"rows[{i}]"
        line = line_of(rows_node, i)
        ctx.expect(node, dict, line, key, "a mapping with label, overrides, reference")
        ctx.keys(node, ROW_KEYS, key)
        if "label" not in node:
            raise ctx.error(line, key, "missing 'label' (the row's name as the paper prints it)")
        label = node["label"]
        ctx.expect(label, (str, int, float), line_of(node, "label"), f"{key}.label", "a string")
        label = str(label)
        if "base" in node:
            row_base = _load_base(ctx, node["base"], line_of(node, "base"), f"{key}.base")
        elif base is not None:
            row_base = base
        else:
            raise ctx.error(line, key, "no base config: give the study a 'base' or the row its own")
        overrides, lines = nest(ctx, node.get("overrides"), f"{key}.overrides", line_of(node, "overrides"))
        reference = _parse_reference(ctx, node.get("reference"), line_of(node, "reference"), f"{key}.reference", metrics)
        cells = node.get("cells") or {}
        ctx.expect(cells, dict, line_of(node, "cells"), f"{key}.cells", "a mapping column -> text")
        rows.append(Row(label, i, line, row_base[0], row_base[1], overrides, lines, reference,
                        {str(k): "" if v is None else str(v) for k, v in cells.items()},
                        _parse_profile_overrides(ctx, node, key)))
    return rows


def _parse_profile_overrides(ctx: Ctx, node: dict, key: str) -> dict[str, tuple[dict, dict[str, int]]]:
    per = node.get("profile_overrides") or {}
    ctx.expect(per, dict, line_of(node, "profile_overrides"), f"{key}.profile_overrides", "a mapping profile -> overrides")
    return {str(name): nest(ctx, v, f"{key}.profile_overrides.{name}", line_of(per, name)) for name, v in per.items()}


def _parse_reference(ctx: Ctx, node: Any, line: int, key: str, metrics: list[str]):
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
            raise ctx.error(line_of(node, name), f"{key}.{name}", f"not a metric column; columns: {', '.join(metrics)}")
        if value is None or value == "-":
            continue
        ctx.expect(value, (int, float), line_of(node, name), f"{key}.{name}", "a number (the paper's value)")
        out[name] = float(value)
    return out


_AXIS_FIELD = re.compile(r"\{([A-Za-z_][\w.]*)\}")


def _parse_axes(ctx: Ctx, raw: dict, base: tuple[dict, str] | None, metrics: list[str]) -> list[Row]:
    node = raw["axes"]
    line = line_of(raw, "axes")
    ctx.expect(node, dict, line, "axes", "a mapping with values, mode, label")
    ctx.keys(node, AXES_KEYS, "axes")
    if base is None:
        raise ctx.error(line, "axes", "axes need a study 'base'")
    values = node.get("values")
    ctx.expect(values, dict, line_of(node, "values"), "axes.values", "a mapping dotted.key -> list of values")
    if not values:
        raise ctx.error(line_of(node, "values"), "axes.values", "needs at least one axis")
    for k, v in values.items():
        ctx.expect(v, list, line_of(values, k), f"axes.values.{k}", "a non-empty list")
        if not v:
            raise ctx.error(line_of(values, k), f"axes.values.{k}", "expected a non-empty list")
    mode = node.get("mode", "grid")
    if mode not in ("grid", "zip"):
        raise ctx.error(line_of(node, "mode"), "axes.mode", f"'{mode}' is not one of grid, zip")
    keys = list(values)
    if mode == "zip":
        lengths = {len(values[k]) for k in keys}
        if len(lengths) > 1:
            raise ctx.error(line_of(node, "values"), "axes.values", "zip needs lists of equal length")
        combos = list(zip(*(values[k] for k in keys)))
    else:
        combos = list(itertools.product(*(values[k] for k in keys)))
    template = node.get("label")
    if template is not None:
        ctx.expect(template, str, line_of(node, "label"), "axes.label", "a label template like 'K={assign.paa.topk}'")
        for name in _AXIS_FIELD.findall(template):
            if name not in keys:
                raise ctx.error(line_of(node, "label"), "axes.label",
                                f"'{{{name}}}' is not an axis; axes: {', '.join(keys)}")
    rows = []
    for i, combo in enumerate(combos):
        setting = dict(zip(keys, combo))
        if template is None:
            label = ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in setting.items())
        else:
            label = _AXIS_FIELD.sub(lambda m: str(setting[m.group(1)]), template)
        overrides, _ = nest(ctx, setting, "axes.values", line_of(node, "values"))
        lines = {k: line_of(values, k) for k in keys}
        rows.append(Row(label, i, line_of(node, "values"), base[0], base[1], overrides, lines))
    refs = node.get("reference") or {}
    ctx.expect(refs, dict, line_of(node, "reference"), "axes.reference", "a mapping label -> metrics")
    by_label = {r.label: r for r in rows}
    for label, ref in refs.items():
        if str(label) not in by_label:
            raise ctx.error(line_of(refs, label), "axes.reference", f"no generated row is labelled '{label}'; labels: "
                            f"{', '.join(by_label)}")
        by_label[str(label)].reference = _parse_reference(ctx, ref, line_of(refs, label), f"axes.reference.{label}",
                                                          metrics)
    return rows


def _parse_profiles(ctx: Ctx, raw: dict) -> dict[str, Profile]:
    node = raw.get("profiles")
    if node is None:
        raise ctx.error(0, "profiles", "missing (at least one, e.g. paper: {} and quick: {configs: [...]})")
    ctx.expect(node, dict, line_of(raw, "profiles"), "profiles", "a mapping name -> profile")
    out = {}
    for name, prof in node.items():
        key = f"profiles.{name}"
        line = line_of(node, name)
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
        ctx.expect(configs, list, line_of(prof, "configs"), f"{key}.configs", "a list of config files")
        for j, item in enumerate(configs):
            path = _resolve_file(ctx, item, line_of(prof, "configs"), f"{key}.configs[{j}]")
            try:
                loaded = load_yaml(path)
            except ConfigError as exc:
                raise ctx.error(line_of(prof, "configs"), f"{key}.configs[{j}]", str(exc)) from None
            data = deep_merge(data, loaded)
            lines.update({k: line_of(prof, "configs") for k in flatten(loaded)})
        overrides, override_lines = nest(ctx, prof.get("overrides"), f"{key}.overrides", line_of(prof, "overrides"))
        data = deep_merge(data, overrides)
        lines.update(override_lines)
        seeds = _parse_seeds(ctx, prof["seeds"], line_of(prof, "seeds"), f"{key}.seeds") if "seeds" in prof else None
        out[name] = Profile(name, line, data, lines, seeds, str(prof.get("description", "")))
    if not out:
        raise ctx.error(line_of(raw, "profiles"), "profiles", "needs at least one profile")
    return out


def _parse_seeds(ctx: Ctx, node: Any, line: int, key: str) -> list[int]:
    ctx.expect(node, list, line, key, "a list of integers")
    if not node or any(isinstance(s, bool) or not isinstance(s, int) for s in node):
        raise ctx.error(line, key, f"expected a non-empty list of integers, got {node!r}")
    if len(set(node)) != len(node):
        raise ctx.error(line, key, "seeds repeat")
    return list(node)


def _parse_layout(ctx: Ctx, raw: dict, rows: list[Row]) -> list[LayoutPart]:
    labels = [r.label for r in rows]
    node = raw.get("layout")
    if node is None:
        return [LayoutPart("", "Method", [], [("", labels)])]
    ctx.expect(node, list, line_of(raw, "layout"), "layout", "a list of sub-tables")
    parts, placed = [], {}
    for i, part in enumerate(node):
        key = f"layout[{i}]"
        ctx.expect(part, dict, line_of(node, i), key, "a mapping with title and rows or groups")
        ctx.keys(part, LAYOUT_KEYS, key)
        if ("rows" in part) == ("groups" in part):
            raise ctx.error(line_of(node, i), key, "give either 'rows' or 'groups'")
        groups_node = [{"title": "", "rows": part["rows"]}] if "rows" in part else part["groups"]
        ctx.expect(groups_node, list, line_of(part, "groups"), f"{key}.groups", "a list of {title, rows}")
        groups = []
        for j, group in enumerate(groups_node):
            gkey = f"{key}.groups[{j}]" if "groups" in part else f"{key}.rows"
            ctx.expect(group, dict, line_of(groups_node, j), gkey, "a mapping with title and rows")
            ctx.keys(group, GROUP_KEYS, gkey)
            members = group.get("rows") or []
            ctx.expect(members, list, line_of(group, "rows") or line_of(part, "rows"), gkey, "a list of row labels")
            for k, label in enumerate(members):
                where = line_of(members, k)
                if str(label) not in labels:
                    raise ctx.error(where, gkey, f"no row is labelled '{label}'; labels: {', '.join(labels)}")
                if str(label) in placed:
                    raise ctx.error(where, gkey, f"row '{label}' is already placed at line {placed[str(label)]}")
                placed[str(label)] = where
            groups.append((str(group.get("title") or ""), [str(x) for x in members]))
        columns = part.get("label_columns") or []
        ctx.expect(columns, list, line_of(part, "label_columns"), f"{key}.label_columns", "a list of column names")
        parts.append(LayoutPart(str(part.get("title") or ""), str(part.get("label_header") or "Method"),
                                [str(c) for c in columns], groups))
    missing = [label for label in labels if label not in placed]
    if missing:
        raise ctx.error(line_of(raw, "layout"), "layout", f"rows not placed in any sub-table: {', '.join(missing)}")
    return parts


def _parse_baseline(ctx: Ctx, raw: dict, rows: list[Row]) -> str | None:
    if raw.get("baseline") is None:
        return None
    label, line = raw["baseline"], line_of(raw, "baseline")
    ctx.expect(label, (str, int, float), line, "baseline", "a row label")
    labels = [r.label for r in rows]
    if str(label) not in labels:
        raise ctx.error(line, "baseline", f"no row is labelled '{label}'; labels: {', '.join(labels)}")
    return str(label)


def parse_study(path: str | Path) -> Study:
    """Parse and validate a study file's schema; `expand.load_study` also resolves every run; raise `StudyError`."""
    path = Path(path)
    ctx, raw, name = read_top(path, "study", TOP_KEYS, "name, base, rows, profiles")
    paper = raw.get("paper") or {}
    ctx.expect(paper, dict, line_of(raw, "paper"), "paper", "a mapping with title, table, file")
    ctx.keys(paper, PAPER_KEYS, "paper")
    metrics = raw.get("metrics", DEFAULT_METRICS)
    ctx.expect(metrics, list, line_of(raw, "metrics"), "metrics", "a list of metric names")
    for i, m in enumerate(metrics):
        if m not in METRIC_NAMES:
            raise ctx.error(line_of(metrics, i), "metrics", f"'{m}' is not one of {', '.join(METRIC_NAMES)}")
    metrics = [str(m) for m in metrics]
    base = _load_base(ctx, raw["base"], line_of(raw, "base"), "base") if "base" in raw else None
    common, common_lines = nest(ctx, raw.get("overrides"), "overrides", line_of(raw, "overrides"))
    if ("rows" in raw) == ("axes" in raw):
        raise ctx.error(raw.line, "", "give either 'rows' (explicit) or 'axes' (generated), not both or neither")
    rows = _parse_rows(ctx, raw, base, metrics) if "rows" in raw else _parse_axes(ctx, raw, base, metrics)
    seen: dict[str, int] = {}
    for row in rows:
        if row.label in seen:
            raise ctx.error(row.line, f"rows[{row.index}].label", f"'{row.label}' repeats rows[{seen[row.label]}]")
        seen[row.label] = row.index
    seeds = _parse_seeds(ctx, raw["seeds"], line_of(raw, "seeds"), "seeds") if "seeds" in raw else [0]
    profiles = _parse_profiles(ctx, raw)
    for row in rows:
        for unknown in set(row.profile_overrides) - set(profiles):
            raise ctx.error(row.line, f"rows[{row.index}].profile_overrides",
                            f"no profile '{unknown}'; profiles: {', '.join(profiles)}")
    return Study(path, name, str(raw.get("description") or ""), {k: str(v) for k, v in paper.items()}, rows,
                 seeds, profiles, metrics, _parse_layout(ctx, raw, rows), common, common_lines,
                 baseline=_parse_baseline(ctx, raw, rows))


__all__ = ["Study", "Row", "Profile", "LayoutPart", "StudyError", "parse_study", "DEFAULT_METRICS", "FAILED_REFERENCE"]
