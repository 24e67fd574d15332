"""Generated tensors (a causal mask built from positions) recomputed block by block where they are read.

Why: a mask built in the graph (``Range -> Greater -> Where``) is a seq x
seq tensor made from two tiny position vectors. Tiled on its own it comes
first in the graph, so its blocks are computed long before the scores that
read them, in a partition of its own (re-cut by Slice / Concat to the
scores' query-row blocks), and its 2 GiB at seq 32,768 stay live across
every layer that reads it: the plan offloads them. Reading a stored mask
block costs the same memory traffic as computing it again from the positions,
so the partition pass does not materialise such a tensor at all: every
consumer block that reads a block of it gets its own copy, computed right
before it in exactly the consumer's partition (query rows, heads). Each
row block's ``MatMul -> scale -> mask -> Softmax -> MatMul`` chain is then
local, and nothing of the mask lives between two consumers.

What counts as *generated* (only when the graph is being tiled): a
single-output elementwise (broadcasting) task whose inputs are each either
generated themselves or available whole and, together, at most 1/16 of the
output (a broadcast expansion, not a transformation of big data). The values
are bit-identical to one whole computation: the same elementwise kernel on
a block of the same inputs.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from .partition_conv import constant_of_shape_blocks, is_constant_fill
from .taskgraph import Task

if TYPE_CHECKING:
    from .partition import Partition, _Builder

#: A generator's non-generated inputs together are at most 1 / EXPANSION of its output.
EXPANSION = 16


def is_generator(b: _Builder, task: Task) -> bool:
    """Whether ``task``'s output is recomputed per consuming block instead of stored."""
    from .partition import ELEMENTWISE

    if is_constant_fill(task):  # a weight the light CNNs compute in the graph (turnipc/partition_conv.py)
        out0 = task.outputs[0]
        return out0 is not None and not b.values[out0].is_alias
    if task.op_type not in ELEMENTWISE or task.domain not in ("", "ai.onnx"):
        return False
    if len(task.outputs) != 1 or task.outputs[0] is None:
        return False
    out = b.values[task.outputs[0]]
    if out.is_alias:
        return False
    small = 0
    for nm in task.inputs:
        if nm is None:
            continue
        s = b.values[nm].storage
        if s in b.lazy:
            continue
        if s not in b.whole:
            return False
        small += b.values[s].nbytes
    return small * EXPANSION <= out.nbytes


def generator_blocks(b: _Builder, name: str, p: Partition) -> list[str] | None:
    """Fresh blocks of generated value ``name`` in partition ``p`` (None: no exact blockwise rule)."""
    from .partition import Partition, _alias_axis, split_rule

    v = b.values[name]
    s = v.storage
    task = b.lazy[s]
    sv = b.values[s]
    if name == s:
        j: int | None = p.axis
    else:
        j = next((k for k in range(len(sv.shape)) if _alias_axis(sv.shape, k, v.shape) == p.axis), None)
    if j is None:
        return None
    if is_constant_fill(task):
        fills = constant_of_shape_blocks(b, task, s, j, Partition(j, p.bounds))
        b.report.tiled[task.name] = len(p.bounds)
        b.report.recomputed[task.name] = b.report.recomputed.get(task.name, 0) + 1
        if name == s:
            return fills
        return [b.block_value(v, p.axis, lo, hi, b.fresh(f"{name}#{p.axis}.{i}"), "activation", storage=f).name
                for i, ((lo, hi), f) in enumerate(zip(p.bounds, fills, strict=True))]
    rule = split_rule(b.g, task, j)
    if rule is None or rule[1] != [j]:
        return None
    in_axes = rule[0]
    in_blocks = b.input_blocks(task, in_axes, p)
    out = []
    for i, (lo, hi) in enumerate(p.bounds):
        bn = b.fresh(f"{s}#{j}.{i}")
        b.block_value(sv, j, lo, hi, bn, "activation")
        ins = tuple(None if blk is None else blk[i] for blk in in_blocks)
        b.emit(Task(0, b.fresh(f"{task.name}#{i}"), task.op_type, task.domain, task.attrs, ins, (bn,), 0, 0))
        if name != s:  # a view of the generated storage: the same bytes, the view's shape
            vn = b.fresh(f"{name}#{p.axis}.{i}")
            b.block_value(v, p.axis, lo, hi, vn, "activation", storage=bn)
            bn = vn
        out.append(bn)
    b.report.tiled[task.name] = len(p.bounds)
    b.report.recomputed[task.name] = b.report.recomputed.get(task.name, 0) + 1
    return out


def generator_whole(b: _Builder, name: str) -> str:
    """Compute generated value ``name`` whole (a consumer reads it untiled, or it is needed whole)."""
    s = b.values[name].storage
    task = b.lazy.pop(s)
    ins = tuple(None if nm is None else b.get_whole(nm) for nm in task.inputs)
    b.emit(dataclasses.replace(task, inputs=ins))
    b.whole.add(s)
    return name
