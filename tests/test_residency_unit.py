"""residency.simulate on hand-built graphs: the exact events, occupants and byte counts.

In the manner of XLA's heap-simulator tests: every expectation below (the
walk's typed actions, then the events and occupants built from them) was
worked out by hand from the rules in turnipc/residency.py (Belady eviction,
free after last use, offload only what has no host copy, reloads hoisted as
early as the budget allows, a reload hoisted to the start of an initial
storage becomes a preload), so a failure points at the rule that broke.
"""

from __future__ import annotations

import pytest
from tiny_graphs import U, skip_chain, two_stage, weight_reuse

from turnipc.errors import BudgetError
from turnipc.residency import (
    HOST,
    Allocate,
    Compute,
    Drop,
    Free,
    Move,
    Offload,
    Reload,
    build_events,
    simulate,
    task_working_sets,
)

ORDER5 = [0, 1, 2, 3, 4]


def events(res):
    """(kind, device, step, task or storage, reads, writes) per event."""
    return [(e.kind, e.device, e.step, e.task if e.kind == "compute" else e.storage, e.reads, e.writes) for e in res.events]


def occupants(res):
    """(storage, device, size, writer, readers, to_end) per occupant."""
    return [(o.storage, o.device, o.size, o.writer, o.readers, o.to_end) for o in res.occupants]


def test_working_sets_are_the_lower_bound():
    assert task_working_sets(skip_chain(), ORDER5, [0] * 5, 1) == [3 * U]
    assert task_working_sets(weight_reuse(), ORDER5, [0] * 5, 1) == [6 * U]


def test_unlimited_budget_has_no_transfers():
    res = simulate(skip_chain(), ORDER5, [0] * 5, [100 * U])
    assert events(res) == [
        ("compute", 0, 0, 0, [0], [1]),
        ("compute", 0, 1, 1, [1], [2]),
        ("compute", 0, 2, 2, [2], [3]),
        ("compute", 0, 3, 3, [3], [4]),
        ("compute", 0, 4, 4, [4, 1], [5]),
    ]
    assert occupants(res) == [
        ("x", 0, U, None, [0], False),  # the input, preloaded: no event writes it
        ("a", 0, U, 0, [1, 4], False),
        ("b", 0, U, 1, [2], False),
        ("c", 0, 2 * U, 2, [3], False),
        ("d", 0, U, 3, [4], False),
        ("y", 0, U, 4, [], True),  # the graph output, still there at the end
    ]
    assert (res.bytes_offloaded, res.bytes_reloaded, res.bytes_moved) == (0, 0, 0)
    assert res.final == {"y": 5} and res.lower_bound == [3 * U]


def test_dirty_activation_is_offloaded_then_reloaded():
    res = simulate(skip_chain(), ORDER5, [0] * 5, [3 * U])
    assert events(res) == [
        ("compute", 0, 0, 0, [0], [1]),
        ("compute", 0, 1, 1, [1], [2]),
        ("offload", 0, 2, "a", [1], [3]),  # c needs room at step 2; a's next use (4) is the furthest
        ("compute", 0, 2, 2, [2], [4]),
        ("compute", 0, 3, 3, [4], [5]),
        ("reload", 0, 4, "a", [3], [6]),  # step 3 is full (c + d = 3U): no prefetch possible
        ("compute", 0, 4, 4, [5, 6], [7]),
    ]
    assert occupants(res) == [
        ("x", 0, U, None, [0], False),
        ("a", 0, U, 0, [1, 2], False),
        ("b", 0, U, 1, [3], False),
        ("a", HOST, U, 2, [5], False),  # the host copy the offload writes and the reload reads
        ("c", 0, 2 * U, 3, [4], False),
        ("d", 0, U, 4, [6], False),
        ("a", 0, U, 5, [6], False),
        ("y", 0, U, 6, [], True),
    ]
    assert (res.bytes_offloaded, res.bytes_reloaded, res.bytes_moved) == (U, U, 0)


def test_clean_weight_is_dropped_without_an_event_and_reloaded_from_its_host_copy():
    res = simulate(weight_reuse(), ORDER5, [0] * 5, [6 * U])
    assert events(res) == [
        ("compute", 0, 0, 0, [0, 1], [2]),
        ("compute", 0, 1, 1, [2], [3]),
        # step 2: W (next use 4) is evicted before a (next use 3); W is clean: dropped, no offload event
        ("compute", 0, 2, 2, [3], [4]),
        ("compute", 0, 3, 3, [4, 2], [5]),
        ("reload", 0, 4, "W", [6], [7]),
        ("compute", 0, 4, 4, [5, 7], [8]),
    ]
    assert occupants(res) == [
        ("x", 0, U, None, [0], False),
        ("W", 0, 4 * U, None, [0], False),  # preloaded
        ("a", 0, U, 0, [1, 3], False),
        ("b", 0, U, 1, [2], False),
        ("c", 0, U, 2, [3], False),
        ("d", 0, U, 3, [5], False),
        ("W", HOST, 4 * U, None, [4], False),  # the weight's host copy exists from the start
        ("W", 0, 4 * U, 4, [5], False),
        ("y", 0, U, 5, [], True),
    ]
    assert (res.bytes_offloaded, res.bytes_reloaded) == (0, 4 * U)


def test_without_prefetch_inputs_are_reloaded_at_their_first_use():
    res = simulate(two_stage(), [0, 1], [0, 0], [10 * U], prefetch=False)
    assert events(res) == [
        ("reload", 0, 0, "x", [0], [1]),
        ("compute", 0, 0, 0, [1], [2]),
        ("compute", 0, 1, 1, [2], [3]),
    ]
    assert occupants(res)[0] == ("x", HOST, U, None, [0], False)


def test_value_read_on_another_gpu_is_moved_right_after_it_is_produced():
    res = simulate(two_stage(), [0, 1], [0, 1], [10 * U, 10 * U])
    assert events(res) == [
        ("compute", 0, 0, 0, [0], [1]),
        ("move", 1, 1, "a", [1], [2]),  # on the destination GPU's queue
        ("compute", 1, 1, 1, [2], [3]),
    ]
    assert occupants(res) == [
        ("x", 0, U, None, [0], False),
        ("a", 0, U, 0, [1], False),
        ("a", 1, U, 1, [2], False),
        ("y", 1, U, 2, [], True),
    ]
    assert (res.bytes_offloaded, res.bytes_reloaded, res.bytes_moved) == (0, 0, U)


def test_a_schedule_from_elsewhere_evicts_where_it_says():
    # evict a right after step 1 although the budget would not force it
    res = simulate(skip_chain(), ORDER5, [0] * 5, [100 * U], evict_after=frozenset({("a", 0, 1)}))
    kinds = [(e.kind, e.step, e.storage) for e in res.events if e.kind != "compute"]
    # prefetch hoists the reload back to step 2, right after the offload (plenty of room)
    assert kinds == [("offload", 2, "a"), ("reload", 2, "a")]
    assert [e.kind for e in res.events] == ["compute", "compute", "offload", "reload", "compute", "compute", "compute"]


def test_budget_below_one_task_is_refused():
    with pytest.raises(BudgetError, match=r"one task alone needs 768 bytes"):
        simulate(skip_chain(), ORDER5, [0] * 5, [3 * U - 1])


# -- the walk's actions: every decision, in order -----------------------------
# Stays are numbered in the order they begin; "step" is the task's position.


def test_actions_of_an_offload_and_its_reload():
    res = simulate(skip_chain(), ORDER5, [0] * 5, [3 * U])
    assert res.actions == [
        Reload(0, "x", 0, stay=0, preload=True),  # x's reload rises to the start of the run: a preload
        Allocate(0, "a", 0, stay=1),
        Compute(0, 0, 0),
        Free(0, "x", 0, stay=0),  # x has no later use
        Allocate(1, "b", 0, stay=2),
        Compute(1, 1, 0),
        Offload(2, "a", 0, stay=1),  # 2U resident + c's 2U > 3U: a (next use 4) goes, and it has no host copy
        Allocate(2, "c", 0, stay=3),
        Compute(2, 2, 0),
        Free(2, "b", 0, stay=2),
        Allocate(3, "d", 0, stay=4),
        Compute(3, 3, 0),
        Free(3, "c", 0, stay=3),
        Reload(4, "a", 0, stay=5),  # not prefetched: step 3 holds c + d = 3U already
        Allocate(4, "y", 0, stay=6),
        Compute(4, 4, 0),
        Free(4, "d", 0, stay=4),
        Free(4, "a", 0, stay=5),  # y is a graph output: never freed
    ]


def test_actions_of_a_dropped_weight():
    res = simulate(weight_reuse(), ORDER5, [0] * 5, [6 * U])
    assert res.actions == [
        Reload(0, "x", 0, stay=0, preload=True),
        Reload(0, "W", 0, stay=1, preload=True),
        Allocate(0, "a", 0, stay=2),
        Compute(0, 0, 0),
        Free(0, "x", 0, stay=0),
        Allocate(1, "b", 0, stay=3),
        Compute(1, 1, 0),
        Drop(2, "W", 0, stay=1),  # W's next use (4) is after a's (3); W is clean: dropped, not offloaded
        Allocate(2, "c", 0, stay=4),
        Compute(2, 2, 0),
        Free(2, "b", 0, stay=3),
        Allocate(3, "d", 0, stay=5),
        Compute(3, 3, 0),
        Free(3, "c", 0, stay=4),
        Free(3, "a", 0, stay=2),
        Reload(4, "W", 0, stay=6),  # 3U live at step 3 + 4U > 6U: no prefetch
        Allocate(4, "y", 0, stay=7),
        Compute(4, 4, 0),
        Free(4, "d", 0, stay=5),
        Free(4, "W", 0, stay=6),
    ]


def test_actions_of_a_move_free_the_source_after_it():
    res = simulate(two_stage(), [0, 1], [0, 1], [10 * U, 10 * U])
    assert res.actions == [
        Reload(0, "x", 0, stay=0, preload=True),
        Allocate(0, "a", 0, stay=1),
        Compute(0, 0, 0),
        Free(0, "x", 0, stay=0),
        Move(1, "a", 1, stay=2, source=0, source_stay=1),  # pushed right after it is produced
        Free(1, "a", 0, stay=1),  # the move was a's last use on GPU 0
        Allocate(1, "y", 1, stay=3),
        Compute(1, 1, 1),
        Free(1, "a", 1, stay=2),
    ]


def test_without_prefetch_reloads_keep_their_step():
    res = simulate(two_stage(), [0, 1], [0, 0], [10 * U], prefetch=False)
    assert res.actions[:3] == [Reload(0, "x", 0, stay=0), Allocate(0, "a", 0, stay=1), Compute(0, 0, 0)]


def test_a_prefetched_reload_records_the_step_it_is_issued_at():
    res = simulate(skip_chain(), ORDER5, [0] * 5, [100 * U], evict_after=frozenset({("a", 0, 1)}))
    moves = [a for a in res.actions if isinstance(a, (Offload, Drop, Reload)) and a.storage == "a"]
    # the schedule evicts a after step 1 (so before step 2's compute); its reload for step 4 rises to step 2
    assert moves == [Offload(2, "a", 0, stay=1), Reload(4, "a", 0, stay=5, prefetch=2)]


def test_events_are_built_from_the_actions_alone():
    # Hand-written actions the walk would not take at 3U: a's reload issued at step 3 instead of 4.
    actions = [
        Reload(0, "x", 0, stay=0, preload=True), Allocate(0, "a", 0, stay=1), Compute(0, 0, 0), Free(0, "x", 0, stay=0),
        Allocate(1, "b", 0, stay=2), Compute(1, 1, 0),
        Offload(2, "a", 0, stay=1), Allocate(2, "c", 0, stay=3), Compute(2, 2, 0), Free(2, "b", 0, stay=2),
        Allocate(3, "d", 0, stay=4), Compute(3, 3, 0), Free(3, "c", 0, stay=3),
        Reload(4, "a", 0, stay=5, prefetch=3), Allocate(4, "y", 0, stay=6), Compute(4, 4, 0),
        Free(4, "d", 0, stay=4), Free(4, "a", 0, stay=5),
    ]
    res = build_events(skip_chain(), 5, actions)
    assert events(res) == [
        ("compute", 0, 0, 0, [0], [1]),
        ("compute", 0, 1, 1, [1], [2]),
        ("offload", 0, 2, "a", [1], [3]),
        ("compute", 0, 2, 2, [2], [4]),
        ("reload", 0, 3, "a", [3], [5]),  # issued just before step 3's compute, the step it was hoisted to
        ("compute", 0, 3, 3, [4], [6]),
        ("compute", 0, 4, 4, [6, 5], [7]),  # reads d, then the reloaded a
    ]
    assert (res.bytes_offloaded, res.bytes_reloaded, res.final) == (U, U, {"y": 7})


def test_actions_out_of_stay_order_are_refused():
    with pytest.raises(AssertionError, match="stay 1 begins out of order"):
        build_events(skip_chain(), 5, [Allocate(0, "a", 0, stay=1)])
