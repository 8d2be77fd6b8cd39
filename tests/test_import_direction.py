"""Dependencies point one way: nothing under detector/ may load mlflow, optuna, typer or ablation.

Every module of the package is imported (found with pkgutil, so new modules are covered as they
land) in a fresh interpreter, where nothing else has loaded the forbidden packages first. A module
that fails to import fails this test too: a broken import would otherwise hide a forbidden one.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = ("mlflow", "optuna", "typer", "ablation")

SCRIPT = f"""
import importlib, pkgutil, sys
def forbidden():
    return sorted({{m.split(".")[0] for m in sys.modules}} & set({FORBIDDEN!r}))
import detector, detector.config, detector.engine.hooks, detector.evaluation.coco_eval
assert not forbidden(), f"the core detector modules load {{forbidden()}}"
def reraise(name):  # walk_packages would otherwise skip a package whose import fails
    raise
names = sorted(m.name for m in pkgutil.walk_packages(detector.__path__, "detector.", onerror=reraise))
for name in names:
    importlib.import_module(name)
    assert not forbidden(), f"importing {{name}} loads {{forbidden()}}"
print(len(names))
"""


def test_detector_never_imports_tracking_or_cli_packages():
    out = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert int(out.stdout.split()[-1]) >= 3  # the walk really found modules


TRACKING = ROOT / "ablation" / "tracking"


def _imports(path: Path) -> set[str]:
    import ast

    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


def test_only_the_tracking_modules_import_mlflow():
    sources = [*sorted(ROOT.glob("cli*.py")), *sorted((ROOT / "ablation").rglob("*.py")), *sorted((ROOT / "dashboards").rglob("*.py")),
               *sorted((ROOT / "detector").rglob("*.py"))]
    users = sorted(str(p.relative_to(ROOT)) for p in sources if "mlflow" in _imports(p))
    assert users and all(Path(u).parent == TRACKING.relative_to(ROOT) for u in users), users


def test_ablation_never_imports_dashboards():
    offenders = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "ablation").rglob("*.py") if "dashboards" in _imports(p))
    assert offenders == []
