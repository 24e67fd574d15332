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

One queue, no thread binding (the inline path): a plan whose nodes all run on
one queue (every compute node on one device, no copies: a plan at 100% of its
peak) with the ``dynamic`` or ``fixed`` order and no ``thread_init`` runs the
same sequence the worker would (the order is then fully determined: one
consumer, nodes become ready only when it retires one), precomputed once, on
the calling thread: no lock, heap or thread hand-off per node. On a loaded
machine each hand-off can cost a scheduler slice; for the small models the
per-node bookkeeping was as large as the kernels themselves.

One thread for every queue (``synchronous=True``: the backend's nodes are
done when their callables return, as on the NumPy backend, where a reload or
an offload is a memcpy on the same cores): a multi-queue plan (offloads and
reloads, several emulated GPUs) with the ``dynamic`` or ``fixed`` order runs
inline too, in the order ONE worker taking every queue would pop the nodes:
lowest priority among all ready nodes (``dynamic``; a reload's priority is
its first reader's position, so it runs just before it is needed) or the
planned serial order (``fixed``). That is a dependency-respecting order, so
the run is valid as any other; a thread per queue bought no overlap on the
CPU (the copies and the kernels share the same cores) but cost two thread
hand-offs per copy: the 25% fixtures ran 4-17x slower than onnxruntime,
against 2-3.5x at 100%. The ``random`` order keeps the worker threads (it
exists to shake cross-queue interleavings), and so does a backend with real
streams (CuPy: copies overlap compute there).
"""

from __future__ import annotations

import heapq
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from .errors import ExecutionError, PlanError, TurnipError
from .graph import PlanGraph, copy_label, describe_node
from .plan import Node
from .queues import QUEUE_KINDS, QUEUE_OF_KIND, Queue, assign_queues, dynamic_priorities

__all__ = [
    "ORDERS", "QUEUE_KINDS", "QUEUE_OF_KIND", "ExecStats", "ExecutionError", "Executor", "PlanError", "Queue", "TurnipError",
    "copy_label", "describe_node", "dynamic_priorities",
]

ORDERS = ("dynamic", "fixed", "random")


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


class _WorkerPool:
    """One long-lived worker thread per queue, reused by every run of an executor.

    Why: a loaded plan runs many times (a session, a decode loop); starting the
    threads and binding each to its queue (``thread_init``: a GPU backend sets
    the thread's stream) once, not per run, keeps that cost out of every run.
    A run hands the pool a job (``job(queue_index)``, the worker loop of that
    run); each thread runs it once and goes back to waiting.
    """

    def __init__(self, queues: Sequence[Queue], thread_init: Callable[[Queue], Any] | None) -> None:
        self._cv = threading.Condition(threading.Lock())
        self._job: Callable[[int], None] | None = None
        self._generation = 0
        self._busy = 0
        self._closed = False
        self._queues = list(queues)
        self._thread_init = thread_init
        self.init_errors: list[BaseException | None] = [None] * len(self._queues)
        self._threads = [
            threading.Thread(target=self._loop, args=(qi,), name=f"turnip-{q[1]}-{q[0]}", daemon=True) for qi, q in enumerate(self._queues)
        ]
        for t in self._threads:
            t.start()

    def _loop(self, qi: int) -> None:
        if self._thread_init is not None:
            try:
                self._thread_init(self._queues[qi])
            except BaseException as e:  # noqa: BLE001 - reported by every run through its job
                self.init_errors[qi] = e
        seen = 0
        while True:
            with self._cv:
                while self._generation == seen and not self._closed:
                    self._cv.wait()
                if self._closed:
                    return
                seen = self._generation
                job = self._job
            try:
                if job is not None:
                    job(qi)
            finally:
                with self._cv:
                    self._busy -= 1
                    self._cv.notify_all()

    def submit(self, job: Callable[[int], None]) -> None:
        """Every thread runs ``job(its queue index)`` once."""
        with self._cv:
            self._job = job
            self._busy = len(self._threads)
            self._generation += 1
            self._cv.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every thread finished the current job; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while self._busy > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cv.wait(left)
            self._job = None
        return True

    def alive(self) -> bool:
        return all(t.is_alive() for t in self._threads)

    def close(self, join_timeout: float = 0.0) -> None:
        """Let the threads exit; wait up to ``join_timeout`` seconds for them."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        deadline = time.monotonic() + join_timeout
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(max(0.0, deadline - time.monotonic()))


class Executor:
    """Runs prepared node callables in a dependency-respecting order.

    ``nodes`` are the plan's nodes; ``tasks[i]`` runs ``nodes[i]``.
    ``priorities[i]`` (dynamic order) defaults to ``nodes[i].pos``.
    ``thread_init(queue)`` runs once at the start of each worker thread (a GPU
    backend binds its stream there). ``describe(i)`` names node ``i`` in errors.
    ``synchronous``: every task's work is done when it returns (no streams), so one
    thread may run all queues (module docstring, "One thread for every queue").
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
        synchronous: bool = False,
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
        self._pool: _WorkerPool | None = None  # started by the first run, reused by the next ones
        n = len(self.nodes)

        for node in self.nodes:
            if node.kind not in QUEUE_OF_KIND:
                raise PlanError(f"node {node.id} has unknown kind {node.kind!r}; re-plan the model with `turnipc plan`")
        graph = PlanGraph(self.nodes)
        graph.check_acyclic()  # a cycle would make every order hang
        self.graph = graph
        self.queues, self.queue_of = assign_queues(self.nodes)
        self.succ = graph.succ
        self.ndeps = graph.ndeps
        self.index = graph.index

        if order == "fixed":
            serial = graph.serial_order()
            bad = graph.serial_violation(serial)
            if bad is not None:
                i, s = (self.nodes[k] for k in bad)
                raise PlanError(
                    f"planned serial order is not dependency-respecting: node {s.id} (pos "
                    f"{s.pos}) depends on node {i.id} (pos {i.pos}); "
                    "re-plan the model, or run with --order dynamic"
                )
            rank = [0] * n
            for r, k in enumerate(serial):
                rank[k] = r
            self.serial: list[int] | None = serial
            self.prio = rank
        else:
            self.serial = None
            self.prio = list(priorities) if priorities is not None else [nd.pos for nd in self.nodes]
            if len(self.prio) != n:
                raise ValueError("one priority per node is required")
        #: the sequence the single worker would run, when the run can stay on the calling thread (module docstring)
        self.inline: list[int] | None = None
        if (len(self.queues) <= 1 or synchronous) and order != "random" and thread_init is None:
            self.inline = self.serial if self.serial is not None else self._one_queue_sequence()

    def _one_queue_sequence(self) -> list[int]:
        """The order one worker taking every queue pops the nodes in: lowest priority among the ready ones, as the heap does."""
        counts = list(self.ndeps)
        prio = self.prio
        heap = [(prio[i], i) for i in range(len(counts)) if counts[i] == 0]
        heapq.heapify(heap)
        seq = []
        while heap:
            i = heapq.heappop(heap)[1]
            seq.append(i)
            for s in self.succ[i]:
                counts[s] -= 1
                if counts[s] == 0:
                    heapq.heappush(heap, (prio[s], s))
        return seq

    def close(self) -> None:
        """Let the worker threads exit and wait for them (idempotent; a later run starts new ones)."""
        if self._pool is not None:
            self._pool.close(join_timeout=5.0)
            self._pool = None

    def __del__(self) -> None:
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.close()

    def _run_inline(self, seq: list[int], progress: Callable[[int, int], Any] | None, progress_interval: float) -> ExecStats:
        """Run ``seq`` on the calling thread (one queue: see the module docstring)."""
        n = len(self.nodes)
        tasks = self.tasks
        start = [0.0] * n
        end = [0.0] * n
        ran = [False] * n
        pc = time.perf_counter
        t_start = t1 = pc()
        next_report = t_start + progress_interval if progress is not None else float("inf")
        done = 0
        for i in seq:
            t0 = pc()
            try:
                tasks[i]()
            except Exception as err:  # noqa: BLE001 - reported as the threaded path does
                msg = str(err) or repr(err)
                raise ExecutionError(f"{self.describe(i)} failed: {type(err).__name__}: {msg}", self.nodes[i].id) from err
            t1 = pc()
            start[i] = t0 - t_start
            end[i] = t1 - t_start
            ran[i] = True
            done += 1
            if t1 >= next_report:
                assert progress is not None
                progress(done, n)
                next_report = t1 + progress_interval
        if progress is not None:
            progress(done, n)
        return ExecStats(wall_s=t1 - t_start, nodes_run=done, queues=list(self.queues), queue_of=list(self.queue_of), start=start, end=end, ran=ran)

    # ---------------------------------------------------------------------
    def run(self, progress: Callable[[int, int], Any] | None = None, progress_interval: float = 0.1) -> ExecStats:
        """Run every node once. Raises ExecutionError naming the failed node."""
        if self.inline is not None:
            return self._run_inline(self.inline, progress, progress_interval)
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
        pool = self._pool
        if pool is None or not pool.alive():
            pool = self._pool = _WorkerPool(self.queues, self.thread_init)

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
            init_error = pool.init_errors[qi]
            if init_error is not None:  # thread_init failed when the pool started this thread
                with lock:
                    fail(-1, init_error)
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
                    if rng is not None:  # the random order
                        k = rng.randrange(len(heap))
                        heap[k], heap[-1] = heap[-1], heap[k]
                        i = heap.pop()
                    else:
                        i = heappop(heap)[1]
                    if mode_fixed and st.cursor + 1 < n:
                        # issue order is fixed; queues still overlap: the next node may start now
                        st.cursor += 1
                        assert serial is not None  # the fixed order has one
                        qn = queue_of[serial[st.cursor]]
                        if qn != qi and idle[qn]:
                            conds[qn].notify()
                    lock.release()
                    # -- run it (lock free) ----------------------------------
                    try:
                        if rng is not None:
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

        t_start = pc()
        interrupted: BaseException | None = None
        try:
            if n == 0:
                st.stop = True
            pool.submit(worker)
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
                if not pool.alive():
                    with lock:
                        if not st.stop:  # a worker died without reporting: never hang
                            fail(-1, RuntimeError("a worker thread exited unexpectedly"))
        except BaseException as e:  # KeyboardInterrupt, or an error in the progress callback
            interrupted = e
            with lock:
                st.stop = True
                wake_all()
        finally:
            finished = pool.wait_idle(10.0)
            if not finished or st.error is not None or interrupted is not None:
                # a failed or interrupted run ends its threads (a node still running after 10 s: leave it behind);
                # a later run starts new ones
                pool.close(join_timeout=1.0 if finished else 0.0)
                self._pool = None
        wall = pc() - t_start
        if interrupted is not None:
            raise interrupted
        if st.error is not None:
            i, err = st.error
            where = self.describe(i) if i >= 0 else "worker"
            msg = str(err) or repr(err)
            raise ExecutionError(f"{where} failed: {type(err).__name__}: {msg}", None if i < 0 else self.nodes[i].id) from err
        return ExecStats(
            wall_s=wall,
            nodes_run=st.done,
            queues=list(self.queues),
            queue_of=list(queue_of),
            start=[x - t_start if x else 0.0 for x in start],
            end=[x - t_start if x else 0.0 for x in end],
            ran=ran,
        )
