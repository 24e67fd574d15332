"""Shape and data-movement ops.

Reshape/Squeeze/Unsqueeze/Flatten/Identity are normally aliases that the
compiler removes; here they are plain copies into the planned output shape.
"""

from __future__ import annotations

import numpy as np

from . import has_output, register, to_str
from ._common import host_ints, host_scalar, norm_axis, up, write


def write_host(xp, out, value):
    """Store a host value (NumPy array or scalar) into ``out``."""
    v = np.asarray(value)
    out[...] = v.item() if v.ndim == 0 else xp.asarray(v.astype(out.dtype, copy=False))


@register("Reshape", "Squeeze", "Unsqueeze", "Flatten", host_inputs=(1,))  # Flatten has no input 1
def reshape(ctx, inputs, outputs):
    write(outputs[0], inputs[0].reshape(outputs[0].shape))


@register("Transpose")
def transpose(ctx, inputs, outputs):
    x = inputs[0]
    perm = ctx.attr("perm")
    perm = list(range(x.ndim))[::-1] if not perm else [int(p) for p in perm]
    out = outputs[0]
    if ctx.xp is np and x.ndim == 2 and perm == [1, 0] and x.size >= _TILED_TRANSPOSE_MIN:
        _transpose_2d_tiled(x, out)
        return
    write(out, ctx.xp.transpose(x, perm))


#: 2-D transposes at least this big are copied in cache-sized tiles (NumPy's strided copy
#: of a transposed view thrashes the cache: GPT-2's tied LM head, 50257 x 768, took 2.0 s
#: in one copy and 0.53 s in 128 x 128 tiles on the same machine).
_TILED_TRANSPOSE_MIN = 1 << 20
_TILE = 128


def _transpose_2d_tiled(x, out):
    rows, cols = x.shape
    for r in range(0, rows, _TILE):
        xr = x[r : r + _TILE]
        orr = out[:, r : r + _TILE]
        for c in range(0, cols, _TILE):
            np.copyto(orr[c : c + _TILE], xr[:, c : c + _TILE].T, casting="unsafe")


@register("Concat")
def concat(ctx, inputs, outputs):
    out = outputs[0]
    axis = norm_axis(ctx.attr("axis", 0), out.ndim)
    xs = [x for x in inputs if x is not None]
    off = 0
    for x in xs:
        n = x.shape[axis] if x.ndim else 1
        if n == 0:
            continue
        idx = (slice(None),) * axis + (slice(off, off + n),)
        out[idx] = x
        off += n


@register("Split", host_inputs=(1,))
def split(ctx, inputs, outputs):
    """Chunk sizes come from the planned output shapes (same for every opset variant)."""
    x = inputs[0]
    axis = norm_axis(ctx.attr("axis", 0), x.ndim)
    off = 0
    for out in outputs:
        if out is None:
            continue
        n = out.shape[axis]
        write(out, x[(slice(None),) * axis + (slice(off, off + n),)])
        off += n


def slice_params(ctx, inputs, x):
    """Python slices per axis for ONNX Slice (clamped as the spec says)."""
    if ctx.opset < 10:
        starts = [int(v) for v in ctx.attr("starts")]
        ends = [int(v) for v in ctx.attr("ends")]
        axes = ctx.attr("axes")
        steps = None
    else:
        starts = host_ints(ctx, inputs[1])
        ends = host_ints(ctx, inputs[2])
        axes = host_ints(ctx, inputs[3]) if len(inputs) > 3 and inputs[3] is not None else None
        steps = host_ints(ctx, inputs[4]) if len(inputs) > 4 and inputs[4] is not None else None
    axes = list(range(len(starts))) if axes is None else [norm_axis(a, x.ndim) for a in axes]
    steps = [1] * len(starts) if steps is None else steps
    sl = [slice(None)] * x.ndim
    for s, e, a, st in zip(starts, ends, axes, steps, strict=False):
        dim = x.shape[a]
        if s < 0:
            s += dim
        if e < 0:
            e += dim
        if st > 0:
            s = min(max(s, 0), dim)
            e = min(max(e, 0), dim)
            sl[a] = slice(s, e, st)
        else:
            s = min(max(s, 0), dim - 1)
            e = min(max(e, -1), dim - 1)
            sl[a] = slice(s, e if e >= 0 else None, st)
    return tuple(sl)


@register("Slice", host_inputs=(1, 2, 3, 4))
def slice_(ctx, inputs, outputs):
    x = inputs[0]
    write(outputs[0], x[slice_params(ctx, inputs, x)])


def _norm_index(xp, idx, dim):
    idx = idx.astype(np.int64)
    return xp.where(idx < 0, idx + dim, idx)


def _gather_args(ctx, inputs):
    """Data, axis and indices made non-negative: what Gather and GatherElements share."""
    x, idx = inputs
    axis = norm_axis(ctx.attr("axis", 0), x.ndim)
    return x, axis, _norm_index(ctx.xp, idx, x.shape[axis])


@register("Gather")
def gather(ctx, inputs, outputs):
    x, axis, idx = _gather_args(ctx, inputs)
    write(outputs[0], ctx.xp.take(x, idx, axis=axis).reshape(outputs[0].shape))


@register("GatherElements")
def gather_elements(ctx, inputs, outputs):
    x, axis, idx = _gather_args(ctx, inputs)
    write(outputs[0], ctx.xp.take_along_axis(x, idx, axis=axis))


@register("GatherND")
def gather_nd(ctx, inputs, outputs):
    xp = ctx.xp
    x, idx = inputs
    b = int(ctx.attr("batch_dims", 0))
    k = idx.shape[-1]
    B = int(np.prod(x.shape[:b])) if b else 1
    xr = x.reshape((B,) + x.shape[b:])
    ir = idx.reshape(B, -1, k).astype(np.int64)
    parts = [xp.arange(B).reshape(B, 1)]
    for j in range(k):
        parts.append(_norm_index(xp, ir[:, :, j], x.shape[b + j]))
    write(outputs[0], xr[tuple(parts)].reshape(outputs[0].shape))


@register("Expand", host_inputs=(1,))
def expand(ctx, inputs, outputs):
    write(outputs[0], ctx.xp.broadcast_to(inputs[0], outputs[0].shape))


@register("Tile", host_inputs=(1,))
def tile(ctx, inputs, outputs):
    reps = host_ints(ctx, inputs[1])
    write(outputs[0], ctx.xp.tile(inputs[0], reps))


@register("Pad", host_inputs=(1, 2, 3))
def pad(ctx, inputs, outputs):
    xp = ctx.xp
    x = inputs[0]
    nd = x.ndim
    if ctx.opset < 11:
        pads = [int(p) for p in ctx.attr("pads")]
        value = float(ctx.attr("value", 0.0))
        axes = list(range(nd))
    else:
        pads = host_ints(ctx, inputs[1])
        cv = inputs[2] if len(inputs) > 2 else None
        value = 0 if cv is None or cv.size == 0 else host_scalar(ctx, cv)
        ax = inputs[3] if len(inputs) > 3 else None
        axes = list(range(nd)) if ax is None else [norm_axis(a, nd) for a in host_ints(ctx, ax)]
    mode = to_str(ctx.attr("mode", "constant"))
    n = len(axes)
    width = [[0, 0] for _ in range(nd)]
    for i, a in enumerate(axes):
        width[a] = [pads[i], pads[i + n]]
    # negative pads crop
    crop = tuple(slice(-b if b < 0 else 0, x.shape[a] + e if e < 0 else x.shape[a]) for a, (b, e) in enumerate(width))
    x = x[crop]
    width = [(max(b, 0), max(e, 0)) for b, e in width]
    if mode == "constant":
        y = xp.pad(x, width, mode="constant", constant_values=value)
    elif mode in ("reflect", "edge", "wrap"):
        y = xp.pad(x, width, mode=mode)
    else:
        raise NotImplementedError(f"Pad mode {mode}")
    write(outputs[0], y)


@register("Range", host_inputs=(0, 1, 2))
def range_(ctx, inputs, outputs):
    xp = ctx.xp
    out = outputs[0]
    start = host_scalar(ctx, inputs[0])
    delta = host_scalar(ctx, inputs[2])
    n = out.shape[0]
    if np.dtype(out.dtype).kind in "iu":
        write(out, xp.arange(n, dtype=np.int64) * int(delta) + int(start))
    else:
        write(out, xp.arange(n, dtype=np.float64) * float(delta) + float(start))


@register("ConstantOfShape", host_inputs=(0,))
def constant_of_shape(ctx, inputs, outputs):
    v = ctx.attr("value")
    outputs[0][...] = 0 if v is None else np.asarray(v).reshape(-1)[0].item()


@register("Shape")
def shape(ctx, inputs, outputs):
    shp = inputs[0].shape
    start = ctx.attr("start", 0) if ctx.opset >= 15 else 0
    end = ctx.attr("end", None) if ctx.opset >= 15 else None
    write_host(ctx.xp, outputs[0], np.array(shp[start:end], dtype=np.int64))


@register("Size")
def size(ctx, inputs, outputs):
    outputs[0][...] = int(np.prod(inputs[0].shape))


@register("Constant")
def constant(ctx, inputs, outputs):
    a = ctx.attrs
    if "value" in a:
        v = a["value"]
    elif "value_float" in a:
        v = np.float32(a["value_float"])
    elif "value_floats" in a:
        v = np.asarray(a["value_floats"], dtype=np.float32)
    elif "value_int" in a:
        v = np.int64(a["value_int"])
    elif "value_ints" in a:
        v = np.asarray(a["value_ints"], dtype=np.int64)
    else:
        raise NotImplementedError(f"Constant attribute {sorted(a)}")
    write_host(ctx.xp, outputs[0], np.asarray(v).reshape(outputs[0].shape))


@register("Trilu", host_inputs=(1,))
def trilu(ctx, inputs, outputs):
    xp = ctx.xp
    x = inputs[0]
    k = int(host_scalar(ctx, inputs[1])) if len(inputs) > 1 and inputs[1] is not None else 0
    upper = int(ctx.attr("upper", 1))
    n, m = x.shape[-2], x.shape[-1]
    d = xp.arange(m).reshape(1, m) - xp.arange(n).reshape(n, 1)
    keep = d >= k if upper else d <= k
    write(outputs[0], xp.where(keep, x, xp.zeros((), dtype=x.dtype)))


@register("EyeLike")
def eye_like(ctx, inputs, outputs):
    xp = ctx.xp
    out = outputs[0]
    n, m = out.shape
    k = int(ctx.attr("k", 0))
    d = xp.arange(m).reshape(1, m) - xp.arange(n).reshape(n, 1)
    write(out, d == k)


@register("TopK", host_inputs=(1,))
def topk(ctx, inputs, outputs):
    xp = ctx.xp
    x = inputs[0]
    k = int(host_scalar(ctx, inputs[1])) if ctx.opset >= 10 else int(ctx.attr("k"))
    axis = norm_axis(ctx.attr("axis", -1), x.ndim)
    largest = int(ctx.attr("largest", 1))
    key = x
    if largest:
        if np.dtype(x.dtype).kind == "u":
            key = x.astype(np.int64)
        key = -up(key)
    # ties keep the lower index first, as ONNX requires (cupy's argsort is always stable)
    order = xp.argsort(key, axis=axis, kind="stable") if xp is np else xp.argsort(key, axis=axis)
    idx = xp.take(order, xp.arange(k), axis=axis)
    write(outputs[0], xp.take_along_axis(x, idx, axis=axis))
    if has_output(outputs, 1):
        write(outputs[1], idx)


def _scatter(xp, out, index, updates, reduction):
    if reduction in ("none", ""):
        out[index] = updates
        return
    fn = {"add": "add", "mul": "multiply", "max": "maximum", "min": "minimum"}[reduction]
    try:
        getattr(xp, fn).at(out, index, updates)
    except (AttributeError, NotImplementedError, TypeError):  # pragma: no cover - cupy without ufunc.at
        h = out.get()
        np_index = tuple(i.get() if hasattr(i, "get") else i for i in index)
        getattr(np, fn).at(h, np_index, updates.get() if hasattr(updates, "get") else updates)
        out[...] = xp.asarray(h)


@register("ScatterND")
def scatter_nd(ctx, inputs, outputs):
    xp = ctx.xp
    x, idx, upd = inputs
    out = outputs[0]
    write(out, x)
    k = idx.shape[-1]
    ir = idx.reshape(-1, k).astype(np.int64)
    index = tuple(_norm_index(xp, ir[:, j], x.shape[j]) for j in range(k))
    u = upd.reshape((ir.shape[0],) + x.shape[k:])
    _scatter(xp, out, index, u, to_str(ctx.attr("reduction", "none")))


@register("ScatterElements", "Scatter")
def scatter_elements(ctx, inputs, outputs):
    xp = ctx.xp
    x, idx, upd = inputs
    out = outputs[0]
    write(out, x)
    axis = norm_axis(ctx.attr("axis", 0), x.ndim)
    nd = idx.ndim
    index = []
    for a in range(nd):
        if a == axis:
            index.append(_norm_index(xp, idx, x.shape[axis]))
        else:
            index.append(xp.arange(idx.shape[a]).reshape(tuple(-1 if j == a else 1 for j in range(nd))))
    index = tuple(xp.broadcast_to(i, idx.shape) for i in index)
    _scatter(xp, out, index, upd, to_str(ctx.attr("reduction", "none")))


@register("OneHot", host_inputs=(1,))
def one_hot(ctx, inputs, outputs):
    xp = ctx.xp
    idx, depth, values = inputs
    out = outputs[0]
    depth = int(host_scalar(ctx, depth))
    axis = norm_axis(ctx.attr("axis", -1), out.ndim)
    i = idx.astype(np.int64)
    i = xp.where(i < 0, i + depth, i)
    i = xp.expand_dims(i, axis)
    pos = xp.arange(depth).reshape(tuple(-1 if a == axis else 1 for a in range(out.ndim)))
    off = values[0]
    on = values[1]
    write(out, xp.where(pos == i, on, off))


#: (op, mode) -> the axis permutation of X's 6-D block view (see ``_block_view``) that gives Y.
_BLOCK_PERMS = {
    ("DepthToSpace", "DCR"): (0, 3, 4, 1, 5, 2),
    ("DepthToSpace", "CRD"): (0, 1, 4, 2, 5, 3),
    ("SpaceToDepth", "DCR"): (0, 3, 5, 1, 2, 4),
    ("SpaceToDepth", "CRD"): (0, 1, 3, 5, 2, 4),
}


def _block_view(op, mode, x, b):
    """X (N, C, H, W) as 6-D with the ``b`` x ``b`` blocks as axes of their own: depth blocks or spatial ones."""
    n, c, h, w = x.shape
    if op == "SpaceToDepth":
        return x.reshape(n, c, h // b, b, w // b, b)
    if mode == "DCR":
        return x.reshape(n, b, b, c // (b * b), h, w)
    return x.reshape(n, c // (b * b), b, b, h, w)


def _depth_space(op):
    """DepthToSpace or SpaceToDepth: one rearrangement (a block view of X, permuted, in Y's shape), two directions."""

    def kernel(ctx, inputs, outputs):
        mode = "CRD" if to_str(ctx.attr("mode", "DCR")) == "CRD" else "DCR"
        t = _block_view(op, mode, inputs[0], int(ctx.attr("blocksize")))
        write(outputs[0], ctx.xp.transpose(t, _BLOCK_PERMS[(op, mode)]).reshape(outputs[0].shape))

    return kernel


depth_to_space = register("DepthToSpace")(_depth_space("DepthToSpace"))
space_to_depth = register("SpaceToDepth")(_depth_space("SpaceToDepth"))


@register("ReverseSequence")
def reverse_sequence(ctx, inputs, outputs):
    xp = ctx.xp
    x, lens = inputs
    batch_axis = int(ctx.attr("batch_axis", 1))
    time_axis = int(ctx.attr("time_axis", 0))
    T = x.shape[time_axis]
    nd = x.ndim
    t = xp.arange(T).reshape(tuple(-1 if a == time_axis else 1 for a in range(nd)))
    L = lens.astype(np.int64).reshape(tuple(-1 if a == batch_axis else 1 for a in range(nd)))
    src = xp.where(t < L, L - 1 - t, t)
    src = xp.broadcast_to(src, tuple(x.shape[a] if a in (time_axis, batch_axis) else 1 for a in range(nd)))
    src = xp.broadcast_to(src, x.shape)
    write(outputs[0], xp.take_along_axis(x, src, axis=time_axis))
