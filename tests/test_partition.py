"""The partition pass (turnipc.partition) on small hand-built ONNX graphs.

Each test builds a graph with onnx.helper, imports it, partitions it at a
task-size limit, and asserts the exact block structure; the end-to-end tests
then plan, verify and run the tiled graph against onnxruntime and check that
random execution orders give bit-identical outputs.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from turnip.check import compare, reference_outputs
from turnip.run import run_plan

from turnipc.importer import import_model
from turnipc.partition import Partition, even_bounds, largest_task, partition_graph, split_rule
from turnipc.planner import PlanOptions, build_plan
from turnipc.units import Budget
from turnipc.verify import verify_plan

FLOAT = TensorProto.FLOAT


def _save(tmp_path, nodes, inputs, outputs, inits, opset=17, name="m.onnx"):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    path = str(tmp_path / name)
    onnx.save(model, path)
    return path


def _w(name, shape, seed):
    return numpy_helper.from_array(np.random.default_rng(seed).standard_normal(shape).astype(np.float32), name)


def _mlp(tmp_path, m=8, k=16, n=64):
    """x[m,k] @ W1[k,n] -> Relu -> Softmax(axis -1) -> @ W2[n,k] -> y[m,k]."""
    nodes = [
        helper.make_node("MatMul", ["x", "W1"], ["h"], name="mm1"),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("Softmax", ["r"], ["s"], name="softmax", axis=-1),
        helper.make_node("MatMul", ["s", "W2"], ["y"], name="mm2"),
    ]
    return _save(
        tmp_path, nodes,
        [helper.make_tensor_value_info("x", FLOAT, [m, k])],
        [helper.make_tensor_value_info("y", FLOAT, [m, k])],
        [_w("W1", [k, n], 1), _w("W2", [n, k], 2)],
    )


def test_even_bounds():
    assert even_bounds(10, 3) == ((0, 4), (4, 7), (7, 10))
    assert even_bounds(4, 8) == ((0, 1), (1, 2), (2, 3), (3, 4))
    assert even_bounds(5, 1) == ((0, 5),)
    assert Partition(0, even_bounds(10, 3)).largest == 4


def test_no_tiling_when_every_task_fits(tmp_path):
    g = import_model(_mlp(tmp_path))
    tg, rep = partition_graph(g, largest_task(g)[0])
    assert tg is g and rep.tiled == {}


def test_row_blocks_flow_through_a_chain_with_one_assemble(tmp_path):
    # mm1 needs x 512 + W1 4096 + h 2048 B whole; at 6 KiB two row blocks (W1 whole) fit, and
    # the rows of x then flow through relu -> softmax -> mm2 without any concatenation
    g = import_model(_mlp(tmp_path))
    tg, rep = partition_graph(g, 6144)
    ops = [t.op_type for t in tg.tasks]
    assert ops.count("Concat") == 1, ops  # only the graph output is assembled
    assert ops.count("Slice") == 0  # the input is cut at load, not on the GPU
    n = rep.tiled["mm1"]
    assert rep.tiled == {"mm1": n, "relu": n, "softmax": n, "mm2": n} and n > 1
    assert rep.assembles == ["y"] and rep.splits == []
    blocks = [tg.blocks[v] for v in tg.blocks]
    assert [(b[0], b[1]) for b in blocks] == [("x", 0)] * n  # row blocks of the input
    assert [b[2:] for b in blocks] == list(even_bounds(8, n))
    for t in tg.tasks:
        if t.op_type != "Concat":
            assert largest_task_of(tg, t) <= 6144


def test_columns_when_rows_cannot_fit_then_assemble_for_softmax(tmp_path):
    # at 4 KiB a row block still needs all of W1 (4096 B): mm1 splits its columns, relu follows them,
    # and softmax (which reduces the last axis) needs its input whole: one assemble before it
    g = import_model(_mlp(tmp_path))
    tg, rep = partition_graph(g, 4096)
    assert rep.tiled["mm1"] == rep.tiled["relu"] == 2
    assert rep.assembles[0] == "r"
    mm1 = [t for t in tg.tasks if t.name.startswith("mm1#")]
    assert [tg.blocks[t.inputs[1]] for t in mm1] == [("W1", 1, 0, 32), ("W1", 1, 32, 64)]


def largest_task_of(g, t):
    from turnipc.residency import aligned

    need = set(t.storages_read(g)) | set(t.storages_written(g))
    return sum(aligned(g.storage_bytes(s)) for s in need)


def test_big_weight_is_split_by_columns_cut_at_load(tmp_path):
    # x[4,8] @ W[8,512]: the weight (16 KiB) dominates, so output columns split and W is cut in column blocks
    nodes = [helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")]
    path = _save(tmp_path, nodes, [helper.make_tensor_value_info("x", FLOAT, [4, 8])],
                 [helper.make_tensor_value_info("y", FLOAT, [4, 512])], [_w("W", [8, 512], 3)])
    tg, rep = partition_graph(import_model(path), 8192)
    mm = [t for t in tg.tasks if t.op_type == "MatMul"]
    assert len(mm) == rep.tiled["mm"] == 4
    for i, t in enumerate(mm):
        assert t.inputs[0] == "x"
        assert tg.blocks[t.inputs[1]] == ("W", 1, 128 * i, 128 * (i + 1))
        assert tg.values[t.outputs[0]].shape == (4, 128)
    # y whole plus its blocks (16 KiB) is no task at 8 KiB: the output is returned in its column blocks
    assert [t.op_type for t in tg.tasks] == ["MatMul"] * 4 and tg.outputs == [t.outputs[0] for t in mm]
    assert [tg.blocks[b] for b in tg.outputs] == [("y", 1, 128 * i, 128 * (i + 1)) for i in range(4)]


def test_reduction_axis_split_accumulates_with_adds(tmp_path):
    # x[2,512] @ W[512,4]: only splitting K bounds the task; partial products summed in a fixed chain
    nodes = [helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")]
    path = _save(tmp_path, nodes, [helper.make_tensor_value_info("x", FLOAT, [2, 512])],
                 [helper.make_tensor_value_info("y", FLOAT, [2, 4])], [_w("W", [512, 4], 4)])
    tg, rep = partition_graph(import_model(path), 4096)
    ops = [t.op_type for t in tg.tasks]
    n = rep.tiled["mm"]
    assert n > 1 and ops.count("MatMul") == n and ops.count("Add") == n - 1
    assert tg.tasks[-1].op_type == "Add" and tg.tasks[-1].outputs == ("y",)
    ks = [tg.blocks[t.inputs[1]] for t in tg.tasks if t.op_type == "MatMul"]
    assert [k[:2] for k in ks] == [("W", 0)] * n and [k[2:] for k in ks] == list(even_bounds(512, n))


def test_split_rules():
    from turnipc.taskgraph import Task, TaskGraph, Value

    def v(name, shape):
        return Value(name, "float32", shape, 4 * int(np.prod(shape)), "activation", name)

    vals = {x.name: x for x in [v("a", (2, 3, 4)), v("b", (4,)), v("c", (2, 3, 4)), v("i", (5, 6)), v("t", (10, 4)),
                                 v("o", (5, 6, 4)), v("tp", (4, 3, 2))]}
    g = TaskGraph("m", "", {"": 17}, vals, [], [], [])
    add = Task(0, "add", "Add", "", {}, ("a", "b"), ("c",), 0, 0)
    assert split_rule(g, add, 2) == ([2, 0], [2])
    assert split_rule(g, add, 0) == ([0, None], [0])
    sm = Task(0, "sm", "Softmax", "", {"axis": -1}, ("a",), ("c",), 0, 0)
    assert split_rule(g, sm, 2) is None and split_rule(g, sm, 1) == ([1], [1])
    gather = Task(0, "gather", "Gather", "", {"axis": 0}, ("t", "i"), ("o",), 0, 0)
    assert split_rule(g, gather, 1) == ([None, 1], [1])
    assert split_rule(g, gather, 2) == ([1, None], [2])
    tr = Task(0, "tr", "Transpose", "", {"perm": [2, 1, 0]}, ("a",), ("tp",), 0, 0)
    assert split_rule(g, tr, 0) == ([2], [0])
    ln = Task(0, "ln", "LayerNormalization", "", {"axis": -1}, ("a", "b", "b"), ("c",), 0, 0)
    assert split_rule(g, ln, 1) == ([1, None, None], [1]) and split_rule(g, ln, 2) is None
    red = Task(0, "red", "ReduceSum", "", {"axes": [1], "keepdims": 0}, ("a",), ("i",), 0, 0)
    g.values["i"] = v("i", (2, 4))
    assert split_rule(g, red, 1) == ([2], [1]) and split_rule(g, red, 0) == ([0], [0])


def _plan_run(path, budget, max_task_bytes=None, orders=5):
    g = import_model(path)
    plan = build_plan(g, PlanOptions(budget, max_task_bytes=max_task_bytes))
    verify_plan(plan)
    assert plan.stats.peak_bytes <= plan.stats.budget_bytes
    feeds = {"x": np.random.default_rng(0).standard_normal(g.values["x"].shape).astype(np.float32)}
    r = run_plan(plan, feeds, backend="numpy")
    assert all(c.ok for c in compare(r.outputs, reference_outputs(path, feeds)))
    for seed in range(orders):
        r2 = run_plan(plan, feeds, backend="numpy", order="random", seed=seed)
        assert all(np.array_equal(r.outputs[k], r2.outputs[k]) for k in r.outputs)
    return plan


def test_tiled_plan_runs_exactly_below_the_largest_task(tmp_path):
    path = _mlp(tmp_path, m=32, k=16, n=64)
    g = import_model(path)
    floor = largest_task(g)[0]
    plan = _plan_run(path, Budget(bytes=floor * 3 // 4))
    assert plan.stats.peak_bytes < floor
    assert plan.stats.tiling["tiled_ops"] == 4


def test_max_task_bytes_forces_tiling_and_reduction_split_checks(tmp_path):
    path = _mlp(tmp_path, m=8, k=16, n=256)
    plan = _plan_run(path, Budget(fraction=1.0), max_task_bytes=4096)
    assert plan.options["max_task_bytes"] == 4096 and plan.stats.tiling["blocks"] > 4


@pytest.mark.parametrize("opset", [17, 18])
def test_reshape_alias_between_tiled_ops_keeps_blocks(tmp_path, opset):
    # x[1,8,16] @ W[16,64] -> reshape [1,8,4,16] -> Relu: the row partition (axis 1) survives the alias
    shape = numpy_helper.from_array(np.array([1, 8, 4, 16], np.int64), "shape")
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["h"], name="mm"),
        helper.make_node("Reshape", ["h", "shape"], ["h4"], name="reshape"),
        helper.make_node("Relu", ["h4"], ["y"], name="relu"),
    ]
    path = _save(tmp_path, nodes, [helper.make_tensor_value_info("x", FLOAT, [1, 8, 16])],
                 [helper.make_tensor_value_info("y", FLOAT, [1, 8, 4, 16])], [_w("W", [16, 64], 5), shape], opset=opset)
    g = import_model(path)
    tg, rep = partition_graph(g, 6144)
    assert rep.tiled["mm"] == rep.tiled["relu"] > 1, rep.tiled
    assert [t.op_type for t in tg.tasks].count("Concat") == 1 and rep.splits == []
    _plan_run(path, Budget(fraction=1.0), max_task_bytes=6144)


def test_attention_scores_never_exist_whole(tmp_path):
    # a LLaMA-shaped stack (weights declared, never read): at a budget below one head's
    # seq x seq scores, the QK^T -> scale -> mask -> Softmax -> @V chain runs on query-row blocks
    from synthetic import llama_shaped_model

    seq, heads = 128, 2
    model = llama_shaped_model(layers=1, hidden=16, heads=heads, ffn=32, vocab=32, batch=1, seq=seq, fp16=False)
    path = str(tmp_path / "llama.onnx")
    onnx.save(model, path)
    g = import_model(path, {"batch": 1, "seq": seq}, None)
    head_scores = seq * seq * 4
    budget = head_scores * 3 // 4
    plan = build_plan(g, PlanOptions(Budget(bytes=budget)))
    verify_plan(plan)
    assert plan.stats.peak_bytes <= budget
    for n in plan.nodes:
        for loc in (*n.inputs, *n.outputs):
            if loc is not None:
                t = plan.tensors[loc.tensor]
                assert not (len(t.shape) == 4 and t.shape[-2:] == (seq, seq)), (n.name, t.name, t.shape)
