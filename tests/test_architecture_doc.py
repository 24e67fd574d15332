"""docs/architecture.md stays true to the code: the modules it names exist, and it names every module.

Why: the issue-10 review found the architecture page describing imports that
no longer held. A module added, moved or removed now fails here until the
page says so (one line in its "Modules" tables).
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "architecture.md"
PACKAGES = (ROOT / "turnipc", ROOT / "runtime" / "turnip")
#: A source path in backquotes: `turnipc/order.py`, `kernels/_fast.py`, `layout/`, `read.py`.
PATH = re.compile(r"`([A-Za-z0-9_./-]+?(?:\.py|\.c|/))`")


def _named() -> list[str]:
    return PATH.findall(DOC.read_text(encoding="utf-8"))


def _sources() -> list[str]:
    """Every source file and folder of the repository's code, as paths relative to the root."""
    out = []
    for top in (*PACKAGES, ROOT / "tests", ROOT / "bench", ROOT / "docs"):
        for p in [top, *top.rglob("*")]:
            if "__pycache__" in p.parts or not (p.is_dir() or p.suffix in (".py", ".c")):
                continue
            rel = p.relative_to(ROOT).as_posix()
            out.append(rel + "/" if p.is_dir() else rel)
    return out


def test_every_module_the_page_names_exists():
    sources = _sources()
    missing = [name for name in _named() if not any(s == name or s.endswith("/" + name) for s in sources)]
    assert not missing, f"docs/architecture.md names modules that do not exist: {missing}"


def test_the_page_names_every_module_and_subpackage():
    named = set(_named())
    unnamed = []
    for pkg in PACKAGES:
        for p in sorted(pkg.iterdir()):
            rel = p.relative_to(ROOT).as_posix()
            if p.is_dir() and (p / "__init__.py").exists():
                if rel + "/" not in named:
                    unnamed.append(rel + "/")
            elif p.suffix == ".py" and p.name != "__init__.py" and rel not in named:
                unnamed.append(rel)
    assert not unnamed, f"docs/architecture.md does not name these modules (add them to its Modules tables): {unnamed}"


def test_the_checks_would_notice():
    assert "turnipc/order.py" in _named() and "runtime/turnip/kernels/" in _named()
    assert not any(s.endswith("/no_such_module.py") for s in _sources())
