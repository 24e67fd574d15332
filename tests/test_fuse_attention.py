"""turnipc/fuse_attention.py (exported attention -> one task) and its kernel (turnip/kernels/fused_attention.py)."""

from __future__ import annotations

import os
import sys
import tracemalloc

import numpy as np
import pytest
from turnip.kernels import KernelContext, get_kernel, prepare_call
from turnip.kernels.workspace import temp_bytes
from turnip.plan import FUSED_ATTENTION_OP, FUSED_DOMAIN, FUSED_NONE

from turnipc.fuse_attention import attention_split_rule, fuse_attention
from turnipc.taskgraph import Task, TaskGraph, Value

B, H, S, D = 2, 3, 8, 4
QSHAPE, KSHAPE, SSHAPE = (B, H, S, D), (B, H, D, S), (B, H, S, S)


def _v(name: str, shape: tuple[int, ...], kind: str = "activation", dtype: str = "float32") -> Value:
    return Value(name, dtype, shape, int(np.prod(shape)) * np.dtype(dtype).itemsize, kind, name)


def _t(tid: int, op: str, ins: tuple[str, ...], out: str, attrs: dict | None = None) -> Task:
    return Task(tid, f"t{tid}", op, "", attrs or {}, ins, (out,), 10, 0)


def sdpa_graph(guard: bool = True, softmax_axis: int = -1, extra_reader: bool = False, dtype: str = "float32") -> TaskGraph:
    """torch's SDPA export: qs = Q*c, ks = Kt*c, s = qs@ks, m = s + mask, p = Softmax(m), Where(IsNaN(p), z, p) @ V."""
    values = [_v("q", QSHAPE, "input", dtype), _v("kt", KSHAPE, "input", dtype), _v("v", QSHAPE, "input", dtype),
              _v("mask", (B, 1, S, S), "input", dtype), _v("c", (), "weight", dtype), _v("z", (), "weight", dtype),
              _v("qs", QSHAPE, dtype=dtype), _v("ks", KSHAPE, dtype=dtype), _v("s", SSHAPE, dtype=dtype),
              _v("m", SSHAPE, dtype=dtype), _v("p", SSHAPE, dtype=dtype), _v("nan", SSHAPE, dtype="bool"),
              _v("pg", SSHAPE, dtype=dtype), _v("y", QSHAPE, "output", dtype), _v("w", SSHAPE, "output", dtype)]
    tasks = [_t(0, "Mul", ("q", "c"), "qs"), _t(1, "Mul", ("kt", "c"), "ks"), _t(2, "MatMul", ("qs", "ks"), "s"),
             _t(3, "Add", ("s", "mask"), "m"), _t(4, "Softmax", ("m",), "p", {"axis": softmax_axis})]
    if guard:
        tasks += [_t(5, "IsNaN", ("p",), "nan"), _t(6, "Where", ("nan", "z", "p"), "pg"), _t(7, "MatMul", ("pg", "v"), "y")]
    else:
        tasks += [_t(5, "MatMul", ("p", "v"), "y")]
    outputs = ["y"]
    if extra_reader:  # the logits are read by another task too: not private to the pattern
        tasks.append(_t(len(tasks), "Relu", ("s",), "w"))
        outputs.append("w")
    ins = [v.name for v in values if v.kind in ("input", "weight")]
    return TaskGraph("g.onnx", "0" * 64, {"": 18}, {v.name: v for v in values}, tasks, ins, outputs)


def test_pattern_becomes_one_task_with_the_scores_as_its_second_output():
    g = sdpa_graph()
    f = fuse_attention(g)
    assert [t.op_type for t in f.tasks] == [FUSED_ATTENTION_OP]
    t = f.tasks[0]
    assert t.domain == FUSED_DOMAIN and t.id == 0 and t.name == "+".join(f"t{i}" for i in range(8))
    assert t.inputs == ("q", "kt", "v", "mask", "c", "c", "z") and t.outputs == ("y", "s")
    assert t.attrs == {"mask": 3, "scale_q": 4, "scale_k": 5, "fill": 6}
    assert t.flops == 80
    assert set(f.values) == set(g.values) - {"qs", "ks", "m", "p", "nan", "pg"}  # the scores stay: planned workspace
    assert len(g.tasks) == 8  # the input graph is unchanged


def test_pattern_without_the_nan_guard():
    t = fuse_attention(sdpa_graph(guard=False)).tasks[0]
    assert t.op_type == FUSED_ATTENTION_OP and t.attrs["fill"] == FUSED_NONE and t.inputs == ("q", "kt", "v", "mask", "c", "c")


@pytest.mark.parametrize("why", ["softmax_axis", "extra_reader", "float16"])
def test_patterns_not_fused(why):
    g = {"softmax_axis": lambda: sdpa_graph(softmax_axis=2), "extra_reader": lambda: sdpa_graph(extra_reader=True),
         "float16": lambda: sdpa_graph(dtype="float16")}[why]()
    f = fuse_attention(g)
    assert FUSED_ATTENTION_OP not in [t.op_type for t in f.tasks]


def test_split_rule_cuts_batch_heads_and_query_rows_never_the_value_columns():
    f = fuse_attention(sdpa_graph())
    t = f.tasks[0]
    # inputs: q, kt, v, mask (B,1,S,S), c, c, z
    assert attention_split_rule(f, t, 0) == ([0, 0, 0, 0, None, None, None], [0, 0])
    assert attention_split_rule(f, t, 1) == ([1, 1, 1, None, None, None, None], [1, 1])  # the mask broadcasts heads
    assert attention_split_rule(f, t, 2) == ([2, None, None, 2, None, None, None], [2, 2])
    assert attention_split_rule(f, t, 3) is None


def _reference(q, kt, v, mask, c, z):
    s = (q * c) @ (kt * c) + mask
    e = np.exp(s - s.max(-1, keepdims=True))
    p = e / e.sum(-1, keepdims=True)
    return np.where(np.isnan(p), z, p) @ v


def _arrays(seed: int = 0):
    rng = np.random.default_rng(seed)
    q, kt, v = (rng.standard_normal(shape).astype(np.float32) for shape in (QSHAPE, KSHAPE, QSHAPE))
    mask = np.where(rng.random((B, 1, S, S)) < 0.3, -np.inf, 0).astype(np.float32)
    mask[0, 0, 3, :] = -np.inf  # a fully masked row: the NaN guard makes it zeros
    return q, kt, v, mask, np.float32(0.5), np.float32(0.0)


@pytest.mark.parametrize("prepared", [False, True])
def test_kernel_matches_the_unfused_ops_and_fills_fully_masked_rows(prepared):
    q, kt, v, mask, c, z = _arrays()
    inputs = [q, kt, v, mask, np.array(c), np.array(c), np.array(z)]
    y, s = np.empty(QSHAPE, np.float32), np.empty(SSHAPE, np.float32)
    ctx = KernelContext(np, {"mask": 3, "scale_q": 4, "scale_k": 5, "fill": 6}, 1, op=FUSED_ATTENTION_OP)
    if prepared:
        call = prepare_call(ctx, FUSED_DOMAIN, inputs, [y, s], [None] * 7)
        assert call is not None
        call()
    else:
        get_kernel(FUSED_ATTENTION_OP, FUSED_DOMAIN)(ctx, inputs, [y, s])
    with np.errstate(invalid="ignore"):
        ref = _reference(q, kt, v, mask, c, z)
    assert np.all(y[0, 0, 3] == 0) and not np.isnan(y).any()
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-6)


def test_kernel_allocates_only_row_sized_temporaries_within_its_bound():
    q, kt, v, mask, c, z = _arrays(1)
    inputs = [q, kt, v, mask, np.array(c), np.array(c), np.array(z)]
    y, s = np.empty(QSHAPE, np.float32), np.empty(SSHAPE, np.float32)
    ctx = KernelContext(np, {"mask": 3, "scale_q": 4, "scale_k": 5, "fill": 6}, 1, op=FUSED_ATTENTION_OP)
    call = prepare_call(ctx, FUSED_DOMAIN, inputs, [y, s], [None] * 7)
    assert call is not None
    call()  # warm: first-call caches are not the kernel's temporaries
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        call()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    specs_in = [("float32", x.shape) for x in inputs]
    bound = temp_bytes(FUSED_ATTENTION_OP, specs_in, [("float32", QSHAPE), ("float32", SSHAPE)], ctx.attrs)
    assert peak <= bound and bound < s.nbytes + (64 << 10)  # far below one more scores-sized buffer


def test_kernel_refuses_a_bad_node():
    ctx = KernelContext(np, {"mask": 9}, 1, op=FUSED_ATTENTION_OP)
    a, k = np.zeros(QSHAPE, np.float32), np.zeros(KSHAPE, np.float32)
    with pytest.raises(ValueError, match="mask=9"):
        get_kernel(FUSED_ATTENTION_OP, FUSED_DOMAIN)(ctx, [a, k, a], [a, np.zeros(SSHAPE, np.float32)])


def _fixture_plan(name: str, **opts):
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "models"))
    import fixtures
    from turnip.units import Budget

    from turnipc.importer import import_model
    from turnipc.planner import PlanOptions, build_plan
    from turnipc.verify import verify_plan

    fx = fixtures.get(name)
    graph = import_model(fx.path, fx.dims or {}, None)
    plan = build_plan(graph, PlanOptions(Budget(fraction=opts.pop("fraction", 1.0)), fuse=True, **opts))
    verify_plan(plan)
    return fx, plan


def _matches_onnxruntime(tmp_path, fx, plan) -> bool:
    from plan_runner import plan_matches_onnxruntime

    return plan_matches_onnxruntime(tmp_path, fx, plan)


@pytest.mark.parametrize("name", ["gpt2_dynamo18", "llama_legacy17", "bert_dynamo18"])
def test_fixture_attention_is_fused_once_per_layer_and_matches_onnxruntime(tmp_path, name):
    fx, plan = _fixture_plan(name)
    att = [n for n in plan.nodes if n.op == FUSED_ATTENTION_OP]
    assert len(att) == 6  # one per layer
    assert all(n.domain == FUSED_DOMAIN and len(n.outputs) == 2 for n in att)
    assert _matches_onnxruntime(tmp_path, fx, plan)


def test_tiled_fused_attention_splits_into_row_blocks_and_matches_onnxruntime(tmp_path):
    """A task limit below one attention's working set cuts it (scores included) into blocks; outputs stay exact."""
    fx, plan = _fixture_plan("gpt2_dynamo18", max_task_bytes=16 << 10)
    att = [n for n in plan.nodes if n.op == FUSED_ATTENTION_OP]
    assert len(att) > 6  # split
    for n in att:  # every block's working set (inputs, result, scores) within the limit the planner used
        seen = {x.tensor: plan.tensors[x.tensor].nbytes for x in list(n.inputs) + list(n.outputs) if x is not None}
        assert sum(seen.values()) <= 16 << 10
    assert _matches_onnxruntime(tmp_path, fx, plan)


def test_the_planner_budgets_the_scores_as_part_of_the_fused_tasks_working_set():
    """The working set the residency and the partition pass bound is inputs + result + scores (each aligned)."""
    from turnipc.partition import task_working_set
    from turnipc.residency import aligned, task_working_sets

    f = fuse_attention(sdpa_graph())
    t = f.tasks[0]
    want = sum(aligned(f.values[v].nbytes) for v in ("q", "kt", "v", "mask", "c", "z", "y", "s"))
    assert task_working_set(f, t) == want
    assert task_working_sets(f, [0], [0], 1) == [want]


def test_plan_places_the_scores_in_the_arena_live_only_during_the_fused_node():
    fx, plan = _fixture_plan("gpt2_dynamo18")
    node = next(n for n in plan.nodes if n.op == FUSED_ATTENTION_OP)
    scores = node.outputs[1]
    t = plan.tensors[scores.tensor]
    assert plan.memories[scores.mem].kind == "gpu" and t.kind == "activation"
    assert t.shape == (2, 4, 16, 16) and t.dtype == "float32"
    readers = [n for n in plan.nodes if any(x is not None and x.tensor == scores.tensor for x in n.inputs)]
    assert readers == []  # workspace: written and read inside the node only


@pytest.mark.parametrize("flag, fused", [((), True), (("--fuse",), True), (("--no-fuse",), False)])
def test_turnipc_plan_fuses_by_default_and_no_fuse_turns_it_off(tmp_path, flag, fused):
    from click.testing import CliRunner
    from turnip.plan import FUSED_OP, read_plan

    from turnipc.cli import main

    model = os.path.join(os.path.dirname(__file__), "models", "demo_mlp.onnx")
    out = str(tmp_path / "m.plan")
    r = CliRunner().invoke(main, ["plan", model, "--gpu-mem", "100%", "--dim", "batch=8", "-o", out, "-q", *flag])
    assert r.exit_code == 0, r.output
    plan = read_plan(out)
    assert any(n.op == FUSED_OP for n in plan.nodes) is fused  # Add + Relu chains
    assert plan.options.get("fuse", False) is fused
