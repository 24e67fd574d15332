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

The walk decides; it records each decision as a typed action
(:class:`Allocate`, :class:`Reload`, :class:`Move`, :class:`Offload`,
:class:`Drop`, :class:`Free`, :class:`Compute`) in the order it takes them.
Prefetch then rewrites reloads (when each is issued, which become
preloads), and :func:`build_events` turns the action list, and nothing else the
walk decided, into a list of :class:`Event` in a serial order that is a valid
execution order, and :class:`Occupant` records (one per stay of a storage in a
memory) whose lifetimes are measured in that event order. The arena layout
and the MEMGRAPH (``memgraph.py``) are built from events and occupants; the
actions stay on :class:`Residency` for tests and tools that want to see why.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field, replace

import numpy as np
from turnip.plan import DEFAULT_ALIGNMENT, aligned_size

from .errors import BudgetError
from .graphio import graph_io
from .taskgraph import TaskGraph

#: Alignment of every buffer the compiler lays out, in bytes; recorded in the plan (``Plan.alignment``).
ALIGN = DEFAULT_ALIGNMENT
HOST = -1  # device number of host memory
INF = 1 << 62


def aligned(n: int) -> int:
    """Bytes a storage of ``n`` bytes takes in a memory: rounded up to :data:`ALIGN`."""
    return aligned_size(n, ALIGN)


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


# -- actions: what the walk decides, in the order it decides it -------------
#
# ``step`` is the position in the task order; ``stay`` numbers the walk's
# residencies (one per arrival of a storage on a GPU, in the order they
# begin). Reload, Move, Offload and Drop act before the step's compute;
# Allocate gives room to the compute's outputs; Free lets a storage go after
# its last use at that step (the compute, or the move that read it).


@dataclass(frozen=True)
class Allocate:
    """Room on ``device`` for an output of the step's compute (no copy: the compute fills it)."""

    step: int
    storage: str
    device: int
    stay: int


@dataclass(frozen=True)
class Reload:
    """Copy ``storage`` back to ``device`` from its host copy.

    Prefetch sets ``prefetch``, the earlier step the copy is issued at, or
    ``preload``: the runtime writes it into place before the first node (an
    initial storage whose reload rose to the start of the run).
    """

    step: int
    storage: str
    device: int
    stay: int
    prefetch: int | None = None
    preload: bool = False


@dataclass(frozen=True)
class Move:
    """Push a storage produced at the previous step from GPU ``source`` to GPU ``device``."""

    step: int
    storage: str
    device: int
    stay: int
    source: int
    source_stay: int


@dataclass(frozen=True)
class Offload:
    """Evict a storage with no clean host copy: copy it to host memory first."""

    step: int
    storage: str
    device: int
    stay: int


@dataclass(frozen=True)
class Drop:
    """Evict a storage whose host copy is clean (a weight, input, constant, or offloaded before): no copy."""

    step: int
    storage: str
    device: int
    stay: int


@dataclass(frozen=True)
class Free:
    """The storage's last use on ``device`` was at ``step``: its room is free after it."""

    step: int
    storage: str
    device: int
    stay: int


@dataclass(frozen=True)
class Compute:
    """Run task ``task`` on ``device``."""

    step: int
    task: int
    device: int


Action = Allocate | Reload | Move | Offload | Drop | Free | Compute


@dataclass
class Residency:
    events: list[Event]
    occupants: list[Occupant]
    final: dict[str, int]  # output storage -> occupant id holding it at the end
    lower_bound: list[int]  # per device: the largest working set of one task
    bytes_offloaded: int
    bytes_reloaded: int
    bytes_moved: int
    actions: list[Action] = field(default_factory=list)  # the walk's decisions, after prefetch


def task_working_sets(graph: TaskGraph, order: list[int], device_of: list[int], num_devices: int) -> list[int]:
    """Per device, the most bytes one task needs resident at once: no budget below it can work."""
    ws = graph_io(graph).working_set
    lb = [0] * num_devices
    for t in order:
        d = device_of[t]
        if ws[t] > lb[d]:
            lb[d] = ws[t]
    return lb


def simulate(
    graph: TaskGraph,
    order: list[int],
    device_of: list[int],
    budgets: list[int],
    prefetch: bool = True,
    evict_after: frozenset[tuple[str, int, int]] | None = None,
    hoist_to: dict[tuple[str, int, int], int] | None = None,
    state: frozenset[str] = frozenset(),
) -> Residency:
    """Walk ``order`` under per-device ``budgets``.

    ``hoist_to``: prefetch decided elsewhere (``turnipc.prefetch``, from a layout):
    ``(storage, device, reload step) -> earliest step`` replaces the budget-filling
    hoist; a reload not named stays where it is.

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
    io = graph_io(graph)
    size = io.size
    outputs = set(graph.output_storages())
    initial = set(graph.initial_storages())
    reads = io.reads
    writes = io.writes
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
    actions: list[Action] = []  # every decision, in the order taken (steps ascending)
    storage_rank = io.rank

    proactive: dict[int, list[tuple[str, int, int]]] = {}

    def evict(d: int, s: str, i: int) -> None:
        k = resident[d].pop(s)
        st = stays[k]
        st.end = i
        used[d] -= size[s]
        if s in host_valid:
            st.evicted = "drop"
            actions.append(Drop(i, s, d, k))
        else:
            st.evicted = "offload"
            host_valid.add(s)
            actions.append(Offload(i, s, d, k))

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

    def free(d: int, s: str, i: int) -> None:
        """``s`` was last used on ``d`` at step ``i``: its room is free from step i + 1."""
        k = resident[d].pop(s)
        stays[k].end = i + 1
        used[d] -= size[s]
        actions.append(Free(i, s, d, k))

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
            actions.append(Move(i, s, dst, k, src, resident[src][s]))
        for s, src, _dst in moves_at.get(i, []):
            read_now = i < n and device_of[order[i]] == src and s in reads[order[i]]
            if next_use(s, src, i + 1) == INF and s in resident[src] and not read_now:
                free(src, s, i)
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
            actions.append(Reload(i, s, d, k))
        for s in writes[t]:
            actions.append(Allocate(i, s, d, admit(s, d, i, "compute")))
        actions.append(Compute(i, t, d))
        for s in dict.fromkeys(list(reads[t]) + list(writes[t])):
            if s in resident[d] and next_use(s, d, i + 1) == INF:
                free(d, s, i)
            elif evict_after and (s, d, i) in evict_after and s in resident[d]:
                proactive.setdefault(i + 1, []).append((s, d, i))

    if hoist_to is not None or prefetch:
        _hoist_reloads(stays, size, budgets, n, initial, hoist_to)
        actions = [_prefetched(a, stays[a.stay]) if isinstance(a, Reload) else a for a in actions]

    return build_events(graph, n, actions, lower_bound, state)


def _prefetched(reload: Reload, stay: _Stay) -> Reload:
    """The reload as prefetch left it: issued earlier, or written before the run (a preload)."""
    if stay.via == "preload":
        return replace(reload, preload=True)
    if stay.prefetch_start is not None:
        return replace(reload, prefetch=stay.prefetch_start)
    return reload


def _hoist_reloads(stays: list[_Stay], size: dict[str, int], budgets: list[int], n: int, initial: set[str],
                   hoist_to: dict[tuple[str, int, int], int] | None = None) -> None:
    """Move each reload as early as the budget allows, first come first served
    (or, with ``hoist_to``, to the step named there, never before the previous stay ends)."""
    ndev = len(budgets)
    # bytes resident per device and step (n + 1 steps), from a difference array: stays can span the whole run
    diff = np.zeros((ndev, n + 2), dtype=np.int64)
    for st in stays:
        hi = min(st.end, n + 1)
        if st.start < hi:
            diff[st.device, st.start] += size[st.storage]
            diff[st.device, hi] -= size[st.storage]
    live = np.cumsum(diff[:, : n + 1], axis=1)
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
        if hoist_to is not None:
            s = max(lo, min(s, hoist_to.get((st.storage, st.device, st.start), s)))
        else:
            s = _earliest_room(row, lo, s, cap - nbytes)
        if s < st.start:
            row[s : st.start] += nbytes
        if s == 0 and lo == 0 and st.storage in initial:
            st.via = "preload"
            st.prefetch_start = 0
        elif s < st.start:
            st.prefetch_start = s


def _earliest_room(row: np.ndarray, lo: int, start: int, room: int) -> int:
    """The smallest ``s`` >= ``lo`` with ``row[k] <= room`` for every k in [s, start).

    Scanned backwards from ``start`` in windows that double (a reload usually
    rises a few steps; a whole-run scan per reload would be quadratic).
    """
    s, w = start, 64
    while s > lo:
        a = max(lo, s - w)
        over = np.flatnonzero(row[a:s] > room)
        if over.size:
            return a + int(over[-1]) + 1
        s, w = a, w * 2
    return s


def _stays_of(actions: list[Action]) -> list[_Stay]:
    """Each stay's storage, device and steps, read back from the actions that begin and end it.

    A stay begins with its Allocate, Reload or Move (stays are numbered in
    that order) and ends with an Offload or Drop (before that step) or a Free
    (after that step); one that never ends holds to the end of the run.
    """
    stays: list[_Stay] = []
    for a in actions:
        if isinstance(a, (Allocate, Reload, Move)):
            if a.stay != len(stays):
                raise AssertionError(f"internal: stay {a.stay} begins out of order ({len(stays)} expected)")
            via = "compute" if isinstance(a, Allocate) else "move" if isinstance(a, Move) else "reload"
            st = _Stay(a.storage, a.device, a.step, via)
            if isinstance(a, Reload):
                st.via = "preload" if a.preload else "reload"
                st.prefetch_start = 0 if a.preload else a.prefetch
            stays.append(st)
        elif isinstance(a, (Offload, Drop)):
            stays[a.stay].end = a.step
        elif isinstance(a, Free):
            stays[a.stay].end = a.step + 1
    return stays


def build_events(graph: TaskGraph, n: int, actions: list[Action], lower_bound: list[int] | None = None,
                 state: frozenset[str] = frozenset()) -> Residency:
    """Events and occupants from actions over ``n`` steps (the walk's, or any), and nothing else, in their order.

    A prefetched reload runs just before the compute of the step it was
    hoisted to; a preload is an occupant no event writes. Drop and Free make
    no event: a drop leaves the bytes to be reused, and the occupant's last
    reader already bounds its lifetime.
    """
    io = graph_io(graph)
    size = io.size
    stays = _stays_of(actions)
    by_key: dict[tuple[str, int], list[int]] = {}
    for k, st in enumerate(stays):
        by_key.setdefault((st.storage, st.device), []).append(k)
    hoisted: dict[int, list[Reload]] = {}
    for a in actions:
        if isinstance(a, Reload) and a.prefetch is not None:
            hoisted.setdefault(a.prefetch, []).append(a)

    events: list[Event] = []
    occupants: list[Occupant] = []
    gpu_occ: dict[int, int] = {}  # stay index -> occupant id
    host_occ: dict[str, int] = {}  # storage -> current host occupant id
    moved = offloaded = reloaded = 0

    def new_occ(storage: str, device: int, writer: int | None) -> int:
        occupants.append(Occupant(len(occupants), storage, device, size[storage], writer))
        return len(occupants) - 1

    # Preloads: placed before the run.
    for a in actions:
        if isinstance(a, Reload) and a.preload:
            gpu_occ[a.stay] = new_occ(a.storage, a.device, None)

    def host_copy(storage: str) -> int:
        if storage not in host_occ:  # initial storages live in host memory from the start
            host_occ[storage] = new_occ(storage, HOST, None)
        return host_occ[storage]

    def transfer(kind: str, queue_device: int, step: int, storage: str, src: int, dst_device: int) -> int:
        """One copy event reading occupant ``src`` and filling a new occupant on ``dst_device``; returns it."""
        events.append(Event(kind, queue_device, step, storage=storage))
        e = len(events) - 1
        dst = new_occ(storage, dst_device, e)
        events[e].reads.append(src)
        events[e].writes.append(dst)
        occupants[src].readers.append(e)
        return dst

    def do_reload(a: Reload, step: int) -> None:
        nonlocal reloaded
        h = host_copy(a.storage)
        gpu_occ[a.stay] = transfer("reload", a.device, step, a.storage, h, a.device)
        reloaded += graph.storage_bytes(a.storage)

    allocated: dict[str, int] = {}  # storage -> stay, for the outputs of the next compute
    for a in actions:
        if isinstance(a, Offload):
            host_occ[a.storage] = transfer("offload", a.device, a.step, a.storage, gpu_occ[a.stay], HOST)
            offloaded += graph.storage_bytes(a.storage)
        elif isinstance(a, Move):
            gpu_occ[a.stay] = transfer("move", a.device, a.step, a.storage, gpu_occ[a.source_stay], a.device)
            moved += graph.storage_bytes(a.storage)
        elif isinstance(a, Reload):
            if a.prefetch is None and not a.preload:
                do_reload(a, a.step)
        elif isinstance(a, Allocate):
            allocated[a.storage] = a.stay
        elif isinstance(a, Compute):
            i, d = a.step, a.device
            for r in hoisted.get(i, []):
                do_reload(r, i)
            events.append(Event("compute", d, i, task=a.task))
            e = len(events) - 1
            for s in io.reads[a.task]:
                o = _current(stays, by_key, gpu_occ, s, d, i)
                events[e].reads.append(o)
                occupants[o].readers.append(e)
            for s in io.writes[a.task]:
                o = new_occ(s, d, e)
                gpu_occ[allocated.pop(s)] = o
                events[e].writes.append(o)
        # Drop and Free: no event (see the docstring)

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
    return Residency(events, occupants, final, list(lower_bound or []), offloaded, reloaded, moved, actions)


_StaysByKey = dict[tuple[str, int], list[int]]  # (storage, device) -> stay indices


def _current(stays: list[_Stay], by_key: _StaysByKey, gpu_occ: dict[int, int], s: str, d: int, i: int) -> int:
    for k in by_key.get((s, d), ()):
        st = stays[k]
        start = st.prefetch_start if st.prefetch_start is not None else st.start
        if start <= i < st.end and k in gpu_occ:
            return gpu_occ[k]
    raise AssertionError(f"internal: {s} not resident on device {d} at step {i}")


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
