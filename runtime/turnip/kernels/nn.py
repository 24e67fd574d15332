"""Convolution, pooling, BatchNormalization, LRN: N-d, via strided window views and matmul.

Windowed ops are written as a loop over kernel offsets: for each offset the
strided slice of the (padded) input that it touches over the whole output is
one view, so everything runs on numpy and cupy alike. Output spatial sizes are
taken from the preallocated outputs (the plan already knows them), which makes
ceil_mode and auto_pad fall out of the same code.
"""

from __future__ import annotations

import itertools

import numpy as np

from . import has_output, opt_input, register, to_str
from ._common import compute_dtype, up, write
from .matmul import matmul


def _ints(v, n, default):
    if v is None or len(v) == 0:
        return [default] * n
    return [int(a) for a in v]


def _pad_begin(ctx, in_sp, k_sp, out_sp, strides, dil):
    """Leading pads per spatial axis (explicit pads or auto_pad)."""
    nd = len(in_sp)
    auto_pad = to_str(ctx.attr("auto_pad", "NOTSET"))
    if auto_pad in ("NOTSET", ""):
        pads = _ints(ctx.attr("pads"), 2 * nd, 0)
        return pads[:nd]
    if auto_pad == "VALID":
        return [0] * nd
    begins = []
    for i in range(nd):
        total = max((out_sp[i] - 1) * strides[i] + (k_sp[i] - 1) * dil[i] + 1 - in_sp[i], 0)
        begins.append(total // 2 if auto_pad == "SAME_UPPER" else total - total // 2)
    return begins


def _padded(xp, x, begins, exts, value, dtype=None):
    """x (N, C, *in) placed at ``begins`` in a (N, C, *exts) array filled with ``value``.

    Input beyond an extent is cropped (windows never reach it).
    """
    in_sp = x.shape[2:]
    dtype = dtype or x.dtype
    if all(b == 0 for b in begins) and tuple(exts) == tuple(in_sp):
        return x if x.dtype == dtype else x.astype(dtype)
    buf = xp.full(x.shape[:2] + tuple(exts), value, dtype=dtype)
    dst = [slice(None), slice(None)]
    src = [slice(None), slice(None)]
    for b, e, n in zip(begins, exts, in_sp, strict=False):
        lo = max(b, 0)
        hi = min(b + n, e)
        dst.append(slice(lo, max(hi, lo)))
        src.append(slice(lo - b, lo - b + max(hi - lo, 0)))
    buf[tuple(dst)] = x[tuple(src)]
    return buf


def _windows(k_sp, out_sp, strides, dil):
    """(offset index tuple, slice tuple over the spatial axes) for every kernel offset."""
    for ks in itertools.product(*[range(k) for k in k_sp]):
        sl = tuple(slice(k * d, k * d + (o - 1) * s + 1, s) for k, d, o, s in zip(ks, dil, out_sp, strides, strict=False))
        yield ks, sl


def _geometry(ctx, x, k_sp, out):
    nd = len(k_sp)
    in_sp = tuple(x.shape[2:])
    out_sp = tuple(out.shape[2:])
    strides = _ints(ctx.attr("strides"), nd, 1)
    dil = _ints(ctx.attr("dilations"), nd, 1)
    begins = _pad_begin(ctx, in_sp, k_sp, out_sp, strides, dil)
    exts = [(o - 1) * s + (k - 1) * d + 1 for o, s, k, d in zip(out_sp, strides, k_sp, dil, strict=False)]
    return in_sp, out_sp, strides, dil, begins, exts


def _conv_setup(ctx, inputs, outputs):
    """What Conv and ConvTranspose read first: the array module, X, W, the optional bias B, Y and the group count."""
    return ctx.xp, inputs[0], inputs[1], opt_input(inputs, 2), outputs[0], int(ctx.attr("group", 1))


def _write_biased(out, y, b):
    """Y = y + B per output channel (axis 1) when the optional bias B is given: the last step of every convolution."""
    if b is not None:
        y = y + up(b).reshape((1, out.shape[1]) + (1,) * (out.ndim - 2))
    write(out, y)


@register("Conv")
def conv(ctx, inputs, outputs):
    xp, x, w, b, out, G = _conv_setup(ctx, inputs, outputs)
    k_sp = tuple(w.shape[2:])
    in_sp, out_sp, strides, dil, begins, exts = _geometry(ctx, x, k_sp, out)
    N, C = x.shape[:2]
    M = w.shape[0]
    Cg, Mg = C // G, M // G
    cd = compute_dtype(x.dtype)
    xp_ = _padded(xp, x, begins, exts, 0, cd)
    wc = up(w)
    nsp = len(out_sp)
    if Cg == 1 and Mg <= 4:
        # depthwise (or nearly): multiply-accumulate the window views, no im2col
        acc = xp.zeros((N, G, Mg) + out_sp, dtype=cd)
        for ks, sl in _windows(k_sp, out_sp, strides, dil):
            v = xp_[(slice(None), slice(None)) + sl].reshape((N, G, 1) + out_sp)
            wk = wc[(slice(None), 0) + ks].reshape((1, G, Mg) + (1,) * nsp)
            acc += v * wk
        y = acc.reshape((N, M) + out_sp)
    else:
        P = int(np.prod(k_sp)) if k_sp else 1
        n_out = int(np.prod(out_sp)) if out_sp else 1
        cols = xp.stack([xp_[(slice(None), slice(None)) + sl] for _, sl in _windows(k_sp, out_sp, strides, dil)], axis=2)
        cols = cols.reshape(N, G, Cg * P, n_out)
        wm = wc.reshape(G, Mg, Cg * P)
        y = matmul(xp, wm[None], cols).reshape((N, M) + out_sp)
    _write_biased(out, y, b)


@register("ConvTranspose")
def conv_transpose(ctx, inputs, outputs):
    xp, x, w, b, out, G = _conv_setup(ctx, inputs, outputs)
    N, C = x.shape[:2]
    in_sp = tuple(x.shape[2:])
    nd = len(in_sp)
    Cg = C // G
    Mg = w.shape[1]
    M = Mg * G
    k_sp = tuple(w.shape[2:])
    out_sp = tuple(out.shape[2:])
    strides = _ints(ctx.attr("strides"), nd, 1)
    dil = _ints(ctx.attr("dilations"), nd, 1)
    opad = _ints(ctx.attr("output_padding"), nd, 0)
    full = [(i - 1) * s + (k - 1) * d + 1 for i, s, k, d in zip(in_sp, strides, k_sp, dil, strict=False)]
    auto_pad = to_str(ctx.attr("auto_pad", "NOTSET"))
    if ctx.attr("output_shape") is not None or auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        begins = []
        for i in range(nd):
            total = full[i] + opad[i] - out_sp[i]
            begins.append(total // 2 if auto_pad == "SAME_UPPER" else total - total // 2)
    elif auto_pad == "VALID":
        begins = [0] * nd
    else:
        begins = _ints(ctx.attr("pads"), 2 * nd, 0)[:nd]
    cd = compute_dtype(x.dtype)
    P = int(np.prod(k_sp)) if k_sp else 1
    n_in = int(np.prod(in_sp)) if in_sp else 1
    xr = up(x).reshape(N, G, Cg, n_in)
    wt = xp.transpose(up(w).reshape(G, Cg, Mg * P), (0, 2, 1))
    contrib = matmul(xp, wt[None], xr).reshape((N, M) + k_sp + in_sp)
    shift = [max(-bb, 0) for bb in begins]
    ext = [max(f, bb + o) + s for f, bb, o, s in zip(full, begins, out_sp, shift, strict=False)]
    buf = xp.zeros((N, M) + tuple(ext), dtype=cd)
    for ks in itertools.product(*[range(k) for k in k_sp]):
        sl = tuple(
            slice(sh + k * d, sh + k * d + (i - 1) * s + 1, s) for sh, k, d, i, s in zip(shift, ks, dil, in_sp, strides, strict=False)
        )
        buf[(slice(None), slice(None)) + sl] += contrib[(slice(None), slice(None)) + ks]
    y = buf[(slice(None), slice(None)) + tuple(slice(bb + sh, bb + sh + o) for bb, sh, o in zip(begins, shift, out_sp, strict=False))]
    _write_biased(out, y, b)


def _lowest(dtype):
    d = np.dtype(dtype)
    if d.kind in "iu":
        return np.iinfo(d).min
    return -np.inf


def _pool_setup(ctx, inputs, outputs):
    """What every pool reads first: the array module, input, output, kernel shape and window geometry."""
    x, out = inputs[0], outputs[0]
    k_sp = tuple(int(k) for k in ctx.attr("kernel_shape"))
    return ctx.xp, x, out, k_sp, _geometry(ctx, x, k_sp, out)


@register("MaxPool")
def max_pool(ctx, inputs, outputs):
    xp, x, out, k_sp, (in_sp, out_sp, strides, dil, begins, exts) = _pool_setup(ctx, inputs, outputs)
    xp_ = _padded(xp, x, begins, exts, _lowest(x.dtype))
    want_idx = has_output(outputs, 1)
    best = None
    for ks, sl in _windows(k_sp, out_sp, strides, dil):
        v = xp_[(slice(None), slice(None)) + sl]
        if best is None:
            best = v.copy()
            if want_idx:
                best_k = xp.zeros(best.shape, dtype=np.int64)
            continue
        if want_idx:
            upd = v > best
            best_k = xp.where(upd, _flat(ks, k_sp), best_k)
        best = xp.maximum(best, v)
    write(out, best)
    if want_idx:
        # absolute input coordinates of the argmax per spatial axis
        N, C = x.shape[:2]
        nsp = len(k_sp)
        storage_order = int(ctx.attr("storage_order", 0))
        idx = xp.zeros(best.shape, dtype=np.int64)
        coords = []
        rem = best_k
        for a in range(nsp):
            sub = int(np.prod(k_sp[a + 1 :])) if a + 1 < nsp else 1
            ka = rem // sub
            rem = rem % sub
            o = xp.arange(out_sp[a], dtype=np.int64).reshape((1, 1) + tuple(out_sp[a] if j == a else 1 for j in range(nsp)))
            coords.append(o * strides[a] + ka * dil[a] - begins[a])
        if storage_order == 0:
            for a in range(nsp):
                idx = idx * in_sp[a] + coords[a]
        else:
            for a in reversed(range(nsp)):
                idx = idx * in_sp[a] + coords[a]
        nc = xp.arange(N, dtype=np.int64).reshape((N, 1) + (1,) * nsp) * C + xp.arange(C, dtype=np.int64).reshape((1, C) + (1,) * nsp)
        idx = idx + nc * int(np.prod(in_sp))
        write(outputs[1], idx)


def _flat(ks, k_sp):
    f = 0
    for k, n in zip(ks, k_sp, strict=False):
        f = f * n + k
    return f


@register("AveragePool")
def average_pool(ctx, inputs, outputs):
    xp, x, out, k_sp, (in_sp, out_sp, strides, dil, begins, exts) = _pool_setup(ctx, inputs, outputs)
    cd = compute_dtype(x.dtype)
    xp_ = _padded(xp, x, begins, exts, 0, cd)
    include_pad = int(ctx.attr("count_include_pad", 0))
    # which padded positions count towards the divisor
    if include_pad:
        ends = [
            len_ + b + (e_pad if e_pad > 0 else 0)
            for len_, b, e_pad in zip(in_sp, begins, _pad_end(ctx, in_sp, k_sp, out_sp, strides, dil, begins), strict=False)
        ]
        mask = xp.zeros((1, 1) + tuple(exts), dtype=cd)
        mask[(slice(None), slice(None)) + tuple(slice(0, min(e, ex)) for e, ex in zip(ends, exts, strict=False))] = 1
    else:
        mask = _padded(xp, xp.ones((1, 1) + in_sp, dtype=cd), begins, exts, 0, cd)
    total = None
    count = None
    for _, sl in _windows(k_sp, out_sp, strides, dil):
        v = xp_[(slice(None), slice(None)) + sl]
        m = mask[(slice(None), slice(None)) + sl]
        total = v.copy() if total is None else total + v
        count = m.copy() if count is None else count + m
    write(out, total / xp.maximum(count, 1))


def _pad_end(ctx, in_sp, k_sp, out_sp, strides, dil, begins):
    nd = len(in_sp)
    auto_pad = to_str(ctx.attr("auto_pad", "NOTSET"))
    if auto_pad in ("NOTSET", ""):
        return _ints(ctx.attr("pads"), 2 * nd, 0)[nd:]
    if auto_pad == "VALID":
        return [0] * nd
    ends = []
    for i in range(nd):
        total = max((out_sp[i] - 1) * strides[i] + (k_sp[i] - 1) * dil[i] + 1 - in_sp[i], 0)
        ends.append(total - begins[i])
    return ends


@register("LpPool")
def lp_pool(ctx, inputs, outputs):
    p = float(ctx.attr("p", 2))
    xp, x, out, k_sp, (in_sp, out_sp, strides, dil, begins, exts) = _pool_setup(ctx, inputs, outputs)
    xp_ = _padded(xp, xp.abs(up(x)), begins, exts, 0)
    total = None
    for _, sl in _windows(k_sp, out_sp, strides, dil):
        v = xp_[(slice(None), slice(None)) + sl] ** p
        total = v if total is None else total + v
    write(out, total ** (1.0 / p))


@register("GlobalAveragePool")
def global_average_pool(ctx, inputs, outputs):
    x = inputs[0]
    axes = tuple(range(2, x.ndim))
    write(outputs[0], ctx.xp.mean(up(x), axis=axes, keepdims=True))


@register("GlobalMaxPool")
def global_max_pool(ctx, inputs, outputs):
    x = inputs[0]
    axes = tuple(range(2, x.ndim))
    write(outputs[0], ctx.xp.max(x, axis=axes, keepdims=True))


@register("GlobalLpPool")
def global_lp_pool(ctx, inputs, outputs):
    xp = ctx.xp
    x = up(inputs[0])
    p = float(ctx.attr("p", 2))
    axes = tuple(range(2, x.ndim))
    write(outputs[0], xp.sum(xp.abs(x) ** p, axis=axes, keepdims=True) ** (1.0 / p))


@register("BatchNormalization")
def batch_norm(ctx, inputs, outputs):
    xp = ctx.xp
    x, scale, bias, mean, var = inputs[:5]
    eps = float(ctx.attr("epsilon", 1e-5))
    shp = (1, -1) + (1,) * (x.ndim - 2)
    xc = up(x)
    training = ctx.opset >= 14 and int(ctx.attr("training_mode", 0))
    if training:
        axes = (0,) + tuple(range(2, x.ndim))
        bm = xp.mean(xc, axis=axes)
        bv = xp.mean((xc - bm.reshape(shp)) ** 2, axis=axes)
        momentum = float(ctx.attr("momentum", 0.9))
        if has_output(outputs, 1):
            write(outputs[1], up(mean) * momentum + bm * (1 - momentum))
        if has_output(outputs, 2):
            write(outputs[2], up(var) * momentum + bv * (1 - momentum))
        mean, var = bm, bv
    inv = up(scale) / xp.sqrt(up(var) + eps)
    shift = up(bias) - up(mean) * inv
    write(outputs[0], xc * inv.reshape(shp) + shift.reshape(shp))


@register("LRN")
def lrn(ctx, inputs, outputs):
    xp = ctx.xp
    x = up(inputs[0])
    size = int(ctx.attr("size"))
    alpha = float(ctx.attr("alpha", 1e-4))
    beta = float(ctx.attr("beta", 0.75))
    bias = float(ctx.attr("bias", 1.0))
    C = x.shape[1]
    before = (size - 1) // 2
    after = size - 1 - before
    sq = x * x
    padded = xp.zeros((x.shape[0], C + before + after) + x.shape[2:], dtype=x.dtype)
    padded[:, before : before + C] = sq
    s = padded[:, 0:C].copy()
    for j in range(1, size):
        s += padded[:, j : j + C]
    write(outputs[0], x / (bias + (alpha / size) * s) ** beta)
