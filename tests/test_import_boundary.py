"""The runtime never imports the compiler or OR-Tools (docs/architecture.md: one-way layers).

Checked twice: statically, by walking every ``import`` in runtime/turnip with
``ast`` (catches imports inside functions and on error paths too), and
dynamically, by importing every runtime module in a fresh interpreter and
looking at ``sys.modules`` (catches what a dependency drags in).
"""

from __future__ import annotations

import ast
import os
import pkgutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNTIME = os.path.join(ROOT, "runtime", "turnip")
FORBIDDEN = ("turnipc", "ortools")
#: The one runtime module allowed to reach the compiler: `turnip-run MODEL.onnx` plans on request,
#: inside a function (never at import), and only when the compiler is installed.
PLANS_ON_REQUEST = os.path.join(RUNTIME, "autoplan.py")


def _runtime_files() -> list[str]:
    out = []
    for folder, _, files in os.walk(RUNTIME):
        out += [os.path.join(folder, f) for f in files if f.endswith(".py")]
    return sorted(out)


def _imported_names(path: str) -> list[tuple[int, str]]:
    """Absolute module names imported by ``path`` (relative imports stay inside the package)."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append((node.lineno, node.module))
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module":
            if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                names.append((node.lineno, node.args[0].value))
    return names


def test_runtime_sources_do_not_import_the_compiler():
    files = _runtime_files()
    assert len(files) > 10, files  # the walk found the package
    bad = [f"{os.path.relpath(p, ROOT)}:{line}: imports {name}" for p in files for line, name in _imported_names(p)
           if name.split(".")[0] in FORBIDDEN and not (p == PLANS_ON_REQUEST and name.split(".")[0] == "turnipc")]
    assert not bad, "\n".join(bad)


def test_autoplan_reaches_the_compiler_only_inside_functions():
    with open(PLANS_ON_REQUEST, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    names = [a.name for n in top if isinstance(n, ast.Import) for a in n.names]
    names += [n.module or "" for n in top if isinstance(n, ast.ImportFrom) and n.level == 0]
    assert not [n for n in names if n.split(".")[0] in FORBIDDEN]


def test_the_static_check_sees_imports_inside_functions(tmp_path):
    p = tmp_path / "m.py"
    p.write_text("def f():\n    from turnipc.planner import build_plan\n    import ortools.sat\n")
    assert [n for _, n in _imported_names(str(p))] == ["turnipc.planner", "ortools.sat"]


def _runtime_modules() -> list[str]:
    import turnip

    mods = ["turnip"]
    for m in pkgutil.walk_packages(turnip.__path__, "turnip."):
        if m.name == "turnip.backends.cupy_backend":
            continue  # imports cupy at module level; checked statically above
        mods.append(m.name)
    return sorted(mods)


def test_importing_every_runtime_module_loads_neither_compiler_nor_ortools():
    mods = _runtime_modules()
    assert {"turnip.executor", "turnip.plan", "turnip.graph", "turnip.queues", "turnip.run"} <= set(mods), mods
    code = (
        "import importlib, sys\n"
        f"for m in {mods!r}:\n"
        "    importlib.import_module(m)\n"
        f"bad = sorted(k for k in sys.modules if k.split('.')[0] in {FORBIDDEN!r})\n"
        "print(' '.join(bad))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "", f"the runtime loaded: {r.stdout.strip()}"


@pytest.mark.parametrize("forbidden", FORBIDDEN)
def test_the_dynamic_check_would_notice(forbidden):
    if forbidden == "ortools":
        pytest.importorskip("ortools")
    code = f"import {forbidden}, sys\nprint(' '.join(sorted(k for k in sys.modules if k.split('.')[0] == {forbidden!r})))\n"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert forbidden in r.stdout.split()


def test_the_simulator_and_the_cupy_backend_do_not_need_the_executor():
    """The queue model, priorities and plan graph live in turnip.queues / turnip.graph, not in the executor."""
    code = (
        "import sys\n"
        "import turnipc.simulate, turnipc.simulate.sim, turnipc.simulate.trace, turnipc.diff\n"
        "print(' '.join(sorted(m for m in sys.modules if m in ('turnip.executor', 'turnip.run', 'turnip.backends'))))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == ""
    with open(os.path.join(RUNTIME, "backends", "cupy_backend.py"), encoding="utf-8") as f:
        tree = ast.parse(f.read())
    relative = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 2}
    assert "executor" not in relative and {"queues", "graph"} <= relative, relative
