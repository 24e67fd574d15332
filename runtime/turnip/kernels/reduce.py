"""Reductions (Reduce*), ArgMax/ArgMin, CumSum/CumProd."""

from __future__ import annotations

import numpy as np

from . import register
from ._common import host_ints, host_scalar, norm_axis, up, write

# op -> first opset in which ``axes`` is an input instead of an attribute
_AXES_INPUT_FROM = {"ReduceSum": 13}


def _axes(ctx, inputs, x):
    """Reduced axes as a sorted tuple, or None for "no reduction" (noop_with_empty_axes)."""
    if ctx.opset >= _AXES_INPUT_FROM.get(ctx.op, 18):
        ax = inputs[1] if len(inputs) > 1 else None
        axes = [] if ax is None else host_ints(ctx, ax)
    else:
        axes = list(ctx.attr("axes", []) or [])
    if not axes:
        if int(ctx.attr("noop_with_empty_axes", 0)):
            return None
        return tuple(range(x.ndim))
    return tuple(sorted({norm_axis(a, x.ndim) for a in axes}))


def _empty_fill(op, dtype):
    if np.dtype(dtype) == np.bool_:
        return op in ("ReduceMin", "ReduceProd")
    if op in ("ReduceMax", "ReduceLogSum", "ReduceLogSumExp"):
        return -np.inf if np.dtype(dtype).kind == "f" else np.iinfo(dtype).min
    if op == "ReduceMin":
        return np.inf if np.dtype(dtype).kind == "f" else np.iinfo(dtype).max
    if op == "ReduceProd":
        return 1
    if op == "ReduceMean":
        return np.nan
    return 0


def _reducer(op):
    def kernel(ctx, inputs, outputs):
        xp = ctx.xp
        x = inputs[0]
        out = outputs[0]
        axes = _axes(ctx, inputs, x)
        keep = bool(int(ctx.attr("keepdims", 1)))
        if axes is None:  # noop
            write(out, x.reshape(out.shape))
            return
        if any(x.shape[a] == 0 for a in axes):
            write(out, _empty_fill(op, out.dtype))
            return
        xc = up(x)
        if op == "ReduceSum":
            y = xp.sum(xc, axis=axes, keepdims=keep)
        elif op == "ReduceMean":
            y = xp.mean(xc, axis=axes, keepdims=keep)
        elif op == "ReduceMax":
            y = xp.max(x, axis=axes, keepdims=keep)
        elif op == "ReduceMin":
            y = xp.min(x, axis=axes, keepdims=keep)
        elif op == "ReduceProd":
            y = xp.prod(xc, axis=axes, keepdims=keep)
        elif op == "ReduceL1":
            y = xp.sum(xp.abs(xc), axis=axes, keepdims=keep)
        elif op == "ReduceL2":
            y = xp.sqrt(xp.sum(xc * xc, axis=axes, keepdims=keep))
        elif op == "ReduceSumSquare":
            y = xp.sum(xc * xc, axis=axes, keepdims=keep)
        elif op == "ReduceLogSum":
            y = xp.log(xp.sum(xc, axis=axes, keepdims=keep))
        elif op == "ReduceLogSumExp":
            m = xp.max(xc, axis=axes, keepdims=True)
            m = xp.where(xp.isfinite(m), m, 0)
            y = xp.log(xp.sum(xp.exp(xc - m), axis=axes, keepdims=True)) + m
            if not keep:
                y = y.reshape(out.shape)
        else:  # pragma: no cover
            raise NotImplementedError(op)
        write(out, y.reshape(out.shape))

    return kernel


#: The ONNX Reduce* family, one kernel each (made by ``_reducer``). The one list of it: the compiler's
#: cost model reads it too (turnipc.cost), so a new reduction is named here and nowhere else.
REDUCE_OPS = (
    "ReduceSum",
    "ReduceMean",
    "ReduceMax",
    "ReduceMin",
    "ReduceProd",
    "ReduceL1",
    "ReduceL2",
    "ReduceSumSquare",
    "ReduceLogSum",
    "ReduceLogSumExp",
)

for _op in REDUCE_OPS:
    register(_op, host_inputs=(1,))(_reducer(_op))


def _arg(fn_name):
    def kernel(ctx, inputs, outputs):
        xp = ctx.xp
        x = inputs[0]
        axis = norm_axis(ctx.attr("axis", 0), x.ndim)
        last = int(ctx.attr("select_last_index", 0))
        fn = getattr(xp, fn_name)
        if last:
            n = x.shape[axis]
            idx = (n - 1) - fn(xp.flip(x, axis=axis), axis=axis)
        else:
            idx = fn(x, axis=axis)
        write(outputs[0], idx.reshape(outputs[0].shape))

    return kernel


register("ArgMax")(_arg("argmax"))
register("ArgMin")(_arg("argmin"))


def _cum(fn_name):
    def kernel(ctx, inputs, outputs):
        xp = ctx.xp
        x = inputs[0]
        axis = norm_axis(int(host_scalar(ctx, inputs[1])), x.ndim)
        exclusive = int(ctx.attr("exclusive", 0))
        reverse = int(ctx.attr("reverse", 0))
        fn = getattr(xp, fn_name)
        xc = up(x)
        if reverse:
            xc = xp.flip(xc, axis=axis)
        y = fn(xc, axis=axis)
        if exclusive:
            ident = 0 if fn_name == "cumsum" else 1
            pad_shape = list(y.shape)
            pad_shape[axis] = 1
            head = xp.full(pad_shape, ident, dtype=y.dtype)
            body = xp.take(y, xp.arange(y.shape[axis] - 1), axis=axis)
            y = xp.concatenate([head, body], axis=axis)
        if reverse:
            y = xp.flip(y, axis=axis)
        write(outputs[0], y)

    return kernel


register("CumSum", host_inputs=(1,))(_cum("cumsum"))
register("CumProd")(_cum("cumprod"))
