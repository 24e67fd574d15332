"""The exact layout search ("do these buffers fit below C?"), MiniMalloc-style.

The search itself lives in ``_canonical.c`` (an independent implementation of
M. D. Moffitt, "MiniMalloc", ASPLOS 2023; see that file for the algorithm). It is
plain C without Python headers, compiled into a shared library when the package
is installed (``setup.py``) and loaded here with ctypes. WHY compiled: the same
search in CPython/NumPy runs about 2-3 orders of magnitude fewer nodes per second
(measured in bench/results/layout.md), and the challenging MiniMalloc instances
need up to a few hundred thousand nodes.

If the library was not built at install time, it is compiled on first use from the
same C file into Turnip's cache folder (:func:`build_library`, keyed by the file's
sha256). WHY: the pure-Python search of :mod:`.search` counts its effort differently
and can place buffers differently, so a machine without the built library would
write different plan bytes for the same input. Only when no C compiler exists either
does :func:`fit` fall back to the Python search, once, with a warning: slower, same
kind of answer (found / proven infeasible / effort spent), not the same bytes.

Effort is counted in search nodes, never in seconds, so the same input and node
budget give the same offsets on every machine.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.machinery
import os
import shutil
import subprocess
import tempfile
import warnings
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np

#: Static preorders tried round-robin (MiniMalloc's defaults): W lifetime width,
#: A area (size x width), T largest total of a section the buffer lives in.
HEURISTICS = ("WAT", "TAW", "TWA")


class FitStatus(str, Enum):
    FOUND = "found"
    INFEASIBLE = "infeasible"  # proven: the search space was exhausted
    LIMIT = "limit"  # the node budget ran out first


@dataclass(frozen=True)
class FitResult:
    status: FitStatus
    offsets: np.ndarray | None  # scaled offsets when FOUND
    nodes: int  # search nodes used
    backtracks: int
    ticks: int  # deterministic work used (inner-loop steps; the effort measure)
    heuristic: str | None  # the preorder of the round that answered
    engine: str  # "c" (compiled search) or "python" (fallback)


def sections(lower: np.ndarray, upper: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Section range [sa, sb) of every buffer.

    Section k holds the buffers live just before the k-th distinct end time
    (lower < end_k <= upper): one maximal set of buffers live together per end
    time, so no bound is lost and far fewer sections are checked than with one
    per time point. Two buffers overlap in time exactly when their ranges meet.
    """
    ends = np.unique(upper)
    return (np.searchsorted(ends, lower, side="right").astype(np.int64),
            np.searchsorted(ends, upper, side="right").astype(np.int64), len(ends))


_LIB: ctypes.CDLL | None | bool = None  # None: not tried yet; False: unavailable


def build_library(source: Path, folder: str | None = None) -> Path | None:
    """Compile ``source`` (``_canonical.c``) into ``folder`` (Turnip's cache) with the system C compiler.

    The file is named by the source's sha256, so an edited source is rebuilt and a
    built one is reused; it is written to a temporary name and renamed (two processes
    building at once both end with a whole library). None when no compiler is found
    or the build fails.
    """
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None or not source.exists():
        return None
    if folder is None:
        from turnip.cache import cache_dir

        folder = os.path.join(cache_dir(), "build")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    target = Path(folder) / f"_canonical-{digest}.so"
    if target.exists():
        return target
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=folder)
        os.close(fd)
        done = subprocess.run([cc, "-O2", "-std=c99", "-shared", "-fPIC", str(source), "-o", tmp],
                              capture_output=True, check=False)
        if done.returncode != 0:
            os.unlink(tmp)
            return None
        os.replace(tmp, target)
    except OSError:
        return None
    return target


def _candidates(here: Path) -> list[Path]:
    """The built library (install time) first, then one built on demand from the shipped C file."""
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = here / f"_canonical{suffix}"
        if path.exists():
            return [path]
    built = build_library(here / "_canonical.c")
    return [built] if built is not None else []


def _library() -> ctypes.CDLL | None:
    global _LIB
    if _LIB is None:
        _LIB = False
        here = Path(__file__).resolve().parent
        for path in _candidates(here):
            if path.exists():
                lib = ctypes.CDLL(str(path))
                p64 = ctypes.POINTER(ctypes.c_int64)
                lib.canonical_solve.restype = ctypes.c_int64
                lib.canonical_solve.argtypes = [ctypes.c_int64, p64, p64, p64, p64, p64, p64, ctypes.c_int64,
                                                ctypes.c_int64, ctypes.c_char_p, ctypes.c_int64, ctypes.c_int64,
                                                p64, p64]
                lib.greedy_place.restype = ctypes.c_int64
                lib.greedy_place.argtypes = [ctypes.c_int64, p64, p64, p64, p64, p64, ctypes.c_int64,
                                             ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, p64]
                _LIB = lib
                break
        else:
            warnings.warn(
                "turnipc: the compiled layout search (_canonical) is not built and no C compiler was found to "
                "build it; using the much slower Python search, whose plans can differ from the compiled "
                "search's. Install gcc and reinstall: pip install -e .",
                RuntimeWarning, stacklevel=3)
    return _LIB if isinstance(_LIB, ctypes.CDLL) else None


def compiled_available() -> bool:
    return _library() is not None


#: Deterministic work per effort unit: inner-loop steps of the compiled search
#: (about a second of one core; measured in bench/results/layout.md).
TICKS_PER_EFFORT = 1_000_000_000


def fit(lower, upper, size, cap: int, effort: float, align=None,
        heuristics: tuple[str, ...] = HEURISTICS, node_budget: int | None = None) -> FitResult:
    """Search for offsets (in the units of ``size``) keeping every buffer below ``cap``.

    ``lower``/``upper``: half-open lifetimes; ``align``: offset multiples (1 = none).
    Round-robin over ``heuristics`` with a node limit that doubles each round,
    at most ``effort`` units of counted work (and ``node_budget`` nodes) in all.
    """
    lower = np.ascontiguousarray(lower, dtype=np.int64)
    upper = np.ascontiguousarray(upper, dtype=np.int64)
    size = np.ascontiguousarray(size, dtype=np.int64)
    n = len(size)
    align = np.ones(n, np.int64) if align is None else np.ascontiguousarray(align, dtype=np.int64)
    lib = _library()
    if lib is None:
        return _fit_python(lower, upper, size, cap, effort, align, heuristics)
    sa, sb, nsec = sections(lower, upper)
    out = np.zeros(n, dtype=np.int64)
    stats = np.zeros(5, dtype=np.int64)
    ticks = int(effort * TICKS_PER_EFFORT)
    nodes = node_budget if node_budget is not None else 2**62

    def ptr(x):
        return x.ctypes.data_as(ctypes.POINTER(ctypes.c_int64))

    rc = lib.canonical_solve(n, ptr(size), ptr(align), ptr(lower), ptr(upper), ptr(sa), ptr(sb), nsec,
                             int(cap), ",".join(heuristics).encode(), int(nodes), ticks, ptr(out), ptr(stats))
    if rc == -2:
        raise MemoryError("layout search ran out of memory")
    status = {1: FitStatus.FOUND, 0: FitStatus.INFEASIBLE, -1: FitStatus.LIMIT}[int(rc)]
    h = int(stats[2])
    return FitResult(status, out if status is FitStatus.FOUND else None, int(stats[0]), int(stats[1]),
                     int(stats[4]), heuristics[h] if h >= 0 else None, "c")


def place_compiled(order: np.ndarray, lower: np.ndarray, upper: np.ndarray, size: np.ndarray,
                   align: np.ndarray, earliest_freed: bool, first_fit: bool,
                   limit: int | None) -> tuple[np.ndarray, int] | None:
    """The best-fit greedy pass of :func:`.greedy._place` in C (same offsets), or None
    when the library is not built. WHY: in NumPy one pass over pangu_2.6B's 18,692
    buffers takes about a second (one small array call per buffer); in C it is a
    linear scan per buffer."""
    lib = _library()
    if lib is None:
        return None

    def arr(x):
        return np.ascontiguousarray(x, dtype=np.int64)

    order, lower, upper, size, align = arr(order), arr(lower), arr(upper), arr(size), arr(align)
    out = np.zeros(len(lower), dtype=np.int64)

    def ptr(x):
        return x.ctypes.data_as(ctypes.POINTER(ctypes.c_int64))

    arena = lib.greedy_place(len(order), ptr(order), ptr(lower), ptr(upper), ptr(size), ptr(align), len(lower),
                             1 if earliest_freed else 0, 1 if first_fit else 0,
                             -1 if limit is None else int(limit), ptr(out))
    if arena == -2:
        raise MemoryError("greedy layout ran out of memory")
    return out, int(arena)


def _fit_python(lower, upper, size, cap, effort, align, heuristics) -> FitResult:
    from .search import WORK_PER_EFFORT, search_fit

    status, off, work = search_fit(lower, upper, size, int(cap), int(effort * WORK_PER_EFFORT),
                                   heuristics=heuristics, A=align)
    return FitResult(FitStatus(status), off, 0, 0, work, None, "python")
