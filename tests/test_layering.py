"""The layering rules (docs/architecture.md): analysis/ loads neither torch nor our other packages;
models/ never imports harness or analysis; dashboards/ reads the results store only.

Imports are checked twice: by what `import analysis` actually loads (a fresh interpreter), and by the
import statements of every module (AST), so a lazy import inside a function cannot slip through.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = ("analysis", "harness", "models", "dashboards")


def _imports(package: str) -> dict[str, set[str]]:
    """Module path -> top-level names it imports (absolute imports; relative ones stay inside)."""
    out: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
        out[str(path.relative_to(ROOT))] = names
    return out


def test_import_analysis_loads_no_torch_and_nothing_else_of_ours():
    code = ("import sys, json, analysis, analysis.experiment, analysis.gate, analysis.over_time, analysis.bayes; "
            "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))")
    loaded = set(json.loads(subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                                           check=True).stdout))
    assert "analysis" in loaded
    assert not loaded & {"torch", "transformers", "peft", "harness", "models", "dashboards"}, loaded


@pytest.mark.parametrize(("package", "forbidden"), [
    ("analysis", {"torch", "transformers", "peft", "harness", "models", "dashboards"}),
    ("models", {"harness", "analysis", "dashboards"}),
])
def test_packages_do_not_import_across_the_layers(package, forbidden):
    bad = {mod: sorted(names & forbidden) for mod, names in _imports(package).items() if names & forbidden}
    assert not bad, bad


# The store's read API, and nothing of it that reaches into analysis/ (harness.store.experiment rebuilds
# analysis results); no statistics library either: the dashboard shows stored numbers, it never recomputes them.
DASHBOARD_HARNESS = {"harness.store", "harness.store.errors"}
DASHBOARD_FORBIDDEN = {"analysis", "models", "torch", "transformers", "peft", "scipy", "statsmodels", "sklearn"}


def _dashboard_modules() -> list[tuple[Path, str]]:
    """(file, module) of every absolute import in dashboards/, `import x.y` and `from x.y import z` alike."""
    out = []
    for path in sorted((ROOT / "dashboards").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                out += [(path, a.name) for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                out.append((path, node.module))
    return out


def test_dashboards_read_the_results_store_only():
    for mod, names in _imports("dashboards").items():
        ours = names & set(OURS)
        assert ours <= {"dashboards", "harness"}, (mod, ours)
        assert not names & DASHBOARD_FORBIDDEN, (mod, names & DASHBOARD_FORBIDDEN)
    for path, module in _dashboard_modules():
        if module.split(".")[0] == "harness":
            assert module in DASHBOARD_HARNESS, (str(path), module)


def test_import_dashboards_loads_only_the_store_of_ours():
    """What the app actually loads: the store, never analysis/, models/, torch or the replay."""
    code = ("import sys, json, dashboards.navigation; "
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('analysis', 'models', 'harness', 'torch', 'scipy', 'statsmodels', 'sklearn'))))")
    loaded = json.loads(subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                                       check=True).stdout)
    assert loaded, "expected harness.store to be loaded"
    assert all(m == "harness" or m.startswith("harness.store") for m in loaded), loaded
