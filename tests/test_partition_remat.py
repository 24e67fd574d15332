"""Generated tensors (a causal mask built from positions) are recomputed in their reader's blocks.

Hand-built attention graphs whose mask is ``Range -> Unsqueeze -> Greater ->
Where``: the partition pass must give every mask block the query rows of the
scores block that reads it (no Slice / Concat re-cut, nothing of the mask
shared between two readers), the order must run each mask block right before
its reader, and the plan must match onnxruntime.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from turnip.check import compare, reference_outputs
from turnip.run import run_plan

from turnipc.importer import import_model
from turnipc.order import memory_aware_order
from turnipc.partition import partition_graph
from turnipc.planner import PlanOptions, build_plan
from turnipc.units import Budget
from turnipc.verify import verify_plan

FLOAT = TensorProto.FLOAT
S, H, D = 1024, 1, 4  # a mask above the folding limit (1 MiB): it stays tasks


def _attention(tmp_path, layers=1):
    """q[1,H,S,D] @ kt[1,H,D,S] + causal mask -> Softmax -> @ v, ``layers`` times reading one mask."""
    c = [numpy_helper.from_array(np.array(x, dt), n) for n, x, dt in (
        ("start", 0, np.int64), ("limit", S, np.int64), ("delta", 1, np.int64), ("axis1", [1], np.int64),
        ("neg", -1e4, np.float32), ("zero", 0, np.float32))]
    nodes = [
        helper.make_node("Range", ["start", "limit", "delta"], ["pos"], name="range"),
        helper.make_node("Unsqueeze", ["pos", "axis1"], ["pos_rows"], name="unsqueeze"),
        helper.make_node("Greater", ["pos", "pos_rows"], ["future"], name="greater"),
        helper.make_node("Where", ["future", "neg", "zero"], ["mask"], name="where"),
    ]
    x = "q"
    for i in range(layers):
        nodes += [
            helper.make_node("MatMul", [x, "kt"], [f"s{i}"], name=f"qk{i}"),
            helper.make_node("Add", [f"s{i}", "mask"], [f"sm{i}"], name=f"mask{i}"),
            helper.make_node("Softmax", [f"sm{i}"], [f"p{i}"], name=f"softmax{i}", axis=-1),
            helper.make_node("MatMul", [f"p{i}", "v"], [f"a{i}"], name=f"pv{i}"),
        ]
        x = f"a{i}"
    inputs = [helper.make_tensor_value_info(n, FLOAT, s) for n, s in (("q", [1, H, S, D]), ("kt", [1, H, D, S]), ("v", [1, H, S, D]))]
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info(x, FLOAT, [1, H, S, D])], initializer=c)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = str(tmp_path / f"attn{layers}.onnx")
    onnx.save(model, path)
    return path


def _feeds(g):
    rng = np.random.default_rng(0)
    return {n: rng.standard_normal(g.values[n].shape).astype(np.float32) for n in ("q", "kt", "v")}


def test_mask_blocks_take_the_query_rows_of_their_reader(tmp_path):
    # scores are S x S fp32 = 4 MiB; at 512 KiB per task the chain runs on query-row blocks
    g = import_model(_attention(tmp_path))
    tg, rep = partition_graph(g, 1 << 19)
    adds = [t for t in tg.tasks if t.name.startswith("mask0#")]
    wheres = [t for t in tg.tasks if t.name.startswith("where#")]
    greaters = [t for t in tg.tasks if t.name.startswith("greater#")]
    n = len(adds)
    assert n > 1 and len(wheres) == len(greaters) == n
    assert rep.recomputed == {"greater": 1, "where": 1}
    for add, where in zip(adds, wheres, strict=True):
        scores, mask = (tg.values[i] for i in add.inputs)
        assert scores.shape[2] == tg.values[where.outputs[0]].shape[0]  # the same query rows
        assert mask.storage == where.outputs[0]  # read directly: no re-cut between them
    assert not any(t.op_type == "Concat" and "mask" in t.name for t in tg.tasks)
    assert not any(t.op_type == "Slice" and ("mask" in t.name or "future" in t.name) for t in tg.tasks)
    assert "mask" not in tg.values and "future" not in tg.values  # never whole


def test_each_reader_gets_its_own_mask_blocks_and_the_order_runs_them_just_before(tmp_path):
    g = import_model(_attention(tmp_path, layers=2))
    tg, rep = partition_graph(g, 1 << 19)
    assert rep.recomputed == {"greater": 2, "where": 2}
    order = memory_aware_order(tg)
    pos = {tg.tasks[i].name: k for k, i in enumerate(order)}
    for t in tg.tasks:
        if t.name.startswith("where#"):
            reader = next(u for u in tg.tasks if t.outputs[0] in {tg.values[i].storage for i in u.inputs if i})
            assert pos[reader.name] == pos[t.name] + 1, (t.name, reader.name)  # on demand, right before
            greater = next(u for u in tg.tasks if u.outputs[0] == t.inputs[0])
            assert pos[greater.name] == pos[t.name] - 1


def test_tiled_attention_with_generated_mask_matches_onnxruntime(tmp_path):
    path = _attention(tmp_path, layers=2)
    g = import_model(path)
    plan = build_plan(g, PlanOptions(Budget(fraction=1.0), max_task_bytes=1 << 19))
    verify_plan(plan)
    assert plan.stats.tiling["recomputed"] == {"greater": 2, "where": 2}
    feeds = _feeds(g)
    r = run_plan(plan, feeds, backend="numpy")
    assert all(c.ok for c in compare(r.outputs, reference_outputs(path, feeds)))
    for seed in range(3):
        r2 = run_plan(plan, feeds, backend="numpy", order="random", seed=seed)
        assert all(np.array_equal(r.outputs[k], r2.outputs[k]) for k in r.outputs)
