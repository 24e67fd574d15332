"""turnipc/fuse.py (elementwise chains -> one task) and its runtime kernel (turnip/kernels/fused.py)."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
from turnip.kernels import fused as fk
from turnip.kernels import get_kernel
from turnip.plan import read_plan, write_plan

from turnipc.fuse import CHAIN, FUSED_DOMAIN, FUSED_OP, NONE, fuse_elementwise
from turnipc.taskgraph import Task, TaskGraph, Value

N = 64


def _v(name: str, kind: str = "activation", shape: tuple[int, ...] = (N,), dtype: str = "float32") -> Value:
    return Value(name, dtype, shape, int(np.prod(shape)) * np.dtype(dtype).itemsize, kind, name)


def _t(tid: int, op: str, ins: tuple[str, ...], out: str) -> Task:
    return Task(tid, f"t{tid}", op, "", {}, ins, (out,), 10, 0)


def _graph(values: list[Value], tasks: list[Task], outputs: list[str]) -> TaskGraph:
    ins = [v.name for v in values if v.kind in ("input", "weight")]
    return TaskGraph("g.onnx", "0" * 64, {"": 17}, {v.name: v for v in values}, tasks, ins, outputs)


def gelu_graph() -> TaskGraph:
    """x -> Div(x, c) -> Erf -> Add(., one) -> Mul(x, .) = g; y = Relu(g); z = Neg(g).

    ``g`` has two readers, so the chain stops there: one fused task (4 steps), then y and z.
    """
    values = [_v("x", "input"), _v("c", "weight"), _v("one", "weight"), _v("d"), _v("e"), _v("f"), _v("g"), _v("y", "output"), _v("z", "output")]
    tasks = [
        _t(0, "Div", ("x", "c"), "d"), _t(1, "Erf", ("d",), "e"), _t(2, "Add", ("e", "one"), "f"),
        _t(3, "Mul", ("x", "f"), "g"), _t(4, "Relu", ("g",), "y"), _t(5, "Neg", ("g",), "z"),
    ]
    return _graph(values, tasks, ["y", "z"])


def test_chain_becomes_one_task_with_its_program():
    g = gelu_graph()
    f = fuse_elementwise(g)
    assert [t.op_type for t in f.tasks] == [FUSED_OP, "Relu", "Neg"]
    assert [t.id for t in f.tasks] == [0, 1, 2]
    t = f.tasks[0]
    assert t.domain == FUSED_DOMAIN and t.name == "t0+t1+t2+t3"
    assert t.inputs == ("x", "c", "one") and t.outputs == ("g",)
    assert t.attrs == {"ops": ["Div", "Erf", "Add", "Mul"], "a": [0, CHAIN, CHAIN, 0], "b": [1, NONE, 2, CHAIN]}
    assert t.flops == 40 and t.bytes_touched == 4 * N * 4
    assert set(f.values) == set(g.values) - {"d", "e", "f"}
    assert len(g.tasks) == 6 and "d" in g.values  # the input graph is unchanged


def test_the_two_readers_end_of_a_chain_is_fused_when_each_reader_starts_one():
    """y = Relu(g) then Neg(y): a second chain after the two-reader value."""
    g = gelu_graph()
    g.values["y"] = _v("y")
    g.values["w"] = _v("w", "output")
    g.tasks.append(_t(6, "Neg", ("y",), "w"))
    g.outputs[:] = ["w", "z"]
    f = fuse_elementwise(g)
    assert [(t.op_type, t.attrs.get("ops")) for t in f.tasks] == [
        (FUSED_OP, ["Div", "Erf", "Add", "Mul"]), ("Neg", None), (FUSED_OP, ["Relu", "Neg"])]
    assert f.tasks[2].inputs == ("g",) and f.tasks[2].outputs == ("w",)


@pytest.mark.parametrize("why", ["graph_output", "two_reads_in_next", "broadcast_grows", "int_dtype", "alias", "attrs"])
def test_chains_not_fused(why):
    values = [_v("x", "input"), _v("b", "weight"), _v("m"), _v("y", "output")]
    tasks = [_t(0, "Add", ("x", "b"), "m"), _t(1, "Exp", ("m",), "y")]
    outputs = ["y"]
    if why == "graph_output":
        outputs = ["y", "m"]
    elif why == "two_reads_in_next":
        tasks[1] = _t(1, "Mul", ("m", "m"), "y")
    elif why == "broadcast_grows":
        values[3] = _v("y", "output", shape=(4, N))
        values.append(_v("big", "weight", shape=(4, N)))
        tasks[1] = _t(1, "Add", ("m", "big"), "y")
    elif why == "int_dtype":
        values = [_v(v.name, v.kind, dtype="int64") for v in values]
        tasks[1] = _t(1, "Neg", ("m",), "y")
    elif why == "alias":
        values.append(Value("mv", "float32", (N,), N * 4, "activation", "m"))
    elif why == "attrs":
        tasks[0] = Task(0, "t0", "Add", "", {"something": 1}, ("x", "b"), ("m",), 0, 0)
    g = _graph(values, tasks, outputs)
    assert fuse_elementwise(g) is g


def _run_program(attrs, inputs, out):
    for call in fk.steps(np, attrs, inputs, out):
        call()


def test_kernel_evaluates_in_place_like_the_unfused_ops():
    from turnip.kernels._common import erf

    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, N), dtype=np.float32)
    c = np.float32(1.4142135) * np.ones(N, np.float32)  # broadcast along rows
    one = np.ones((1, N), np.float32)
    out = np.full_like(x, np.nan)
    attrs = {"ops": ["Div", "Erf", "Add", "Mul", "Sigmoid", "Sub"], "a": [0, CHAIN, CHAIN, 0, CHAIN, 2], "b": [1, NONE, 2, CHAIN, NONE, CHAIN]}
    _run_program(attrs, [x, c, one], out)
    g = x * (erf(np, x / c) + one)
    want = one - 1 / (1 + np.exp(-g))
    np.testing.assert_allclose(out, want, rtol=2e-6, atol=2e-6)
    # the registered kernel and the prepared call give the same bytes
    from turnip.kernels import KernelContext

    ctx = KernelContext(np, attrs, 1, op=FUSED_OP)
    out2 = np.empty_like(x)
    get_kernel(FUSED_OP, FUSED_DOMAIN)(ctx, [x, c, one], [out2])
    out3 = np.empty_like(x)
    fk._prepared(ctx, [x, c, one], [out3], [None] * 3)()
    np.testing.assert_array_equal(out, out2)
    np.testing.assert_array_equal(out, out3)


@pytest.mark.parametrize("attrs,msg", [
    ({"ops": ["Add"], "a": [0], "b": [CHAIN]}, "before any step"),
    ({"ops": ["Add"], "a": [0], "b": [5]}, "reads input 5"),
    ({"ops": ["Exp"], "a": [0], "b": [0]}, "second operand"),
    ({"ops": ["MatMul"], "a": [0], "b": [0]}, "not fusable"),
    ({"ops": ["Add", "Add"], "a": [0], "b": [0]}, "equal"),
])
def test_kernel_refuses_a_bad_program(attrs, msg):
    x = np.ones(N, np.float32)
    with pytest.raises(ValueError, match=msg):
        fk.steps(np, attrs, [x], np.empty_like(x))


def test_plan_file_round_trips_the_program(tmp_path):
    """The fused node's attributes survive the plan format (runtime/turnip/plan.py)."""
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "models"))
    import fixtures
    from turnip.units import Budget

    from turnipc.importer import import_model
    from turnipc.planner import PlanOptions, build_plan

    fx = fixtures.get("bert_dynamo18")
    graph = import_model(fx.path, fx.dims or {}, None)
    plan = build_plan(graph, PlanOptions(Budget(fraction=1.0), fuse=True))
    p = tmp_path / "f.plan"
    write_plan(plan, str(p))
    back = read_plan(str(p))
    fused = [n for n in back.nodes if n.op == FUSED_OP]
    assert fused and all(n.domain == FUSED_DOMAIN for n in fused)
    assert ["Div", "Erf", "Add", "Mul", "Mul"] in [n.attrs["ops"] for n in fused]  # BERT's exact GELU
    assert back.options["fuse"] is True
    assert "fuse" not in build_plan(graph, PlanOptions(Budget(fraction=1.0))).options  # off: unfused plans keep their bytes


@pytest.mark.parametrize("name", ["bert_dynamo18", "gpt2_dynamo18", "llama_dynamo18"])
@pytest.mark.parametrize("fraction", [1.0, 0.25])
def test_fused_plans_match_onnxruntime(tmp_path, name, fraction):
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "models"))
    import fixtures
    from turnip import Session
    from turnip.check import compare, reference_outputs
    from turnip.units import Budget

    from turnipc.importer import import_model
    from turnipc.planner import PlanOptions, build_plan
    from turnipc.verify import verify_plan

    fx = fixtures.get(name)
    graph = import_model(fx.path, fx.dims or {}, None)
    plan = build_plan(graph, PlanOptions(Budget(fraction=fraction), fuse=True))
    verify_plan(plan)
    unfused = build_plan(graph, PlanOptions(Budget(fraction=fraction)))
    assert sum(n.op == FUSED_OP for n in plan.nodes) > 0
    assert sum(n.kind == "compute" for n in plan.nodes) < sum(n.kind == "compute" for n in unfused.nodes)
    p = str(tmp_path / "f.plan")
    write_plan(plan, p)
    feeds = fixtures.make_inputs(fx, 0)
    with Session(p, model=fx.path, backend="numpy") as s:
        out = s.run(feeds)
    ref = reference_outputs(fx.path, feeds)
    assert all(c.ok for c in compare(out, ref, atol=1e-4, rtol=1e-3))


def test_two_chains_meeting_at_one_task_continue_only_the_later_one():
    """h = Mul(g, f) where g = Mul(x, half) and f = Add(Tanh(x), one): both g and f have h as their one reader.

    The later producer's chain (Tanh, Add) continues into h; g stays a task of its own and is h's input.
    """
    values = [_v("x", "input"), _v("half", "weight"), _v("one", "weight"), _v("g"), _v("e"), _v("f"), _v("h", "output")]
    tasks = [_t(0, "Mul", ("x", "half"), "g"), _t(1, "Tanh", ("x",), "e"), _t(2, "Add", ("e", "one"), "f"), _t(3, "Mul", ("g", "f"), "h")]
    f = fuse_elementwise(_graph(values, tasks, ["h"]))
    assert [t.op_type for t in f.tasks] == ["Mul", FUSED_OP]
    t = f.tasks[1]
    assert t.attrs == {"ops": ["Tanh", "Add", "Mul"], "a": [0, CHAIN, 2], "b": [NONE, 1, CHAIN]}
    assert t.inputs == ("x", "one", "g") and "g" in f.values and "e" not in f.values and "f" not in f.values


def test_fused_tasks_tile_and_the_tiled_plan_matches_onnxruntime(tmp_path):
    """A forced task-size limit cuts fused tasks into blocks like any elementwise op; outputs stay exact."""
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "models"))
    import fixtures
    from turnip.units import Budget

    from turnipc.importer import import_model
    from turnipc.planner import PlanOptions, build_plan
    from turnipc.verify import verify_plan

    fx = fixtures.get("bert_dynamo18")
    graph = import_model(fx.path, fx.dims or {}, None)
    plan = build_plan(graph, PlanOptions(Budget(fraction=1.0), fuse=True, max_task_bytes=24 << 10))
    verify_plan(plan)
    fused = [n for n in plan.nodes if n.op == FUSED_OP]
    gelu = [n for n in fused if n.attrs["ops"] == ["Div", "Erf", "Add", "Mul", "Mul"]]
    assert len(gelu) > 2 * 2  # 2 layers, each GELU in blocks
    from plan_runner import plan_matches_onnxruntime

    assert plan_matches_onnxruntime(tmp_path, fx, plan)


def test_fused_nodes_allocate_within_their_bound():
    """Allocations outside the arena: each fused node of a planned fixture, under tracemalloc, within temp_bytes."""
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "models"))
    import fixtures
    from test_kernel_workspace import node_peaks
    from turnip.backends.numpy_backend import NumpyBackend
    from turnip.kernels.workspace import temp_bytes
    from turnip.run import random_feeds
    from turnip.units import Budget
    from turnip.weights import InitialData

    from turnipc.importer import import_model
    from turnipc.planner import PlanOptions, build_plan

    fx = fixtures.get("bert_dynamo18")
    plan = build_plan(import_model(fx.path, fx.dims or {}, None), PlanOptions(Budget(fraction=1.0), fuse=True),
                      plan_dir=os.path.dirname(fx.path))
    be = NumpyBackend()
    be.allocate_all(plan)
    tasks = be.prepare(plan)
    data = InitialData(plan, None, model_path=fx.path)
    data.write(be, random_feeds(plan, 0))

    def spec(loc):
        return None if loc is None else (plan.tensors[loc.tensor].dtype, tuple(plan.tensors[loc.tensor].shape))

    try:
        seen = 0
        for node, peak in node_peaks(plan, tasks):
            if node.op == FUSED_OP:
                seen += 1
                bound = temp_bytes(node.op, [spec(x) for x in node.inputs], [spec(x) for x in node.outputs], node.attrs)
                assert peak <= bound, (node.id, node.attrs["ops"], peak, bound)
        assert seen > 0
    finally:
        be.free()
        data.close()
