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
    r = len(outs[0].shape) if outs and outs[0] is not None else 0
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
        return None
    if op in POOLS:
        if k > 1 or not _single_output(outs):
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
