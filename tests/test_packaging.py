"""What a fresh `pip install .` installs: every top-level CLI module the `anchorlab` script imports."""
from __future__ import annotations

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_every_top_level_cli_module_is_installed():
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["py-modules"]
    assert sorted(declared) == sorted(p.stem for p in REPO.glob("cli*.py"))
