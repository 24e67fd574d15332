"""Memory-aware topological order of tasks.

Kahn's algorithm where, among ready tasks, the one that frees the most bytes
minus what it allocates goes first (ties: position in the ONNX graph). This
keeps the live set small before any offloading is considered, which is what
the residency stage then has to squeeze into the budget.

Tasks computed from constants alone (small initializers) that write more
than they read (a causal mask built from positions, which the partition
pass recomputes for every block that reads it) are never picked by the
greedy rule: they allocate little and free nothing, so it would run all of
them first and keep every mask block live until its reader. They run on
demand instead, right before the first task that reads them (what they
need first), so each query-row block's mask -> Softmax chain stays local.
"""

from __future__ import annotations

import heapq

from turnip.graph import DependencyGraph
from turnip.plan import TensorKind

from .graphio import consumers_of, graph_io, producers_of
from .taskgraph import TaskGraph


def memory_aware_order(graph: TaskGraph) -> list[int]:
    """The order (see the module docstring), picking the best ready task from a heap.

    Why a heap with lazy scores: a tiled graph has tens of thousands of tasks
    and a ready set of thousands, so rescanning it at every pick is quadratic.
    A ready task's score changes only when one of the storages it reads
    changes its remaining uses: it rises when the count falls to 1 (the task
    becomes the last reader and would free it), which pushes a fresh entry for
    that reader; any other change is caught when an entry pops (its score is
    recomputed and, if it differs, pushed again). So the task taken is always
    the ready one with the largest (score, -id), exactly as a full scan picks.
    """
    n = len(graph.tasks)
    io = graph_io(graph)
    reads = io.reads
    producers = producers_of(io)
    consumers = consumers_of(io)
    remaining_uses = {s: len(c) for s, c in consumers.items()}
    outputs = set(graph.output_storages())
    frees_kind = (TensorKind.ACTIVATION,)

    preds: list[set[int]] = [set() for _ in range(n)]
    for t in range(n):
        for s in reads[t]:
            p = producers.get(s)
            if p is not None and p != t:
                preds[t].add(p)
    deps = DependencyGraph(preds)
    on_demand = constant_only_tasks(graph, preds, outputs)
    # a task becomes ready when its greedy-picked predecessors are done; on-demand ones are pulled in then
    indeg = [sum(1 for p in preds[i] if not on_demand[p]) for i in range(n)]
    in_ready = [indeg[i] == 0 and not on_demand[i] for i in range(n)]
    done = [False] * n
    taken = [False] * n  # run, or being run (pulled in by an on-demand task)
    alloc = [sum(graph.storage_bytes(s) for s in ws) for ws in io.writes]
    # bytes a storage frees when its last reader runs (0: never freed by a reader)
    freeable = {s: graph.storage_bytes(s) if graph.storage_kind(s) in frees_kind and s not in outputs else 0
                for s in remaining_uses}

    def score(i: int) -> int:
        freed = 0
        for s in reads[i]:
            if remaining_uses[s] == 1:
                freed += freeable[s]
        return freed - alloc[i]

    heap = [(-score(i), i) for i in range(n) if in_ready[i]]
    heapq.heapify(heap)
    order: list[int] = []

    def run(i: int) -> None:
        taken[i] = True  # its predecessors' runs below must not make it ready again
        for p in sorted(preds[i]):  # what an on-demand task needs and has not run yet (ids are topological)
            if not done[p]:
                in_ready[p] = False
                run(p)
        done[i] = True
        order.append(i)
        for s in reads[i]:
            remaining_uses[s] -= 1
            if remaining_uses[s] == 1 and freeable[s]:
                for c in consumers[s]:  # the last reader, if ready, now frees s: its score rose
                    if in_ready[c]:
                        heapq.heappush(heap, (-score(c), c))
        if on_demand[i]:
            return
        for j in deps.succ[i]:  # increasing, as DependencyGraph keeps them
            indeg[j] -= 1
            if indeg[j] == 0 and not on_demand[j] and not taken[j]:
                in_ready[j] = True
                heapq.heappush(heap, (-score(j), j))

    while heap:
        neg, best = heapq.heappop(heap)
        if not in_ready[best]:
            continue  # taken already, or pulled in by an on-demand task
        now = score(best)
        if -neg != now:  # stale (its score changed since this entry was pushed)
            heapq.heappush(heap, (-now, best))
            continue
        in_ready[best] = False
        run(best)
    for i in range(n):  # on-demand tasks nothing reads (graph outputs), in graph order
        if on_demand[i] and not done[i]:
            run(i)
    if len(order) != n:
        raise ValueError("task graph has a cycle")
    return order


#: Initializers up to this size (scalars, shape and position vectors) count as constants for on-demand tasks.
SMALL_WEIGHT = 4096


def constant_only_tasks(graph: TaskGraph, preds: list[set[int]], outputs: set[str]) -> list[bool]:
    """Per task: whether it runs on demand (computed from constants alone, and writes more than it reads).

    Constants: constant storages, small initializers, and outputs of tasks
    computed from them. Only a task that grows the live set (a broadcast
    expansion: positions -> a seq x seq mask) gains from waiting; one that
    shrinks it (a Slice of a position table) stays with the greedy rule. A
    task writing a graph output is never on demand (nothing pulls it).
    """
    n = len(graph.tasks)
    const = [False] * n
    out = [False] * n
    io = graph_io(graph)
    producers = producers_of(io)
    for t in range(n):  # task ids are positions, topologically sorted
        read = io.reads[t]
        ok = bool(read)
        for s in read:
            p = producers.get(s)
            if p is None:
                kind = graph.storage_kind(s)
                ok &= kind == TensorKind.CONSTANT or (kind == TensorKind.WEIGHT and graph.storage_bytes(s) <= SMALL_WEIGHT)
            else:
                ok &= p < t and const[p]
        const[t] = ok
        if not ok:
            continue
        written = io.writes[t]
        grows = sum(graph.storage_bytes(s) for s in written) > sum(graph.storage_bytes(s) for s in read)
        out[t] = grows and not any(s in outputs for s in written)
    return out
