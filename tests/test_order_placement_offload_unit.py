"""order.memory_aware_order, placement.place_stages and offload.schedule_offloads on hand-built graphs."""

from __future__ import annotations

import pytest
from tiny_graphs import U, graph, skip_chain, task, value, weight_reuse

from turnipc.offload import schedule_offloads
from turnipc.order import memory_aware_order
from turnipc.placement import place_stages
from turnipc.residency import simulate

# -- order ---------------------------------------------------------------------


def test_order_prefers_the_task_that_frees_the_most_bytes():
    # ONNX order: t0 a = f(x) (4U), t1 c = f(x) (1U), t2 b = f(a) (1U), t3 y = b + c
    vals = [value("x", 1, "input"), value("a", 4), value("c", 1), value("b", 1), value("y", 1, "output")]
    g = graph(vals, [task(0, ("x",), ("a",)), task(1, ("x",), ("c",)), task(2, ("a",), ("b",)), task(3, ("b", "c"), ("y",))],
              ["x"], ["y"])
    # first: t1 allocates 1U, t0 4U (an input frees nothing) -> t1; then t0; then t2 frees a (4U - 1U) -> t2; t3
    assert memory_aware_order(g) == [1, 0, 2, 3]


def test_order_breaks_ties_by_graph_position():
    vals = [value("x", 1, "input"), value("p", 1), value("q", 1), value("y", 1, "output")]
    g = graph(vals, [task(0, ("x",), ("p",)), task(1, ("x",), ("q",)), task(2, ("q", "p"), ("y",))], ["x"], ["y"])
    assert memory_aware_order(g) == [0, 1, 2]


def test_order_follows_data_dependencies_of_a_chain():
    assert memory_aware_order(skip_chain()) == [0, 1, 2, 3, 4]


def test_order_refuses_a_cycle():
    vals = [value("a", 1), value("b", 1)]
    g = graph(vals, [task(0, ("b",), ("a",)), task(1, ("a",), ("b",))], [], ["a"])
    with pytest.raises(ValueError, match="cycle"):
        memory_aware_order(g)


# -- placement -----------------------------------------------------------------


def _costed(costs: list[int]):
    vals = [value("x", 1, "input")] + [value(f"v{i}", 1) for i in range(len(costs))]
    tasks, prev = [], "x"
    for i, c in enumerate(costs):
        tasks.append(task(i, (prev,), (f"v{i}",), flops=c, touched=0))
        prev = f"v{i}"
    return graph(vals, tasks, ["x"], [prev])


def test_one_gpu_gets_everything():
    assert place_stages(_costed([5, 5, 5]), [0, 1, 2], 1) == [0, 0, 0]


def test_stages_split_at_the_cost_midpoints():
    assert place_stages(_costed([10, 10, 10, 10]), [0, 1, 2, 3], 2) == [0, 0, 1, 1]
    # midpoints 15, 35, 45, 55 of 60: only the first lies in the first half
    assert place_stages(_costed([30, 10, 10, 10]), [0, 1, 2, 3], 2) == [0, 1, 1, 1]
    assert place_stages(_costed([10, 10, 10]), [0, 1, 2], 3) == [0, 1, 2]


def test_placement_is_indexed_by_task_id_and_follows_the_order():
    # the order runs t2 first: it lands on the first GPU though its id is last
    assert place_stages(_costed([10, 10, 10, 10]), [2, 3, 0, 1], 2) == [1, 1, 0, 0]


def test_bytes_touched_count_as_cost():
    g = _costed([0, 0])
    g.tasks[0] = task(0, ("x",), ("v0",), flops=0, touched=30)
    g.tasks[1] = task(1, ("v0",), ("v1",), flops=10, touched=0)
    assert place_stages(g, [0, 1], 2) == [0, 1]


# -- offload schedule (CP-SAT) -------------------------------------------------


def test_schedule_offloads_the_only_gap_that_relieves_the_budget():
    g = skip_chain()
    s = schedule_offloads(g, [0, 1, 2, 3, 4], [0] * 5, [3 * U])
    assert s.gaps == 1  # a, between its read at step 1 and at step 4
    assert s.evict_after == frozenset({("a", 0, 1)})
    assert s.status == "OPTIMAL"
    assert (s.transfer_cost, s.greedy_cost) == (2 * U, 2 * U)  # a is dirty: offload + reload
    res = simulate(g, [0, 1, 2, 3, 4], [0] * 5, [3 * U], evict_after=s.evict_after)
    assert [(e.kind, e.step) for e in res.events if e.kind != "compute"] == [("offload", 2), ("reload", 4)]


def test_schedule_drops_the_clean_weight_rather_than_the_dirty_activation():
    g = weight_reuse()
    s = schedule_offloads(g, [0, 1, 2, 3, 4], [0] * 5, [6 * U])
    # gaps: W between steps 0 and 4, a between steps 1 and 3; step 3 (c, a, d + W = 7U) forces W out
    assert s.gaps == 2 and s.evict_after == frozenset({("W", 0, 0)})
    assert (s.transfer_cost, s.greedy_cost) == (4 * U, 4 * U)  # one reload of W; no offload (W is clean)


def test_no_gap_no_decision():
    s = schedule_offloads(skip_chain(), [0, 1, 2, 3, 4], [0] * 5, [100 * U])
    assert s.evict_after == frozenset() and s.transfer_cost == 0 == s.greedy_cost and s.gaps == 1
