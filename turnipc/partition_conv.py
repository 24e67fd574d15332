"""Split rules for convolutional networks, and ConstantOfShape weights made per block.

Why: the partition pass (turnipc/partition.py) bounds the memory of every
task by cutting it into blocks along an axis where the blockwise result is
the whole one. A CNN's big tasks are convolutions, pools, normalizations and
the channel Concats of Inception / SqueezeNet / DenseNet; without rules for
them a CNN cannot plan below the working set of its largest such task.

The rules (:func:`cnn_split_rule`, read by :func:`turnipc.partition.split_rule`):

- Conv: batch; output channels (filter and bias blocks) when ``group == 1``.
- MaxPool, AveragePool, LpPool, GlobalAveragePool, GlobalMaxPool: batch and
  channels (each channel is pooled on its own).
- BatchNormalization (inference): batch, channels (scale / bias / mean / var
  blocks), and any spatial axis (the per-channel parameters are read whole).
- LRN: batch and any spatial axis (it normalizes across channels, so a channel
  block would need its neighbours: not split).
- Concat: every axis but the concatenated one (each input is cut the same way).

ConstantOfShape (:func:`constant_of_shape_blocks`): the light CNNs of the
ONNX test data store every weight as ``ConstantOfShape`` of a constant shape,
so their weights are computed in the graph (alexnet's fc6 weight: 151 MB).
Such a tensor is never stored in the tiled graph: every consumer block that
reads a block of it gets its own ``ConstantOfShape`` of the block's shape,
computed right before it (turnipc/partition_remat.py's generators). Why not a
derived weight made once at load: a block filled on the GPU costs a memory
write, a reload the same write plus a host-to-device copy over PCIe and host
memory for the whole tensor; and the untiled graph (and its no-offload peak,
the reference of ``--gpu-mem 25%``) stays as it was.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .taskgraph import Task, TaskGraph, Value

if TYPE_CHECKING:
    from .partition import Partition, _Builder

POOLS = frozenset({"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool"})

#: Ops whose split rules live here.
CNN_OPS = frozenset({"Conv", "BatchNormalization", "LRN", "Concat"}) | POOLS

Rule = tuple[list[int | None], list[int | None]]


def _single_output(outs: list[Value | None]) -> bool:
    return len([o for o in outs if o is not None]) == 1 and outs[0] is not None


def cnn_split_rule(graph: TaskGraph, task: Task, k: int, ins: list[Value | None], outs: list[Value | None]) -> Rule | None:
    """Axes each input and output of CNN op ``task`` is cut along for a block of output 0 along ``k`` (None: no exact split)."""
    op = task.op_type
    out0 = outs[0] if outs else None
    if out0 is None:
        return None
    r = len(out0.shape)
    if op == "Conv":
        x, w = ins[0], ins[1]
        if x is None or w is None or r < 3 or len(outs) != 1:
            return None
        bias: list[int | None] = [None] if len(ins) > 2 else []
        if k == 0:  # batch
            return [0, None] + bias, [0]
        if k == 1 and int(task.attrs.get("group", 1)) == 1:  # output channels: filter (and bias) blocks
            wb: list[int | None] = [0] if len(ins) > 2 and ins[2] is not None else bias
            return [None, 0] + wb, [1]
        if k >= 2 and window(task, ins, k, out0.shape[k]) is not None:  # rows (any spatial axis), input rows with their halo
            return [k, None] + bias, [k]
        return None
    if op in POOLS:
        if not _single_output(outs):
            return None
        if k >= 2:
            if op not in WINDOWED or window(task, ins, k, out0.shape[k]) is None:
                return None
        return [k], [k] + [None] * (len(outs) - 1)
    if op == "BatchNormalization":
        if not _single_output(outs) or int(task.attrs.get("training_mode", 0)):
            return None
        params: list[int | None] = [0 if k == 1 else None] * (len(ins) - 1)
        return [k] + params, [k] + [None] * (len(outs) - 1)
    if op == "LRN":
        if k == 1 or len(outs) != 1:
            return None
        return [k], [k]
    if op == "Concat":
        if len(outs) != 1 or any(v is None for v in ins):
            return None
        axis = int(task.attrs.get("axis", 0)) % r
        if k == axis:
            return None
        return [k] * len(ins), [k]
    return None


# -- spatial blocks with halos ----------------------------------------------------

#: Ops reading a window of input rows per output row: a spatial block reads its rows plus a halo.
WINDOWED = frozenset({"Conv", "MaxPool", "AveragePool", "LpPool"})


@dataclass(frozen=True)
class Window:
    """One spatial axis of a windowed op: output row ``o`` reads input rows ``o * stride - pad_begin`` + [0, span)."""

    size: int  # input extent along the axis
    span: int  # (kernel - 1) * dilation + 1
    stride: int
    pad_begin: int
    dim: int  # the spatial axis index (0 for rows of NCHW)
    dims: int  # spatial axes


def window(task: Task, ins: list[Value | None], k: int, out_rows: int) -> Window | None:
    """The window of ``task`` along output axis ``k`` (>= 2), or None where a spatial block would not be exact."""
    x = ins[0] if ins else None
    if x is None or task.op_type not in WINDOWED:
        return None
    a = task.attrs
    auto = a.get("auto_pad", "NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else str(auto)
    if auto not in ("NOTSET", "", "VALID"):
        return None  # SAME_*: pads implied by the whole extent (rare in the CNNs here)
    dims = len(x.shape) - 2
    d = k - 2
    if not 0 <= d < dims:
        return None
    if task.op_type == "Conv":
        w = ins[1] if len(ins) > 1 else None
        if w is None or len(w.shape) != dims + 2:
            return None
        kernel = int(w.shape[2 + d])
    else:
        ks = a.get("kernel_shape")
        if not ks or len(ks) != dims:
            return None
        kernel = int(ks[d])
        if task.op_type == "AveragePool" and int(a.get("ceil_mode", 0)) and int(a.get("count_include_pad", 0)):
            return None  # the ceil overhang would count as padding in a block
    strides = a.get("strides") or [1] * dims
    dil = a.get("dilations") or [1] * dims
    pads = [0] * (2 * dims) if auto == "VALID" else (a.get("pads") or [0] * (2 * dims))
    win = Window(int(x.shape[k]), (kernel - 1) * int(dil[d]) + 1, int(strides[d]), int(pads[d]), d, dims)
    if win.span - win.pad_begin <= 0 or (out_rows - 1) * win.stride - win.pad_begin >= win.size:
        return None  # a window inside the padding alone: a block of it would read no input row
    return win


def halo_bounds(w: Window, lo: int, hi: int) -> tuple[int, int, int, int]:
    """(first input row, end input row, pad before, pad after) that output rows [lo, hi) read."""
    start = lo * w.stride - w.pad_begin
    end = (hi - 1) * w.stride - w.pad_begin + w.span
    a, b = max(0, start), min(w.size, end)
    return a, b, a - start, end - b


def input_partition(graph: TaskGraph, task: Task, i: int, ax: int, p: Partition) -> Partition:
    """The partition input ``i`` of ``task`` is read in for output blocks ``p`` (with halos for a windowed op's rows)."""
    from .partition import Partition

    if i != 0 or ax < 2 or task.op_type not in WINDOWED:
        return Partition(ax, p.bounds)
    w = window(task, [graph.values[n] if n is not None else None for n in task.inputs], ax, p.extent)
    assert w is not None  # the split rule allowed this axis
    return Partition(ax, tuple(halo_bounds(w, a, b)[:2] for a, b in p.bounds))


def block_attrs(graph: TaskGraph, task: Task, in_axes: list[int | None], p: Partition, blk: int) -> dict:
    """``task``'s attributes for block ``blk`` of ``p``: a windowed op's pads are those of its rows (edges only)."""
    ax = in_axes[0] if in_axes else None
    if task.op_type not in WINDOWED or ax is None or ax < 2:
        return task.attrs
    w = window(task, [graph.values[n] if n is not None else None for n in task.inputs], ax, p.extent)
    assert w is not None
    _, _, before, after = halo_bounds(w, *p.bounds[blk])
    pads = list(task.attrs.get("pads") or [0] * (2 * w.dims))
    if task.attrs.get("auto_pad") in ("VALID", b"VALID"):  # (window() refused SAME_*)
        pads = [0] * (2 * w.dims)
    pads[w.dim], pads[w.dim + w.dims] = before, after
    attrs = {k: v for k, v in task.attrs.items() if k != "auto_pad"}
    attrs["pads"] = pads
    if "ceil_mode" in attrs:
        attrs["ceil_mode"] = 0  # the block's end pad already covers the ceil overhang
    return attrs


# -- ConstantOfShape: a weight filled per block --------------------------------


def is_constant_fill(task: Task) -> bool:
    """A ``ConstantOfShape`` (its output shape is static, so no input value is needed to cut it)."""
    return task.op_type == "ConstantOfShape" and task.domain in ("", "ai.onnx") and len(task.outputs) == 1 and task.outputs[0] is not None


def constant_of_shape_blocks(b: _Builder, task: Task, storage: str, j: int, p: Partition) -> list[str]:
    """Blocks of ``ConstantOfShape`` output ``storage`` along its axis ``j`` in ``p``'s bounds, one fill task each."""
    sv = b.values[storage]
    out = []
    for i, (lo, hi) in enumerate(p.bounds):
        bn = b.fresh(f"{storage}#{j}.{i}")
        bv = b.block_value(sv, j, lo, hi, bn, "activation")
        shape = b.const_i64(f"{bn} shape", list(bv.shape))
        b.emit(Task(0, b.fresh(f"{task.name}#{i}"), task.op_type, task.domain, task.attrs, (shape,), (bn,), 0, 0))
        out.append(bn)
    return out
