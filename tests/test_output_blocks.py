"""Tiled graph outputs returned in blocks (turnipc.output_blocks, turnip.outblocks).

A graph output whose assemble task would exceed the task-size limit is never
assembled on the GPU: its blocks are kept to the end of the run (offloaded to
host memory when the budget needs it), the plan lists every block's final
location, and the runtime assembles the output on the host.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from onnx import helper, numpy_helper
from test_partition import FLOAT, _mlp, _save, _w
from turnip.check import compare, reference_outputs
from turnip.outblocks import graph_outputs
from turnip.plan import MemoryKind
from turnip.run import run_plan

from turnipc.importer import import_model
from turnipc.partition import even_bounds, partition_graph
from turnipc.planner import PlanOptions, build_plan
from turnipc.units import Budget
from turnipc.verify import VerifyError, verify_plan


def _wide(tmp_path, reshape: bool = False):
    """x[64,8] @ W[8,64] -> y[64,64] (16 KiB, 8x the input); with ``reshape`` y is viewed as [64,4,16]."""
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h" if reshape else "y"], name="mm")]
    inits = [_w("W", [8, 64], 7)]
    out_shape = [64, 64]
    if reshape:
        nodes.append(helper.make_node("Reshape", ["h", "shape"], ["y"], name="reshape"))
        inits.append(numpy_helper.from_array(np.array([64, 4, 16], np.int64), "shape"))
        out_shape = [64, 4, 16]
    return _save(tmp_path, nodes, [helper.make_tensor_value_info("x", FLOAT, [64, 8])],
                 [helper.make_tensor_value_info("y", FLOAT, out_shape)], inits)


@pytest.mark.parametrize("reshape", [False, True])
def test_big_tiled_output_stays_in_blocks(tmp_path, reshape):
    # at 8 KiB per task a row block is x block + W (2 KiB) + y block; y whole plus its blocks (32 KiB) is no task
    g = import_model(_wide(tmp_path, reshape))
    tg, rep = partition_graph(g, 8192)
    n = rep.tiled["mm"]
    assert n == 4 and rep.assembles == []
    assert [t.op_type for t in tg.tasks] == ["MatMul"] * n
    assert len(tg.outputs) == n
    assert [tg.blocks[b] for b in tg.outputs] == [("y", 0, a, z) for a, z in even_bounds(64, n)]
    for b in tg.outputs:
        assert tg.values[b].kind == "output" and tg.values[tg.values[b].storage].kind == "output"
        assert tg.values[b].shape == ((16, 4, 16) if reshape else (16, 64))
    assert tg.values["y"].kind == "output"  # the whole output is named (the blocks point at it) but never written


def test_small_tiled_output_is_assembled_on_the_gpu(tmp_path):
    # test_partition's MLP at 6 KiB per task: y (512 B) plus its row blocks fits a task: one Concat, as before
    tg, rep = partition_graph(import_model(_mlp(tmp_path)), 6144)
    assert rep.tiled["mm2"] > 1 and rep.assembles == ["y"] and tg.outputs == ["y"] and tg.values["y"].kind == "output"
    assert [t.op_type for t in tg.tasks][-1] == "Concat" and not [b for b in tg.blocks if tg.blocks[b][0] == "y"]


@pytest.mark.parametrize("reshape", [False, True])
def test_output_blocks_plan_below_the_output_and_run_exactly(tmp_path, reshape):
    path = _wide(tmp_path, reshape)
    g = import_model(path)
    budget = 12 * 1024  # below the 16 KiB output itself
    plan = build_plan(g, PlanOptions(Budget(bytes=budget)))
    verify_plan(plan)
    assert plan.stats.peak_bytes <= budget
    (out,) = graph_outputs(plan)
    assert plan.tensors[out.tensor].name == "y" and out.in_blocks and len(out.pieces) == len(plan.outputs) > 1
    host = {m.id for m in plan.memories if m.kind == MemoryKind.HOST}
    assert any(p.loc.mem in host for p in out.pieces)  # some blocks were offloaded: the output never fits the GPU
    assert not [nd for nd in plan.nodes if nd.kind == "compute" and nd.op == "Concat"]
    feeds = {"x": np.random.default_rng(0).standard_normal((64, 8)).astype(np.float32)}
    ref = reference_outputs(path, feeds)
    r = run_plan(plan, feeds, backend="numpy")
    assert list(r.outputs) == ["y"] and r.outputs["y"].shape == ref["y"].shape
    assert all(c.ok for c in compare(r.outputs, ref))
    whole = build_plan(g, PlanOptions(Budget(fraction=1.0)))  # untiled: one MatMul, the same bits per row
    assert np.array_equal(r.outputs["y"], run_plan(whole, feeds, backend="numpy").outputs["y"])
    for seed in range(5):
        again = run_plan(plan, feeds, backend="numpy", order="random", seed=seed)
        assert np.array_equal(again.outputs["y"], r.outputs["y"])


def test_verify_refuses_output_blocks_that_do_not_tile_the_output(tmp_path):
    plan = build_plan(import_model(_wide(tmp_path)), PlanOptions(Budget(bytes=12 * 1024)))
    (out,) = graph_outputs(plan)
    t = out.pieces[1].loc.tensor
    base, axis, start, stop = plan.tensors[t].block
    plan.tensors[t] = dataclasses.replace(plan.tensors[t], block=(base, axis, start + 1, stop))
    at = out.pieces[0].stop
    with pytest.raises(VerifyError, match=f"graph output 'y': block .* does not continue its blocks at {at} on axis 0"):
        verify_plan(plan)
    plan.tensors[t] = dataclasses.replace(plan.tensors[t], block=(base, axis, start, stop))
    plan.outputs = plan.outputs[:-1]
    with pytest.raises(VerifyError, match=f"graph output 'y': its blocks cover {out.pieces[-1].start} of 64 on axis 0"):
        verify_plan(plan)
