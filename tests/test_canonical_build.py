"""The layout search's C library built on demand gives the installed library's offsets.

WHY: where the install could not build ``_canonical`` the compiler builds it on first
use (turnipc/layout/canonical.py ``build_library``) rather than fall back to the
Python search, whose plans can differ; this checks that the on-demand library is the
same search (same offsets, same counted work) and that it is reused, not rebuilt.
"""

from __future__ import annotations

import ctypes
import shutil
from pathlib import Path

import numpy as np
import pytest

from turnipc.layout import canonical

SOURCE = Path(canonical.__file__).resolve().parent / "_canonical.c"

pytestmark = pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None, reason="no C compiler")


def _instance(seed: int, n: int = 60) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    lower = rng.integers(0, 40, n)
    upper = lower + rng.integers(1, 12, n)
    size = rng.integers(1, 30, n)
    return lower.astype(np.int64), upper.astype(np.int64), size.astype(np.int64)


def test_built_on_demand_is_reused(tmp_path):
    first = canonical.build_library(SOURCE, str(tmp_path))
    assert first is not None and first.exists()
    mtime = first.stat().st_mtime_ns
    again = canonical.build_library(SOURCE, str(tmp_path))
    assert again == first and again.stat().st_mtime_ns == mtime
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no temporary file left


def test_edited_source_gets_its_own_library(tmp_path):
    edited = tmp_path / "_canonical.c"
    edited.write_bytes(SOURCE.read_bytes() + b"\n/* edited */\n")
    a = canonical.build_library(SOURCE, str(tmp_path / "out"))
    b = canonical.build_library(edited, str(tmp_path / "out"))
    assert a is not None and b is not None and a != b


def test_broken_source_gives_none(tmp_path):
    bad = tmp_path / "_canonical.c"
    bad.write_text("this is not C\n")
    assert canonical.build_library(bad, str(tmp_path / "out")) is None
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


@pytest.mark.skipif(not canonical.compiled_available(), reason="installed library not built")
def test_on_demand_library_places_like_the_installed_one(tmp_path, monkeypatch):
    results = {}
    for label in ("installed", "on_demand"):
        if label == "on_demand":
            built = canonical.build_library(SOURCE, str(tmp_path))
            assert built is not None
            monkeypatch.setattr(canonical, "_candidates", lambda here, built=built: [built])
        monkeypatch.setattr(canonical, "_LIB", None)
        lib = canonical._library()
        assert isinstance(lib, ctypes.CDLL)
        got = []
        for seed in range(5):
            lower, upper, size = _instance(seed)
            cap = int(np.max([size[(lower <= t) & (upper > t)].sum() for t in range(60)]))
            r = canonical.fit(lower, upper, size, cap, effort=0.01)
            got.append((r.status, None if r.offsets is None else r.offsets.tolist(), r.nodes, r.ticks))
        results[label] = got
    monkeypatch.setattr(canonical, "_LIB", None)
    assert results["installed"] == results["on_demand"]
    assert any(status is canonical.FitStatus.FOUND for status, *_ in results["installed"])
