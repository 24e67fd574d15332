"""The opset-23 Attention op split into blocks of batch, heads or query rows (turnipc/partition_attention.py).

Each model is one Attention node built with onnx.helper (plus a MatMul after
it, so the blocks flow on), planned at a budget below one copy of its whole
B x H x Sq x Skv scores, verified, run on the NumPy backend and compared with
onnxruntime (which runs opset-23 Attention), and run again in random orders
with bit-identical outputs.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from turnip.check import compare, reference_outputs
from turnip.run import run_plan

from turnipc.importer import import_model
from turnipc.partition import largest_task, partition_graph, split_rule
from turnipc.partition_attention import SCORE_TEMPS, scratch_bytes
from turnipc.planner import PlanOptions, build_plan
from turnipc.reserve import LIBRARY_WORKSPACE_BYTES
from turnipc.units import Budget
from turnipc.verify import verify_plan

FLOAT = TensorProto.FLOAT


def _model(tmp_path, *, b=1, hq=4, hkv=4, sq=256, skv=256, d=16, three_d=False, mask=None, causal=0,
           past=0, presents=False, qk_out=False):
    """Q, K, V graph inputs -> Attention -> MatMul with a weight -> y (and the optional outputs as graph outputs)."""
    if three_d:
        shapes = {"q": [b, sq, hq * d], "k": [b, skv, hkv * d], "v": [b, skv, hkv * d]}
    else:
        shapes = {"q": [b, hq, sq, d], "k": [b, hkv, skv, d], "v": [b, hkv, skv, d]}
    inputs = [helper.make_tensor_value_info(n, FLOAT, s) for n, s in shapes.items()]
    att_in = ["q", "k", "v"]
    inits = []
    if mask is not None:
        dtype, mshape = mask
        inputs.append(helper.make_tensor_value_info("mask", dtype, mshape))
        att_in.append("mask")
    if past:
        att_in += [""] * (4 - len(att_in))
        for n in ("past_k", "past_v"):
            inputs.append(helper.make_tensor_value_info(n, FLOAT, [b, hkv, past, d]))
        att_in += ["past_k", "past_v"]
    att_out = ["att"]
    outputs = []
    total = skv + past
    if presents:
        att_out += ["present_k", "present_v"]
        outputs += [helper.make_tensor_value_info(n, FLOAT, [b, hkv, total, d]) for n in ("present_k", "present_v")]
    if qk_out:
        att_out += [""] * (3 - len(att_out)) + ["qk"]
        outputs.append(helper.make_tensor_value_info("qk", FLOAT, [b, hq, sq, total]))
    attrs = {"is_causal": causal}
    if three_d:
        attrs.update(q_num_heads=hq, kv_num_heads=hkv)
    nodes = [helper.make_node("Attention", att_in, att_out, name="attention", **attrs)]
    width = hq * d if three_d else d
    inits.append(numpy_helper.from_array(np.random.default_rng(7).standard_normal((width, 8)).astype(np.float32) * 0.2, "W"))
    nodes.append(helper.make_node("MatMul", ["att", "W"], ["y"], name="proj"))
    yshape = [b, sq, 8] if three_d else [b, hq, sq, 8]
    outputs.insert(0, helper.make_tensor_value_info("y", FLOAT, yshape))
    graph = helper.make_graph(nodes, "attention", inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)])
    model.ir_version = 10
    onnx.checker.check_model(model)
    path = str(tmp_path / "attention.onnx")
    onnx.save(model, path)
    return path


def _feeds(g):
    rng = np.random.default_rng(0)
    out = {}
    for name in g.inputs:
        v = g.values[name]
        if v.dtype == "bool":
            m = rng.random(v.shape) < 0.8
            m[..., 0] = True  # no fully masked row
            out[name] = m
        else:
            out[name] = rng.standard_normal(v.shape).astype(np.float32)
    return out


def _reference(path, feeds, evaluator):
    """onnxruntime's outputs; onnx's reference evaluator where onnxruntime does not run the case
    (its CPU Attention refuses past key / value without present outputs)."""
    if evaluator == "ort":
        return reference_outputs(path, feeds)
    from onnx.reference import ReferenceEvaluator

    model = onnx.load(path)
    names = [o.name for o in model.graph.output]
    return dict(zip(names, ReferenceEvaluator(model).run(None, feeds), strict=True))


def _plan_check(path, budget, orders=3, evaluator="ort"):
    g = import_model(path)
    plan = build_plan(g, PlanOptions(Budget(bytes=budget)))
    verify_plan(plan)
    assert plan.stats.peak_bytes <= budget
    feeds = _feeds(g)
    r = run_plan(plan, feeds, backend="numpy")
    cmp = compare(r.outputs, _reference(path, feeds, evaluator))
    assert cmp and all(c.ok for c in cmp), [str(c) for c in cmp]
    for seed in range(orders):
        again = run_plan(plan, feeds, backend="numpy", order="random", seed=seed)
        assert all(np.array_equal(v, again.outputs[k]) for k, v in r.outputs.items())
    blocks = [n for n in plan.nodes if n.op == "Attention"]
    return g, plan, blocks


def _scores(g):
    (t,) = [t for t in g.tasks if t.op_type == "Attention"]
    return scratch_bytes(g, t) // SCORE_TEMPS


def _block_shapes(plan, blocks):
    return sorted({plan.tensors[n.inputs[0].tensor].shape for n in blocks})


def test_scratch_counts_the_scores_in_the_working_set(tmp_path):
    g = import_model(_model(tmp_path, b=2, hq=4, sq=64, skv=32, d=8))
    (t,) = [t for t in g.tasks if t.op_type == "Attention"]
    assert scratch_bytes(g, t) == SCORE_TEMPS * 2 * 4 * 64 * 32 * 4
    assert largest_task(g)[0] >= scratch_bytes(g, t)


def test_split_rule_axes(tmp_path):
    g = import_model(_model(tmp_path, mask=(TensorProto.BOOL, [256, 256])))
    (t,) = [t for t in g.tasks if t.op_type == "Attention"]
    assert split_rule(g, t, 0) == ([0, 0, 0, None], [0])  # batch; the 2-D mask has no batch axis
    assert split_rule(g, t, 1) == ([1, 1, 1, None], [1])  # heads (MHA)
    assert split_rule(g, t, 2) == ([2, None, None, 0], [2])  # query rows: the mask's row axis
    assert split_rule(g, t, 3) is None  # the head dimension is reduced by Q K^T


def test_split_rule_refusals(tmp_path):
    causal = import_model(_model(tmp_path, causal=1, hq=4, hkv=2))
    (t,) = [t for t in causal.tasks if t.op_type == "Attention"]
    assert split_rule(causal, t, 2) is None  # causal: rows are relative to the first query row
    assert split_rule(causal, t, 1) is None  # grouped heads: even blocks need not align with the groups
    assert split_rule(causal, t, 0) == ([0, 0, 0], [0])
    mqa = import_model(_model(tmp_path, hkv=1))
    (t,) = [t for t in mqa.tasks if t.op_type == "Attention"]
    assert split_rule(mqa, t, 1) == ([1, None, None], [1])  # MQA: the one KV head is read whole
    pres = import_model(_model(tmp_path, past=8, presents=True))
    (t,) = [t for t in pres.tasks if t.op_type == "Attention"]
    assert split_rule(pres, t, 2) is None  # every row block would write all of present key / value
    assert split_rule(pres, t, 1) == ([1, 1, 1, None, 1, 1], [1, 1, 1])
    three = import_model(_model(tmp_path, three_d=True, hq=4, hkv=2))
    (t,) = [t for t in three.tasks if t.op_type == "Attention"]
    assert split_rule(three, t, 1) == ([1, None, None], [1])  # 3-D: axis 1 is the query rows
    assert split_rule(three, t, 2) is None  # heads live in an attribute every block would share


CASES = {
    # name: (model keywords, expected axis of Q cut)
    "rows, boolean mask": (dict(mask=(TensorProto.BOOL, [256, 256])), 2),
    "rows, additive 4-D mask, qk output": (dict(mask=(FLOAT, [1, 1, 256, 256]), qk_out=True), 2),
    "rows, 3-D inputs, grouped heads": (dict(three_d=True, hq=4, hkv=2, mask=(TensorProto.BOOL, [256, 256])), 1),
    "rows, past key / value (onnx reference evaluator)": (dict(past=64), 2),
    "heads, causal": (dict(causal=1, hq=16, hkv=16, sq=128, skv=128), 1),
    "heads, causal, one KV head": (dict(causal=1, hq=16, hkv=1, sq=128, skv=128), 1),
    "heads, presents": (dict(hq=16, hkv=16, sq=128, skv=128, past=16, presents=True), 1),
    "batch, causal, grouped heads": (dict(b=8, causal=1, hq=4, hkv=2, sq=128, skv=128), 0),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_attention_plans_below_its_scores_and_matches_onnxruntime(tmp_path, case):
    kw, axis = CASES[case]
    path = _model(tmp_path, **kw)
    g = import_model(path)
    scores = _scores(g)
    budget = scores // 2  # below one copy of the op's whole scores
    g, plan, blocks = _plan_check(path, budget, evaluator="onnx" if "onnx reference" in case else "ort")
    assert len(blocks) > 1
    q = g.values["q"].shape
    shapes = _block_shapes(plan, blocks)
    assert all(s[axis] < q[axis] for s in shapes), shapes
    assert all(s[j] == q[j] for s in shapes for j in range(len(q)) if j != axis), shapes
    assert sum(plan.tensors[n.inputs[0].tensor].shape[axis] for n in blocks) == q[axis]
    assert (plan.stats.tiling or {}).get("tiled", {}).get("attention") == len(blocks)
    limit = plan.stats.tiling["max_task_bytes"]
    tg = partition_graph(g, limit)[0]
    per_block = [scratch_bytes(tg, t) for t in tg.tasks if t.op_type == "Attention"]
    assert sum(per_block) == SCORE_TEMPS * scores  # the blocks' scores partition the op's
    block_scratch = max(per_block)
    assert block_scratch <= budget < scores and limit < scores
    assert plan.stats.reserve_bytes - LIBRARY_WORKSPACE_BYTES >= block_scratch  # kept free beside the arena


def test_untiled_when_the_scores_fit(tmp_path):
    path = _model(tmp_path, sq=32, skv=32, mask=(TensorProto.BOOL, [32, 32]))
    g = import_model(path)
    tg, rep = partition_graph(g, largest_task(g)[0])
    assert tg is g and rep.tiled == {}
