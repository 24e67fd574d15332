"""Pad cut along the axes it does not pad (turnipc/partition.py's _pad_split_rule).

transformers' MobileNetV2 pads explicitly before its depthwise convs (TF
"same" padding): a whole-tensor Pad was the largest task of the model, so at
224x224 nothing below 52% of its peak planned. A Pad that pads only rows and
columns is exactly the whole Pad when cut along channels (or batch), in every
mode; a padded axis is never cut. These tests assert the rule on every Pad
form (opset 10 attribute, opset 13 input, opset 18 ``axes``), then tile a Pad
below its own size and compare the plan's result with onnxruntime.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper
from test_partition_conv import _check_runs, _save

from turnipc.importer import import_model
from turnipc.partition import partition_graph, split_rule
from turnipc.planner import PlanOptions, build_plan
from turnipc.units import Budget

FLOAT = TensorProto.FLOAT
SHAPE = [1, 16, 8, 8]


def _pad_model(tmp_path, opset, mode="constant", axes=None, pads=(0, 0, 1, 1, 0, 0, 1, 1)):
    """x -> Pad -> Relu -> y, the pads as an attribute before opset 11, else a Constant node's int64 tensor.

    (torch.onnx's exports feed Pad from Constant nodes; the importer folds them into the graph's constants.)
    """
    extra: dict = {}
    consts = []
    if opset < 11:
        extra["pads"] = list(pads)
        ins = ["x"]
    else:
        consts.append(helper.make_node("Constant", [], ["pads"], name="c_pads",
                                       value=numpy_helper.from_array(np.array(pads, np.int64))))
        ins = ["x", "pads"]
        if axes is not None:
            consts.append(helper.make_node("Constant", [], ["axes"], name="c_axes",
                                           value=numpy_helper.from_array(np.array(axes, np.int64))))
            ins += ["", "axes"]
    nodes = consts + [helper.make_node("Pad", ins, ["p"], name="pad", mode=mode, **extra),
                      helper.make_node("Relu", ["p"], ["y"], name="relu")]
    return _save(tmp_path, nodes, [helper.make_tensor_value_info("x", FLOAT, SHAPE)],
                 [helper.make_tensor_value_info("y", FLOAT, None)], [], opset=opset)


@pytest.mark.parametrize("opset,axes,pads", [
    (10, None, (0, 0, 1, 1, 0, 0, 1, 1)),
    (13, None, (0, 0, 1, 1, 0, 0, 1, 1)),
    (18, [2, 3], (1, 1, 1, 1)),
    (18, [-2, -1], (0, 2, 1, 0)),
])
def test_pad_cuts_only_unpadded_axes(tmp_path, opset, axes, pads):
    g = import_model(_pad_model(tmp_path, opset, axes=axes, pads=pads))
    pad = next(t for t in g.tasks if t.op_type == "Pad")
    rest = [None] * (len(pad.inputs) - 1)
    assert split_rule(g, pad, 0) == ([0] + rest, [0])
    assert split_rule(g, pad, 1) == ([1] + rest, [1])
    assert split_rule(g, pad, 3) is None  # padded (every form above pads the last axis)


def test_pad_on_channels_is_never_cut_there(tmp_path):
    g = import_model(_pad_model(tmp_path, 13, pads=(0, 1, 0, 0, 0, 0, 0, 0)))
    pad = next(t for t in g.tasks if t.op_type == "Pad")
    assert split_rule(g, pad, 1) is None
    assert split_rule(g, pad, 2) == ([2, None], [2])


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge"])
def test_tiled_pad_matches_onnxruntime(tmp_path, mode):
    # x 16x8x8 (4 KiB) -> p 16x10x10 (6.25 KiB): the whole Pad needs 10.25 KiB; at 3 KiB per task it is
    # cut into channel blocks (rows are padded, so never cut there), each reading its own x channels.
    path = _pad_model(tmp_path, 13, mode=mode)
    g = import_model(path)
    tg, rep = partition_graph(g, 3072)
    pads = [t for t in tg.tasks if t.op_type == "Pad"]
    assert len(pads) == rep.tiled["pad"] >= 4
    for t in pads:
        x, p = tg.values[t.inputs[0]], tg.values[t.outputs[0]]
        assert x.shape[1] == p.shape[1] < 16 and (x.shape[2], p.shape[2]) == (8, 10)
    assert sum(tg.values[t.outputs[0]].shape[1] for t in pads) == 16
    plan = build_plan(import_model(path), PlanOptions(Budget(fraction=1.0), max_task_bytes=3072))
    feeds = {"x": np.random.default_rng(3).standard_normal(SHAPE).astype(np.float32)}
    _check_runs(path, plan, feeds)
