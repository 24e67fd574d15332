"""Residency: which storages sit in each GPU's memory at each step, and the
transfers (offload, reload, move) that keep the budget.

The simulation walks the planned task order once. Before a task runs, the
storages it reads are made resident (reloaded from host when they were
evicted) and its outputs are allocated; when a device's budget is full, the
resident storage whose next use is furthest is evicted (Belady). An evicted
storage that still has a clean host copy (weights, inputs, constants, and
anything offloaded before) is dropped for free; otherwise it is offloaded.
Storages are freed after their last use. A value consumed on another GPU is
pushed there by a move right after it is produced.

Then reloads are hoisted as early as the budget allows (prefetch), so the
runtime can overlap them with compute; a reload hoisted to the very start of
an initial storage becomes a preload (the runtime writes it into its place
before the first node runs).

The result is a list of :class:`Event` in a serial order that is a valid
execution order, and :class:`Occupant` records (one per stay of a storage in a
memory) whose lifetimes are measured in that event order. The arena layout
and the MEMGRAPH are built from these.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import NamedTuple

from .errors import BudgetError
from .taskgraph import TaskGraph

ALIGN = 256  # bytes; every buffer starts on this boundary (cudaMalloc gives 256)
HOST = -1  # device number of host memory
INF = 1 << 62


def aligned(n: int) -> int:
    return 0 if n == 0 else (n + ALIGN - 1) // ALIGN * ALIGN


@dataclass
class Occupant:
    """One stay of one storage in one memory (a GPU arena or host memory)."""

    id: int
    storage: str
    device: int  # GPU index, or HOST
    size: int  # aligned bytes
    writer: int | None  # event index that fills it; None = placed before the run
    readers: list[int] = field(default_factory=list)  # event indices reading it
    to_end: bool = False  # still holds a graph output when the run ends

    def lifetime(self, num_events: int) -> tuple[int, int]:
        """Half-open [lower, upper) in event time; event e occupies time e+1, 0 is 'before the run'."""
        lower = 0 if self.writer is None else self.writer + 1
        last = max([lower] + [r + 1 for r in self.readers])
        upper = num_events + 1 if self.to_end else last + 1
        return lower, upper


@dataclass
class Event:
    """A MEMGRAPH node to be: compute, reload, offload or move."""

    kind: str
    device: int
    step: int
    task: int | None = None  # compute only
    storage: str = ""  # transfers only
    reads: list[int] = field(default_factory=list)  # occupant ids
    writes: list[int] = field(default_factory=list)  # occupant ids


@dataclass
class _Stay:
    """Step-level bookkeeping of one GPU residency, before event order is fixed."""

    storage: str
    device: int
    start: int
    via: str  # "compute" | "reload" | "move" | "preload"
    end: int = INF
    evicted: str | None = None  # None, "offload" or "drop"
    prefetch_start: int | None = None


class _Action(NamedTuple):
    """One step-level action, in the order the step performs them.

    ``kind`` is "offload" | "drop" | "reload" (``target`` = stay), "move"
    (``target`` = the new stay, ``source`` = the stay it is copied from) or
    "compute" (``target`` = task id).
    """

    kind: str
    target: int
    source: int = -1


@dataclass
class Residency:
    events: list[Event]
    occupants: list[Occupant]
    final: dict[str, int]  # output storage -> occupant id holding it at the end
    lower_bound: list[int]  # per device: the largest working set of one task
    bytes_offloaded: int
    bytes_reloaded: int
    bytes_moved: int


def task_working_sets(graph: TaskGraph, order: list[int], device_of: list[int], num_devices: int) -> list[int]:
    """Per device, the most bytes one task needs resident at once: no budget below it can work."""
    lb = [0] * num_devices
    for t in order:
        task = graph.tasks[t]
        need = set(task.storages_read(graph)) | set(task.storages_written(graph))
        lb[device_of[t]] = max(lb[device_of[t]], sum(aligned(graph.storage_bytes(s)) for s in need))
    return lb


def simulate(
    graph: TaskGraph,
    order: list[int],
    device_of: list[int],
    budgets: list[int],
    prefetch: bool = True,
    evict_after: frozenset[tuple[str, int, int]] | None = None,
    state: frozenset[str] = frozenset(),
) -> Residency:
    """Walk ``order`` under per-device ``budgets``.

    ``evict_after``: a schedule decided elsewhere (``turnipc.offload``): each
    ``(storage, device, step)`` says the storage leaves that device right after
    step ``step`` and comes back (reload) when next needed. Belady eviction
    still runs as the safety net if the schedule leaves a step over budget.

    ``state``: initial storages that outlive the run (a KV cache,
    :mod:`turnipc.state`). Each is used once more at the end of the run, so it
    stays resident to the end when the budget allows (then its GPU bytes are
    never reused and the runtime keeps them between runs) and is the first
    to be dropped when it does not (its next use is the farthest); and its
    host copy (its home between runs) lives the whole run.
    """
    n = len(order)
    ndev = len(budgets)
    size = {s: aligned(graph.storage_bytes(s)) for s in graph.storages()}
    outputs = set(graph.output_storages())
    initial = set(graph.initial_storages())
    reads = {t: graph.tasks[t].storages_read(graph) for t in order}
    writes = {t: graph.tasks[t].storages_written(graph) for t in order}
    lower_bound = task_working_sets(graph, order, device_of, ndev)
    for d in range(ndev):
        if lower_bound[d] > budgets[d]:
            raise BudgetError(
                f"GPU budget {budgets[d]} bytes is below the smallest feasible one for device {d}: "
                f"one task alone needs {lower_bound[d]} bytes; raise --gpu-mem to at least that"
            )

    # Uses of each storage on each device, by step; producers' devices keep
    # their outputs to the end; a pushed move reads its source one step later.
    uses: dict[tuple[str, int], list[int]] = {}
    producer_step: dict[str, int] = {}
    moves_at: dict[int, list[tuple[str, int, int]]] = {}  # step -> [(storage, src, dst)]
    consumer_devs: dict[str, set[int]] = {}
    for i, t in enumerate(order):
        d = device_of[t]
        for s in reads[t]:
            uses.setdefault((s, d), []).append(i)
            consumer_devs.setdefault(s, set()).add(d)
        for s in writes[t]:
            producer_step[s] = i
    for s, i in sorted(producer_step.items(), key=lambda kv: kv[1]):
        d = device_of[order[i]]
        if s in outputs:
            uses.setdefault((s, d), []).append(n)
        for e in sorted(consumer_devs.get(s, set()) - {d}):
            if i + 1 <= n:
                moves_at.setdefault(i + 1, []).append((s, d, e))
                uses.setdefault((s, d), []).append(i + 1)
    for s in sorted(state):
        for d in sorted(consumer_devs.get(s, set())):
            uses.setdefault((s, d), []).append(n)
    for v in uses.values():
        v.sort()

    def next_use(s: str, d: int, i: int) -> int:
        v = uses.get((s, d), ())
        k = bisect.bisect_left(v, i)
        return v[k] if k < len(v) else INF

    stays: list[_Stay] = []
    resident: list[dict[str, int]] = [dict() for _ in range(ndev)]  # storage -> stay index
    used = [0] * ndev
    host_valid = set(initial)
    # per step, ordered actions: ("offload"|"drop", stay) / ("move", stay, src_stay) / ("reload", stay) / ("compute", task)
    actions: list[list[_Action]] = [[] for _ in range(n + 1)]
    storage_rank = {s: k for k, s in enumerate(graph.storages())}

    proactive: dict[int, list[tuple[str, int, int]]] = {}

    def evict(d: int, s: str, i: int) -> None:
        k = resident[d].pop(s)
        st = stays[k]
        st.end = i
        used[d] -= size[s]
        if s in host_valid:
            st.evicted = "drop"
            actions[i].append(_Action("drop", k))
        else:
            st.evicted = "offload"
            host_valid.add(s)
            actions[i].append(_Action("offload", k))

    def make_room(d: int, need: int, protect: set[str], i: int) -> None:
        if used[d] + need <= budgets[d]:
            return
        cands = [s for s in resident[d] if s not in protect]
        cands.sort(key=lambda s: (-next_use(s, d, i), 0 if s in host_valid else 1, -size[s], storage_rank[s]))
        for s in cands:
            if used[d] + need <= budgets[d]:
                break
            evict(d, s, i)
        if used[d] + need > budgets[d]:
            raise BudgetError(
                f"GPU budget {budgets[d]} bytes cannot hold step {i}'s working set on device {d} "
                f"({used[d] + need} bytes); raise --gpu-mem"
            )

    def admit(s: str, d: int, i: int, via: str) -> int:
        stays.append(_Stay(s, d, i, via))
        k = len(stays) - 1
        resident[d][s] = k
        used[d] += size[s]
        return k

    for i in range(n + 1):
        # pushed moves of values produced at step i-1
        for s, src, dst in moves_at.get(i, []):
            if s in resident[dst]:
                continue
            protect = {s}
            if i < n and device_of[order[i]] == dst:
                protect |= set(reads[order[i]]) | set(writes[order[i]])
            make_room(dst, size[s], protect, i)
            k = admit(s, dst, i, "move")
            actions[i].append(_Action("move", k, resident[src][s]))
        for s, src, _dst in moves_at.get(i, []):
            read_now = i < n and device_of[order[i]] == src and s in reads[order[i]]
            if next_use(s, src, i + 1) == INF and s in resident[src] and not read_now:
                k = resident[src].pop(s)
                stays[k].end = i + 1
                used[src] -= size[s]
        for s, d, _k in proactive.pop(i, []):
            if s in resident[d]:
                evict(d, s, i)
        if i == n:
            break
        t = order[i]
        d = device_of[t]
        need_set = set(reads[t]) | set(writes[t])
        missing = [s for s in reads[t] if s not in resident[d]]
        need = sum(size[s] for s in missing) + sum(size[s] for s in writes[t])
        make_room(d, need, need_set, i)
        for s in missing:
            if s not in host_valid:
                raise AssertionError(f"internal: {s} needed on device {d} at step {i} but has no copy")
            k = admit(s, d, i, "reload")
            actions[i].append(_Action("reload", k))
        for s in writes[t]:
            admit(s, d, i, "compute")
        actions[i].append(_Action("compute", t))
        for s in dict.fromkeys(list(reads[t]) + list(writes[t])):
            if s in resident[d] and next_use(s, d, i + 1) == INF:
                k = resident[d].pop(s)
                stays[k].end = i + 1
                used[d] -= size[s]
            elif evict_after and (s, d, i) in evict_after and s in resident[d]:
                proactive.setdefault(i + 1, []).append((s, d, i))

    if prefetch:
        _hoist_reloads(stays, size, budgets, n, initial)

    return _to_events(graph, order, device_of, stays, actions, size, outputs, lower_bound, state)


def _hoist_reloads(stays: list[_Stay], size: dict[str, int], budgets: list[int], n: int, initial: set[str]) -> None:
    """Move each reload as early as the budget allows, first come first served."""
    ndev = len(budgets)
    live = [[0] * (n + 1) for _ in range(ndev)]
    for st in stays:
        for k in range(st.start, min(st.end, n + 1)):
            live[st.device][k] += size[st.storage]
    prev_end: dict[int, int] = {}  # id(stay) -> end of the previous stay of that storage on that device
    by_storage: dict[tuple[str, int], list[_Stay]] = {}
    for st in stays:
        by_storage.setdefault((st.storage, st.device), []).append(st)
    for lst in by_storage.values():
        lst.sort(key=lambda x: x.start)
        for a, b in zip(lst, lst[1:]):
            prev_end[id(b)] = a.end
    reloads = sorted((st for st in stays if st.via == "reload"), key=lambda x: (x.start, x.device, x.storage))
    for st in reloads:
        lo = prev_end.get(id(st), 0)
        nbytes = size[st.storage]
        row = live[st.device]
        cap = budgets[st.device]
        s = st.start
        while s - 1 >= lo and row[s - 1] + nbytes <= cap:
            s -= 1
        for k in range(s, st.start):
            row[k] += nbytes
        if s == 0 and lo == 0 and st.storage in initial:
            st.via = "preload"
            st.prefetch_start = 0
        elif s < st.start:
            st.prefetch_start = s


def _to_events(
    graph: TaskGraph,
    order: list[int],
    device_of: list[int],
    stays: list[_Stay],
    actions: list[list[_Action]],
    size: dict[str, int],
    outputs: set[str],
    lower_bound: list[int],
    state: frozenset[str] = frozenset(),
) -> Residency:
    n = len(order)
    # Hoisted reloads run just before the compute of the step they were hoisted to.
    hoisted: dict[int, list[int]] = {}
    by_key: dict[tuple[str, int], list[int]] = {}
    for k, st in enumerate(stays):
        by_key.setdefault((st.storage, st.device), []).append(k)
    for k, st in enumerate(stays):
        if st.via == "reload" and st.prefetch_start is not None:
            hoisted.setdefault(st.prefetch_start, []).append(k)

    events: list[Event] = []
    occupants: list[Occupant] = []
    gpu_occ: dict[int, int] = {}  # stay index -> occupant id
    host_occ: dict[str, int] = {}  # storage -> current host occupant id
    moved = offloaded = reloaded = 0

    def new_occ(storage: str, device: int, writer: int | None) -> int:
        occupants.append(Occupant(len(occupants), storage, device, size[storage], writer))
        return len(occupants) - 1

    # Preloads: placed before the run.
    for k, st in enumerate(stays):
        if st.via == "preload":
            o = new_occ(st.storage, st.device, None)
            gpu_occ[k] = o

    def host_copy(storage: str) -> int:
        if storage not in host_occ:  # initial storages live in host memory from the start
            host_occ[storage] = new_occ(storage, HOST, None)
        return host_occ[storage]

    def emit(ev: Event) -> int:
        events.append(ev)
        return len(events) - 1

    def do_reload(k: int, step: int) -> None:
        nonlocal reloaded
        st = stays[k]
        h = host_copy(st.storage)
        e = emit(Event("reload", st.device, step, storage=st.storage))
        o = new_occ(st.storage, st.device, e)
        gpu_occ[k] = o
        events[e].reads.append(h)
        events[e].writes.append(o)
        occupants[h].readers.append(e)
        reloaded += graph.storage_bytes(st.storage)

    for i in range(n + 1):
        for act in actions[i]:
            kind = act.kind
            if kind == "drop":
                continue
            if kind == "offload":
                k = act.target
                st = stays[k]
                src = gpu_occ[k]
                e = emit(Event("offload", st.device, i, storage=st.storage))
                h = new_occ(st.storage, HOST, e)
                host_occ[st.storage] = h
                events[e].reads.append(src)
                events[e].writes.append(h)
                occupants[src].readers.append(e)
                offloaded += graph.storage_bytes(st.storage)
            elif kind == "move":
                k, src_k = act.target, act.source
                st = stays[k]
                src = gpu_occ[src_k]
                e = emit(Event("move", st.device, i, storage=st.storage))
                o = new_occ(st.storage, st.device, e)
                gpu_occ[k] = o
                events[e].reads.append(src)
                events[e].writes.append(o)
                occupants[src].readers.append(e)
                moved += graph.storage_bytes(st.storage)
            elif kind == "reload":
                k = act.target
                if stays[k].prefetch_start is None:
                    do_reload(k, i)
            elif kind == "compute":
                for k in hoisted.get(i, []):
                    do_reload(k, i)
                t = act.target
                d = device_of[t]
                task = graph.tasks[t]
                e = emit(Event("compute", d, i, task=t))
                for s in task.storages_read(graph):
                    o = _current(stays, by_key, gpu_occ, s, d, i)
                    events[e].reads.append(o)
                    occupants[o].readers.append(e)
                for s in task.storages_written(graph):
                    k = _stay_of(stays, by_key, s, d, i)
                    o = new_occ(s, d, e)
                    gpu_occ[k] = o
                    events[e].writes.append(o)

    # Graph outputs: where each one is when the run ends.
    final: dict[str, int] = {}
    for s in graph.output_storages():
        o = _final_occupant(stays, by_key, gpu_occ, host_occ, s, n)
        occupants[o].to_end = True
        final[s] = o
    # State: its home in host memory, and a GPU copy resident at the end, live to the end (never reused).
    for s in sorted(state):
        occupants[host_copy(s)].to_end = True
        for (s2, _d), ks in by_key.items():
            for k in ks:
                if s2 == s and stays[k].end >= n and k in gpu_occ:
                    occupants[gpu_occ[k]].to_end = True
    return Residency(events, occupants, final, lower_bound, offloaded, reloaded, moved)


_StaysByKey = dict[tuple[str, int], list[int]]  # (storage, device) -> stay indices


def _current(stays: list[_Stay], by_key: _StaysByKey, gpu_occ: dict[int, int], s: str, d: int, i: int) -> int:
    for k in by_key.get((s, d), ()):
        st = stays[k]
        start = st.prefetch_start if st.prefetch_start is not None else st.start
        if start <= i < st.end and k in gpu_occ:
            return gpu_occ[k]
    raise AssertionError(f"internal: {s} not resident on device {d} at step {i}")


def _stay_of(stays: list[_Stay], by_key: _StaysByKey, s: str, d: int, i: int) -> int:
    for k in by_key.get((s, d), ()):
        if stays[k].start == i and stays[k].via == "compute":
            return k
    raise AssertionError(f"internal: no compute stay of {s} at step {i}")


def _final_occupant(
    stays: list[_Stay], by_key: _StaysByKey, gpu_occ: dict[int, int], host_occ: dict[str, int], s: str, n: int
) -> int:
    for (s2, _d), ks in by_key.items():
        if s2 != s:
            continue
        for k in ks:
            if stays[k].end >= n and k in gpu_occ:
                return gpu_occ[k]
    if s in host_occ:
        return host_occ[s]
    raise AssertionError(f"internal: output {s} is nowhere at the end")
