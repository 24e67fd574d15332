"""The high-level API: run a plan on feeds, get the outputs and what happened.

    >>> from turnip.run import run_plan
    >>> result = run_plan("model.plan", {"input_ids": ids})
    >>> result.outputs["logits"], result.stats.wall_s

``run_plan`` reads the plan, allocates every memory once, prepares one
callable per node, writes weights / constants / inputs into place, runs the
MEMGRAPH (``order``: ``dynamic``, ``fixed`` or ``random``) ``repeat`` times,
and copies the graph outputs out of their planned locations.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from .backends import Backend, get_backend
from .executor import (
    ORDERS,
    QUEUE_OF_KIND,
    Executor,
    TurnipError,
    copy_label,
    describe_node,
    dynamic_priorities,
)
from .plan import COMPUTE, MOVE, OFFLOAD, RELOAD, Plan, read_plan
from .weights import InitialData, validate_feeds


@dataclass(frozen=True)
class TimelineEvent:
    """One node's run: seconds since its repeat started."""

    node: int
    kind: str
    device: int
    queue: str
    name: str
    op: str
    bytes: int
    start: float
    end: float


@dataclass
class RunStats:
    backend: str
    order: str
    seed: int
    repeat: int
    nodes: int  # nodes in the plan
    nodes_run: int  # nodes run per repeat
    wall_s: list[float]  # execution wall time of each repeat (inputs written before, outputs read after)
    load_s: float  # allocate + prepare + open the weights
    bytes_reloaded: int  # per repeat
    bytes_offloaded: int
    bytes_moved: int
    fallback_nodes: list[tuple[int, str, str, str]] = field(default_factory=list)  # (id, op, domain, name)
    timeline: list[TimelineEvent] = field(default_factory=list)  # of the last repeat

    def to_dict(self, timeline: bool = False) -> dict[str, Any]:
        d = asdict(self)
        d["fallback_nodes"] = [{"node": i, "op": op, "domain": dom, "name": nm} for i, op, dom, nm in self.fallback_nodes]
        if timeline:
            d["timeline"] = [asdict(e) for e in self.timeline]
        else:
            d.pop("timeline")
        return d


@dataclass
class RunResult:
    outputs: dict[str, np.ndarray]
    stats: RunStats


def _node_bytes(plan: Plan, node: Any) -> int:
    if node.bytes:
        return int(node.bytes)
    if node.outputs and 0 <= node.outputs[0].tensor < len(plan.tensors):
        return plan.tensors[node.outputs[0].tensor].nbytes
    return 0


def run_plan(
    plan: Plan | str | os.PathLike[str],
    feeds: Mapping[str, Any] | None = None,
    backend: str | Backend = "auto",
    order: str = "dynamic",
    seed: int = 0,
    repeat: int = 1,
    trace: str | os.PathLike[str] | None = None,
    progress: Callable[[int, int], Any] | None = None,
    plan_path: str | os.PathLike[str] | None = None,
) -> RunResult:
    """Run a plan. ``plan`` is a Plan or a plan file (then weights are found relative to it).

    ``progress(done, total)`` is called from the calling thread about ten times
    a second (``total`` counts every node of every repeat). ``trace`` writes a
    Chrome trace of the last repeat. Raises a :class:`turnip.executor.TurnipError`
    subclass (one line naming the problem and the fix) on bad plans, models,
    feeds or a failing node.
    """
    if order not in ORDERS:
        raise TurnipError(f"unknown order {order!r}; use one of {', '.join(ORDERS)}")
    if repeat < 1:
        raise TurnipError(f"repeat must be at least 1 (got {repeat})")
    if not isinstance(plan, Plan):
        plan_path = plan
        plan = read_plan(plan)
    feeds = dict(feeds or {})
    validate_feeds(plan, feeds)  # fail fast, before allocating anything

    be = get_backend(backend)
    t0 = time.perf_counter()
    initial = InitialData(plan, plan_path)
    try:
        be.allocate_all(plan)
        tasks = be.prepare(plan)
        nodes = plan.nodes
        executor = Executor(
            nodes,
            tasks,
            order=order,
            seed=seed,
            priorities=dynamic_priorities(plan) if order == "dynamic" else None,
            describe=lambda i: describe_node(nodes[i], plan),
            thread_init=be.thread_init,
        )
        load_s = time.perf_counter() - t0
        n = len(nodes)
        walls: list[float] = []
        ex = None
        for r in range(repeat):
            initial.write(be, feeds)
            be.synchronize()
            prog = None
            if progress is not None:
                base = r * n

                def prog(done: int, total: int, _base: int = base) -> None:
                    progress(_base + done, n * repeat)

            t_run = time.perf_counter()
            ex = executor.run(progress=prog)
            be.synchronize()
            walls.append(time.perf_counter() - t_run)
        assert ex is not None
        outputs = {}
        for loc in plan.outputs:
            name = plan.tensors[loc.tensor].name
            outputs[name] = be.read(be.view(loc))

        moved = {RELOAD: 0, OFFLOAD: 0, MOVE: 0}
        timeline = []
        for i, node in enumerate(nodes):
            if not ex.ran[i]:
                continue
            nb = _node_bytes(plan, node)
            if node.kind in moved:
                moved[node.kind] += nb
            if node.kind == COMPUTE:
                label = node.name or node.op
            else:
                label = copy_label(node, plan)
            timeline.append(
                TimelineEvent(node.id, node.kind, node.device, QUEUE_OF_KIND[node.kind], label, node.op, nb, ex.start[i], ex.end[i])
            )
        timeline.sort(key=lambda e: e.start)
        stats = RunStats(
            backend=be.name,
            order=order,
            seed=seed,
            repeat=repeat,
            nodes=n,
            nodes_run=ex.nodes_run,
            wall_s=walls,
            load_s=load_s,
            bytes_reloaded=moved[RELOAD],
            bytes_offloaded=moved[OFFLOAD],
            bytes_moved=moved[MOVE],
            fallback_nodes=list(be.fallback_nodes),
            timeline=timeline,
        )
        if trace is not None:
            from .trace import write_trace

            write_trace(trace, timeline, backend=be.name)
        return RunResult(outputs, stats)
    finally:
        be.free()
        initial.close()


def _index_bound(plan: Plan, tensor: int) -> int | None:
    """For an integer input read as Gather indices: the gathered axis' size (smallest over readers)."""
    storages = {tensor}
    for i, t in enumerate(plan.tensors):
        if t.storage == tensor:
            storages.add(i)
    for i, t in enumerate(plan.tensors):  # blocks cut from the input at load (tiled plans)
        if t.block is not None and plan.tensors[t.block[0]].storage in storages:
            storages.add(i)
    best = None
    for node in plan.nodes:
        if node.kind != COMPUTE or node.op not in ("Gather", "GatherElements") or len(node.inputs) < 2:
            continue
        idx, data = node.inputs[1], node.inputs[0]
        if idx is None or data is None or idx.tensor not in storages:
            continue
        shape = plan.tensors[data.tensor].shape
        if not shape:
            continue
        axis = int(node.attrs.get("axis", 0))
        if axis < 0:
            axis += len(shape)
        if 0 <= axis < len(shape) and shape[axis] > 0:
            best = shape[axis] if best is None else min(best, shape[axis])
    return best


def random_feeds(plan: Plan, seed: int = 0) -> dict[str, np.ndarray]:
    """Random feeds of the planned shapes and dtypes.

    Floats: standard normal. Integers: 0 .. n-1 where n is the size of the
    table the input indexes (the first Gather reading it), else 0 or 1.
    Bools: True.
    """
    from .dtypes import np_dtype

    rng = np.random.default_rng(seed)
    feeds = {}
    for ti in plan.inputs:
        t = plan.tensors[ti]
        dt = np_dtype(t.dtype)
        shape = tuple(t.shape)
        if dt == np.bool_:
            a = np.ones(shape, dtype=bool)
        elif dt.kind in "iu":
            bound = _index_bound(plan, ti) or 2
            a = rng.integers(0, bound, size=shape).astype(dt)
        else:
            a = rng.standard_normal(size=shape).astype(dt)
        feeds[t.name] = a
    return feeds
