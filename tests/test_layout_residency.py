"""What the planner asks of the layout engine on residency instances: the "O" preorder
(most time-overlapping buffers first), the search over two preorder sets in turn, and
which prefetch-hoisting pass the planner keeps (exact results on hand-built cases)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from turnipc.layout import Buffer, check_layout, greedy_layout, max_live
from turnipc.layout.canonical import HEURISTICS, fit
from turnipc.layout.search import RESIDENCY_HEURISTICS, CanonicalSearch, search_fit, search_layout_sets, sections
from turnipc.planner import Layouts, lower_ratio, peak_over_max_live

#: A is the widest buffer in time (30 steps) but overlaps only B; B overlaps A and the
#: three short Cs, which live after A ended. A loose capacity (100) makes the first
#: dive succeed, so the offsets show which buffer each preorder puts first.
WIDE_VS_CROWDED = [Buffer("A", 0, 30, 1), Buffer("B", 25, 40, 2), Buffer("C1", 31, 32, 1),
                   Buffer("C2", 33, 34, 1), Buffer("C3", 35, 36, 1)]

#: Greedy lays this out at 14, max-live is 11 (tests/test_layout.py).
HARD_SMALL = [Buffer("p", 0, 4, 3), Buffer("q", 2, 3, 4), Buffer("r", 2, 6, 4), Buffer("s", 3, 7, 3),
              Buffer("t", 5, 7, 4)]


def _arrays(bufs):
    return (np.array([b.lower for b in bufs]), np.array([b.upper for b in bufs]), np.array([b.size for b in bufs]))


def test_residency_preorders_put_overlap_first():
    assert RESIDENCY_HEURISTICS == ("OZ",) + HEURISTICS


def test_overlap_preorder_places_the_crowded_buffer_first():
    L, U, S = _arrays(WIDE_VS_CROWDED)
    # WAT: A (widest) at 0; the Cs (top 1) dominate B (it could only start at 1), so they go
    # to 0 before B lands on A at 1
    wat = fit(L, U, S, 100, 1.0, heuristics=("WAT",))
    assert wat.offsets.tolist() == [0, 1, 0, 0, 0]
    # OZ: B overlaps 4 buffers, A only 1: B at 0, then A and the Cs on top of it at 2
    oz = fit(L, U, S, 100, 1.0, heuristics=("OZ",))
    assert oz.offsets.tolist() == [2, 0, 2, 2, 2]
    for r in (wat, oz):
        check_layout(WIDE_VS_CROWDED, {b.id: int(o) for b, o in zip(WIDE_VS_CROWDED, r.offsets)}, capacity=3)


def test_python_fallback_knows_the_overlap_key():
    L, U, S = _arrays(WIDE_VS_CROWDED)
    a, b, T = sections(L, U)
    srch = CanonicalSearch(a, b, S, T, 100, "OZ")
    assert srch.pre[0] == 1  # B: four overlaps
    status, off, _ = search_fit(L, U, S, 100, 10**6, heuristics=("OZ",))
    assert status == "found" and off.tolist() == [2, 0, 2, 2, 2]


def test_search_layout_sets_reaches_max_live_from_greedy():
    start = greedy_layout(HARD_SMALL)
    assert start.arena_bytes == 14 and max_live(HARD_SMALL) == 11
    lay = search_layout_sets(HARD_SMALL, start, effort=0.5)
    check_layout(HARD_SMALL, lay.offsets)
    assert lay.arena_bytes == 11
    assert lay.stats["heuristics"] == list(RESIDENCY_HEURISTICS)  # the first set already reached it


def test_search_layout_sets_keeps_a_start_at_max_live():
    bufs = [Buffer("a", 0, 2, 4), Buffer("b", 1, 3, 4), Buffer("c", 2, 4, 4)]
    start = greedy_layout(bufs)
    assert start.arena_bytes == max_live(bufs) == 8
    assert search_layout_sets(bufs, start, effort=0.5) is start


def test_search_layout_sets_same_offsets_twice():
    rng = np.random.default_rng(3)
    bufs = []
    for i in range(60):
        lo = int(rng.integers(0, 40))
        bufs.append(Buffer(str(i), lo, lo + int(rng.integers(1, 12)), int(rng.integers(1, 9))))
    start = greedy_layout(bufs)
    one = search_layout_sets(bufs, start, effort=0.05)
    two = search_layout_sets(bufs, start, effort=0.05)
    check_layout(bufs, one.offsets)
    assert one.offsets == two.offsets and one.arena_bytes <= start.arena_bytes


def _lay(arena: int, lower: int) -> Layouts:
    return Layouts({}, {0: arena}, {0: lower})


def test_peak_over_max_live_is_exact_and_per_gpu():
    assert peak_over_max_live(_lay(1030, 1000), 1) == Fraction(103, 100)
    two = Layouts({}, {0: 100, 1: 120, -1: 999}, {0: 100, 1: 100, -1: 1})
    assert peak_over_max_live(two, 2) == Fraction(6, 5)  # the host (-1) is not a GPU
    assert peak_over_max_live(Layouts({}, {}, {}), 1) == 1


def test_lower_ratio_keeps_the_tighter_hoisting():
    budget_bounded = ("res1", _lay(1729024, 1708032))  # 1.0123
    slack_bounded = ("res2", _lay(1725696, 1698560))  # 1.0160
    assert lower_ratio(budget_bounded, slack_bounded, 1) is budget_bounded
    assert lower_ratio(slack_bounded, budget_bounded, 1) is budget_bounded
    same = ("res3", _lay(1729024, 1708032))
    assert lower_ratio(budget_bounded, same, 1) is same  # ties: the second (slack-bounded) pass
