"""Discrete-event simulation of the runtime's executor on a plan.

The queues are the runtime's (runtime/turnip/queues.py): per device a
``compute`` queue (compute nodes), an ``h2d`` queue (reloads), a ``d2h``
queue (offloads) and a ``peer`` queue (moves, on the destination device).
Each queue runs one node at a time; a node is *ready* when every node in its
``deps`` has finished. Node durations come from the cost model (cost.py),
optionally multiplied by a seeded random jitter factor.

Orders (which ready node a free queue starts):

* ``dynamic``: lowest priority first, where the priority is the node's
  planned position ``pos``, except that a reload takes the ``pos`` of the
  first compute node reading the bytes it writes (the runtime's
  :func:`turnip.queues.dynamic_priorities`, reused). Work-conserving: a
  free queue with a ready node always starts one.
* ``fixed``: *in-order issue*. Nodes are issued strictly in the planned
  serial order (``pos``, ties by id): a node may start only once every node
  with a smaller ``pos`` has started, and it is ready and its queue is free.
  The queues still overlap (a reload issued before a compute runs alongside
  it), but a node that is not ready yet, or whose queue is busy, stalls the
  issue of every later node on every queue. This is the deterministic
  baseline "same hardware queues, no on-the-fly choice".
* ``serial``: one node at a time overall, in the planned order (a node
  starts when the previous one has *finished*): what the runtime's
  ``--order fixed`` does today. Its makespan is the sum of all durations.

Simultaneous events are handled as one batch: every node finishing at time
``t`` is retired before any queue picks its next node. Ties are broken by
node id, so a simulation is a deterministic function of (plan, profile,
order, jitter, seed).
"""

from __future__ import annotations

import functools
import gc
import heapq
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence, TypeVar

import numpy as np
from turnip.errors import PlanError
from turnip.graph import PlanGraph
from turnip.plan import NodeKind, Plan, QueueKind
from turnip.queues import QUEUE_KINDS, Queue, assign_queues, dynamic_priorities

from .cost import node_times
from .profiles import DeviceProfile, get_profile

ORDERS = ("dynamic", "fixed", "serial")
JITTER_DISTS = ("uniform", "lognormal")

F = TypeVar("F", bound=Callable[..., Any])


def _gc_paused(fn: F) -> F:
    """Simulations allocate ~10^5 small containers: cyclic GC passes would triple their time."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kw: Any) -> Any:
        was = gc.isenabled()
        gc.disable()
        try:
            return fn(*args, **kw)
        finally:
            if was:
                gc.enable()

    return wrapper  # type: ignore[return-value]


class SimulationError(ValueError):
    """The plan cannot be simulated (cycle, unknown dependency, order not topological)."""


def queue_label(q: Queue) -> str:
    """(0, 'compute') -> 'gpu0/compute'."""
    return f"gpu{q[0]}/{q[1]}"


@dataclass
class SimResult:
    """What one simulated execution did. Times in seconds from the first start."""

    device: str  # profile name
    order: str
    makespan: float
    queues: list[Queue]  # the queues that have nodes, by (device, queue kind)
    busy: dict[Queue, float]  # total duration of the nodes each queue ran
    compute_per_device: dict[int, float]
    compute_s: float  # total over devices
    h2d_s: float
    d2h_s: float
    peer_s: float
    bound: float  # max over queues of busy time: no schedule beats it
    critical_path: float  # longest dependency chain (also a lower bound)
    # makespan - total compute of the busiest device, floored at 0: time that device's compute queue idles
    # (waiting on copies; on a multi-device plan also pipeline bubbles)
    exposed_transfer: float
    start: np.ndarray  # node index -> start time
    end: np.ndarray  # node index -> end time
    duration: np.ndarray
    queue_of: np.ndarray  # node index -> index into queues
    jitter: float = 0.0
    seed: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def utilization(self) -> dict[Queue, float]:
        m = self.makespan
        return {q: (self.busy[q] / m if m > 0 else 0.0) for q in self.queues}

    @property
    def lower_bound(self) -> float:
        return max(self.bound, self.critical_path)

    def to_dict(self) -> dict[str, Any]:
        """The CLI's --json object."""
        return {
            "device": self.device,
            "order": self.order,
            "makespan_s": self.makespan,
            "bound_s": self.bound,
            "critical_path_s": self.critical_path,
            "compute_s": self.compute_s,
            "h2d_s": self.h2d_s,
            "d2h_s": self.d2h_s,
            "peer_s": self.peer_s,
            "exposed_transfer_s": self.exposed_transfer,
            "utilization": {queue_label(q): u for q, u in self.utilization.items()},
            "busy_s": {queue_label(q): self.busy[q] for q in self.queues},
            "compute_per_device_s": {str(d): v for d, v in sorted(self.compute_per_device.items())},
            "makespan_over_bound": self.makespan / self.bound if self.bound > 0 else 1.0,
            "jitter": self.jitter,
            "seed": self.seed,
            "nodes": int(len(self.start)),
        }


@dataclass
class _Prepared:
    n: int
    queues: list[Queue]
    queue_of: list[int]
    succ: Sequence[Sequence[int]]
    ndeps: Sequence[int]
    serial: list[int]  # node indices in planned order (pos, id)
    graph: PlanGraph


@_gc_paused
def _prepare(plan: Plan) -> _Prepared:
    try:
        graph = PlanGraph.of(plan)
    except PlanError as e:
        raise SimulationError(str(e)) from None
    queues, queue_of = assign_queues(plan.nodes, sort=True)
    serial = graph.serial_order()
    return _Prepared(len(serial), queues, queue_of, graph.succ, graph.ndeps, serial, graph)


def jitter_factors(n: int, jitter: float, seed: int | None, dist: str = "uniform") -> np.ndarray:
    """Per-node duration multipliers, mean 1, drawn in node order from ``numpy.random.default_rng(seed)``.

    ``uniform``: U[1 - jitter, 1 + jitter] (jitter < 1). ``lognormal``:
    exp(N(-s^2/2, s^2)) with s = jitter, so the mean is 1 too.
    """
    if jitter <= 0:
        return np.ones(n)
    rng = np.random.default_rng(seed)
    if dist == "uniform":
        if jitter >= 1:
            raise ValueError("uniform jitter must be below 1 (durations would reach zero)")
        return rng.uniform(1.0 - jitter, 1.0 + jitter, size=n)
    if dist == "lognormal":
        return rng.lognormal(mean=-jitter * jitter / 2.0, sigma=jitter, size=n)
    raise ValueError(f"unknown jitter distribution {dist!r}; use one of {', '.join(JITTER_DISTS)}")


@_gc_paused
def simulate(
    plan: Plan,
    profile: DeviceProfile | str = "h100-sxm",
    *,
    order: str = "dynamic",
    jitter: float = 0.0,
    seed: int | None = 0,
    jitter_dist: str = "uniform",
    durations: Sequence[float] | np.ndarray | None = None,
    zero_transfers: bool = False,
    priorities: Sequence[int] | None = None,
    _prepared: _Prepared | None = None,
) -> SimResult:
    """Simulate one execution of ``plan``.

    ``durations`` overrides the cost model (seconds per node, index-aligned
    with ``plan.nodes``; jitter still applies). ``zero_transfers`` makes every
    reload/offload/move take no time (their dependencies still count).
    ``priorities`` overrides the dynamic order's priorities.
    """
    if order not in ORDERS:
        raise ValueError(f"unknown order {order!r}; use one of {', '.join(ORDERS)}")
    prof = get_profile(profile)
    prep = _prepared if _prepared is not None else _prepare(plan)
    n = prep.n
    base = np.asarray(durations, dtype=np.float64) if durations is not None else node_times(plan, prof)
    if base.shape != (n,):
        raise ValueError(f"need one duration per node ({n}), got shape {base.shape}")
    dur = base * jitter_factors(n, jitter, seed, jitter_dist)
    if zero_transfers:
        dur = np.where(np.fromiter((nd.kind == NodeKind.COMPUTE for nd in plan.nodes), dtype=bool, count=n), dur, 0.0)
    durl: list[float] = dur.tolist()

    queue_of = prep.queue_of
    succ = prep.succ
    counts = list(prep.ndeps)
    nq = len(prep.queues)
    start = [0.0] * n
    end = [0.0] * n
    busy_q = [False] * nq
    events: list[tuple[float, int]] = []  # (end time, node index)
    heappush = heapq.heappush
    heappop = heapq.heappop
    done = 0
    t = 0.0

    if order == "dynamic":
        prio = list(priorities) if priorities is not None else dynamic_priorities(plan, prep.graph)
        if len(prio) != n:
            raise ValueError("one priority per node is required")
        heaps: list[list[tuple[int, int]]] = [[] for _ in range(nq)]
        for i in range(n):
            if counts[i] == 0:
                heaps[queue_of[i]].append((prio[i], i))
        for h in heaps:
            heapq.heapify(h)
        for q in range(nq):
            if heaps[q]:
                i = heappop(heaps[q])[1]
                busy_q[q] = True
                start[i] = 0.0
                e = durl[i]
                end[i] = e
                heappush(events, (e, i))
        while events:
            t, i = heappop(events)
            finished = [i]
            while events and events[0][0] == t:
                finished.append(heappop(events)[1])
            touched: set[int] = set()
            for i in finished:
                done += 1
                qi = queue_of[i]
                busy_q[qi] = False
                touched.add(qi)
                for s in succ[i]:
                    c = counts[s] - 1
                    counts[s] = c
                    if c == 0:
                        qs = queue_of[s]
                        heappush(heaps[qs], (prio[s], s))
                        touched.add(qs)
            for q in sorted(touched):
                if not busy_q[q] and heaps[q]:
                    j = heappop(heaps[q])[1]
                    busy_q[q] = True
                    start[j] = t
                    e = t + durl[j]
                    end[j] = e
                    heappush(events, (e, j))
    else:
        serial = prep.serial
        bad = prep.graph.serial_violation(serial)
        if bad is not None:
            i, s = bad
            raise SimulationError(
                f"planned serial order is not dependency-respecting: node {plan.nodes[s].id} (pos "
                f"{plan.nodes[s].pos}) depends on node {plan.nodes[i].id} (pos {plan.nodes[i].pos}); "
                "use order 'dynamic'"
            )
        is_serial = order == "serial"
        cursor = 0
        running = 0

        def issue(now: float) -> None:
            nonlocal cursor, running
            while cursor < n:
                j = serial[cursor]
                q = queue_of[j]
                if counts[j] != 0 or busy_q[q] or (is_serial and running):
                    return
                busy_q[q] = True
                running += 1
                start[j] = now
                e = now + durl[j]
                end[j] = e
                heappush(events, (e, j))
                cursor += 1

        issue(0.0)
        while events:
            t, i = heappop(events)
            finished = [i]
            while events and events[0][0] == t:
                finished.append(heappop(events)[1])
            for i in finished:
                done += 1
                running -= 1
                busy_q[queue_of[i]] = False
                for s in succ[i]:
                    counts[s] -= 1
            issue(t)

    if done != n:
        stuck = [plan.nodes[i].id for i in range(n) if counts[i] > 0][:5]
        raise SimulationError(f"plan dependencies have a cycle ({n - done} nodes never ran, e.g. nodes {stuck})")

    start_a = np.asarray(start)
    end_a = np.asarray(end)
    makespan = float(end_a.max()) if n else 0.0
    qo = np.asarray(queue_of, dtype=np.int64)
    busy_arr = np.bincount(qo, weights=dur, minlength=nq) if n else np.zeros(nq)
    busy = {q: float(busy_arr[k]) for k, q in enumerate(prep.queues)}
    per_kind: dict[QueueKind, float] = {k: 0.0 for k in QUEUE_KINDS}
    comp_dev: dict[int, float] = {}
    for (dev, qkind), b in busy.items():
        per_kind[qkind] += b
        if qkind == QueueKind.COMPUTE:
            comp_dev[dev] = comp_dev.get(dev, 0.0) + b
    bound = max(busy.values(), default=0.0)
    busiest = max(comp_dev.values(), default=0.0)
    return SimResult(
        device=prof.name,
        order=order,
        makespan=makespan,
        queues=list(prep.queues),
        busy=busy,
        compute_per_device=comp_dev,
        compute_s=per_kind[QueueKind.COMPUTE],
        h2d_s=per_kind[QueueKind.H2D],
        d2h_s=per_kind[QueueKind.D2H],
        peer_s=per_kind[QueueKind.PEER],
        bound=bound,
        critical_path=critical_path(prep, durl),
        exposed_transfer=max(0.0, makespan - busiest),
        start=start_a,
        end=end_a,
        duration=dur,
        queue_of=qo,
        jitter=float(jitter),
        seed=seed,
    )


def critical_path(prep: _Prepared, dur: Sequence[float]) -> float:
    """Longest dependency chain (sum of durations): a lower bound with unlimited queues."""
    n = prep.n
    if n == 0:
        return 0.0
    counts = list(prep.ndeps)
    ready_at = [0.0] * n
    stack = [i for i in range(n) if counts[i] == 0]
    best = 0.0
    succ = prep.succ
    while stack:
        i = stack.pop()
        f = ready_at[i] + dur[i]
        if f > best:
            best = f
        for s in succ[i]:
            if f > ready_at[s]:
                ready_at[s] = f
            counts[s] -= 1
            if counts[s] == 0:
                stack.append(s)
    return best


def unlimited_makespan(plan: Plan, profile: DeviceProfile | str = "h100-sxm", **kw: Any) -> float:
    """Makespan of the compute alone: the same queues and order, every transfer taking no time."""
    return simulate(plan, profile, zero_transfers=True, **kw).makespan


def slowdown(plan_x: Plan, plan_full: Plan, profile: DeviceProfile | str = "h100-sxm", **kw: Any) -> float:
    """Simulated makespan of ``plan_x`` over that of ``plan_full`` (same model planned at 100 %).

    Both are simulated with their transfers (a multi-GPU plan at 100 % still
    has its moves); keyword arguments (order, jitter, seed, ...) go to both
    simulations alike, so jitter uses common random numbers only if the two
    plans number their compute nodes alike, which they generally do not:
    prefer ``jitter=0`` here.
    """
    full = simulate(plan_full, profile, **kw).makespan
    x = simulate(plan_x, profile, **kw).makespan
    return x / full if full > 0 else math.inf if x > 0 else 1.0


@_gc_paused
def compare_orders(plan: Plan, profile: DeviceProfile | str = "h100-sxm", *, jitter: float = 0.3,
                   seeds: Sequence[int] = range(20), jitter_dist: str = "uniform",
                   orders: Sequence[str] = ("dynamic", "fixed")) -> dict[str, list[float]]:
    """Makespan of each order for each seed, with the same jitter draw for every order (common random numbers)."""
    prep = _prepare(plan)
    base = node_times(plan, profile)
    prio = dynamic_priorities(plan, prep.graph)
    out: dict[str, list[float]] = {o: [] for o in orders}
    for s in seeds:
        for o in orders:
            r = simulate(plan, profile, order=o, jitter=jitter, seed=s, jitter_dist=jitter_dist, durations=base,
                         priorities=prio, _prepared=prep)
            out[o].append(r.makespan)
    return out
