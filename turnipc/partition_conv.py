"""Split rules for convolutional networks, and ConstantOfShape weights made per block.

Why: the partition pass (turnipc/partition.py) bounds the memory of every
task by cutting it into blocks along an axis where the blockwise result is
the whole one. A CNN's big tasks are convolutions, pools, normalizations and
the channel Concats of Inception / SqueezeNet / DenseNet; without rules for
them a CNN cannot plan below the working set of its largest such task.

The rules (:func:`cnn_split_rule`, read by :func:`turnipc.partition.split_rule`):

- Conv: batch; output channels (filter and bias blocks) when ``group == 1``;
  any spatial axis (input rows with their halo). Where none of these fits the
  task-size limit, output rows x output channels at once (:class:`Grid`,
  :func:`grid_options`, :func:`emit_grid`). A split reading a tiled input
  whole counts its assemble (:func:`whole_read_bytes`).
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


# -- two-axis Conv split: output rows x output channels ------------------------

#: Row-block counts tried for a two-axis split (every count up to this; more rows than this are never needed
#: for the CNNs here, and the search stays a few hundred arithmetic steps per conv).
GRID_MAX_ROWS = 64


@dataclass(frozen=True)
class Grid:
    """A Conv cut two ways: ``rows`` (a spatial output axis) x ``channels`` (output axis 1).

    Why: a channel block reads the whole input, and a row block reads the
    whole filter. Where the input and the filter are both big (ResNet-50's
    1x1 stride-2 projection: a 1.6 MB input, a 2 MB filter), neither
    one-axis split gets a task below either, so no budget under them plans.
    A block of the grid reads its input rows (with their halo) and its filter
    block: both shrink. The row blocks stay the output's partition (what
    flows on to BatchNormalization / Relu / Add), each assembled from its
    channel pieces by a Concat of one row block's bytes.
    """

    rows: Partition
    channels: Partition


class _GridCost:
    """The working set of a grid block of one Conv along one spatial axis, as a cheap function of the split."""

    def __init__(self, b: _Builder, task: Task, k: int) -> None:
        vals = b.values
        x, w, y = (vals[n] for n in (task.inputs[0], task.inputs[1], task.outputs[0]))  # type: ignore[index]
        bias = vals[task.inputs[2]] if len(task.inputs) > 2 and task.inputs[2] is not None else None
        win = window(task, [vals[n] if n is not None else None for n in task.inputs], k, y.shape[k])
        assert win is not None
        self.win, self.k, self.b, self.task = win, k, b, task
        self.x_tiled = tiled_storage(b, task.inputs[0]) is not None
        self.x_bytes, self.x_rows = vals[x.storage].nbytes, x.shape[k]
        self.w_bytes = vals[w.storage].nbytes
        self.b_bytes = 0 if bias is None else vals[bias.storage].nbytes
        self.y_bytes, self.y_rows, self.chans = vals[y.storage].nbytes, y.shape[k], y.shape[1]

    def rows(self, bounds: tuple[tuple[int, int], ...]) -> tuple[int, int, bool]:
        """(largest input rows with halo, largest output rows, whether the input rows must be re-cut) of row
        blocks ``bounds``."""
        from .partition import Partition

        halos = tuple(halo_bounds(self.win, lo, hi)[:2] for lo, hi in bounds)
        in_rows = max(e - s for s, e in halos)
        recut = self.x_tiled and self.b.view_partition(self.task.inputs[0]) != Partition(self.k, halos)  # type: ignore[arg-type]
        return in_rows, max(hi - lo for lo, hi in bounds), recut

    def bytes(self, in_rows: int, out_rows: int, recut: bool, nc: int) -> int:
        """The largest of a Conv block, (``nc`` > 1) the Concat of one row block's ``nc`` pieces and (``recut``) the
        Concat re-cutting a tiled input into a block of input rows with their halo (pieces and block)."""
        from .residency import aligned

        x_block = aligned(-(-self.x_bytes * in_rows // self.x_rows))
        cb = -(-self.chans // nc)  # the largest of even_bounds(chans, nc)
        piece = aligned(-(-self.y_bytes * out_rows * cb // (self.y_rows * self.chans)))
        conv = (x_block + aligned(-(-self.w_bytes * cb // self.chans)) + piece
                + (aligned(-(-self.b_bytes * cb // self.chans)) if self.b_bytes else 0))
        if recut:
            conv = max(conv, 2 * x_block)
        if nc == 1:
            return conv
        return max(conv, aligned(-(-self.y_bytes * out_rows // self.y_rows)) + nc * piece)


def grid_working_set(b: _Builder, task: Task, k: int, rows: tuple[tuple[int, int], ...], nc: int) -> int:
    """Bytes one task of Conv ``task`` cut in row blocks ``rows`` (output axis ``k``) x ``nc`` channel blocks needs
    at most: the larger of a Conv block (input rows with their halo, filter and bias block, output piece) and,
    with ``nc`` > 1, the Concat of one row block's pieces (every storage aligned, as :meth:`_Builder.working_set`)."""
    cost = _GridCost(b, task, k)
    return cost.bytes(*cost.rows(rows), nc)


def tiled_storage(b: _Builder, name: str | None) -> str | None:
    """The storage of ``name`` when it exists only in blocks so far (reading it whole or re-cut costs a Concat)."""
    if name is None:
        return None
    s = b.values[name].storage
    return s if s in b.native and s not in b.whole and s not in b.lazy else None


def whole_read_bytes(b: _Builder, task: Task, in_axes: list[int | None]) -> int:
    """Bytes of the largest assemble a one-axis split of Conv ``task`` causes: an input it reads whole that exists
    only in blocks is first concatenated (its blocks and the whole at once). Why: a channel split reads the whole
    input; on a tiled input that Concat, not the Conv block, is the split's largest task."""
    from .residency import aligned

    if task.op_type != "Conv":
        return 0
    most = 0
    for nm, ax in zip(task.inputs, in_axes, strict=False):
        s = tiled_storage(b, nm) if ax is None else None
        if s is not None:
            most = max(most, 2 * aligned(b.values[s].nbytes))
    return most


def _channel_counts(chans: int, top: int) -> list[int]:
    """Channel-block counts from 2 to ``top``, one per distinct largest block (the fewest blocks giving it)."""
    out = sorted({-(-chans // cb) for cb in range(1, chans + 1)})
    return [n for n in out if 2 <= n <= top]


def grid_options(b: _Builder, task: Task) -> list[tuple[int, Grid, int]]:
    """Two-axis splits of Conv ``task``: (blocks, grid, bytes), per spatial axis the fewest blocks that fit
    ``b.limit`` (else the smallest working set). Empty where the op has no channel or no row split."""
    from .partition import MAX_BLOCKS, Partition, even_bounds, split_rule

    if task.op_type != "Conv" or len(task.outputs) != 1 or task.outputs[0] is None or len(task.inputs) < 2:
        return []
    y = b.values[task.outputs[0]]
    if len(y.shape) < 3 or y.shape[1] < 2 or split_rule(b.g, task, 1) is None:
        return []
    chans = y.shape[1]
    counts = _channel_counts(chans, min(chans, MAX_BLOCKS // 2))
    out: list[tuple[int, Grid, int]] = []
    for k in range(2, len(y.shape)):
        ext = y.shape[k]
        if ext < 2 or split_rule(b.g, task, k) is None:
            continue
        cost = _GridCost(b, task, k)
        best: tuple[tuple, int, int, int] | None = None  # (key, nr, nc, ws)
        for nr in range(2, min(ext, GRID_MAX_ROWS, MAX_BLOCKS // 2) + 1):
            rows = cost.rows(even_bounds(ext, nr))
            for nc in counts:
                if nr * nc > MAX_BLOCKS or (best is not None and not best[0][0] and nr * nc >= best[0][1]):
                    break  # no fewer blocks than a fitting grid already found
                ws = cost.bytes(*rows, nc)
                fits = ws <= b.limit
                key = (not fits, nr * nc if fits else ws, nc)
                if best is None or key < best[0]:
                    best = (key, nr, nc, ws)
                if fits:
                    break  # more channel blocks only add blocks
        if best is not None:
            _, nr, nc, ws = best
            out.append((nr * nc, Grid(Partition(k, even_bounds(ext, nr)), Partition(1, even_bounds(chans, nc))), ws))
    return out


def emit_grid(b: _Builder, task: Task, grid: Grid) -> None:
    """Emit Conv ``task`` as ``grid``'s blocks: per row block, one Conv per channel block on the row block's
    input rows (with halo, from its native blocks, never whole) and that channel block's filter (a
    ConstantOfShape filter is filled afresh per Conv), then the Concat of the pieces along the channels."""
    from .partition import Partition

    k = grid.rows.axis
    nm = task.outputs[0]
    assert nm is not None
    y = b.values[nm]
    in_axes: list[int | None] = [k] + [None] * (len(task.inputs) - 1)
    xs = b.get_blocks(task.inputs[0], input_partition(b.g, task, 0, k, grid.rows))  # type: ignore[arg-type]
    chans = Partition(0, grid.channels.bounds)
    row_blocks = []
    for r, (a, e) in enumerate(grid.rows.bounds):
        yr = b.block_value(y, k, a, e, b.fresh(f"{nm}#{k}.{r}"), "activation")
        params = [None if p is None else b.get_blocks(p, chans) for p in task.inputs[1:]]  # fresh fills per row block
        attrs = block_attrs(b.g, task, in_axes, grid.rows, r)
        pieces = []
        for c, (lo, hi) in enumerate(grid.channels.bounds):
            if len(grid.channels.bounds) == 1:
                piece = yr.name
            else:
                piece = b.fresh(f"{yr.name}.c{c}")
                b.block_value(yr, 1, lo, hi, piece, "activation")
            ins = (xs[r],) + tuple(None if p is None else p[c] for p in params)
            b.emit(Task(0, b.fresh(f"{task.name}#{r}.{c}"), task.op_type, task.domain, attrs, ins, (piece,), 0, 0))
            pieces.append(piece)
        if len(pieces) > 1:
            b.emit(Task(0, b.fresh(f"gather {yr.name}"), "Concat", "", {"axis": 1}, tuple(pieces), (yr.name,), 0, 0))
        row_blocks.append(yr.name)
    native = Partition(k, grid.rows.bounds)
    b.native[nm] = native
    b.parts[(nm, native)] = row_blocks
    b.report.tiled[task.name] = len(grid.rows.bounds) * len(grid.channels.bounds)
    b.report.grids[task.name] = [len(grid.rows.bounds), len(grid.channels.bounds)]
