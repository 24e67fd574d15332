"""Memory-aware topological order of tasks.

Kahn's algorithm where, among ready tasks, the one that frees the most bytes
minus what it allocates goes first (ties: position in the ONNX graph). This
keeps the live set small before any offloading is considered, which is what
the residency stage then has to squeeze into the budget.
"""

from __future__ import annotations

from turnip.graph import DependencyGraph
from turnip.plan import TensorKind

from .taskgraph import TaskGraph


def memory_aware_order(graph: TaskGraph) -> list[int]:
    n = len(graph.tasks)
    producers = graph.producers()
    consumers = graph.consumers()
    remaining_uses = {s: len(c) for s, c in consumers.items()}
    outputs = set(graph.output_storages())
    frees_kind = (TensorKind.ACTIVATION,)

    preds: list[set[int]] = [set() for _ in range(n)]
    for t in graph.tasks:
        for s in t.storages_read(graph):
            p = producers.get(s)
            if p is not None and p != t.id:
                preds[t.id].add(p)
    deps = DependencyGraph(preds)
    indeg = list(deps.ndeps)
    ready = [i for i in range(n) if indeg[i] == 0]
    reads = [t.storages_read(graph) for t in graph.tasks]
    alloc = [sum(graph.storage_bytes(s) for s in t.storages_written(graph)) for t in graph.tasks]

    def score(i: int) -> int:
        freed = 0
        for s in reads[i]:
            if remaining_uses[s] == 1 and graph.storage_kind(s) in frees_kind and s not in outputs:
                freed += graph.storage_bytes(s)
        return freed - alloc[i]

    order: list[int] = []
    while ready:
        best = max(ready, key=lambda i: (score(i), -i))
        ready.remove(best)
        order.append(best)
        for s in reads[best]:
            remaining_uses[s] -= 1
        for j in deps.succ[best]:  # increasing, as DependencyGraph keeps them
            indeg[j] -= 1
            if indeg[j] == 0:
                ready.append(j)
    if len(order) != n:
        raise ValueError("task graph has a cycle")
    return order
