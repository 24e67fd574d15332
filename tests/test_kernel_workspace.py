"""Allocations outside the arena during a run, counted with tracemalloc (NumPy reports its buffers to it).

Each compute node of a planned fixture runs alone under tracemalloc; the
peak it allocates must stay within ``kernels.workspace.temp_bytes`` of that
node, the per-op bound the plan's reserve for kernel temporaries is built
from. A whole run through the executor must stay within the largest per-node
bound plus the executor's own bookkeeping.
"""

from __future__ import annotations

import functools
import os
import tracemalloc

import fixtures
import numpy as np
import pytest
from turnip.backends.numpy_backend import NumpyBackend
from turnip.executor import Executor
from turnip.kernels.workspace import SMALL_OBJECTS, temp_bytes
from turnip.plan import COMPUTE
from turnip.run import random_feeds
from turnip.weights import InitialData

from turnipc.importer import import_model
from turnipc.planner import PlanOptions, build_plan
from turnipc.units import Budget


@functools.lru_cache(maxsize=None)
def _plan(name: str):
    fx = fixtures.get(name)
    graph = import_model(fx.path, fx.dims, None)
    return build_plan(graph, PlanOptions(Budget(fraction=1.0)), plan_dir=os.path.dirname(fx.path))


def _bound(plan, node) -> int:
    def spec(loc):
        if loc is None:
            return None
        t = plan.tensors[loc.tensor]
        return (t.dtype, tuple(t.shape))

    opset = int(plan.opset.get("", plan.opset.get("ai.onnx", 18)))
    return temp_bytes(node.op, [spec(x) for x in node.inputs], [spec(x) for x in node.outputs], node.attrs, opset)


def _prepared(name: str):
    plan = _plan(name)
    fx = fixtures.get(name)
    be = NumpyBackend()
    be.allocate_all(plan)
    tasks = be.prepare(plan)
    data = InitialData(plan, None, model_path=fx.path)
    data.write(be, random_feeds(plan, 0))
    return plan, be, tasks, data


def node_peaks(plan, tasks):
    """(node, bytes it allocated at its peak) for every node of ``plan``, run alone in plan order under tracemalloc."""
    order = sorted(range(len(plan.nodes)), key=lambda i: (plan.nodes[i].pos, plan.nodes[i].id))
    tracemalloc.start()
    try:
        for i in order:
            base = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            tasks[i]()
            yield plan.nodes[i], tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("name", ["gpt2_dynamo18", "bert_dynamo18", "llama_dynamo18"])
def test_each_node_allocates_within_its_bound(name):
    plan, be, tasks, data = _prepared(name)
    try:
        over = []
        measured = 0
        for node, peak in node_peaks(plan, tasks):
            if node.kind != COMPUTE:
                assert peak <= SMALL_OBJECTS, f"copy node {node.id} allocated {peak} bytes"
                continue
            measured = max(measured, peak)
            bound = _bound(plan, node)
            if peak > bound:
                over.append((node.id, node.op, peak, bound))
        assert not over, f"nodes allocating more than temp_bytes (id, op, measured, bound): {over[:10]}"
        assert measured > 0  # the measurement sees NumPy's buffers at all
    finally:
        be.free()
        data.close()


def test_whole_run_allocates_within_the_largest_node_bound():
    name = "gpt2_dynamo18"
    plan, be, tasks, data = _prepared(name)
    try:
        ex = Executor(plan.nodes, tasks, order="fixed")
        reserve = max(_bound(plan, n) for n in plan.nodes if n.kind == COMPUTE)
        bookkeeping = 64 * len(plan.nodes) + (256 << 10)  # per-node timestamps / heaps, threads
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            ex.run()
            peak = tracemalloc.get_traced_memory()[1] - base
        finally:
            tracemalloc.stop()
        assert 0 < peak <= reserve + bookkeeping, (peak, reserve)
        out = be.read(be.view(plan.outputs[0]))
        assert np.isfinite(out).all()
    finally:
        be.free()
        data.close()
