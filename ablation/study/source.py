"""Reading a study file: YAML that remembers line numbers, and one-line `FILE:LINE: KEY: message` errors.

`ablation.study.load` parses and validates studies with these; nothing here knows the study schema.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from detector.config import ConfigError, YamlLoader


class StudyError(ConfigError):
    """A study-file problem, one line: 'FILE:LINE: KEY: message'."""


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


class _LineLoader(YamlLoader):
    """detector.config's loader (YAML 1.2 exponent floats), building LineDict / LineList."""


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


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


def plain(value: Any) -> Any:
    """LineDict/LineList -> dict/list, recursively (for hashing and configs)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value




def read_yaml(path: Path) -> Any:
    """The file's YAML as LineDict / LineList / scalars; malformed YAML is a one-line StudyError."""
    try:
        return yaml.load(path.read_text(), Loader=_LineLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise StudyError(f"{path}:{mark.line + 1 if mark else 0}: malformed YAML ({problem})") from None


class Ctx:
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
                raise self.error(line_of(node, k), name, f"unknown key '{k}'; valid keys here: {', '.join(valid)}")

    def expect(self, value: Any, types: type | tuple, line: int, key: str, what: str) -> Any:
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in _tuple(types)):
            raise self.error(line, key, f"expected {what}, got {value!r}")
        return value


def _tuple(types) -> tuple:
    return types if isinstance(types, tuple) else (types,)


def line_of(node: Any, key: Any = None) -> int:
    if key is not None and isinstance(node, LineDict):
        return node.lines.get(key, node.line)
    if key is not None and isinstance(node, LineList) and isinstance(key, int) and key < len(node.lines):
        return node.lines[key]
    return getattr(node, "line", 0)


def nest(ctx: Ctx, node: Any, key: str, line: int) -> tuple[dict, dict[str, int]]:
    """Overrides with dotted or nested keys -> (nested dict, {dotted key: line})."""
    if node is None:
        return {}, {}
    ctx.expect(node, dict, line, key, "a mapping of config keys")
    out: dict = {}
    lines: dict[str, int] = {}

    def walk(mapping: dict, prefix: str) -> None:
        for k, value in mapping.items():
            if not isinstance(k, str) or not k:
                raise ctx.error(line_of(mapping, k), key, f"config keys are strings, got {k!r}")
            dotted = f"{prefix}.{k}" if prefix else k
            if isinstance(value, dict) and value:
                walk(value, dotted)
                continue
            if dotted in lines or any(dotted.startswith(p + ".") or p.startswith(dotted + ".") for p in lines):
                raise ctx.error(line_of(mapping, k), key, f"'{dotted}' is set twice")
            lines[dotted] = line_of(mapping, k)
            node_ = out
            parts = dotted.split(".")
            for part in parts[:-1]:
                node_ = node_.setdefault(part, {})
            node_[parts[-1]] = plain(value)

    walk(node, "")
    return out, lines


NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # study, search and profile names


def read_top(path: Path, kind: str, top_keys: tuple[str, ...], shape: str) -> tuple[Ctx, dict, str]:
    """A study or search file's top level: (ctx, the mapping, its valid name); `StudyError` when the file is
    missing, not a mapping, has an unknown top key or a bad name. `shape` names the expected keys."""
    if not path.is_file():
        raise StudyError(f"{kind} file not found: {path}")
    ctx = Ctx(path)
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise StudyError(f"{path}:1: the top level must be a mapping with {shape}")
    ctx.keys(raw, top_keys, "")
    name = raw.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ctx.error(line_of(raw, "name"), "name", f"expected a name of letters, digits, '_', '-', '.', got {name!r}")
    return ctx, raw, name


_KEY_IN_ERROR = (re.compile(r"unknown key '([^']+)'"), re.compile(r"^([A-Za-z_][\w.]*)"))


def error_key(message: str) -> str:
    for pattern in _KEY_IN_ERROR:
        m = pattern.search(message)
        if m:
            return m.group(1)
    return ""


def find_line(key: str, lines: dict[str, int]) -> int | None:
    """The line of `key`, of a parent of it, or of a child of it, in an override line map."""
    parts = key.split(".")
    for n in range(len(parts), 0, -1):
        prefix = ".".join(parts[:n])
        if prefix in lines:
            return lines[prefix]
    children = [ln for k, ln in lines.items() if k.startswith(key + ".")] if key else []
    return min(children) if children else None
