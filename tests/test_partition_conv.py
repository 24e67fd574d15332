"""CNN split rules (turnipc/partition_conv.py) on small hand-built graphs.

Each test asserts the exact blocks the partition pass makes, then plans the
tiled graph, verifies it, runs it with the NumPy backend against onnxruntime
and checks that random execution orders give bit-identical outputs.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper
from test_partition import _save as save_graph
from turnip.check import compare, reference_outputs
from turnip.run import run_plan

from turnipc.importer import import_model
from turnipc.partition import partition_graph, split_rule
from turnipc.planner import PlanOptions, build_plan
from turnipc.taskgraph import Task, TaskGraph, Value
from turnipc.units import Budget
from turnipc.verify import verify_plan

FLOAT = TensorProto.FLOAT


def _save(tmp_path, nodes, inputs, outputs, inits, opset=13, name="m.onnx"):
    """test_partition's model writer, at opset 13 unless told (the CNN ops' last big revision)."""
    return save_graph(tmp_path, nodes, inputs, outputs, inits, opset=opset, name=name)


def _w(name, shape, seed, scale=1.0):
    return numpy_helper.from_array((scale * np.random.default_rng(seed).standard_normal(shape)).astype(np.float32), name)


def _check_runs(path, plan, feeds, orders=5):
    verify_plan(plan)
    assert plan.stats.peak_bytes <= plan.stats.budget_bytes
    r = run_plan(plan, feeds, backend="numpy")
    assert all(c.ok for c in compare(r.outputs, reference_outputs(path, feeds)))
    for seed in range(orders):
        r2 = run_plan(plan, feeds, backend="numpy", order="random", seed=seed)
        assert all(np.array_equal(r.outputs[k], r2.outputs[k]) for k in r.outputs)


def _v(name, shape):
    return Value(name, "float32", shape, 4 * int(np.prod(shape)), "activation", name)


def test_cnn_split_rules():
    vals = {x.name: x for x in [_v("x", (2, 8, 6, 6)), _v("w", (4, 8, 3, 3)), _v("b", (4,)), _v("y", (2, 4, 4, 4)),
                                 _v("p", (2, 8, 3, 3)), _v("s", (8,)), _v("n", (2, 8, 6, 6)),
                                 _v("c1", (2, 3, 6, 6)), _v("c", (2, 11, 6, 6))]}
    g = TaskGraph("m", "", {"": 13}, vals, [], [], [])
    conv = Task(0, "conv", "Conv", "", {}, ("x", "w", "b"), ("y",), 0, 0)
    assert split_rule(g, conv, 0) == ([0, None, None], [0])
    assert split_rule(g, conv, 1) == ([None, 0, 0], [1])
    assert split_rule(g, conv, 2) == ([2, None, None], [2]) and split_rule(g, conv, 3) == ([3, None, None], [3])
    same = Task(0, "same", "Conv", "", {"auto_pad": "SAME_UPPER"}, ("x", "w", "b"), ("y",), 0, 0)
    assert split_rule(g, same, 2) is None  # pads implied by the whole extent
    assert split_rule(g, Task(0, "gconv", "Conv", "", {"group": 2}, ("x", "w", "b"), ("y",), 0, 0), 1) is None
    pool = Task(0, "pool", "MaxPool", "", {"kernel_shape": [2, 2], "strides": [2, 2]}, ("x",), ("p",), 0, 0)
    assert split_rule(g, pool, 1) == ([1], [1]) and split_rule(g, pool, 2) == ([2], [2])
    gap = Task(0, "gap", "GlobalAveragePool", "", {}, ("x",), ("p",), 0, 0)
    assert split_rule(g, gap, 1) == ([1], [1]) and split_rule(g, gap, 2) is None
    bn = Task(0, "bn", "BatchNormalization", "", {}, ("x", "s", "s", "s", "s"), ("n",), 0, 0)
    assert split_rule(g, bn, 1) == ([1, 0, 0, 0, 0], [1])
    assert split_rule(g, bn, 2) == ([2, None, None, None, None], [2])
    lrn = Task(0, "lrn", "LRN", "", {"size": 3}, ("x",), ("n",), 0, 0)
    assert split_rule(g, lrn, 1) is None and split_rule(g, lrn, 3) == ([3], [3])
    cat = Task(0, "cat", "Concat", "", {"axis": 1}, ("c1", "x"), ("c",), 0, 0)
    assert split_rule(g, cat, 1) is None
    assert split_rule(g, cat, 2) == ([2, 2], [2]) and split_rule(g, cat, 0) == ([0, 0], [0])


def _fc_of_filled_weight(tmp_path, k=64, n=512):
    """x[4,k] -> Gemm(transB) with W = ConstantOfShape([n,k], 0.02) and bias ConstantOfShape([n]) (folded) -> y[4,n]."""
    shape_w = numpy_helper.from_array(np.array([n, k], np.int64), "w_shape")
    shape_b = numpy_helper.from_array(np.array([n], np.int64), "b_shape")
    val = helper.make_tensor("value", FLOAT, [1], [0.02])
    nodes = [
        helper.make_node("ConstantOfShape", ["w_shape"], ["W"], name="fill_w", value=val),
        helper.make_node("ConstantOfShape", ["b_shape"], ["B"], name="fill_b", value=val),
        helper.make_node("Gemm", ["x", "W", "B"], ["y"], name="fc", transB=1),
    ]
    return _save(tmp_path, nodes, [helper.make_tensor_value_info("x", FLOAT, [4, k])],
                 [helper.make_tensor_value_info("y", FLOAT, [4, n])], [shape_w, shape_b], name="fc.onnx")


def test_constant_of_shape_weight_filled_per_block(tmp_path):
    # W is 512 x 64 fp32 = 128 KiB; at 40 KiB per task the Gemm runs on 4 column blocks of 128 rows of W,
    # each reading its own ConstantOfShape fill of [128, 64] (and of the bias [128]); W never exists whole
    path = _fc_of_filled_weight(tmp_path)
    g = import_model(path)
    tg, rep = partition_graph(g, 40 << 10)
    assert rep.tiled["fc"] == 4
    assert rep.recomputed == {"fill_w": 1}  # the bias (2 KiB) is folded at import: a constant cut at plan time
    fills = [t for t in tg.tasks if t.op_type == "ConstantOfShape"]
    assert [tg.values[t.outputs[0]].shape for t in fills] == [(128, 64)] * 4
    assert [tg.constants[t.inputs[0]].tolist() for t in fills] == [[128, 64]] * 4
    gemms = [t for t in tg.tasks if t.op_type == "Gemm"]
    assert [(gm.inputs[1],) for gm in gemms] == [f.outputs for f in fills]
    assert [tg.values[gm.inputs[2]].shape for gm in gemms] == [(128,)] * 4
    assert [tg.values[gm.outputs[0]].shape for gm in gemms] == [(4, 128)] * 4
    assert "W" not in tg.values and "B" not in tg.values
    feeds = {"x": np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)}
    g = import_model(path)
    largest = max(v.nbytes for v in g.values.values())
    plan = build_plan(g, PlanOptions(Budget(bytes=largest // 2)))
    assert plan.stats.tiling["tiled_ops"] >= 1
    _check_runs(path, plan, feeds)


def _fire(tmp_path, c=8, s=16, e=6):
    """A SqueezeNet fire module: x -> squeeze 1x1 -> Relu -> (expand 1x1, expand 3x3) -> Relu -> Concat(axis 1) -> LRN -> BN."""
    nodes = [
        helper.make_node("Conv", ["x", "Ws", "Bs"], ["sq"], name="squeeze"),
        helper.make_node("Relu", ["sq"], ["sqr"], name="relu_s"),
        helper.make_node("Conv", ["sqr", "W1", "B1"], ["e1"], name="expand1"),
        helper.make_node("Conv", ["sqr", "W3", "B3"], ["e3"], name="expand3", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["e1"], ["r1"], name="relu1"),
        helper.make_node("Relu", ["e3"], ["r3"], name="relu3"),
        helper.make_node("Concat", ["r1", "r3"], ["cat"], name="concat", axis=1),
        helper.make_node("LRN", ["cat"], ["lrn"], name="lrn", size=3),
        helper.make_node("BatchNormalization", ["lrn", "g", "bb", "m", "var"], ["y"], name="bn"),
    ]
    inits = [_w("Ws", [e, c, 1, 1], 1, 0.3), _w("Bs", [e], 2, 0.1), _w("W1", [c, e, 1, 1], 3, 0.3), _w("B1", [c], 4, 0.1),
             _w("W3", [c, e, 3, 3], 5, 0.2), _w("B3", [c], 6, 0.1), _w("g", [2 * c], 7, 0.2), _w("bb", [2 * c], 8, 0.1),
             _w("m", [2 * c], 9, 0.1), numpy_helper.from_array(np.linspace(1, 2, 2 * c).astype(np.float32), "var")]
    return _save(tmp_path, nodes, [helper.make_tensor_value_info("x", FLOAT, [1, c, s, s])],
                 [helper.make_tensor_value_info("y", FLOAT, [1, 2 * c, s, s])], inits, name="fire.onnx")


def test_concat_lrn_bn_keep_row_blocks(tmp_path):
    # concat output 1 x 16 x 16 x 16 fp32 = 16 KiB, inputs 8 KiB each: whole it needs 32 KiB. At 12 KiB per task
    # it is cut along rows (axis 2; the channel axis is the concatenated one), and LRN and BN keep those rows
    path = _fire(tmp_path)
    g = import_model(path)
    tg, rep = partition_graph(g, 12 << 10)
    cats = [t for t in tg.tasks if t.name.startswith("concat#")]
    n = rep.tiled["concat"]
    assert n == len(cats) == 3 and rep.tiled["lrn"] == n
    assert [tg.values[t.outputs[0]].shape for t in cats] == [(1, 16, 6, 16), (1, 16, 5, 16), (1, 16, 5, 16)]
    assert [[tg.values[i].shape for i in t.inputs] for t in cats] == [[(1, 8, 6, 16)] * 2, [(1, 8, 5, 16)] * 2,
                                                                      [(1, 8, 5, 16)] * 2]
    lrns = [t for t in tg.tasks if t.name.startswith("lrn#")]
    assert [t.inputs[0] for t in lrns] == [t.outputs[0] for t in cats]  # no re-cut between them
    # BN keeps the row axis (refined: its block also holds the four per-channel parameters, read whole)
    bns = [t for t in tg.tasks if t.name.startswith("bn#")]
    assert rep.tiled["bn"] == len(bns) == 6 and all(t.inputs[1:] == ("g", "bb", "m", "var") for t in bns)
    assert [tg.values[t.outputs[0]].shape for t in bns] == [(1, 16, r, 16) for r in (3, 3, 3, 2, 3, 2)]
    feeds = {"x": np.random.default_rng(0).standard_normal((1, 8, 16, 16)).astype(np.float32)}
    plan = build_plan(import_model(path), PlanOptions(Budget(fraction=1.0), max_task_bytes=12 << 10))
    _check_runs(path, plan, feeds)


def _stem(tmp_path, s=23, opset=13):
    """conv 3x3 stride 2 pad 1 -> Relu -> MaxPool 3x3 stride 2 (ceil_mode from opset 10) -> conv 1x1 -> AveragePool 2x2 pad 1."""
    nodes = [
        helper.make_node("Conv", ["x", "W", "B"], ["c"], name="conv", strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("MaxPool", ["r"], ["p"], name="pool", kernel_shape=[3, 3], strides=[2, 2],
                         **({"ceil_mode": 1} if opset >= 10 else {})),
        helper.make_node("Conv", ["p", "W2"], ["c2"], name="conv1x1"),
        helper.make_node("AveragePool", ["c2"], ["y"], name="avg", kernel_shape=[2, 2], pads=[1, 1, 1, 1]),
    ]
    inits = [_w("W", [8, 4, 3, 3], 1, 0.3), _w("B", [8], 2, 0.1), _w("W2", [8, 8, 1, 1], 3, 0.3)]
    return _save(tmp_path, nodes, [helper.make_tensor_value_info("x", FLOAT, [1, 4, s, s])],
                 [helper.make_tensor_value_info("y", FLOAT, None)], inits, opset=opset, name="stem.onnx")


def test_window_rows_read_their_halo():
    from turnipc.partition_conv import Window, halo_bounds

    w = Window(size=23, span=3, stride=2, pad_begin=1, dim=0, dims=2)  # conv 3x3 stride 2 pad 1: 12 output rows
    assert halo_bounds(w, 0, 4) == (0, 8, 1, 0)  # rows -1..7: the top pad, then input rows 0..7
    assert halo_bounds(w, 4, 8) == (7, 16, 0, 0)  # row 7 is read by two blocks (the halo)
    assert halo_bounds(w, 8, 12) == (15, 23, 0, 1)  # rows 15..23: the bottom pad after the last input row


@pytest.mark.parametrize("opset", [9, 13])
def test_conv_and_pools_split_rows_with_halos(tmp_path, opset):
    # x 1 x 4 x 23 x 23; at 2 KiB per task no channel split fits (a conv reads its whole input for
    # output-channel blocks), so conv, pool and avg run on row blocks, each reading its rows plus a halo
    # (cut by Slice tasks: with bounds as attributes at opset 9, as inputs from opset 10). No row split of
    # conv fits either (each reads the whole filter: 2.75 KiB at best), so it is cut rows x channels
    # (turnipc/partition_conv.py's Grid: 12 rows x 3 channel blocks, 2.25 KiB), its rows as a row split's
    path = _stem(tmp_path, opset=opset)
    g = import_model(path)
    tg, rep = partition_graph(g, 2048)
    convs = [t for t in tg.tasks if t.name.startswith("conv#")]
    assert rep.tiled["conv"] == len(convs) == 36 and rep.grids == {"conv": [12, 3]}
    rows = [tg.values[t.outputs[0]].shape[2] for t in convs[::3]]
    assert sum(rows) == 12
    assert all(t.inputs[0] == r.inputs[0] for i, r in enumerate(convs[::3]) for t in convs[3 * i:3 * i + 3])
    lo = 0
    for t, n in zip(convs[::3], rows, strict=True):  # each block's input rows and pads are those of its output rows
        x = tg.values[t.inputs[0]]
        start, end = lo * 2 - 1, (lo + n - 1) * 2 - 1 + 3
        assert x.shape[2] == min(23, end) - max(0, start)
        assert t.attrs["pads"] == [max(0, -start), 1, max(0, end - 23), 1]
        lo += n
    slices = [t for t in tg.tasks if t.op_type == "Slice"]
    assert slices and all((len(t.inputs) == 1 and set(t.attrs) == {"starts", "ends", "axes"}) if opset < 10 else len(t.inputs) == 4
                          for t in slices)
    pools = [t for t in tg.tasks if t.name.startswith("pool#")]
    assert len(pools) > 1 and all(t.attrs.get("ceil_mode", 0) == 0 for t in pools)
    side = 6 if opset >= 10 else 5  # ceil_mode (opset 10+) keeps the last partial window
    assert sum(int(np.prod(tg.values[t.outputs[0]].shape)) for t in pools) == 8 * side * side  # blocks cover the whole
    feeds = {"x": np.random.default_rng(0).standard_normal((1, 4, 23, 23)).astype(np.float32)}
    plan = build_plan(import_model(path), PlanOptions(Budget(fraction=1.0), max_task_bytes=2048))
    assert plan.stats.tiling["tiled_ops"] >= 4
    _check_runs(path, plan, feeds)


def test_light_alexnet_plans_at_10_percent_of_its_no_offload_peak():
    # its fc6 weight is ConstantOfShape([4096, 9216]) (151 MB, the whole no-offload peak): filled per column block
    from models import fixtures

    fx = next((f for f in fixtures.available("light") if f.name == "light_bvlc_alexnet"), None)
    if fx is None:
        pytest.skip("the onnx wheel ships no light models")
    plan = build_plan(import_model(fx.path), PlanOptions(Budget(fraction=0.1)))
    assert plan.stats.reload_bytes == plan.stats.offload_bytes == 0  # nothing stored: every weight block is filled
    assert plan.stats.tiling["recomputed"]["ConstantOfShape_11"] == 1
    _check_runs(fx.path, plan, fixtures.make_inputs(fx), orders=3)


def test_channel_shuffle_view_is_recut_for_halos_never_whole(tmp_path):
    # ShuffleNet's channel shuffle: Reshape -> Transpose -> Reshape (a view of the transposed storage), then a
    # depthwise 3x3 conv on row blocks: its halo blocks are cut from the view's row blocks, never from a whole tensor
    c, g_, s = 8, 2, 16
    shp5 = numpy_helper.from_array(np.array([1, g_, c // g_, s, s], np.int64), "shp5")
    shp4 = numpy_helper.from_array(np.array([1, c, s, s], np.int64), "shp4")
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("Reshape", ["r", "shp5"], ["r5"], name="split_groups"),
        helper.make_node("Transpose", ["r5"], ["t5"], name="shuffle", perm=[0, 2, 1, 3, 4]),
        helper.make_node("Reshape", ["t5", "shp4"], ["t4"], name="merge_groups"),
        helper.make_node("Conv", ["t4", "W"], ["y"], name="dw", group=c, pads=[1, 1, 1, 1]),
    ]
    path = _save(tmp_path, nodes, [helper.make_tensor_value_info("x", FLOAT, [1, c, s, s])],
                 [helper.make_tensor_value_info("y", FLOAT, [1, c, s, s])], [shp5, shp4, _w("W", [c, 1, 3, 3], 1, 0.3)],
                 name="shuffle.onnx")
    g = import_model(path)
    tg, rep = partition_graph(g, 4096)
    assert rep.tiled["shuffle"] > 1 and rep.tiled["dw"] > 1
    assert "t5" not in rep.assembles and not any(t.op_type == "Concat" and t.outputs == ("t5",) for t in tg.tasks)
    dws = [t for t in tg.tasks if t.name.startswith("dw#")]
    assert sum(tg.values[t.outputs[0]].shape[2] for t in dws) == s
    assert all(tg.values[t.inputs[0]].shape[2] == tg.values[t.outputs[0]].shape[2] + 2 - (i in (0, len(dws) - 1))
               for i, t in enumerate(dws))  # its rows plus one halo row on each inner side
    feeds = {"x": np.random.default_rng(0).standard_normal((1, c, s, s)).astype(np.float32)}
    plan = build_plan(import_model(path), PlanOptions(Budget(fraction=1.0), max_task_bytes=4096))
    _check_runs(path, plan, feeds)
