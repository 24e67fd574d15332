"""The heap-based memory_aware_order against the plain full-scan rule it replaces, on random DAGs.

The heap (lazy scores) exists only for speed on tiled graphs; the order it
gives must be exactly the one a full scan of the ready set gives, or golden
plans would change. The reference below is that scan, written plainly.
"""

from __future__ import annotations

import random

import pytest
from tiny_graphs import U, graph, task, value
from turnip.graph import DependencyGraph
from turnip.plan import TensorKind

from turnipc.order import constant_only_tasks, memory_aware_order
from turnipc.taskgraph import TaskGraph, Value


def reference_order(graph: TaskGraph) -> list[int]:
    """Kahn's algorithm taking max(ready, key=(score, -id)) by a full scan at every step."""
    n = len(graph.tasks)
    producers = graph.producers()
    consumers = graph.consumers()
    remaining_uses = {s: len(c) for s, c in consumers.items()}
    outputs = set(graph.output_storages())
    preds: list[set[int]] = [set() for _ in range(n)]
    for t in graph.tasks:
        for s in t.storages_read(graph):
            p = producers.get(s)
            if p is not None and p != t.id:
                preds[t.id].add(p)
    succ = DependencyGraph(preds).succ
    on_demand = constant_only_tasks(graph, preds, outputs)
    indeg = [sum(1 for p in preds[i] if not on_demand[p]) for i in range(n)]
    ready = [i for i in range(n) if indeg[i] == 0 and not on_demand[i]]
    done = [False] * n
    taken = [False] * n
    reads = [t.storages_read(graph) for t in graph.tasks]
    alloc = [sum(graph.storage_bytes(s) for s in t.storages_written(graph)) for t in graph.tasks]

    def score(i: int) -> int:
        return sum(graph.storage_bytes(s) for s in reads[i]
                   if remaining_uses[s] == 1 and graph.storage_kind(s) == TensorKind.ACTIVATION and s not in outputs) - alloc[i]

    order: list[int] = []

    def run(i: int) -> None:
        taken[i] = True
        for p in sorted(preds[i]):
            if not done[p]:
                if p in ready:
                    ready.remove(p)
                run(p)
        done[i] = True
        order.append(i)
        for s in reads[i]:
            remaining_uses[s] -= 1
        if on_demand[i]:
            return
        for j in succ[i]:
            indeg[j] -= 1
            if indeg[j] == 0 and not on_demand[j] and not taken[j]:
                ready.append(j)

    while ready:
        best = max(ready, key=lambda i: (score(i), -i))
        ready.remove(best)
        run(best)
    for i in range(n):
        if on_demand[i] and not done[i]:
            run(i)
    assert sorted(order) == list(range(n))
    return order


def random_dag(seed: int) -> TaskGraph:
    """Inputs, small and large weights, constants, aliases; tasks reading earlier values (sizes 0-4 units: many ties)."""
    rng = random.Random(seed)
    vals: list[Value] = []
    avail: list[str] = []
    inputs = []
    for k in range(rng.randint(1, 3)):
        vals.append(value(f"x{k}", rng.randint(1, 4), "input"))
        inputs.append(f"x{k}")
    for k in range(rng.randint(0, 4)):
        kind = rng.choice(["weight", "constant"])
        vals.append(value(f"w{k}", rng.choice([1, 2, 40]), kind))  # 40 units: a weight too big to count as a constant
    avail = [v.name for v in vals]
    tasks = []
    n = rng.randint(1, 70)
    for t in range(n):
        ins = tuple(dict.fromkeys(rng.choice(avail) for _ in range(rng.randint(1, 3))))
        outs = []
        for o in range(rng.choice([1, 1, 1, 2])):
            name = f"v{t}_{o}"
            vals.append(value(name, rng.randint(0, 4)))
            outs.append(name)
        tasks.append(task(t, ins, tuple(outs)))
        avail += outs
        if rng.random() < 0.15:  # a zero-copy alias of this task's first output, read by later tasks
            base = next(v for v in vals if v.name == outs[0])
            vals.append(Value(f"{outs[0]}_alias", base.dtype, base.shape, base.nbytes, base.kind, outs[0]))
            avail.append(f"{outs[0]}_alias")
    written = [o for t in tasks for o in t.outputs]
    outputs = rng.sample(written, rng.randint(1, min(3, len(written))))
    byname = {v.name: v for v in vals}
    for o in outputs:
        byname[o] = Value(o, byname[o].dtype, byname[o].shape, byname[o].nbytes, "output", o)
    return graph(list(byname.values()), tasks, inputs, outputs)


@pytest.mark.parametrize("seed", range(300))
def test_heap_order_equals_the_full_scan(seed):
    g = random_dag(seed)
    assert memory_aware_order(g) == reference_order(g)


def test_random_dags_exercise_on_demand_tasks_and_score_changes():
    """The random graphs are not all trivial: some have on-demand tasks, and orders differ from id order."""
    on_demand = differ = 0
    for seed in range(300):
        g = random_dag(seed)
        producers = g.producers()
        preds = [{producers[s] for s in t.storages_read(g) if s in producers} - {t.id} for t in g.tasks]
        on_demand += any(constant_only_tasks(g, preds, set(g.output_storages())))
        differ += memory_aware_order(g) != sorted(range(len(g.tasks)))
    assert on_demand >= 10 and differ >= 100, (on_demand, differ)


def test_a_wide_ready_set_picks_the_biggest_freer_first():
    # x -> a_k (k = 0..5, k+1 units each) -> b_k (1 unit) ; y = sum of b_k
    vals = [value("x", 1, "input")] + [value(f"a{k}", k + 1) for k in range(6)] + [value(f"b{k}", 1) for k in range(6)]
    vals.append(value("y", 1, "output"))
    tasks = [task(k, ("x",), (f"a{k}",)) for k in range(6)]
    tasks += [task(6 + k, (f"a{k}",), (f"b{k}",)) for k in range(6)]
    tasks.append(task(12, tuple(f"b{k}" for k in range(6)), ("y",)))
    g = graph(vals, tasks, ["x"], ["y"])
    # a0 (1U) first; then b0 frees a0 (score 0) beats a1 (-2U); each a_k is followed by its b_k
    assert memory_aware_order(g) == [0, 6, 1, 7, 2, 8, 3, 9, 4, 10, 5, 11, 12] == reference_order(g)
    assert U == 256


def test_a_task_pulled_in_by_an_on_demand_chain_runs_once():
    """t3 reads only an on-demand task's output, so it is ready at once and pulls t2 <- t1 <- t0 in.

    t1 (not ready yet: it waits on t0) became ready again when t0 finished
    inside that pull, and ran a second time (the order then failed as a "cycle").
    """
    vals = [value("x", 1, "input"), value("w", 1, "weight"), value("a", 1), value("b", 1), value("c", 2), value("d", 1),
            value("y", 1, "output")]
    tasks = [task(0, ("w",), ("a",)), task(1, ("a",), ("b",)), task(2, ("b",), ("c",)), task(3, ("c",), ("d",)),
             task(4, ("x", "d"), ("y",))]
    g = graph(vals, tasks, ["x"], ["y"])
    assert memory_aware_order(g) == [0, 1, 2, 3, 4] == reference_order(g)
