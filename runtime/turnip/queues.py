"""The queue model shared by the executor, the simulator and the backends; priorities of the dynamic order.

A queue is ``(device, QueueKind)``: per device a ``compute`` queue (compute
nodes), an ``h2d`` queue (reloads), a ``d2h`` queue (offloads) and a
``peer`` queue (moves, on the destination device). Each runs one node at a
time. The executor runs one worker thread per queue, the CuPy backend one
stream per queue, the simulator one timeline per queue: keeping the model
here lets the compiler's simulator and the backends use it without
importing the executor.
"""

from __future__ import annotations

from collections.abc import Sequence

from .graph import PlanGraph
from .plan import QUEUE_KINDS, QUEUE_OF_KIND, Loc, Node, NodeKind, Plan, QueueKind

__all__ = ["QUEUE_KINDS", "QUEUE_OF_KIND", "Queue", "QueueKind", "assign_queues", "dynamic_priorities", "queue_of"]

Queue = tuple[int, QueueKind]  # (device, queue kind)


def queue_of(node: Node) -> Queue:
    """The queue that runs ``node``."""
    return node.device, QUEUE_OF_KIND[node.kind]


def assign_queues(nodes: Sequence[Node], *, sort: bool = False) -> tuple[list[Queue], list[int]]:
    """The queues ``nodes`` use and, per node, the index of its queue.

    Queues are numbered in order of first use, or (``sort``) by device and
    then compute, h2d, d2h, peer: the simulator's stable numbering.
    """
    keys = [queue_of(nd) for nd in nodes]
    distinct = list(dict.fromkeys(keys))
    if sort:
        distinct.sort(key=lambda q: (q[0], QUEUE_KINDS.index(q[1])))
    number = {q: k for k, q in enumerate(distinct)}
    return distinct, [number[k] for k in keys]


def dynamic_priorities(plan: Plan, graph: PlanGraph | None = None) -> list[int]:
    """Priority of each node (index-aligned with ``plan.nodes``) for the dynamic order; lower runs first.

    ``pos`` for every node but reloads; a reload gets the smallest ``pos`` of
    the compute nodes depending on it that read the bytes it writes (falling
    back to its successors' smallest ``pos``, then to its own), so the copy
    engine fetches what compute needs next rather than what was planned
    first.
    """
    g = graph if graph is not None else PlanGraph.of(plan)
    nodes = plan.nodes
    tensors = plan.tensors

    def span(loc: Loc) -> tuple[int, int, int]:
        nb = tensors[loc.tensor].nbytes if 0 <= loc.tensor < len(tensors) else 0
        return loc.mem, loc.offset, loc.offset + max(nb, 1)

    out = []
    for i, n in enumerate(nodes):
        p = n.pos
        out_loc = n.outputs[0] if n.kind == NodeKind.RELOAD and n.outputs else None
        if out_loc is not None:
            mem, lo, hi = span(out_loc)
            best = None
            fallback = None
            for si in g.succ[i]:
                s = nodes[si]
                fallback = s.pos if fallback is None else min(fallback, s.pos)
                if s.kind != NodeKind.COMPUTE:
                    continue
                for loc in s.inputs:
                    if loc is None:
                        continue
                    m2, lo2, hi2 = span(loc)
                    if m2 == mem and lo2 < hi and lo < hi2:
                        best = s.pos if best is None else min(best, s.pos)
                        break
            if best is not None:
                p = best
            elif fallback is not None:
                p = fallback
        out.append(p)
    return out
