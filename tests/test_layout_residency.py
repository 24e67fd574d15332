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


def test_dive_work_is_quadratic_in_buffers():
    from turnipc.layout.canonical import TICKS_PER_EFFORT
    from turnipc.layout.search import DIVE_TICKS_PER_N2, WORK_PER_EFFORT, dive_work

    assert dive_work(1000) == DIVE_TICKS_PER_N2 * 1000 * 1000 * WORK_PER_EFFORT // TICKS_PER_EFFORT == 3000
    assert dive_work(8332) == 208266  # light_densenet121 at 25%: about 0.2 effort per dive


#: max-live 4, optimum 5 (tests/test_layout_canonical.py: proven infeasible at 4).
HARD = [Buffer("A", 10, 20, 3), Buffer("E1", 10, 40, 1), Buffer("C", 20, 30, 2), Buffer("M", 20, 50, 1),
        Buffer("E2", 30, 60, 1), Buffer("D", 40, 50, 2), Buffer("B", 50, 60, 3)]


def _stacked_segment(bufs):
    """One segment of ``bufs`` starting from every buffer stacked on the previous (arena = total size)."""
    from turnipc.layout.decompose import prepare

    offsets, top = {}, 0
    for b in bufs:
        offsets[b.id], top = top, top + b.size
    prep = prepare(bufs, offsets)
    assert len(prep.segments) == 1 and prep.segments[0].arena == top
    return prep.segments[0]


def _recorded_queries(monkeypatch):
    """The (cap, share) of every question descend_segment asks (the real search answers)."""
    from turnipc.layout import search

    asked: list[tuple[int, int]] = []
    real = search._query

    def query(seg, cap, share, target, report=None, heuristics=search.CANONICAL_HEURISTICS):
        asked.append((cap, share))
        return real(seg, cap, share, target, report, heuristics)

    monkeypatch.setattr(search, "_query", query)
    return asked


def test_descent_steps_get_a_dive_and_go_a_quarter_down_when_few(monkeypatch):
    from turnipc.layout import search

    seg = _stacked_segment(HARD)  # arena 13, max-live 4, optimum 5
    asked = _recorded_queries(monkeypatch)
    monkeypatch.setattr(search, "dive_work", lambda n: 4)  # 40 units afford fewer than 12 dives
    _, status = search.descend_segment(seg, 4, 40)
    assert status == "infeasible"  # the max-live question, with a quarter of the work
    assert asked[0] == (4, 10)
    assert asked[1] == (5 + (13 - 1 - 5) * 3 // 4, 4)  # floor 5: a quarter of the way down from 13, one dive
    assert all(share == 4 for _, share in asked[1:-1])
    check_layout(HARD, dict(zip(seg.ids, seg.off.tolist())))
    assert seg.arena == 5


def test_descent_halves_when_the_effort_affords_every_step(monkeypatch):
    from turnipc.layout import search

    seg = _stacked_segment(HARD)
    asked = _recorded_queries(monkeypatch)
    monkeypatch.setattr(search, "dive_work", lambda n: 4)
    search.descend_segment(seg, 4, 10**6)
    assert asked[0][0] == 4
    assert asked[1][0] == 5 + (13 - 1 - 5) // 2  # halfway between the floor (5) and 13
    assert seg.arena == 5
