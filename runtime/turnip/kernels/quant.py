"""QuantizeLinear / DequantizeLinear (per-tensor, per-axis and blocked) for integer types."""

from __future__ import annotations

import numpy as np

from . import opt_input, register
from ._common import up, write


def _expand_param(xp, p, x, axis, block_size):
    """Broadcast a scale/zero-point to x: scalar, 1-D along ``axis``, or blocked along ``axis``."""
    if p.ndim == 0 or p.size == 1:
        return p.reshape(())
    if p.ndim == 1 and not block_size:
        return p.reshape(tuple(-1 if a == axis else 1 for a in range(x.ndim)))
    # blocked: same rank as x, axis dimension divided into blocks of block_size
    r = xp.repeat(p, int(block_size), axis=axis)
    return xp.take(r, xp.arange(x.shape[axis]), axis=axis)


def _axis(ctx, x):
    a = int(ctx.attr("axis", 1))
    return a + x.ndim if a < 0 else a  # only used with per-axis or blocked parameters


@register("DequantizeLinear")
def dequantize_linear(ctx, inputs, outputs):
    xp = ctx.xp
    x, scale = inputs[0], inputs[1]
    zp = opt_input(inputs, 2)
    axis = _axis(ctx, x)
    bs = int(ctx.attr("block_size", 0))
    s = _expand_param(xp, up(scale), x, axis, bs)
    xv = x.astype(np.float64) if np.dtype(x.dtype).kind in "iu" else up(x)
    if zp is not None:
        xv = xv - _expand_param(xp, zp.astype(np.float64), x, axis, bs)
    write(outputs[0], xv * s)


@register("QuantizeLinear")
def quantize_linear(ctx, inputs, outputs):
    xp = ctx.xp
    x, scale = inputs[0], inputs[1]
    zp = opt_input(inputs, 2)
    out = outputs[0]
    axis = _axis(ctx, x)
    bs = int(ctx.attr("block_size", 0))
    s = _expand_param(xp, up(scale).astype(np.float32), x, axis, bs)
    y = xp.rint(up(x).astype(np.float32) / s)
    if zp is not None:
        y = y + _expand_param(xp, zp.astype(np.float32), x, axis, bs)
    if np.dtype(out.dtype).kind not in "iu":
        raise NotImplementedError(f"QuantizeLinear to {out.dtype}")
    info = np.iinfo(out.dtype)
    write(out, xp.clip(y, info.min, info.max))
