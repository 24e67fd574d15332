"""turnip.graph.PlanGraph / DependencyGraph and turnip.queues on hand-built node lists."""

from __future__ import annotations

import pytest
from turnip.errors import PlanError
from turnip.graph import DependencyGraph, PlanGraph
from turnip.plan import Loc, Node, NodeKind, QueueKind
from turnip.queues import assign_queues, queue_of


def n(id_, deps=(), kind="compute", device=0, pos=None):
    return Node(id_, kind, device, tuple(deps), (Loc(0, 0, 0),), (Loc(0, 0, 0),), pos=id_ if pos is None else pos)


def test_successors_and_distinct_dependency_counts():
    # ids need not be positions: 10 <- 20, 10 <- 30 (listed twice), 20 <- 30
    g = PlanGraph([n(30, (10, 20, 10)), n(10), n(20, (10,))])
    assert g.index == {30: 0, 10: 1, 20: 2}
    assert g.succ == ((), (0, 2), (0,))  # by position, increasing
    assert g.ndeps == (2, 0, 1)  # the duplicate dependency counts once
    assert g.topological_order() == [1, 2, 0]
    assert g.unreachable() == []


@pytest.mark.parametrize(
    "nodes, match",
    [
        ([n(1), n(1)], "two nodes with id 1"),
        ([n(1, (7,))], "node 1 depends on node 7, which the plan does not have"),
        ([n(1, (1,))], "node 1 depends on itself"),
    ],
)
def test_malformed_node_lists_are_plan_errors(nodes, match):
    with pytest.raises(PlanError, match=match):
        PlanGraph(nodes)


def test_a_cycle_is_found_and_named():
    g = PlanGraph([n(0), n(1, (0, 2)), n(2, (1,)), n(3, (2,))])
    assert g.unreachable() == [1, 2, 3]  # on the cycle, and behind it
    with pytest.raises(PlanError, match=r"cycle \(3 nodes can never run, e.g. nodes \[1, 2, 3\]\)"):
        g.check_acyclic()
    with pytest.raises(PlanError, match="cycle"):
        g.topological_order()


def test_topological_order_takes_the_smallest_ready_position_first():
    # positions 0..4; 3 and 1 become ready together after 0
    g = DependencyGraph([[], [0], [1, 3], [0], []])
    assert g.topological_order() == [0, 1, 3, 2, 4]
    with pytest.raises(ValueError, match="cycle"):
        DependencyGraph([[1], [0]]).topological_order()


def test_serial_order_and_its_violations():
    g = PlanGraph([n(0, pos=2), n(1, (0,), pos=1), n(2, pos=1)])
    assert g.serial_order() == [1, 2, 0]  # by pos, ties by id
    assert g.serial_violation(g.serial_order()) == (0, 1)  # node 1 runs before node 0 it depends on
    assert g.serial_violation([0, 1, 2]) is None


def test_queues_one_per_device_and_kind():
    nodes = [n(0, kind="reload", device=1), n(1, device=0), n(2, kind="move", device=1), n(3, device=1), n(4, kind="offload")]
    assert queue_of(nodes[0]) == (1, QueueKind.H2D)
    assert assign_queues(nodes) == ([(1, "h2d"), (0, "compute"), (1, "peer"), (1, "compute"), (0, "d2h")], [0, 1, 2, 3, 4])
    queues, of = assign_queues(nodes, sort=True)
    assert queues == [(0, "compute"), (0, "d2h"), (1, "compute"), (1, "h2d"), (1, "peer")] and of == [3, 0, 4, 2, 1]
    assert nodes[2].kind is NodeKind.MOVE


def test_the_plan_check_orders_nodes_with_the_same_graph():
    """turnip.plancheck (what `turnipc verify` and every run check) takes its order from DependencyGraph."""
    import dataclasses

    from hand_plans import make_identity_chain
    from turnip.errors import PlanCheckError
    from turnip.plancheck import check_plan, topological_order

    plan = make_identity_chain(4)
    # node 3 also waits on node 0 (listed twice): still 0, 1, 2, 3
    nodes = [dataclasses.replace(plan.nodes[3], deps=(2, 0, 0)) if nd.id == 3 else nd for nd in plan.nodes]
    plan = dataclasses.replace(plan, nodes=nodes)
    assert topological_order(plan) == DependencyGraph([nd.deps for nd in plan.nodes]).topological_order() == [0, 1, 2, 3]
    check_plan(plan)
    cyclic = dataclasses.replace(plan, nodes=[dataclasses.replace(nd, deps=(3,)) if nd.id == 1 else nd for nd in plan.nodes])
    with pytest.raises(PlanCheckError, match=r"dependency cycle through node 1 \(Identity 'id1'\)"):
        topological_order(cyclic)
    missing = dataclasses.replace(plan, nodes=[dataclasses.replace(nd, deps=(9,)) if nd.id == 2 else nd for nd in plan.nodes])
    with pytest.raises(PlanCheckError, match=r"node 2 \(Identity 'id2'\) depends on missing node 9"):
        topological_order(missing)
