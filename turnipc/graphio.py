"""Per-task storages of a TaskGraph, computed once per graph and shared by the passes that walk it.

Why: ordering, the residency walk (each tightening try, the prefetch pass,
each probe of a min search) and the lower bounds all read every task's
storages; on a tiled graph of 1e5 tasks, recomputing them in each pass
(``Task.storages_read`` builds a dict per call) was a large share of planning.
"""

from __future__ import annotations

from dataclasses import dataclass

from turnip.plan import DEFAULT_ALIGNMENT, aligned_size

from .taskgraph import TaskGraph


@dataclass(frozen=True)
class GraphIO:
    """What the walk reads of a TaskGraph, computed once per graph: each task's storages and each storage's room."""

    reads: list[list[str]]  # task id -> storages read (distinct, in input order)
    writes: list[list[str]]  # task id -> storages written
    size: dict[str, int]  # storage -> aligned bytes
    rank: dict[str, int]  # storage -> position in value order
    working_set: list[int]  # task id -> aligned bytes of the distinct storages it reads and writes


#: The last few graphs' GraphIO, each with the objects it was computed from (checked by identity).
_IO_CACHE: list[tuple[TaskGraph, object, object, int, GraphIO]] = []


def graph_io(graph: TaskGraph) -> GraphIO:
    """The :class:`GraphIO` of ``graph``; reused while the graph keeps the same task list and values.

    Why: the planner walks the same graph many times (each tightening try, the
    prefetch pass, each probe of a min search), and rereading every task's
    storages each time was a tenth of planning a tiled CNN.
    """
    for g, tasks, values, n, io in _IO_CACHE:
        if g is graph and tasks is graph.tasks and values is graph.values and n == len(graph.tasks):
            return io
    size = {s: aligned_size(graph.storage_bytes(s), DEFAULT_ALIGNMENT) for s in graph.storages()}
    reads = [t.storages_read(graph) for t in graph.tasks]
    writes = [t.storages_written(graph) for t in graph.tasks]
    ws = [sum(size[s] for s in set(r) | set(w)) for r, w in zip(reads, writes)]
    io = GraphIO(reads, writes, size, {s: k for k, s in enumerate(size)}, ws)
    _IO_CACHE.insert(0, (graph, graph.tasks, graph.values, len(graph.tasks), io))
    del _IO_CACHE[4:]
    return io


def producers_of(io: GraphIO) -> dict[str, int]:
    """storage -> id of the task writing it (as ``TaskGraph.producers``)."""
    out: dict[str, int] = {}
    for t, ws in enumerate(io.writes):
        for s in ws:
            out[s] = t
    return out


def consumers_of(io: GraphIO) -> dict[str, list[int]]:
    """storage -> ids of the tasks reading it, in task order, every storage present (as ``TaskGraph.consumers``)."""
    out: dict[str, list[int]] = {s: [] for s in io.size}
    for t, rs in enumerate(io.reads):
        for s in rs:
            out[s].append(t)
    return out
