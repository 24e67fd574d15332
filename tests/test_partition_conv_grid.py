"""The two-axis Conv split (turnipc/partition_conv.py's Grid) on small hand-built graphs.

A Conv whose input and filter are both big cannot get a task below either
with a one-axis split: output-channel blocks read the whole input, row blocks
the whole filter. The grid cuts output rows x output channels: each block
reads its input rows (with their halo) and one filter block, and each row
block is gathered from its channel pieces by one Concat. These tests assert
the exact grid, halos, pads, filter blocks and Concats, that it is chosen only
where no one-axis split fits, then plan the tiled graph and compare with
onnxruntime on the untiled model (NumPy backend, random orders bit-identical).
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper
from test_partition_conv import _check_runs, _save, _w

from turnipc.importer import import_model
from turnipc.partition import _Builder, even_bounds, partition_graph, task_working_set
from turnipc.partition_conv import grid_options, grid_working_set, halo_bounds, window
from turnipc.planner import PlanOptions, build_plan
from turnipc.units import Budget

FLOAT = TensorProto.FLOAT


def _conv(tmp_path, x_shape, w_shape, bias, name="conv.onnx", **attrs):
    """One Conv ``x -> y`` (filter W, optional bias B) with ``attrs``."""
    inits = [_w("W", w_shape, 1, 0.3)] + ([_w("B", [w_shape[0]], 2, 0.1)] if bias else [])
    nodes = [helper.make_node("Conv", ["x", "W"] + (["B"] if bias else []), ["y"], name="conv", **attrs)]
    return _save(tmp_path, nodes, [helper.make_tensor_value_info("x", FLOAT, x_shape)],
                 [helper.make_tensor_value_info("y", FLOAT, None)], inits, name=name)


def _feeds(shape, seed=0):
    return {"x": np.random.default_rng(seed).standard_normal(shape).astype(np.float32)}


def _one_axis_best(g, limit):
    """Smallest working set of the Conv's one-axis splits (what the pass could do before the grid)."""
    b = _Builder(g, limit)
    conv = next(t for t in g.tasks if t.op_type == "Conv")
    return min(o[5] for o in b.options(conv) if o[1] != "grid")


def _grid_tasks(tg):
    convs = [t for t in tg.tasks if t.op_type == "Conv"]
    gathers = [t for t in tg.tasks if t.name.startswith("gather ")]
    return convs, gathers


def _check_halos(tg, convs, nr, nc, size, out_rows, span, stride, pad):
    """Every Conv block (row r, channel c, in that order) reads input rows [r's halo) and writes its piece."""
    rows = even_bounds(out_rows, nr)
    assert len(convs) == nr * nc
    for i, t in enumerate(convs):
        r, c = divmod(i, nc)
        lo, hi = rows[r]
        start, end = lo * stride - pad, (hi - 1) * stride - pad + span
        x = tg.values[t.inputs[0]]
        assert x.shape[2] == min(size, end) - max(0, start)
        assert t.attrs["pads"][0] == max(0, -start) and t.attrs["pads"][2] == max(0, end - size)
        assert tg.values[t.outputs[0]].shape[2] == hi - lo


def test_projection_1x1_stride2_is_cut_rows_by_channels(tmp_path):
    # ResNet-50's projection shortcut in small: x 1x32x16x16 (32 KiB), W 64x32x1x1 (8 KiB), y 1x64x8x8 (16 KiB).
    # At 8 KiB per task: channel blocks read the whole x (>= 32 KiB), row blocks the whole W plus rows (>= 14 KiB).
    # The grid: 8 row blocks (one output row reads one input row, 2 KiB) x 2 channel blocks (W halves, 4 KiB):
    # 2 + 4 + 1 KiB = 7 KiB per Conv; 4 row blocks need 3 input rows (6 KiB) and 8 channel blocks (32 tasks).
    path = _conv(tmp_path, [1, 32, 16, 16], [64, 32, 1, 1], False, strides=[2, 2])
    g = import_model(path)
    assert _one_axis_best(g, 8192) == 14336
    tg, rep = partition_graph(g, 8192)
    assert rep.grids == {"conv": [8, 2]} and rep.tiled["conv"] == 16
    convs, gathers = _grid_tasks(tg)
    _check_halos(tg, convs, 8, 2, 16, 8, 1, 2, 0)
    assert all(t.attrs["pads"] == [0, 0, 0, 0] for t in convs)
    # input row blocks are cut by the runtime at load: output row r reads input row 2r, never the whole x
    assert [tg.blocks[t.inputs[0]][1:] for t in convs[::2]] == [(2, 2 * r, 2 * r + 1) for r in range(8)]
    assert [tg.blocks[t.inputs[1]][1:] for t in convs[:2]] == [(0, 0, 32), (0, 32, 64)]
    assert {t.inputs[1] for t in convs[::2]} == {convs[0].inputs[1]}  # a stored filter block is cut once
    assert all(tg.values[t.outputs[0]].shape == (1, 32, 1, 8) for t in convs)
    assert len(gathers) == 8 and all(t.attrs == {"axis": 1} and len(t.inputs) == 2 for t in gathers)
    assert [tg.values[t.outputs[0]].shape for t in gathers] == [(1, 64, 1, 8)] * 8
    assert [t.inputs for t in gathers] == [tuple(c.outputs[0] for c in convs[2 * r:2 * r + 2]) for r in range(8)]
    # the estimate the pass chose by is what the tiled graph needs
    b = _Builder(g, 8192)
    assert grid_working_set(b, g.tasks[0], 2, even_bounds(8, 8), 2) == 7168
    assert max(task_working_set(tg, t) for t in tg.tasks) == 7168
    plan = build_plan(import_model(path), PlanOptions(Budget(fraction=1.0), max_task_bytes=8192))
    assert plan.stats.tiling["grids"] == {"conv": [8, 2]}
    _check_runs(path, plan, _feeds((1, 32, 16, 16)))


def test_3x3_stride1_pad1_with_bias_reads_halo_rows(tmp_path):
    # x 1x16x16x16 (16 KiB), W 64x16x3x3 (36 KiB), bias 64, y 1x64x16x16 (64 KiB). At 16 KiB per task the best
    # channel split (64 blocks) still reads the whole x: 18 KiB; rows read the whole W. The grid reads 3x3 halos.
    path = _conv(tmp_path, [1, 16, 16, 16], [64, 16, 3, 3], True, pads=[1, 1, 1, 1])
    g = import_model(path)
    assert _one_axis_best(g, 16384) == 18432
    tg, rep = partition_graph(g, 16384)
    # the Concat of a row block needs twice its bytes (4 KiB per output row), so at most 2 output rows per block:
    # 8 row blocks of 2 rows read 4 input rows (4 KiB); then 4 channel blocks: 4 + 9 (W) + 0.25 + 2 = 15.25 KiB
    # (2 channel blocks: 18 KiB of W alone); 16 row blocks of 1 row would need 4 channel blocks too (64 tasks)
    assert rep.grids == {"conv": [8, 4]}
    nr, nc = 8, 4
    convs, gathers = _grid_tasks(tg)
    _check_halos(tg, convs, nr, nc, 16, 16, 3, 1, 1)
    assert [t.attrs["pads"] for t in convs[::nc]] == [[1, 1, 0, 1]] + [[0, 1, 0, 1]] * 6 + [[0, 1, 1, 1]]
    assert [tg.values[t.inputs[0]].shape[2] for t in convs[::nc]] == [3, 4, 4, 4, 4, 4, 4, 3]
    assert [tg.blocks[t.inputs[2]][1:] for t in convs[:nc]] == [(0, 16 * c, 16 * c + 16) for c in range(nc)]
    assert len(gathers) == nr and all(len(t.inputs) == nc for t in gathers)
    assert max(task_working_set(tg, t) for t in tg.tasks) <= 16384
    plan = build_plan(import_model(path), PlanOptions(Budget(fraction=1.0), max_task_bytes=16384))
    _check_runs(path, plan, _feeds((1, 16, 16, 16), 1))


def test_3x3_stride2_odd_rows_pads_on_the_edge_blocks_only(tmp_path):
    # x 1x16x17x17, W 64x16x3x3, bias, stride 2 pad 1: y 1x64x9x9. Output rows [lo, hi) read input rows
    # [2 lo - 1, 2 hi) clipped to [0, 17): the first block is padded above, the last one below (row 17 is pad)
    path = _conv(tmp_path, [1, 16, 17, 17], [64, 16, 3, 3], True, pads=[1, 1, 1, 1], strides=[2, 2])
    g = import_model(path)
    assert _one_axis_best(g, 20000) > 20000
    tg, rep = partition_graph(g, 20000)
    # 3 row blocks (3 output rows: 6, 7 and 6 input rows, at most 7.5 KiB) x 4 channel blocks (9 KiB of W):
    # 18.5 KiB; 2 row blocks cannot be gathered (a 5-row block is 11.25 KiB, its Concat twice that), and 3 or
    # fewer channel blocks read at least 12.5 KiB of W on top of the rows
    assert rep.grids == {"conv": [3, 4]}
    convs, _ = _grid_tasks(tg)
    _check_halos(tg, convs, 3, 4, 17, 9, 3, 2, 1)
    assert [tg.values[t.inputs[0]].shape[2] for t in convs[::4]] == [6, 7, 6]
    assert [t.attrs["pads"] for t in convs[::4]] == [[1, 1, 0, 1], [0, 1, 0, 1], [0, 1, 1, 1]]
    w = window(g.tasks[0], [g.values["x"], g.values["W"]], 2, 9)
    assert w is not None and halo_bounds(w, 8, 9) == (15, 17, 0, 1)
    assert [tg.values[t.inputs[1]].shape for t in convs[:4]] == [(16, 16, 3, 3)] * 4
    plan = build_plan(import_model(path), PlanOptions(Budget(fraction=1.0), max_task_bytes=20000))
    _check_runs(path, plan, _feeds((1, 16, 17, 17), 2))


def test_grid_only_where_no_one_axis_split_fits(tmp_path):
    # the 3x3 conv above at 20000 B per task: 32 output-channel blocks fit (x whole + 1/32 of the rest), so no grid
    path = _conv(tmp_path, [1, 16, 16, 16], [64, 16, 3, 3], True, pads=[1, 1, 1, 1])
    tg, rep = partition_graph(import_model(path), 20000)
    assert rep.grids == {} and rep.tiled == {"conv": 32}
    assert "grids" not in rep.to_obj()  # plans without a grid keep their statistics (and bytes) as before
    # a grouped conv has no channel split (each group reads its own input channels): no grid either
    path = _conv(tmp_path, [1, 16, 16, 16], [64, 8, 3, 3], False, name="g.onnx", pads=[1, 1, 1, 1], group=2)
    g = import_model(path)
    assert grid_options(_Builder(g, 4096), g.tasks[0]) == []


def test_filled_filter_is_filled_per_grid_block_and_rows_flow_on(tmp_path):
    # as in the light CNNs: the filter is ConstantOfShape([256, 128, 1, 1]) (128 KiB: too big to fold at import)
    # and the Conv reads a Relu's row blocks (x 1x128x16x16, 128 KiB). At 32 KiB per task the grid is 8 row blocks
    # (one input row each, 8 KiB) x 6 channel blocks (43 or 42 filters, 21.5 KiB): 31 KiB; 4 row blocks read 3 input
    # rows (24 KiB) and need 19 channel blocks. Every grid block fills its own filter block (never the whole
    # filter), and BN and Relu keep the row blocks the Concats make
    shape_w = numpy_helper.from_array(np.array([256, 128, 1, 1], np.int64), "w_shape")
    val = helper.make_tensor("value", FLOAT, [1], [0.02])
    c = 256
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu_in"),
        helper.make_node("ConstantOfShape", ["w_shape"], ["W"], name="fill_w", value=val),
        helper.make_node("Conv", ["r", "W"], ["c"], name="conv", strides=[2, 2]),
        helper.make_node("BatchNormalization", ["c", "g", "bb", "m", "var"], ["n"], name="bn"),
        helper.make_node("Relu", ["n"], ["y"], name="relu_out"),
    ]
    inits = [shape_w, _w("g", [c], 7, 0.2), _w("bb", [c], 8, 0.1), _w("m", [c], 9, 0.1),
             numpy_helper.from_array(np.linspace(1, 2, c).astype(np.float32), "var")]
    path = _save(tmp_path, nodes, [helper.make_tensor_value_info("x", FLOAT, [1, 128, 16, 16])],
                 [helper.make_tensor_value_info("y", FLOAT, [1, c, 8, 8])], inits, name="filled.onnx")
    g = import_model(path)
    limit = 32 << 10
    assert _one_axis_best(g, limit) > limit
    tg, rep = partition_graph(g, limit)
    assert rep.grids == {"conv": [8, 6]}
    convs, gathers = _grid_tasks(tg)
    fills = [t for t in tg.tasks if t.op_type == "ConstantOfShape"]
    assert len(fills) == 48 and rep.recomputed["fill_w"] == 8  # filled afresh for each row block's 6 Convs
    assert [tg.values[t.outputs[0]].shape[0] for t in fills[:6]] == [43, 43, 43, 43, 42, 42]
    assert [t.inputs[1] for t in convs] == [t.outputs[0] for t in fills]
    assert "W" not in tg.values and "r" not in tg.values  # neither the filter nor the conv's input exists whole
    bns = [t for t in tg.tasks if t.name.startswith("bn#")]
    rows = {tg.values[t.outputs[0]].storage for t in gathers}
    assert bns and {tg.values[t.inputs[0]].storage for t in bns} <= rows  # BN reads the gathered row blocks as they are
    assert max(task_working_set(tg, t) for t in tg.tasks) <= limit
    plan = build_plan(import_model(path), PlanOptions(Budget(fraction=1.0), max_task_bytes=limit))
    assert plan.stats.tiling["grids"] == {"conv": [8, 6]}
    _check_runs(path, plan, _feeds((1, 128, 16, 16), 3))


# kernel, stride, pads (top, left, bottom, right), dilation, bias, batch, input rows x columns
_SWEEP = [
    (1, 1, [0, 0, 0, 0], 1, False, 1, (16, 16)),
    (1, 2, [0, 0, 0, 0], 1, True, 2, (13, 11)),
    (3, 1, [1, 1, 1, 1], 1, True, 1, (13, 11)),
    (3, 2, [1, 0, 0, 2], 1, False, 2, (16, 16)),
    (3, 3, [0, 0, 0, 0], 2, True, 1, (16, 16)),
    (5, 1, [2, 2, 2, 2], 1, False, 1, (13, 11)),
    (5, 2, [2, 0, 0, 3], 2, True, 1, (16, 16)),
]


def test_grid_sweep_matches_onnxruntime(tmp_path):
    # strides 1-3, kernels 1-5, symmetric and asymmetric pads, dilation 2, a batch of 2, non-square inputs: the
    # conv (12 -> 40 channels) at 2/3 of the least its one-axis splits need is cut rows x channels, and the tiled
    # plan's result equals onnxruntime's on the untiled model
    rng = np.random.default_rng(0)
    for i, (k, s, pads, dil, bias, batch, hw) in enumerate(_SWEEP):
        path = _conv(tmp_path, [batch, 12, *hw], [40, 12, k, k], bias, name=f"s{i}.onnx",
                     strides=[s, s], pads=pads, dilations=[dil, dil])
        g = import_model(path)
        limit = _one_axis_best(g, 0) * 2 // 3
        _, rep = partition_graph(g, limit)
        assert set(rep.grids) == {"conv"}, (i, rep.tiled)
        plan = build_plan(import_model(path), PlanOptions(Budget(fraction=1.0), max_task_bytes=limit))
        assert plan.stats.tiling["grids"] == rep.grids
        _check_runs(path, plan, {"x": rng.standard_normal((batch, 12, *hw)).astype(np.float32)}, orders=1)


def test_channel_split_counts_the_assemble_of_a_tiled_input(tmp_path):
    # Relu -> Conv 1x1 (64 -> 128 channels, 8x8): r is 16 KiB, W 32 KiB, y 32 KiB; at 24 KiB per task the Relu is cut
    # into blocks. 8 output-channel blocks of the Conv would need 16 + 4 + 4 = 24 KiB, but they read r whole, and r
    # exists only in blocks: its assemble (blocks and whole, 32 KiB) would be the largest task. Row blocks read
    # the whole W (32 KiB). So the Conv is cut rows x channels, reading r's row blocks as they are: no assemble
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("Conv", ["r", "W"], ["y"], name="conv")]
    path = _save(tmp_path, nodes, [helper.make_tensor_value_info("x", FLOAT, [1, 64, 8, 8])],
                 [helper.make_tensor_value_info("y", FLOAT, [1, 128, 8, 8])], [_w("W", [128, 64, 1, 1], 1, 0.3)],
                 name="assemble.onnx")
    g = import_model(path)
    limit = 24 << 10
    b = _Builder(g, limit)
    conv = g.tasks[1]
    channels = next(o for o in b.options(conv) if o[1] == "out" and o[2] == 1)
    assert channels[3] == 8 and channels[5] == limit  # alone (nothing tiled yet) the channel split fits
    tg, rep = partition_graph(g, limit)
    assert rep.tiled["relu"] > 1 and set(rep.grids) == {"conv"}
    assert "r" not in rep.assembles and "r" not in tg.values  # r never exists whole
    assert max(task_working_set(tg, t) for t in tg.tasks) <= limit
    plan = build_plan(import_model(path), PlanOptions(Budget(fraction=1.0), max_task_bytes=limit))
    _check_runs(path, plan, _feeds((1, 64, 8, 8), 4))


def test_floor_counts_the_grid(tmp_path):
    # turnipc/floor.py's floor takes the grid among the Conv's splits (a grid reads no input whole): for the
    # projection conv, the floor is the grid's least working set, below every one-axis split (14 KiB).
    from turnipc.floor import tiling_floor

    g = import_model(_conv(tmp_path, [1, 32, 16, 16], [64, 32, 1, 1], False, strides=[2, 2]))
    b = _Builder(g, 1)
    least_grid = min(ws for _, _, ws in grid_options(b, g.tasks[0]))
    floor = tiling_floor(g, True)
    assert floor.bytes == least_grid < _one_axis_best(g, 8192) == 14336
    plan = build_plan(import_model(g.model_path), PlanOptions(Budget(bytes=2 * floor.bytes), max_task_bytes=floor.bytes))
    assert plan.stats.peak_bytes <= 2 * floor.bytes
