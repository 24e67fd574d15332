"""Event-driven execution of a MEMGRAPH: any dependency-respecting order.

Backend-independent. The executor is given the plan's nodes and, for each, a
prepared zero-argument callable (the backend builds those: a kernel call on
preallocated views, or a copy between views). It runs them on one worker
thread per queue, where a queue is ``(device, kind)`` with kind ``compute``
(compute nodes), ``h2d`` (reloads), ``d2h`` (offloads) or ``peer`` (moves).

The worker loop (no central dispatcher):

* Every queue has a ready set (a heap keyed by priority) and a condition
  variable; all of them share ONE lock, which also guards the remaining
  dependency counts.
* A worker pops the best ready node of its own queue, releases the lock, runs
  the node (NumPy and CuPy release the GIL, so copies and compute on different
  queues overlap for real), then re-takes the lock once to record the node's
  timestamps, decrement its successors' counts, push the newly ready ones onto
  their queues' heaps, wake those queues' workers if (and only if) they are
  idle, and take its own next node, all in the same critical section.
* The main thread only waits (with a timeout, so Ctrl-C and worker failures
  are seen promptly), reports progress, and joins the workers at the end.

Orders:

* ``dynamic`` (default): among ready nodes on a queue, lowest priority first.
  Priority is the node's planned position (``pos``); for a reload, the
  position of the first compute that reads the reloaded bytes, so the copy
  engine fetches what compute needs next.
* ``fixed``: nodes start strictly in the planned serial order (a global
  cursor that advances when a node *starts*), one node at a time per queue,
  queues overlapping: the baseline a deterministic runtime gives. One node
  that is not ready holds up every queue behind it; that is what the dynamic
  order avoids.
* ``random``: a uniformly random ready node of the queue (seeded), with random
  short delays and yields to shake the interleavings across queues. A correct
  plan gives bit-identical results in every order.
"""

from __future__ import annotations

import heapq
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from .plan import COMPUTE, MOVE, OFFLOAD, RELOAD, Node, Plan

#: Node kind -> the kind of queue that runs it.
QUEUE_OF_KIND = {COMPUTE: "compute", RELOAD: "h2d", OFFLOAD: "d2h", MOVE: "peer"}
QUEUE_KINDS = ("compute", "h2d", "d2h", "peer")
ORDERS = ("dynamic", "fixed", "random")

Queue = tuple[int, str]  # (device, queue kind)


# The runtime's errors live in turnip.errors; re-exported here for compatibility.
from .errors import ExecutionError, PlanError, TurnipError  # noqa: E402,F401


def describe_node(node: Node, plan: Plan | None = None) -> str:
    """'node 12 (compute Relu 'layer1/relu')' or 'node 3 (reload 'w', 4096 bytes)'."""
    if node.kind == COMPUTE:
        dom = f"{node.domain}." if node.domain and node.domain != "ai.onnx" else ""
        return f"node {node.id} (compute {dom}{node.op} {node.name!r})"
    what = ""
    if plan is not None and node.outputs:
        t = node.outputs[0].tensor
        if 0 <= t < len(plan.tensors):
            what = f" {plan.tensors[t].name!r}"
    return f"node {node.id} ({node.kind}{what}, {node.bytes} bytes, device {node.device})"


def copy_label(node: Node, plan: Plan | None = None) -> str:
    """Short label of a copy node for traces: 'reload w'."""
    if plan is not None and node.outputs and 0 <= node.outputs[0].tensor < len(plan.tensors):
        return f"{node.kind} {plan.tensors[node.outputs[0].tensor].name}"
    return f"{node.kind} #{node.id}"


def dynamic_priorities(plan: Plan) -> list[int]:
    """Priority of each node (index-aligned with ``plan.nodes``) for the dynamic order.

    ``pos`` for every node but reloads; a reload gets the smallest ``pos`` of
    the compute nodes depending on it that read the bytes it writes (falling
    back to its successors' smallest ``pos``, then to its own).
    """
    by_id = {n.id: n for n in plan.nodes}
    succ: dict[int, list[int]] = {}
    for n in plan.nodes:
        if n.kind == RELOAD or any(by_id.get(d) is not None and by_id[d].kind == RELOAD for d in n.deps):
            for d in set(n.deps):
                succ.setdefault(d, []).append(n.id)
    tensors = plan.tensors

    def span(loc: Any) -> tuple[int, int, int]:
        nb = tensors[loc.tensor].nbytes if 0 <= loc.tensor < len(tensors) else 0
        return loc.mem, loc.offset, loc.offset + max(nb, 1)

    out = []
    for n in plan.nodes:
        p = n.pos
        if n.kind == RELOAD and n.outputs:
            mem, lo, hi = span(n.outputs[0])
            best = None
            fallback = None
            for sid in succ.get(n.id, ()):
                s = by_id[sid]
                fallback = s.pos if fallback is None else min(fallback, s.pos)
                if s.kind != COMPUTE:
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


@dataclass
class ExecStats:
    """What one execution did. Times are seconds since the run started."""

    wall_s: float
    nodes_run: int
    queues: list[Queue]
    queue_of: list[int]  # node index -> index into queues
    start: list[float]  # node index -> start time (0.0 if it did not run)
    end: list[float]
    ran: list[bool] = field(default_factory=list)


class _State:
    __slots__ = ("stop", "done", "cursor", "error")

    def __init__(self) -> None:
        self.stop = False
        self.done = 0
        self.cursor = 0
        self.error: tuple[int, BaseException] | None = None


class Executor:
    """Runs prepared node callables in a dependency-respecting order.

    ``nodes`` are the plan's nodes; ``tasks[i]`` runs ``nodes[i]``.
    ``priorities[i]`` (dynamic order) defaults to ``nodes[i].pos``.
    ``thread_init(queue)`` runs once at the start of each worker thread (a GPU
    backend binds its stream there). ``describe(i)`` names node ``i`` in errors.
    """

    def __init__(
        self,
        nodes: Sequence[Node],
        tasks: Sequence[Callable[[], Any]],
        *,
        order: str = "dynamic",
        seed: int = 0,
        priorities: Sequence[int] | None = None,
        describe: Callable[[int], str] | None = None,
        thread_init: Callable[[Queue], Any] | None = None,
        wait_timeout: float = 0.2,
    ) -> None:
        if order not in ORDERS:
            raise ValueError(f"unknown order {order!r}; use one of {', '.join(ORDERS)}")
        if len(tasks) != len(nodes):
            raise ValueError("one task per node is required")
        self.nodes = list(nodes)
        self.tasks = list(tasks)
        self.order = order
        self.seed = int(seed)
        self.thread_init = thread_init
        self.wait_timeout = wait_timeout
        self.describe = describe or (lambda i: describe_node(self.nodes[i]))
        n = len(self.nodes)

        index: dict[int, int] = {}
        for i, node in enumerate(self.nodes):
            if node.id in index:
                raise PlanError(f"plan has two nodes with id {node.id}; re-plan the model with `turnipc plan`")
            index[node.id] = i
            if node.kind not in QUEUE_OF_KIND:
                raise PlanError(f"node {node.id} has unknown kind {node.kind!r}; re-plan the model with `turnipc plan`")

        queues: dict[Queue, int] = {}
        queue_of = [0] * n
        for i, node in enumerate(self.nodes):
            q = (node.device, QUEUE_OF_KIND[node.kind])
            queue_of[i] = queues.setdefault(q, len(queues))
        self.queues: list[Queue] = list(queues)
        self.queue_of = queue_of

        succ: list[list[int]] = [[] for _ in range(n)]
        ndeps = [0] * n
        for i, node in enumerate(self.nodes):
            for d in set(node.deps):
                j = index.get(d)
                if j is None:
                    raise PlanError(f"node {node.id} depends on node {d}, which the plan does not have; re-plan the model")
                if j == i:
                    raise PlanError(f"node {node.id} depends on itself; re-plan the model")
                succ[j].append(i)
                ndeps[i] += 1
        self.succ = [tuple(s) for s in succ]
        self.ndeps = ndeps
        self.index = index

        # Acyclic? (Kahn.) A cycle would make every order hang.
        counts = list(ndeps)
        stack = [i for i in range(n) if counts[i] == 0]
        seen = 0
        while stack:
            i = stack.pop()
            seen += 1
            for s in self.succ[i]:
                counts[s] -= 1
                if counts[s] == 0:
                    stack.append(s)
        if seen != n:
            stuck = [self.nodes[i].id for i in range(n) if counts[i] > 0][:5]
            raise PlanError(f"plan dependencies have a cycle ({n - seen} nodes can never run, e.g. nodes {stuck}); re-plan the model")

        if order == "fixed":
            serial = sorted(range(n), key=lambda i: (self.nodes[i].pos, self.nodes[i].id))
            rank = [0] * n
            for r, i in enumerate(serial):
                rank[i] = r
            for i in range(n):
                for s in self.succ[i]:
                    if rank[s] < rank[i]:
                        raise PlanError(
                            f"planned serial order is not dependency-respecting: node {self.nodes[s].id} (pos "
                            f"{self.nodes[s].pos}) depends on node {self.nodes[i].id} (pos {self.nodes[i].pos}); "
                            "re-plan the model, or run with --order dynamic"
                        )
            self.serial = serial
            self.prio = rank
        else:
            self.serial = None
            self.prio = list(priorities) if priorities is not None else [nd.pos for nd in self.nodes]
            if len(self.prio) != n:
                raise ValueError("one priority per node is required")

    # ---------------------------------------------------------------------
    def run(self, progress: Callable[[int, int], Any] | None = None, progress_interval: float = 0.1) -> ExecStats:
        """Run every node once. Raises ExecutionError naming the failed node."""
        n = len(self.nodes)
        nq = len(self.queues)
        tasks = self.tasks
        succ = self.succ
        prio = self.prio
        queue_of = self.queue_of
        counts = list(self.ndeps)
        mode_fixed = self.order == "fixed"
        mode_random = self.order == "random"
        seed = self.seed
        wait_timeout = self.wait_timeout
        start = [0.0] * n
        end = [0.0] * n
        ran = [False] * n

        lock = threading.Lock()
        conds = [threading.Condition(lock) for _ in range(nq)]
        main_cond = threading.Condition(lock)
        idle = [False] * nq
        heaps: list[list[Any]] = [[] for _ in range(nq)]
        st = _State()
        for i in range(n):
            if counts[i] == 0:
                if mode_random:
                    heaps[queue_of[i]].append(i)
                else:
                    heaps[queue_of[i]].append((prio[i], i))
        if not mode_random:
            for h in heaps:
                heapq.heapify(h)
        if mode_random:  # start from a seeded shuffle so the initial pick varies too
            r0 = random.Random(seed)
            for h in heaps:
                r0.shuffle(h)

        serial = self.serial
        pc = time.perf_counter
        heappush = heapq.heappush
        heappop = heapq.heappop
        thread_init = self.thread_init
        queues = self.queues

        def wake_all() -> None:  # lock held
            for c in conds:
                c.notify_all()
            main_cond.notify_all()

        def fail(i: int, e: BaseException) -> None:  # lock held
            if st.error is None:
                st.error = (i, e)
            st.stop = True
            wake_all()

        def worker(qi: int) -> None:
            heap = heaps[qi]
            cond = conds[qi]
            rng = random.Random(seed * 1_000_003 + qi) if mode_random else None
            if thread_init is not None:
                try:
                    thread_init(queues[qi])
                except BaseException as e:  # noqa: BLE001
                    with lock:
                        fail(-1, e)
                    return
            lock.acquire()
            try:
                while True:
                    # -- take the next node of this queue (lock held) --------
                    while True:
                        if st.stop:
                            return
                        if heap and (not mode_fixed or heap[0][0] == st.cursor):
                            break
                        idle[qi] = True
                        cond.wait(wait_timeout)
                        idle[qi] = False
                    if mode_random:
                        k = rng.randrange(len(heap))
                        heap[k], heap[-1] = heap[-1], heap[k]
                        i = heap.pop()
                    else:
                        i = heappop(heap)[1]
                    if mode_fixed and st.cursor + 1 < n:
                        # issue order is fixed; queues still overlap: the next node may start now
                        st.cursor += 1
                        qn = queue_of[serial[st.cursor]]  # type: ignore[index]
                        if qn != qi and idle[qn]:
                            conds[qn].notify()
                    lock.release()
                    # -- run it (lock free) ----------------------------------
                    try:
                        if mode_random:
                            r = rng.random()
                            if r < 0.2:
                                time.sleep(r * 1e-3)  # up to 0.2 ms
                            elif r < 0.4:
                                time.sleep(0)  # yield
                        t0 = pc()
                        tasks[i]()
                        t1 = pc()
                    except BaseException as e:  # noqa: BLE001
                        lock.acquire()
                        fail(i, e)
                        return
                    lock.acquire()
                    # -- retire it: successors become ready ------------------
                    start[i] = t0
                    end[i] = t1
                    ran[i] = True
                    for s in succ[i]:
                        c = counts[s] - 1
                        counts[s] = c
                        if c == 0:
                            qs = queue_of[s]
                            if mode_random:
                                heaps[qs].append(s)
                            else:
                                heappush(heaps[qs], (prio[s], s))
                            if qs != qi and idle[qs]:
                                conds[qs].notify()
                    st.done += 1
                    if st.done == n:
                        st.stop = True
                        wake_all()
            finally:
                lock.release()

        threads = [
            threading.Thread(target=worker, args=(qi,), name=f"turnip-{q[1]}-{q[0]}", daemon=True) for qi, q in enumerate(self.queues)
        ]
        t_start = pc()
        interrupted: BaseException | None = None
        try:
            if n == 0:
                st.stop = True
            for t in threads:
                t.start()
            last_progress = 0.0
            while True:
                with lock:
                    if not st.stop:
                        main_cond.wait(progress_interval if progress is not None else wait_timeout)
                    stop = st.stop
                    done = st.done
                if progress is not None:
                    now = pc()
                    if stop or now - last_progress >= progress_interval:
                        last_progress = now
                        progress(done, n)
                if stop:
                    break
                if not all(t.is_alive() for t in threads):
                    with lock:
                        if not st.stop:  # a worker died without reporting: never hang
                            fail(-1, RuntimeError("a worker thread exited unexpectedly"))
        except BaseException as e:  # KeyboardInterrupt, or an error in the progress callback
            interrupted = e
            with lock:
                st.stop = True
                wake_all()
        finally:
            deadline = time.monotonic() + 10.0
            for t in threads:
                if t.is_alive() or t.ident is not None:
                    t.join(max(0.0, deadline - time.monotonic()))
        wall = pc() - t_start
        if interrupted is not None:
            raise interrupted
        if st.error is not None:
            i, e = st.error
            where = self.describe(i) if i >= 0 else "worker"
            msg = str(e) or repr(e)
            raise ExecutionError(f"{where} failed: {type(e).__name__}: {msg}", None if i < 0 else self.nodes[i].id) from e
        return ExecStats(
            wall_s=wall,
            nodes_run=st.done,
            queues=list(self.queues),
            queue_of=list(queue_of),
            start=[x - t_start if x else 0.0 for x in start],
            end=[x - t_start if x else 0.0 for x in end],
            ran=ran,
        )
