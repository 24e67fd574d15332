"""Offload schedule with CP-SAT: which storages leave the GPU between which uses.

Greedy Belady eviction (``residency.py``) is optimal only when every tensor
has the same size and the same cost; real graphs mix 64 KiB biases with
256 MiB weights, clean tensors (free to drop) with dirty ones (an offload
first). This module decides the schedule exactly, as a 0-1 program:

* a *gap* is the time between two consecutive accesses of a storage on a
  device (for weights, inputs and constants, also the time from the start of
  the run to the first use; for graph outputs, from the last access to the
  end). ``leave[g] = 1`` means the storage is not resident during the gap;
* at every step, the working set of the step plus the storages kept across it
  must fit the budget (minus a slack the caller controls, for fragmentation);
* cost of leaving a gap: the reload's transfer time (bytes over the
  host-to-device link), plus, once per storage that has no clean host copy,
  the offload's time (bytes over the device-to-host link). Dropping a clean
  tensor costs nothing but its later reload.

The solution becomes ``evict_after`` for :func:`turnipc.residency.simulate`,
which then hoists the reloads (prefetch) as usual. CP-SAT runs with a fixed
seed, a fixed worker count and a deterministic-time budget, warm-started
from the greedy schedule, and the result is used only if it moves fewer bytes
than greedy: never worse than the greedy start.
"""

from __future__ import annotations

from dataclasses import dataclass

from turnip.plan import NodeKind

from .cpsat_params import deterministic_solver
from .residency import aligned, simulate
from .taskgraph import TaskGraph

#: Bandwidth ratio used to weigh offloads against reloads (both directions of
#: a PCIe/NVLink-C2C link are about equal; override for asymmetric links).
H2D_WEIGHT = 1
D2H_WEIGHT = 1


@dataclass(frozen=True)
class Gap:
    storage: str
    device: int
    after: int  # access step the gap starts after (-1: the start of the run)
    before: int  # access step that ends it (n: the end of the run)
    size: int
    reload: bool  # leaving it needs a reload at `before` (False for the final gap of an output)


@dataclass
class OffloadSchedule:
    evict_after: frozenset[tuple[str, int, int]]
    transfer_cost: int  # bytes moved by the schedule (weighted), as the model counts them
    greedy_cost: int
    status: str
    gaps: int


def _accesses(graph: TaskGraph, order: list[int], device_of: list[int]) -> tuple[dict[tuple[str, int], list[int]], list[dict[str, int]]]:
    """(storage, device) -> sorted access steps; and per step the working set {storage: bytes} of its device."""
    n = len(order)
    acc: dict[tuple[str, int], list[int]] = {}
    ws: list[dict[str, int]] = [dict() for _ in range(n)]
    consumers: dict[str, set[int]] = {}
    for t in order:
        task = graph.tasks[t]
        for s in task.storages_read(graph):
            consumers.setdefault(s, set()).add(device_of[t])
    for i, t in enumerate(order):
        d = device_of[t]
        task = graph.tasks[t]
        for s in list(task.storages_read(graph)) + list(task.storages_written(graph)):
            acc.setdefault((s, d), []).append(i)
            ws[i][s] = aligned(graph.storage_bytes(s))
        for s in task.storages_written(graph):
            for e in sorted(consumers.get(s, set()) - {d}):
                if i + 1 < n:  # a pushed move: read on d and written on e at step i+1
                    acc.setdefault((s, d), []).append(i + 1)
                    acc.setdefault((s, e), []).append(i + 1)
    for v in acc.values():
        v.sort()
    return acc, ws


def _gaps(graph: TaskGraph, acc: dict[tuple[str, int], list[int]], n: int) -> list[Gap]:
    initial = set(graph.initial_storages())
    outputs = set(graph.output_storages())
    gaps: list[Gap] = []
    for (s, d), steps in sorted(acc.items(), key=lambda kv: (kv[0][1], kv[1][0], kv[0][0])):
        size = aligned(graph.storage_bytes(s))
        if size == 0:
            continue
        uniq = sorted(set(steps))
        if s in initial and uniq[0] > 0:
            gaps.append(Gap(s, d, -1, uniq[0], size, True))
        for a, b in zip(uniq, uniq[1:]):
            if b > a + 1:
                gaps.append(Gap(s, d, a, b, size, True))
        if s in outputs and uniq[-1] < n - 1:
            gaps.append(Gap(s, d, uniq[-1], n, size, False))
    return gaps


def _greedy_leaves(graph: TaskGraph, order, device_of, budgets, gaps: list[Gap]) -> set[int]:
    """Which gaps the greedy (Belady) residency leaves: the warm start."""
    res = simulate(graph, order, device_of, budgets, prefetch=False)
    left: set[int] = set()
    # a gap is left when some transfer of the storage happens inside it
    by_key: dict[tuple[str, int], list[int]] = {}
    for ev in res.events:
        if ev.kind in (NodeKind.RELOAD, NodeKind.OFFLOAD):
            by_key.setdefault((ev.storage, ev.device), []).append(ev.step)
    for k, g in enumerate(gaps):
        steps = by_key.get((g.storage, g.device), ())
        lo = max(g.after, 0)
        if any(lo < st <= g.before for st in steps) or (g.after == -1 and any(st == g.before for st in steps)):
            left.add(k)
    return left


def schedule_offloads(
    graph: TaskGraph,
    order: list[int],
    device_of: list[int],
    budgets: list[int],
    effort: float = 10.0,
    seed: int = 0,
    num_workers: int = 1,
) -> OffloadSchedule:
    """Solve the offload schedule; returns the eviction decisions for ``simulate``."""
    from ortools.sat.python import cp_model

    n = len(order)
    acc, ws = _accesses(graph, order, device_of)
    gaps = _gaps(graph, acc, n)
    initial = set(graph.initial_storages())
    ndev = len(budgets)

    unit = 1
    for g in gaps:
        unit = _gcd(unit if unit > 1 else g.size, g.size)
    unit = max(unit, 1)

    m = cp_model.CpModel()
    leave = [m.new_bool_var(f"leave{k}") for k in range(len(gaps))]
    # memory at every step of every device
    ws_bytes = [[0] * n for _ in range(ndev)]
    for i, t in enumerate(order):
        ws_bytes[device_of[t]][i] = sum(ws[i].values())
    # moves also touch the destination at step i: count the storage there
    for (s, d), steps in acc.items():
        for i in steps:
            if device_of[order[i]] != d:
                ws_bytes[d][i] += aligned(graph.storage_bytes(s))
    span_terms: list[list[list[int]]] = [[[] for _ in range(n)] for _ in range(ndev)]
    for k, g in enumerate(gaps):
        for j in range(g.after + 1, min(g.before, n)):
            span_terms[g.device][j].append(k)
    for d in range(ndev):
        for j in range(n):
            ks = span_terms[d][j]
            if not ks:
                continue
            kept_total = sum(gaps[k].size for k in ks)
            room = budgets[d] - ws_bytes[d][j]
            if kept_total <= room:
                continue
            # sum(size * (1 - leave)) <= room  <=>  sum(size * leave) >= kept_total - room
            m.add(sum((gaps[k].size // unit) * leave[k] for k in ks) >= -(-(kept_total - room) // unit))
    # costs
    offload_var: dict[str, cp_model.IntVar] = {}
    obj = []
    for k, g in enumerate(gaps):
        w = g.size // unit
        if g.reload:
            obj.append(H2D_WEIGHT * w * leave[k])
        if g.storage not in initial:
            if g.storage not in offload_var:
                offload_var[g.storage] = m.new_bool_var(f"off_{len(offload_var)}")
                obj.append(D2H_WEIGHT * w * offload_var[g.storage])
            m.add_implication(leave[k], offload_var[g.storage])
    m.minimize(sum(obj))

    greedy_left = _greedy_leaves(graph, order, device_of, budgets, gaps)
    for k in range(len(gaps)):
        m.add_hint(leave[k], 1 if k in greedy_left else 0)
    for s, v in offload_var.items():
        m.add_hint(v, 1 if any(k in greedy_left for k, g in enumerate(gaps) if g.storage == s) else 0)

    solver = deterministic_solver(effort, seed, num_workers)
    status = solver.solve(m)

    def cost_of(left: set[int]) -> int:
        c = 0
        off: set[str] = set()
        for k in left:
            g = gaps[k]
            if g.reload:
                c += H2D_WEIGHT * g.size
            if g.storage not in initial:
                off.add(g.storage)
        return c + sum(D2H_WEIGHT * aligned(graph.storage_bytes(s)) for s in off)

    greedy_cost = cost_of(greedy_left)
    if status in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        chosen = {k for k in range(len(gaps)) if solver.value(leave[k])}
        st = solver.status_name(status)
    else:
        chosen, st = greedy_left, "GREEDY (" + solver.status_name(status) + ")"
    evict = frozenset((gaps[k].storage, gaps[k].device, gaps[k].after) for k in chosen if gaps[k].after >= 0)
    return OffloadSchedule(evict, cost_of(chosen), greedy_cost, st, len(gaps))


def _gcd(a: int, b: int) -> int:
    while b:
        a, b = b, a % b
    return a
