"""Softmax family and normalizations; all statistics are accumulated in float32 (or wider)."""

from __future__ import annotations

import numpy as np

from . import has_output, opt_input, register
from ._common import is_float, norm_axis, up, write
from ._fast import norm_rows_into, softmax_rows_into


def _rows(x, axis):
    """(rows, cols) for reducing x over axes [axis, ndim)."""
    cols = int(np.prod(x.shape[axis:], dtype=np.int64))
    return (x.size // cols if cols else 0), cols


def _cached(ctx, key, build):
    """Per-node cache of views derived from the node's (prepared, fixed) input/output views.

    The runtime passes the same view objects on every call of a prepared node, so
    derived *views* (never copies: the bytes change between calls) are built once;
    the identity check rebuilds them if a caller passes other arrays.
    """
    hit = ctx.scratch.get("fast")
    if hit is not None and len(hit[0]) == len(key) and all(a is b for a, b in zip(hit[0], key)):
        return hit[1]
    val = build()
    ctx.scratch["fast"] = (key, val)
    return val


def _fast_softmax(ctx, x, out, log):
    """Softmax/LogSoftmax over the last axis (or opset<13's flattened tail) in place; False if not applicable."""
    args = _cached(ctx, (x, out), lambda: _softmax_views(ctx, x, out))
    if args is None:
        return False
    softmax_rows_into(ctx.xp, *args, log=log)
    return True


def _softmax_views(ctx, x, out):
    if not is_float(out.dtype) or x.ndim == 0 or x.size == 0 or not x.flags.c_contiguous or not out.flags.c_contiguous:
        return None
    if ctx.opset < 13:
        axis = norm_axis(ctx.attr("axis", 1), x.ndim)
    else:
        axis = norm_axis(ctx.attr("axis", -1), x.ndim)
        if axis != x.ndim - 1:
            return None
    rows, cols = _rows(x, axis)
    return x.reshape(rows, cols), out.reshape(rows, cols)


def _softmax_axes(ctx, x):
    """(array to reduce, axis, original shape): opset < 13 flattens to 2-D at ``axis``."""
    if ctx.opset < 13:
        axis = norm_axis(ctx.attr("axis", 1), x.ndim) if x.ndim else 0
        rows = int(np.prod(x.shape[:axis])) if axis else 1
        return x.reshape(rows, -1), 1
    return x, norm_axis(ctx.attr("axis", -1), x.ndim)


def _softmax_family(log: bool):
    """Softmax (or LogSoftmax): the fast in-place path when it applies, else the general one (max-shifted)."""

    def kernel(ctx, inputs, outputs):
        if _fast_softmax(ctx, inputs[0], outputs[0], log=log):
            return
        xp = ctx.xp
        x2, axis = _softmax_axes(ctx, up(inputs[0]))
        s = x2 - xp.max(x2, axis=axis, keepdims=True)
        if log:
            y = s - xp.log(xp.sum(xp.exp(s), axis=axis, keepdims=True))
        else:
            e = xp.exp(s)
            y = e / xp.sum(e, axis=axis, keepdims=True)
        write(outputs[0], y.reshape(outputs[0].shape))

    return kernel


softmax = register("Softmax")(_softmax_family(log=False))
log_softmax = register("LogSoftmax")(_softmax_family(log=True))


@register("Hardmax")
def hardmax(ctx, inputs, outputs):
    xp = ctx.xp
    x = inputs[0]
    x2, axis = _softmax_axes(ctx, x)
    idx = xp.argmax(x2, axis=axis)
    idx = xp.expand_dims(idx, axis)
    pos = xp.arange(x2.shape[axis]).reshape(tuple(-1 if a == axis else 1 for a in range(x2.ndim)))
    y = (pos == idx).astype(x.dtype)
    write(outputs[0], y.reshape(outputs[0].shape))


def _fast_norm(ctx, x, outputs, scale, bias, axis, eps, rms):
    """Layer/RMS norm over axes [axis, ndim) with float32 statistics, written in place; False if not applicable."""
    key = (x, scale, bias, *outputs)
    args = _cached(ctx, key, lambda: _norm_views(ctx, x, outputs, scale, bias, axis))
    if args is None:
        return False
    x2, o2, sc, bi, mean_out, inv_out = args
    norm_rows_into(ctx.xp, x2, o2, sc, bi, eps, rms, mean_out, inv_out)
    return True


def _norm_views(ctx, x, outputs, scale, bias, axis):
    out = outputs[0]
    if (
        not is_float(out.dtype)
        or x.size == 0
        or int(ctx.attr("stash_type", 1)) != 1
        or not x.flags.c_contiguous
        or not out.flags.c_contiguous
        or x.dtype != out.dtype
    ):
        return None
    rows, cols = _rows(x, axis)
    tail = x.shape[axis:]
    sc = ctx.xp.broadcast_to(scale, tail).reshape(cols)
    bi = None if bias is None else ctx.xp.broadcast_to(bias, tail).reshape(cols)
    mean_out = outputs[1].reshape(rows) if has_output(outputs, 1) else None
    inv_out = outputs[2].reshape(rows) if has_output(outputs, 2) else None
    return x.reshape(rows, cols), out.reshape(rows, cols), sc, bi, mean_out, inv_out


def _deviation(xp, xc, axes):
    """(xc - mean, mean, variance) over ``axes`` (kept as size-1 axes): the statistics of every mean-variance norm."""
    mean = xp.mean(xc, axis=axes, keepdims=True)
    d = xc - mean
    return d, mean, xp.mean(d * d, axis=axes, keepdims=True)


def _norm_family(rms: bool):
    """LayerNormalization (or RMSNormalization: no centring, no bias) over axes [axis, ndim).

    One kernel for both, as they read the same inputs and attributes and share the fast in-place path;
    they differ only in the statistic (variance about the mean, or the mean square).
    """

    def kernel(ctx, inputs, outputs):
        xp = ctx.xp
        x, scale = inputs[0], inputs[1]
        bias = None if rms else opt_input(inputs, 2)
        axis = norm_axis(ctx.attr("axis", -1), x.ndim)
        eps = float(ctx.attr("epsilon", 1e-5))
        if _fast_norm(ctx, x, outputs, scale, bias, axis, eps, rms=rms):
            return
        axes = tuple(range(axis, x.ndim))
        xc = up(x) if int(ctx.attr("stash_type", 1)) == 1 else x
        if rms:
            ms = xp.mean(xc * xc, axis=axes, keepdims=True)
            write(outputs[0], xc * (1.0 / xp.sqrt(ms + eps)) * up(scale))
            return
        d, mean, var = _deviation(xp, xc, axes)
        inv = 1.0 / xp.sqrt(var + eps)
        y = d * inv * up(scale)
        if bias is not None:
            y = y + up(bias)
        write(outputs[0], y)
        if has_output(outputs, 1):
            write(outputs[1], mean)
        if has_output(outputs, 2):
            write(outputs[2], inv)

    return kernel


layer_norm = register("LayerNormalization")(_norm_family(rms=False))
rms_norm = register("RMSNormalization")(_norm_family(rms=True))


def _group_norm(xp, x, scale, bias, groups, eps):
    """X (N, C, ...) normalized over each group of C/groups channels with its spatial axes, then scaled and shifted
    per channel (scale of length C) or per group (length ``groups``, GroupNormalization before opset 21)."""
    N, C = x.shape[:2]
    d, _, var = _deviation(xp, up(x).reshape(N, groups, -1), 2)
    y = d / xp.sqrt(var + eps)
    rest = (1,) * (x.ndim - 2)
    if scale.shape[0] == C:
        return y.reshape(x.shape) * up(scale).reshape((1, C) + rest) + up(bias).reshape((1, C) + rest)
    return (y * up(scale).reshape(1, groups, 1) + up(bias).reshape(1, groups, 1)).reshape(x.shape)


@register("InstanceNormalization")
def instance_norm(ctx, inputs, outputs):
    """GroupNormalization with one channel per group, as the ONNX spec defines it."""
    x, scale, bias = inputs[:3]
    write(outputs[0], _group_norm(ctx.xp, x, scale, bias, x.shape[1], float(ctx.attr("epsilon", 1e-5))))


@register("GroupNormalization")
def group_norm(ctx, inputs, outputs):
    x, scale, bias = inputs[:3]
    write(outputs[0], _group_norm(ctx.xp, x, scale, bias, int(ctx.attr("num_groups")), float(ctx.attr("epsilon", 1e-5))))


@register("LpNormalization")
def lp_norm(ctx, inputs, outputs):
    xp = ctx.xp
    x = up(inputs[0])
    axis = norm_axis(ctx.attr("axis", -1), x.ndim)
    p = int(ctx.attr("p", 2))
    if p == 1:
        n = xp.sum(xp.abs(x), axis=axis, keepdims=True)
    else:
        n = xp.sqrt(xp.sum(x * x, axis=axis, keepdims=True))
    write(outputs[0], xp.where(n == 0, 0, x / xp.where(n == 0, 1, n)))


@register("MeanVarianceNormalization")
def mvn(ctx, inputs, outputs):
    xp = ctx.xp
    x = up(inputs[0])
    axes = tuple(norm_axis(a, x.ndim) for a in ctx.attr("axes", [0, 2, 3]))
    d, _, var = _deviation(xp, x, axes)
    write(outputs[0], d / (xp.sqrt(var) + 1e-9))
