"""The compiled canonical search (turnipc/layout/_canonical.c via canonical.py):
exact offsets on hand-built instances, proofs of infeasibility checked against
brute force, windows, alignment, and the same offsets across processes."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from turnipc.layout import Buffer, check_layout, max_live, search_layout
from turnipc.layout.canonical import FitStatus, compiled_available, fit, sections

ROOT = Path(__file__).resolve().parents[1]


def _arrays(bufs):
    return (np.array([b.lower for b in bufs]), np.array([b.upper for b in bufs]),
            np.array([b.size for b in bufs]))


def test_compiled_search_is_built():
    # make install builds it (setup.py); the Python fallback exists for machines without gcc
    assert compiled_available()


def test_sections_one_per_distinct_end():
    L = np.array([0, 0, 1, 3])
    U = np.array([2, 4, 3, 4])
    sa, sb, n = sections(L, U)
    # ends 2, 3, 4: section 0 = live just before 2 (buffers 0,1,2), 1 = before 3 (1,2), 2 = before 4 (1,3)
    assert n == 3
    assert sa.tolist() == [0, 0, 0, 2]
    assert sb.tolist() == [1, 3, 2, 3]


def test_exact_offsets_chain():
    # a [0,2) 4, b [1,3) 4, c [2,4) 4: a at 0, b above a, c back at 0 (a is gone)
    bufs = [Buffer("a", 0, 2, 4), Buffer("b", 1, 3, 4), Buffer("c", 2, 4, 4)]
    r = fit(*_arrays(bufs), cap=8, effort=1)
    assert r.status is FitStatus.FOUND
    assert r.offsets.tolist() == [0, 4, 0]


def test_exact_offsets_needs_backtrack():
    # Greedy by size puts the long buffer at 0; only the long one on top fits 3.
    # x [0,1) 2, y [1,2) 2 ... and L [0,2) 1: at 3 every layout is x,y at 0 and L at 2 or L at 0
    bufs = [Buffer("L", 0, 2, 1), Buffer("x", 0, 1, 2), Buffer("y", 1, 2, 2)]
    r = fit(*_arrays(bufs), cap=3, effort=1)
    assert r.status is FitStatus.FOUND
    off = dict(zip("Lxy", r.offsets.tolist()))
    check_layout(bufs, off, capacity=3)
    assert off == {"L": 0, "x": 1, "y": 1}  # WAT: widest (L) first, at offset 0


#: Fragmentation instance (cap 4 = max-live is not enough): E1 is pushed to an
#: edge by A (size 3) at the start, E2 by B at the end, and in between C and D
#: (size 2) need a 2-wide hole next to M and E1 / E2.
HARD = [Buffer("A", 10, 20, 3), Buffer("E1", 10, 40, 1), Buffer("C", 20, 30, 2), Buffer("M", 20, 50, 1),
        Buffer("E2", 30, 60, 1), Buffer("D", 40, 50, 2), Buffer("B", 50, 60, 3)]


def test_infeasible_although_max_live_fits():
    assert max_live(HARD) == 4
    assert _brute_min(HARD) == 5
    r = fit(*_arrays(HARD), cap=4, effort=1)
    assert r.status is FitStatus.INFEASIBLE
    assert r.backtracks > 0
    r = fit(*_arrays(HARD), cap=5, effort=1)
    assert r.status is FitStatus.FOUND
    check_layout(HARD, {b.id: int(o) for b, o in zip(HARD, r.offsets)}, capacity=5)


def test_too_big_buffer_infeasible():
    r = fit(np.array([0]), np.array([2]), np.array([3]), cap=2, effort=1)
    assert r.status is FitStatus.INFEASIBLE and r.nodes == 0


def _brute_min(bufs) -> int:
    """Smallest arena over all offset vectors (tiny instances only)."""
    hi = sum(b.size for b in bufs)
    for cap in range(max_live(bufs), hi + 1):
        ranges = [range(0, cap - b.size + 1) for b in bufs]
        for offs in itertools.product(*ranges):
            ok = True
            for i, j in itertools.combinations(range(len(bufs)), 2):
                a, b = bufs[i], bufs[j]
                if a.lower < b.upper and b.lower < a.upper and offs[i] < offs[j] + b.size and offs[j] < offs[i] + a.size:
                    ok = False
                    break
            if ok:
                return cap
    return hi


@pytest.mark.parametrize("seed", range(12))
def test_agrees_with_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = 6
    bufs = []
    for i in range(n):
        lo = int(rng.integers(0, 5))
        bufs.append(Buffer(str(i), lo, lo + int(rng.integers(1, 4)), int(rng.integers(1, 4))))
    best = _brute_min(bufs)
    r = fit(*_arrays(bufs), cap=best, effort=1)
    assert r.status is FitStatus.FOUND
    check_layout(bufs, {b.id: int(o) for b, o in zip(bufs, r.offsets)}, capacity=best)
    if best > max(max_live(bufs), 1):
        assert fit(*_arrays(bufs), cap=best - 1, effort=1).status is FitStatus.INFEASIBLE


def test_alignment_respected():
    bufs = [Buffer("a", 0, 2, 3), Buffer("b", 0, 2, 4, alignment=4), Buffer("c", 1, 3, 1)]
    L, U, S = _arrays(bufs)
    r = fit(L, U, S, cap=8, effort=1, align=np.array([b.alignment for b in bufs]))
    assert r.status is FitStatus.FOUND
    off = {b.id: int(o) for b, o in zip(bufs, r.offsets)}
    check_layout(bufs, off, capacity=8)
    assert off["b"] % 4 == 0


def test_independent_windows_each_start_at_zero():
    # two phases that share no lifetime: each is searched on its own
    bufs = [Buffer("a", 0, 2, 5), Buffer("b", 0, 2, 3), Buffer("c", 2, 4, 2), Buffer("d", 2, 4, 6)]
    r = fit(*_arrays(bufs), cap=8, effort=1)
    assert r.status is FitStatus.FOUND
    assert r.offsets.tolist() == [0, 5, 6, 0]


def test_node_budget_stops_with_limit():
    rng = np.random.default_rng(3)
    n = 60
    L = rng.integers(0, 50, n)
    U = L + rng.integers(1, 20, n)
    S = rng.integers(1, 40, n)
    bufs = [Buffer(str(i), int(a), int(b), int(s)) for i, (a, b, s) in enumerate(zip(L, U, S))]
    r = fit(L, U, S, cap=max_live(bufs), effort=1, node_budget=5)
    assert r.status in (FitStatus.LIMIT, FitStatus.FOUND)
    assert r.nodes <= 5


def test_search_layout_capacity_proves_infeasible():
    lay = search_layout(HARD, capacity=4, effort=1, use_squeaky=False)
    assert lay.arena_bytes == 5
    assert lay.stats["proven_infeasible"]


_SCRIPT = """
import json, sys
import numpy as np
from turnipc.layout import Buffer, search_layout
rng = np.random.default_rng(7)
bufs = []
for i in range(150):
    lo = int(rng.integers(0, 300))
    bufs.append(Buffer(f"t{i}", lo, lo + int(rng.integers(1, 60)), int(rng.integers(1, 4096)) * 64))
lay = search_layout(bufs, effort=0.5)
# over 2,000 buffers: the compiled greedy passes and the squeaky-wheel loop run before the search
big = []
for i in range(2100):
    lo = int(rng.integers(0, 5000))
    big.append(Buffer(f"u{i}", lo, lo + int(rng.integers(1, 200)), int(rng.integers(1, 4096)) * 64))
lay2 = search_layout(big, effort=0.2)
print(json.dumps({"small": lay.offsets, "big": lay2.offsets, "nodes": [lay.stats["search_nodes"], lay2.stats["search_nodes"]],
                  "engines": lay2.stats["engines"]}, sort_keys=True))
"""


def test_same_offsets_across_hash_seeds():
    outs = []
    for seed in ("1", "4242"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        p = subprocess.run([sys.executable, "-c", _SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
                           check=True)
        outs.append(json.loads(p.stdout))
    assert outs[0] == outs[1]
    assert len(outs[0]["small"]) == 150 and len(outs[0]["big"]) == 2100
    assert outs[0]["nodes"][0] > 0 and outs[0]["nodes"][1] > 0  # the exact search ran in both
    assert outs[0]["engines"] != ["greedy"]  # squeaky passes or the search improved the greedy start


def test_cli_capacity_escalates_and_proves_infeasible(tmp_path):
    from click.testing import CliRunner

    from turnipc.layout.cli import layout

    csv = tmp_path / "hard.csv"
    csv.write_text("id,lower,upper,size\n" + "".join(f"{b.id},{b.lower},{b.upper},{b.size}\n" for b in HARD))
    r = CliRunner().invoke(layout, [str(csv), "--capacity", "4", "--json", "--time-budget", "1"])
    out = json.loads(r.output)
    assert r.exit_code == 1
    assert out["fits"] is False and out["proven_infeasible"] is True and out["arena_bytes"] == 5
    r = CliRunner().invoke(layout, [str(csv), "--capacity", "5", "--json", "--time-budget", "1"])
    out = json.loads(r.output)
    assert r.exit_code == 0 and out["fits"] is True and out["proven_optimal"] is False
