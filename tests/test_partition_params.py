"""Op parameters fed from initializers (TaskGraph.small_ints), as dynamo exports write them.

torch.onnx's dynamo exporter gives ReduceMean its ``axes`` and Pad its
``pads`` as initializers, not Constant nodes. The partition pass read only
folded constants, so every RMSNorm's ReduceMean of a dynamo LLaMA stayed one
whole task at any sequence length. These tests build such graphs by hand and
assert that the importer keeps the small integer initializers' values, that
the split rules read them, and that the tiled plan equals onnxruntime.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper
from test_partition_conv import _check_runs, _save

from turnipc.importer import import_model
from turnipc.importer.weights import SMALL_INT_MAX
from turnipc.partition import partition_graph, split_rule
from turnipc.planner import PlanOptions, build_plan
from turnipc.units import Budget

FLOAT = TensorProto.FLOAT


def _rms_mean(tmp_path):
    """x (64x32) -> Mul(x, x) -> ReduceMean(axes=[-1] from an initializer, opset 18) -> y (64x1)."""
    inits = [numpy_helper.from_array(np.array([-1], np.int64), "axes"),
             numpy_helper.from_array(np.arange(SMALL_INT_MAX + 1, dtype=np.int64), "big_ints")]
    nodes = [helper.make_node("Mul", ["x", "x"], ["sq"], name="sq"),
             helper.make_node("ReduceMean", ["sq", "axes"], ["y"], name="mean", keepdims=1),
             helper.make_node("Identity", ["big_ints"], ["ids"], name="ids")]
    outs = [helper.make_tensor_value_info("y", FLOAT, None), helper.make_tensor_value_info("ids", TensorProto.INT64, None)]
    return _save(tmp_path, nodes, [helper.make_tensor_value_info("x", FLOAT, [64, 32])], outs, inits, opset=18)


def test_small_int_initializers_are_kept_as_values(tmp_path):
    g = import_model(_rms_mean(tmp_path))
    assert g.small_ints == {"axes": (-1,)}  # big_ints has SMALL_INT_MAX + 1 elements: not a parameter
    assert g.values["axes"].kind == "weight"  # still loaded by the runtime like any initializer


def test_reduce_mean_with_initializer_axes_is_cut_along_rows(tmp_path):
    g = import_model(_rms_mean(tmp_path))
    mean = next(t for t in g.tasks if t.op_type == "ReduceMean")
    assert split_rule(g, mean, 0) == ([0, None], [0])
    assert split_rule(g, mean, 1) is None  # the reduced axis
    tg, rep = partition_graph(g, 4096)  # the whole ReduceMean reads 8 KiB
    assert rep.tiled["mean"] == len([t for t in tg.tasks if t.op_type == "ReduceMean"]) >= 2


def test_tiled_reduce_mean_matches_onnxruntime(tmp_path):
    path = _rms_mean(tmp_path)
    plan = build_plan(import_model(path), PlanOptions(Budget(fraction=1.0), max_task_bytes=4096))
    assert plan.stats.tiling["tiled"]["mean"] >= 2
    _check_runs(path, plan, {"x": np.random.default_rng(5).standard_normal((64, 32)).astype(np.float32)})
