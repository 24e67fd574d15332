"""turnipc.prefetch: reloads hoisted into the free bytes of a finished layout.

The layout below is written by hand for weight_reuse at 6U without prefetch
(events: 0 reload x, 1 reload W, 2 t0, 3 t1, 4 t2, 5 t3, 6 reload W, 7 t4; arena
7U), so the expected hoist can be worked out from the rules in turnipc/prefetch.py:
the second W (occupant 8, bytes [2U, 6U)) shares bytes only with the first W
(bytes [U, 5U), last read by event 2), so it may start before the compute of
step 1 (event 3), and nowhere earlier (the first W is read by step 0's compute).
"""

from __future__ import annotations

from tiny_graphs import U, weight_reuse

from turnipc.layout.model import Buffer, check_layout
from turnipc.planner import PlanOptions, build_plan
from turnipc.prefetch import hoist_into_layout, remap_offsets
from turnipc.residency import HOST, simulate
from turnipc.units import Budget
from turnipc.verify import verify_plan

ORDER5 = [0, 1, 2, 3, 4]
# occupant id -> offset in units (host occupants 0 and 2 are not laid out here)
HAND = {1: 0, 3: 1, 4: 6, 5: 0, 6: 1, 7: 0, 8: 2, 9: 6}


def _gpu_check(res, offsets):
    n = len(res.events)
    bufs = [Buffer(str(o.id), *o.lifetime(n), o.size) for o in res.occupants if o.device != HOST]
    check_layout(bufs, {b.id: offsets[int(b.id)] for b in bufs})


def test_reload_moves_up_to_the_last_end_under_its_bytes():
    res = simulate(weight_reuse(), ORDER5, [0] * 5, [6 * U], prefetch=False)
    offsets = {k: v * U for k, v in HAND.items()}
    _gpu_check(res, offsets)  # the hand layout is valid
    assert hoist_into_layout(res, offsets, {0: 7 * U}, slack=None) == ({("W", 0, 4): 1}, {})
    assert hoist_into_layout(res, offsets, {0: 7 * U}) == ({("W", 0, 4): 1}, {})


def test_blocked_reload_moves_only_where_the_caps_leave_room():
    res = simulate(weight_reuse(), ORDER5, [0] * 5, [6 * U], prefetch=False)
    offsets = {k: v * U for k, v in HAND.items()}
    offsets[6] = 2 * U  # c (read by event 5) now shares bytes with the second W
    offsets[4] = 7 * U  # and a moves up: arena 8U
    _gpu_check(res, offsets)
    # below 8U no 4U hole is free from step 1 on (a, b, c, d, y leave at most 3U)
    assert hoist_into_layout(res, offsets, {0: 8 * U}, slack=None) == ({}, {})
    # with 12U the band [8U, 12U) is free from step 1 on: W moves there
    assert hoist_into_layout(res, offsets, {0: 12 * U}, slack=None) == ({("W", 0, 4): 1}, {8: 8 * U})
    # but that would end at 12U while the most bytes live at once become 7U (a, b or c, and W):
    # beyond 1% over max-live and above the 8U arena, so with the slack bound it stays
    assert hoist_into_layout(res, offsets, {0: 12 * U}) == ({}, {})


def test_hoisted_residency_keeps_the_layout_valid():
    res = simulate(weight_reuse(), ORDER5, [0] * 5, [6 * U], prefetch=False)
    offsets = {k: v * U for k, v in HAND.items()}
    hoist, moved = hoist_into_layout(res, offsets, {0: 7 * U})
    assert moved == {}
    res2 = simulate(weight_reuse(), ORDER5, [0] * 5, [6 * U], prefetch=True, hoist_to=hoist)
    kinds = [(e.kind, e.step, e.storage) for e in res2.events if e.kind == "reload"]
    # the residency keeps the first W's stay until it was dropped (step 2, where t2's
    # output needed room), and a stay never starts before the previous one ends: step 2
    assert kinds == [("reload", 2, "W")]
    carried = remap_offsets(res, res2, offsets)
    _gpu_check(res2, carried)
    assert max(carried[o.id] + o.size for o in res2.occupants if o.device != HOST) == 7 * U


def test_plans_with_the_search_engine_fit_and_verify():
    g = weight_reuse()
    plan = build_plan(g, PlanOptions(Budget(bytes=6 * U), solver="search"))
    verify_plan(plan)
    assert plan.stats.peak_bytes <= 6 * U
    assert plan.stats.peak_bytes <= max(plan.stats.max_live_bytes_per_device) * 101 // 100
