"""The partition pass: split big tasks into blocks, between import and ordering.

Why: without it the unit of planning is one ONNX node writing whole tensors,
so no budget below the working set of the largest node can plan, and
attention over a long sequence (heads x n x n scores) cannot run at all.

What it does: every task whose working set exceeds ``max_task_bytes``
becomes one task per *output block*, each an ordinary ONNX computation of the
same op on block inputs (a MatMul row block is a MatMul on the row block of
A; a Softmax row block is a Softmax on the row block; a Gather index block is
a Gather with the index block). The runtime therefore runs the same kernels
on blocks, and every block is a storage of its own, so residency, layout,
MEMGRAPH and ``turnipc verify`` treat blocks exactly like any other tensor.

Partitions propagate: a consumer whose split rule maps an input's partition
to one of its output axes is tiled the same way, so blocks flow from op to
op with no concatenation (MatMul -> Add -> Gelu -> MatMul on row blocks; the
attention chain on query-row blocks, so the full n x n scores never exist).
Where a consumer needs another partition, the pass inserts an *assemble*
(``Concat`` of the blocks) and, if needed, *split* tasks (``Slice``). Blocks
of initial data (weights, graph inputs) are cut by the runtime when it loads
them (``TaskGraph.blocks``), never on the GPU; blocks of folded constants are
cut at plan time. Graph outputs are assembled at the end: on the GPU when the
assemble fits a task, else returned in blocks (turnipc/output_blocks.py).

Every split is along an axis where the blockwise result is exactly the
whole one (no reduction axis is split), so outputs are bit-identical.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np
from turnip.plan import FUSED_DOMAIN, FUSED_OP

from .cost import estimate
from .fuse_attention import attention_split_rule, is_fused_attention
from .graphio import graph_io
from .output_blocks import finish_outputs
from .partition_attention import attention_rule, scratch_bytes, scratch_share
from .partition_conv import CNN_OPS, Grid, block_attrs, cnn_split_rule, emit_grid, grid_options, input_partition, whole_read_bytes
from .partition_remat import generator_blocks, generator_whole, is_generator
from .residency import aligned
from .taskgraph import Task, TaskGraph, Value

INITIAL_KINDS = ("input", "weight", "constant")

#: At most this many blocks per op: finer splits multiply nodes (and planning
#: time) for little memory, and a budget that needs more is refused instead.
MAX_BLOCKS = 256

#: Ops computed element by element with NumPy broadcasting: any output axis splits.
ELEMENTWISE = frozenset(
    """Add Sub Mul Div Pow Max Min Sum Mean Where Equal Less LessOrEqual Greater GreaterOrEqual And Or Xor
    Not Neg Abs Exp Log Sqrt Reciprocal Relu Sigmoid Tanh Erf Gelu Softplus Softsign LeakyRelu Elu Selu Celu
    HardSigmoid HardSwish Sin Cos Tan Floor Ceil Round Sign IsNaN IsInf Cast Clip Mish Mod PRelu ThresholdedRelu
    BitwiseAnd BitwiseOr BitwiseXor BitwiseNot""".split()
)
NORMS = frozenset({"LayerNormalization", "RMSNormalization", "SimplifiedLayerNormalization", "SkipSimplifiedLayerNormalization"})
SOFTMAXES = frozenset({"Softmax", "LogSoftmax"})
REDUCTIONS = frozenset(
    {"ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
     "ReduceLogSumExp", "ReduceSumSquare", "ReduceLogSum"}
)


@dataclass(frozen=True)
class Partition:
    """Blocks of one tensor along one axis: ``bounds[i] = (start, stop)``."""

    axis: int
    bounds: tuple[tuple[int, int], ...]

    @property
    def extent(self) -> int:
        return self.bounds[-1][1]

    @property
    def largest(self) -> int:
        return max(b - a for a, b in self.bounds)


def even_bounds(extent: int, n: int) -> tuple[tuple[int, int], ...]:
    """``n`` blocks of ``extent`` whose sizes differ by at most one (larger first)."""
    n = max(1, min(n, extent))
    base, extra = divmod(extent, n)
    out, a = [], 0
    for i in range(n):
        b = a + base + (1 if i < extra else 0)
        out.append((a, b))
        a = b
    return tuple(out)


@dataclass
class TilingReport:
    """What the pass did, for ``turnipc inspect`` and the planner's messages."""

    max_task_bytes: int
    tiled: dict[str, int] = field(default_factory=dict)  # original task name -> number of blocks
    assembles: list[str] = field(default_factory=list)  # values concatenated because a consumer needed them whole
    splits: list[str] = field(default_factory=list)  # activations cut by Slice tasks (re-partitions)
    recomputed: dict[str, int] = field(default_factory=dict)  # generated task -> consumers it was computed for
    grids: dict[str, list[int]] = field(default_factory=dict)  # Conv split two ways -> [row blocks, channel blocks]

    def to_obj(self) -> dict:
        return {
            "max_task_bytes": self.max_task_bytes,
            "tiled_ops": len(self.tiled),
            "blocks": sum(self.tiled.values()),
            "assembles": len(self.assembles),
            "splits": len(self.splits),
            "tiled": dict(sorted(self.tiled.items())),
            **({"recomputed": dict(sorted(self.recomputed.items()))} if self.recomputed else {}),
            **({"grids": dict(sorted(self.grids.items()))} if self.grids else {}),
        }


# -- split rules -------------------------------------------------------------


def _bcast_axis(k: int, out_rank: int, shape: tuple[int, ...]) -> int | None:
    """Axis of a broadcast input matching output axis ``k`` (None: the input is not split)."""
    j = k - (out_rank - len(shape))
    if j < 0 or shape[j] == 1:
        return None
    return j


def _broadcasts_to(shape: tuple[int, ...], out: tuple[int, ...]) -> bool:
    """Whether ``shape`` reaches ``out`` by NumPy's rules (trailing axes aligned, each 1 or equal)."""
    if len(shape) > len(out):
        return False
    return all(d == 1 or d == o for d, o in zip(reversed(shape), reversed(out), strict=False))


def _const_ints(graph: TaskGraph, name: str | None) -> list[int] | None:
    if name is None:
        return None
    v = graph.values.get(name)
    if v is None:
        return None
    arr = graph.constants.get(v.storage)
    if arr is None:
        small = graph.small_ints.get(v.storage)  # an initializer (dynamo exports' axes and pads)
        return None if small is None else list(small)
    return [int(x) for x in np.asarray(arr).reshape(-1)]


def split_rule(graph: TaskGraph, task: Task, k: int) -> tuple[list[int | None], list[int | None]] | None:
    """For a block of output 0 along axis ``k``: the axis each input and output is cut along.

    ``None`` for an input means the whole input is read by every block; for
    an output, that the output is omitted. Returns None when a blockwise
    computation along ``k`` would not be exactly the whole one.
    """
    if is_fused_attention(task):  # turnipc/fuse_attention.py: batch axes and query rows
        return attention_split_rule(graph, task, k)
    fused = task.domain == FUSED_DOMAIN and task.op_type == FUSED_OP  # turnipc/fuse.py: every step elementwise
    if task.domain not in ("", "ai.onnx") and not fused and task.op_type not in ("SimplifiedLayerNormalization", "SkipSimplifiedLayerNormalization"):
        return None
    vals = graph.values
    outs = [vals[o] if o is not None else None for o in task.outputs]
    if not outs or outs[0] is None:
        return None
    out0 = outs[0]
    r = len(out0.shape)
    if not 0 <= k < r:
        return None
    ins = [vals[i] if i is not None else None for i in task.inputs]
    op = task.op_type

    def same_outputs() -> list[int | None] | None:
        res: list[int | None] = []
        for o in outs:
            if o is None:
                res.append(None)
            elif len(o.shape) == r and o.shape[k] == out0.shape[k]:
                res.append(k)
            else:
                return None
        return res

    in_axes: list[int | None]
    if op in ELEMENTWISE or fused:
        if len(outs) != 1:
            return None
        if not all(v is None or _broadcasts_to(v.shape, out0.shape) for v in ins):
            return None  # not NumPy broadcasting (opset-6 PRelu's per-channel slope): whole only
        in_axes = [None if v is None else _bcast_axis(k, r, v.shape) for v in ins]
        return in_axes, [k]
    if op == "MatMul":
        a, b = ins[0], ins[1]
        if a is None or b is None or len(a.shape) < 2 or len(b.shape) < 2:
            return None
        if k == r - 1:
            return [None, len(b.shape) - 1], [k]
        if k == r - 2:
            return [len(a.shape) - 2, None], [k]
        ja = k - (r - len(a.shape))
        jb = k - (r - len(b.shape))
        ax = None if ja < 0 or a.shape[ja] == 1 else ja
        bx = None if jb < 0 or b.shape[jb] == 1 else jb
        return [ax, bx], [k]
    if op == "Gemm":
        if r != 2:
            return None
        ta, tb = int(task.attrs.get("transA", 0)), int(task.attrs.get("transB", 0))
        c = ins[2] if len(ins) > 2 else None
        cx = None if c is None else _bcast_axis(k, 2, c.shape)
        if k == 0:
            return [1 if ta else 0, None] + ([cx] if len(ins) > 2 else []), [0]
        return [None, 0 if tb else 1] + ([cx] if len(ins) > 2 else []), [1]
    if op in SOFTMAXES:
        opset = graph.opset.get("", 13)
        axis = int(task.attrs.get("axis", -1 if opset >= 13 else 1))
        axis %= r
        if k >= axis if opset < 13 else k == axis:
            return None
        return [k], [k]
    if op in NORMS:
        axis = int(task.attrs.get("axis", -1)) % r
        if k >= axis:
            return None
        outs_ax = same_outputs()
        if outs_ax is None:
            return None
        res = [k if (i == 0 or (op == "SkipSimplifiedLayerNormalization" and i == 1)) else None for i in range(len(ins))]
        return res, outs_ax
    if op in REDUCTIONS:
        x = ins[0]
        if x is None or len(outs) != 1:
            return None
        axes = task.attrs.get("axes")
        if axes is None and len(ins) > 1:
            axes = _const_ints(graph, task.inputs[1])
            if axes is None and task.inputs[1] is not None:
                return None
        if not axes:
            return None
        rin = len(x.shape)
        axes = sorted(int(a) % rin for a in axes)
        keep = int(task.attrs.get("keepdims", 1))
        if keep:
            if k in axes:
                return None
            j = k
        else:
            kept = [i for i in range(rin) if i not in axes]
            if len(kept) != r:
                return None
            j = kept[k]
        return [j] + [None] * (len(ins) - 1), [k]
    if op == "Gather":
        data, idx = ins[0], ins[1]
        if data is None or idx is None or len(outs) != 1:
            return None
        axis = int(task.attrs.get("axis", 0)) % len(data.shape)
        ni = len(idx.shape)
        if axis <= k < axis + ni:
            return [None, k - axis], [k]
        if k < axis:
            return [k, None], [k]
        return [k - ni + 1, None], [k]
    if op in CNN_OPS:
        return cnn_split_rule(graph, task, k, ins, outs)
    if op == "Pad":
        return _pad_split_rule(graph, task, k, r)
    if op == "Attention":
        return attention_rule(graph, task, k)
    if op == "Transpose":
        x = ins[0]
        if x is None:
            return None
        perm = task.attrs.get("perm") or list(range(len(x.shape)))[::-1]
        return [int(perm[k])], [k]
    return None


def _pad_split_rule(graph: TaskGraph, task: Task, k: int, r: int) -> tuple[list[int | None], list[int | None]] | None:
    """Pad cut along an axis it does not pad: each block pads its own slice, pads and value read whole.

    An explicit Pad before a depthwise Conv (TF-style "same" padding, e.g.
    transformers' MobileNetV2) pads only rows and columns; cut along channels
    it is exactly the whole Pad, in every mode. An axis that is padded is
    never cut (its blocks would need the neighbours' rows: whole only).
    """
    ins = task.inputs
    pads: list[int] | None
    if graph.opset.get("", 13) < 11:
        pads = [int(p) for p in task.attrs.get("pads", [])]
    else:
        pads = _const_ints(graph, ins[1]) if len(ins) > 1 else None
    if pads is None:
        return None
    axes: list[int] = list(range(r))
    if len(ins) > 3 and ins[3] is not None:
        given = _const_ints(graph, ins[3])
        if given is None:
            return None
        axes = [a % r for a in given]
    if len(pads) != 2 * len(axes):
        return None
    for i, a in enumerate(axes):
        if a == k and (pads[i] or pads[i + len(axes)]):
            return None
    return [k] + [None] * (len(ins) - 1), [k]


# -- the pass ------------------------------------------------------------------


class _Builder:
    def __init__(self, graph: TaskGraph, max_task_bytes: int) -> None:
        self.g = graph
        self.limit = max_task_bytes
        self.values: dict[str, Value] = dict(graph.values)
        self.constants: dict[str, np.ndarray] = dict(graph.constants)
        self.blocks: dict[str, tuple[str, int, int, int]] = dict(getattr(graph, "blocks", {}) or {})
        self.tasks: list[Task] = []
        self.slice_attrs = graph.opset.get("", 13) < 10  # Slice takes starts / ends / axes as attributes before opset 10
        self.whole: set[str] = set()  # storages available whole
        self.native: dict[str, Partition] = {}  # storage -> partition its tiled producer wrote
        self.parts: dict[tuple[str, Partition], list[str]] = {}  # (value, partition) -> block value names
        self.report = TilingReport(max_task_bytes)
        self._names: set[str] = set(graph.values) | {t.name for t in graph.tasks}
        self.consumers = graph.consumers()
        self.outputs: list[str] = list(graph.outputs)  # after run(): outputs, a big tiled one replaced by its blocks
        self.lazy: dict[str, Task] = {}  # generated storages, computed per consuming block (partition_remat)
        for v in graph.values.values():
            if v.kind in INITIAL_KINDS and not v.is_alias:
                self.whole.add(v.name)

    # names ----------------------------------------------------------------
    def fresh(self, base: str) -> str:
        name, n = base, 1
        while name in self._names:
            n += 1
            name = f"{base}~{n}"
        self._names.add(name)
        return name

    def emit(self, t: Task) -> None:
        flops, nbytes = estimate(t, self.values)  # (reads neither id nor the task's own estimates)
        # built directly: dataclasses.replace costs ~10x more, and a tiled graph has 1e5 tasks
        self.tasks.append(Task(len(self.tasks), t.name, t.op_type, t.domain, t.attrs, t.inputs, t.outputs, flops, nbytes))

    def block_value(self, v: Value, axis: int, a: int, b: int, name: str, kind: str, storage: str | None = None) -> Value:
        shape = list(v.shape)
        numel = math.prod(v.shape)
        shape[axis] = b - a
        nbytes = 0 if numel == 0 else v.nbytes // numel * math.prod(shape)
        nv = Value(name, v.dtype, tuple(shape), nbytes, kind, storage or name)
        self.values[name] = nv
        return nv

    # partitions -------------------------------------------------------------
    def view_partition(self, name: str) -> Partition | None:
        """The partition ``name`` is available in without copies (its storage's native one, re-indexed)."""
        v = self.values[name]
        p = self.native.get(v.storage)
        if p is None:
            return None
        if v.name == v.storage:
            return p
        j = _alias_axis(self.values[v.storage].shape, p.axis, v.shape)
        return None if j is None else Partition(j, p.bounds)

    def get_whole(self, name: str) -> str:
        v = self.values[name]
        s = v.storage
        if s in self.whole:
            return name
        if s in self.lazy:
            return generator_whole(self, name)
        p = self.native[s]
        blocks = self.parts[(s, p)]
        self.emit(Task(0, self.fresh(f"assemble {s}"), "Concat", "", {"axis": p.axis}, tuple(blocks), (s,), 0, 0))
        self.whole.add(s)
        self.report.assembles.append(s)
        return name

    def input_blocks(self, task: Task, in_axes: list[int | None], p: Partition) -> list[list[str] | None]:
        """Per input of ``task`` split in ``p``: None where omitted, the whole value once per block where its axis
        is None, else its blocks along its axis, with halos for a windowed op's rows (turnipc/partition_conv.py)
        (the inputs of every blockwise copy of a task)."""
        out: list[list[str] | None] = []
        for i, (nm, ax) in enumerate(zip(task.inputs, in_axes, strict=True)):
            if nm is None:
                out.append(None)
            elif ax is None:
                out.append([self.get_whole(nm)] * len(p.bounds))
            else:
                out.append(self.get_blocks(nm, input_partition(self.g, task, i, ax, p)))
        return out

    def get_blocks(self, name: str, p: Partition) -> list[str]:
        if self.values[name].storage in self.lazy:  # fresh blocks for every consumer, never cached
            fresh = generator_blocks(self, name, p)
            if fresh is not None:
                return fresh
        key = (name, p)
        got = self.parts.get(key)
        if got is not None:
            return got
        v = self.values[name]
        s = v.storage
        sv = self.values[s]
        if self.view_partition(name) == p and name != s:
            base_blocks = self.parts[(s, self.native[s])]
            out = []
            for i, (a, b) in enumerate(p.bounds):
                bn = self.fresh(f"{name}#{p.axis}.{i}")
                self.block_value(v, p.axis, a, b, bn, self.values[base_blocks[i]].kind, storage=base_blocks[i])
                out.append(bn)
        elif sv.kind in INITIAL_KINDS:
            out = []
            for i, (a, b) in enumerate(p.bounds):
                bn = self.fresh(f"{name}#{p.axis}.{i}")
                self.block_value(v, p.axis, a, b, bn, sv.kind)
                if sv.kind == "constant":
                    arr = np.asarray(self.constants[s]).reshape(v.shape)
                    idx = [slice(None)] * len(v.shape)
                    idx[p.axis] = slice(a, b)
                    self.constants[bn] = np.ascontiguousarray(arr[tuple(idx)])
                else:
                    self.blocks[bn] = (name, p.axis, a, b)
                out.append(bn)
        elif s not in self.whole and name == s:
            out = self.repartition(name, self.native[s], p)
        elif s not in self.whole and (vp := self.view_partition(name)) is not None and vp.axis == p.axis:
            self.get_blocks(name, vp)  # a view of a tiled storage: re-cut its own blocks (a conv's halo rows), never whole
            out = self.repartition(name, vp, p)
        else:
            whole = self.get_whole(name)
            axes = "" if self.slice_attrs else self.const_i64(f"{name} axes", [p.axis])
            out = []
            for i, (a, b) in enumerate(p.bounds):
                bn = self.fresh(f"{name}#{p.axis}.{i}")
                self.block_value(v, p.axis, a, b, bn, "activation")
                if self.slice_attrs:
                    self.emit(_slice_v1(self.fresh(f"split {bn}"), whole, bn, p.axis, a, b))
                    out.append(bn)
                    continue
                starts = self.const_i64(f"{bn} start", [a])
                ends = self.const_i64(f"{bn} end", [b])
                self.emit(Task(0, self.fresh(f"split {bn}"), "Slice", "", {}, (whole, starts, ends, axes), (bn,), 0, 0))
                out.append(bn)
            self.report.splits.append(name)
        self.parts[key] = out
        return out

    def repartition(self, name: str, old: Partition, new: Partition) -> list[str]:
        """Blocks of ``name`` in partition ``new`` from its blocks in ``old``, never whole.

        Each new block is the Concat (along the old axis) of the pieces of
        the old blocks that fall in it, each piece cut by a Slice; so no task
        needs more than an old block plus a new block, unlike assemble-then-split.
        """
        v = self.values[name]
        old_blocks = self.parts[(name, old)]
        out = []
        for j, (a, b) in enumerate(new.bounds):
            bn = self.fresh(f"{name}#{new.axis}.{j}")
            self.block_value(v, new.axis, a, b, bn, "activation")
            pieces = []
            for i, (c, d) in enumerate(old.bounds):
                if new.axis == old.axis:
                    lo, hi = max(a, c), min(b, d)
                    if lo >= hi:
                        continue
                    start, stop = lo - c, hi - c
                    full = start == 0 and stop == d - c
                else:
                    start, stop = a, b
                    full = False
                src = old_blocks[i]
                if full:
                    pieces.append(src)
                    continue
                piece = self.fresh(f"{bn}.p{i}")
                sv = self.values[src]
                self.block_value(sv, new.axis, start, stop, piece, "activation")
                if self.slice_attrs:
                    self.emit(_slice_v1(self.fresh(f"split {piece}"), src, piece, new.axis, start, stop))
                    pieces.append(piece)
                    continue
                axes = self.const_i64(f"{piece} axes", [new.axis])
                st = self.const_i64(f"{piece} start", [start])
                en = self.const_i64(f"{piece} end", [stop])
                self.emit(Task(0, self.fresh(f"split {piece}"), "Slice", "", {}, (src, st, en, axes), (piece,), 0, 0))
                pieces.append(piece)
            if len(pieces) == 1 and pieces[0] != old_blocks[0] and pieces[0] not in old_blocks:
                # one piece: it is the new block (rename the Slice's output instead of copying it again)
                t = self.tasks.pop()
                del self.values[pieces[0]]
                self.emit(dataclasses.replace(t, outputs=(bn,)))
            else:
                self.emit(Task(0, self.fresh(f"repartition {bn}"), "Concat", "", {"axis": old.axis}, tuple(pieces), (bn,), 0, 0))
            out.append(bn)
        self.report.splits.append(name)
        return out

    def const_i64(self, base: str, data: list[int]) -> str:
        name = self.fresh(base)
        arr = np.asarray(data, dtype=np.int64)
        self.values[name] = Value(name, "int64", arr.shape, arr.nbytes, "constant", name)
        self.constants[name] = arr
        return name

    # decisions ----------------------------------------------------------------
    def working_set(self, task: Task, rule=None, frac: tuple[int, int] | None = None) -> int:
        """Bytes of the distinct storages one (block) task touches; ``frac = (block, extent)``."""
        seen: dict[str, int] = {}
        axes_in = rule[0] if rule else [None] * len(task.inputs)
        axes_out = rule[1] if rule else [None] * len(task.outputs)
        for names, axes in ((task.inputs, axes_in), (task.outputs, axes_out)):
            for nm, ax in zip(names, axes, strict=False):
                if nm is None:
                    continue
                v = self.values[nm]
                key = v.storage if ax is None else f"{nm}@{ax}"
                n = self.values[v.storage].nbytes
                if ax is not None and frac is not None:
                    n = -(-n * frac[0] // frac[1])
                seen[key] = max(seen.get(key, 0), aligned(n))
        return sum(seen.values()) + aligned(scratch_share(self.g, task, frac if rule else None))

    def reduce_rule(self, task: Task) -> list[int | None] | None:
        """Input axes for splitting the reduction (K) axis of a MatMul / Gemm, or None."""
        if task.domain not in ("", "ai.onnx") or len(task.outputs) != 1:
            return None
        ins = [self.values[i] if i is not None else None for i in task.inputs]
        if task.op_type == "MatMul":
            a, b = ins[0], ins[1]
            if a is None or b is None or len(a.shape) < 2 or len(b.shape) < 2:
                return None
            return [len(a.shape) - 1, len(b.shape) - 2]
        if task.op_type == "Gemm":
            ta, tb = int(task.attrs.get("transA", 0)), int(task.attrs.get("transB", 0))
            return [0 if ta else 1, 1 if tb else 0] + [None] * (len(ins) - 2)
        return None

    def reduce_ws(self, task: Task, axes: list[int | None], size: int, ext: int) -> int:
        out = aligned(self.values[_out0(task)].nbytes)
        part = self.working_set(task, (axes, [None]), (size, ext))
        return max(part, 3 * out)

    def options(self, task: Task) -> list[tuple]:
        """Fresh splits of ``task``, best first: (key, kind, axis, n, rule, ws)."""
        out0 = self.values[_out0(task)]
        opts: list[tuple[str, int, int, tuple[list[int | None], list[int | None]], int]] = []
        for k in range(len(out0.shape)):
            if out0.shape[k] <= 1:
                continue
            rule = split_rule(self.g, task, k)
            if rule is None:
                continue
            ext = out0.shape[k]
            n, ws = self._fit(lambda size, rule=rule, ext=ext: self.working_set(task, rule, (size, ext)), ext)
            opts.append(("out", k, n, rule, max(ws, whole_read_bytes(self, task, rule[0]))))
        raxes = self.reduce_rule(task)
        if raxes is not None and raxes[0] is not None and task.inputs[0] is not None:
            a = self.values[task.inputs[0]]
            rax = raxes[0]
            ext = a.shape[rax]
            if ext > 1:
                n, ws = self._fit(lambda size: self.reduce_ws(task, raxes, size, ext), ext)
                opts.append(("reduce", rax, n, (raxes, [None]), ws))
        res = []
        for kind, k, n, rule, ws in opts:
            fits = ws <= self.limit
            # fewest blocks that fit; a reduction split (partial sums) only when nothing else fits
            key = (not fits, kind == "reduce", n if fits else ws, k)
            res.append((key, kind, k, n, rule, ws))
        res.sort(key=lambda o: o[0])
        # a Conv cut along rows x channels (turnipc/partition_conv.py) comes first only where no one-axis
        # split fits and it needs less memory than the best of them; otherwise it follows them
        grids = []
        for blocks, grid, ws in grid_options(self, task):
            grid_rule = (grid, split_rule(self.g, task, grid.rows.axis))
            grids.append(((ws > self.limit, blocks if ws <= self.limit else ws, grid.rows.axis), "grid", grid.rows.axis, blocks,
                          grid_rule, ws))
        grids.sort(key=lambda o: o[0])
        if grids and res and res[0][5] > self.limit and grids[0][5] < res[0][5]:
            return grids[:1] + res + grids[1:]
        return res + grids

    def _fit(self, ws_of, ext: int) -> tuple[int, int]:
        top = min(ext, MAX_BLOCKS)
        n = 1
        while True:
            size = -(-ext // n)
            ws = ws_of(size)
            if ws <= self.limit or n >= top:
                return n, ws
            n = min(top, n * 2 if ws > 2 * self.limit else n + 1)

    def consumer_axis(self, task: Task) -> int | None:
        """The axis of ``task``'s output 0 its first consumer would split its input along, if it must split."""
        out = _out0(task)
        s = self.values[out].storage
        for c in self.consumers.get(s, ()):
            ct = self.g.tasks[c]
            if not ct.outputs or ct.outputs[0] is None or self.working_set(ct) <= self.limit:
                continue
            opts = self.options(ct)
            if not opts or opts[0][5] > self.limit:
                continue
            rule = opts[0][4] if opts[0][1] != "grid" else opts[0][4][1]
            for i, nm in enumerate(ct.inputs):
                if nm is not None and self.values[nm].storage == s and rule[0][i] is not None:
                    j = rule[0][i]
                    v = self.values[nm]
                    return j if nm == s else _alias_axis(v.shape, j, self.values[s].shape)
            return None
        return None

    def choose(self, task: Task) -> tuple[str, Partition | Grid, tuple] | None:
        out0 = self.values[task.outputs[0]] if task.outputs and task.outputs[0] is not None else None
        if out0 is None:
            return None
        whole_ws = max(self.working_set(task), whole_read_bytes(self, task, [None] * len(task.inputs)))
        raxes = self.reduce_rule(task)
        # 1. propagation: keep the partition an input already has (refined if its blocks are too big)
        props = []
        for i, nm in enumerate(task.inputs):
            if nm is None:
                continue
            p = self.view_partition(nm)
            if p is None:
                continue
            for k in range(len(out0.shape)):
                if out0.shape[k] != p.extent:
                    continue
                rule = split_rule(self.g, task, k)
                if rule is not None and rule[0][i] == p.axis:
                    for q in _refinements(p):
                        ws = self.working_set(task, rule, (q.largest, q.extent))
                        props.append((ws, "out", Partition(k, q.bounds), rule))
                        if ws <= self.limit:
                            break
            if raxes is not None and raxes[i] == p.axis:
                ws = self.reduce_ws(task, raxes, p.largest, p.extent)
                props.append((ws, "reduce", p, (raxes, [None])))
        for ws, kind, q, rule in props:
            if ws <= self.limit:
                return kind, q, rule
        if whole_ws <= self.limit:
            return None
        # 2. a new split: the axis needing the fewest blocks to fit, preferring the one
        #    the consumer will read in blocks (so blocks flow on without an assemble)
        opts = self.options(task)
        if not opts:
            return None
        fitting = [o for o in opts if o[5] <= self.limit]
        pick = opts[0]
        if len(fitting) > 1 and task.outputs[0] is not None:
            want = self.consumer_axis(task)
            for o in fitting:
                if o[1] == "out" and o[2] == want:
                    pick = o
                    break
        _, kind, k, n, rule, ws = pick
        if ws > self.limit and props:
            best = min(props, key=lambda c: c[0])
            if best[0] < ws and best[0] < whole_ws:
                return best[1], best[2], best[3]
        if ws >= whole_ws:
            return None
        if kind == "grid":
            return kind, rule[0], rule[1]
        ext = out0.shape[k] if kind == "out" else self.values[_in0(task)].shape[k]
        return kind, Partition(k, even_bounds(ext, n)), rule

    def run(self) -> None:
        for task in self.g.tasks:
            if is_generator(self, task):
                self.lazy[_out0(task)] = task
                continue
            choice = self.choose(task)
            if choice is None:
                ins = tuple(None if nm is None else self.get_whole(nm) for nm in task.inputs)
                self.emit(dataclasses.replace(task, inputs=ins))
                for o in task.outputs:
                    if o is not None:
                        self.whole.add(self.values[o].storage)
                continue
            kind, p, (in_axes, out_axes) = choice
            if isinstance(p, Grid):  # a Conv cut rows x channels (turnipc/partition_conv.py)
                emit_grid(self, task, p)
                continue
            if kind == "reduce":
                self.emit_reduce(task, p, in_axes)
                continue
            in_blocks = self.input_blocks(task, in_axes, p)
            out_blocks: list[list[str] | None] = []
            for nm, ax in zip(task.outputs, out_axes, strict=True):
                if nm is None:
                    out_blocks.append(None)
                    continue
                v = self.values[nm]
                names = []
                for i, (a, b) in enumerate(p.bounds):
                    bn = self.fresh(f"{nm}#{ax}.{i}")
                    self.block_value(v, ax, a, b, bn, "activation")
                    names.append(bn)
                op = Partition(ax, p.bounds)
                self.native[nm] = op
                self.parts[(nm, op)] = names
                out_blocks.append(names)
            for i in range(len(p.bounds)):
                ins = tuple(None if blk is None else blk[i] for blk in in_blocks)
                outs = tuple(None if blk is None else blk[i] for blk in out_blocks)
                attrs = block_attrs(self.g, task, in_axes, p, i)
                self.emit(Task(0, self.fresh(f"{task.name}#{i}"), task.op_type, task.domain, attrs, ins, outs, 0, 0))
            self.report.tiled[task.name] = len(p.bounds)
        self.outputs = finish_outputs(self)  # big tiled outputs stay in blocks, assembled on the host


    def emit_reduce(self, task: Task, p: Partition, in_axes: list[int | None]) -> None:
        """Split the reduction axis: one partial product per block, summed by a chain of Adds.

        The chain fixes the summation order, so every execution order gives
        the same bits; the partials differ from one whole MatMul only by
        floating-point rounding (within ``--check`` tolerance).
        """
        out = _out0(task)
        v = self.values[out]
        blocks = []
        for nm, ax in zip(task.inputs, in_axes, strict=False):
            if nm is None or ax is None:
                blocks.append(None if nm is None else [self.get_whole(nm)] * len(p.bounds))
            else:
                blocks.append(self.get_blocks(nm, Partition(ax, p.bounds)))
        acc = None
        last = len(p.bounds) - 1
        for i in range(len(p.bounds)):
            ins = [None if blk is None else blk[i] for blk in blocks]
            if task.op_type == "Gemm" and i > 0:
                ins = ins[:2]  # the bias C is added once, by the first partial product
            part = out if last == 0 else self.fresh(f"{out}#k{i}")
            if part != out:
                self.values[part] = Value(part, v.dtype, v.shape, v.nbytes, "activation", part)
            self.emit(Task(0, self.fresh(f"{task.name}#k{i}"), task.op_type, task.domain, task.attrs, tuple(ins), (part,), 0, 0))
            if acc is None:
                acc = part
                continue
            total = out if i == last else self.fresh(f"{out}#sum{i}")
            if total != out:
                self.values[total] = Value(total, v.dtype, v.shape, v.nbytes, "activation", total)
            self.emit(Task(0, self.fresh(f"{task.name}#add{i}"), "Add", "", {}, (acc, part), (total,), 0, 0))
            acc = total
        self.whole.add(out)
        self.report.tiled[task.name] = len(p.bounds)


def _slice_v1(name: str, src: str, out: str, axis: int, start: int, stop: int) -> Task:
    """A Slice in the form of opsets 1-9 (the light CNNs are opset 8 and 9): bounds as attributes."""
    return Task(0, name, "Slice", "", {"starts": [start], "ends": [stop], "axes": [axis]}, (src,), (out,), 0, 0)


def _out0(task: Task) -> str:
    """Output 0 of a task the pass splits (present: choose() returns None for a task without it)."""
    out = task.outputs[0]
    assert out is not None
    return out


def _in0(task: Task) -> str:
    """Input 0 of a MatMul / Gemm whose reduction axis is split (always present)."""
    x = task.inputs[0]
    assert x is not None
    return x


def _refinements(p: Partition, most: int = 64):
    """``p``, then ``p`` with every block cut in 2, 3, ... parts (same axis): finer partitions that keep the flow."""
    yield p
    for m in range(2, most + 1):
        if len(p.bounds) * m > MAX_BLOCKS:
            return
        bounds: list[tuple[int, int]] = []
        for a, b in p.bounds:
            bounds.extend((a + x, a + y) for x, y in even_bounds(b - a, m))
        q = Partition(p.axis, tuple(bounds))
        yield q
        if q.largest <= 1:
            return


def _alias_axis(base_shape: tuple[int, ...], axis: int, shape: tuple[int, ...]) -> int | None:
    """The axis of a reshaped view that holds exactly ``base_shape[axis]`` (same elements before it), if any."""
    pre = math.prod(base_shape[:axis])
    ext = base_shape[axis]
    acc = 1
    for j, d in enumerate(shape):
        if acc == pre and d == ext:
            return j
        acc *= d
        if acc > pre:
            return None
    return None


def task_working_set(graph: TaskGraph, t: Task) -> int:
    """Bytes (aligned) of the distinct storages task ``t`` reads and writes: all resident while it runs."""
    need = set(t.storages_read(graph)) | set(t.storages_written(graph))
    return sum(aligned(graph.storage_bytes(s)) for s in need) + aligned(scratch_bytes(graph, t))


def largest_tasks(graph: TaskGraph, top: int = 10) -> list[tuple[int, str, str]]:
    """(working-set bytes, task name, op) of the ``top`` tasks needing the most memory at once."""
    io = graph_io(graph)  # the same bytes as task_working_set, each task's storages read once per graph
    ws = [(io.working_set[i] + aligned(scratch_bytes(graph, t)), t.name, t.op_type) for i, t in enumerate(graph.tasks)]
    ws.sort(key=lambda x: (-x[0], x[1]))
    return ws[:top]


def largest_task(graph: TaskGraph) -> tuple[int, str]:
    """(working-set bytes, task name) of the task needing the most memory at once."""
    top = largest_tasks(graph, 1)
    return (top[0][0], top[0][1]) if top else (0, "")


def partition_graph(graph: TaskGraph, max_task_bytes: int) -> tuple[TaskGraph, TilingReport]:
    """A TaskGraph where no task needs more than ``max_task_bytes`` where an exact split allows it.

    Returns the graph unchanged (the same object) when every task already fits.
    """
    if largest_task(graph)[0] <= max_task_bytes:
        return graph, TilingReport(max_task_bytes)
    b = _Builder(graph, max_task_bytes)
    b.run()
    used: set[str] = set(graph.inputs) | set(graph.outputs) | set(b.outputs)
    for t in b.tasks:
        used.update(x for x in t.inputs if x is not None)
        used.update(x for x in t.outputs if x is not None)
    for nm in list(used):
        used.add(b.values[nm].storage)
    for nm in list(used):
        if nm in b.blocks:
            base = b.blocks[nm][0]
            used.add(base)
            used.add(b.values[base].storage)
    values = {k: v for k, v in b.values.items() if k in used}
    constants = {k: v for k, v in b.constants.items() if k in values}
    blocks = {k: v for k, v in b.blocks.items() if k in values}
    new = dataclasses.replace(graph, values=values, tasks=b.tasks, constants=constants, blocks=blocks, outputs=b.outputs)
    return new, b.report
