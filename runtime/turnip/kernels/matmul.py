"""MatMul, Gemm, Einsum, MatMulInteger."""

from __future__ import annotations

import numpy as np

from . import register
from ._common import is_numpy, up, write


def matmul(xp, a, b):
    """a @ b with float32 accumulation for float16/bfloat16 on the host.

    (On the GPU cuBLAS already accumulates half-precision products in float32.)
    """
    if is_numpy(xp) and (a.dtype.name in ("float16", "bfloat16") or b.dtype.name in ("float16", "bfloat16")):
        return xp.matmul(up(a), up(b))
    return xp.matmul(a, b)


@register("MatMul")
def matmul_(ctx, inputs, outputs):
    xp = ctx.xp
    a, b = inputs
    out = outputs[0]
    if is_numpy(xp) and a.dtype == b.dtype == out.dtype and a.dtype.name not in ("float16", "bfloat16") and out.ndim > 0:
        try:
            xp.matmul(a, b, out=out)
            return
        except (ValueError, TypeError):
            pass
    write(out, matmul(xp, a, b))


@register("Gemm")
def gemm(ctx, inputs, outputs):
    xp = ctx.xp
    a, b = inputs[0], inputs[1]
    c = inputs[2] if len(inputs) > 2 else None
    alpha = float(ctx.attr("alpha", 1.0))
    beta = float(ctx.attr("beta", 1.0))
    if int(ctx.attr("transA", 0)):
        a = a.T
    if int(ctx.attr("transB", 0)):
        b = b.T
    out = outputs[0]
    if (
        a.dtype == b.dtype == out.dtype
        and out.dtype.kind == "f"
        and out.dtype.itemsize >= 4
        and (c is None or c.dtype == out.dtype)
        and not xp.may_share_memory(out, a)
        and not xp.may_share_memory(out, b)
        and (c is None or not xp.may_share_memory(out, c))
    ):
        # straight into the output: one GEMM, then in-place scale and bias (no temporaries)
        xp.matmul(a, b, out=out)
        if alpha != 1.0:
            xp.multiply(out, out.dtype.type(alpha), out=out)
        if c is not None and beta != 0.0:
            if beta == 1.0:
                xp.add(out, c, out=out)
            else:
                out += c * out.dtype.type(beta)
        return
    y = matmul(xp, a, b)
    if alpha != 1.0:
        y = y * y.dtype.type(alpha) if np.dtype(y.dtype).kind == "f" else y * alpha
    if c is not None and beta != 0.0:
        cc = up(c)
        y = y + (cc if beta == 1.0 else cc * beta)
    write(outputs[0], y)


@register("MatMulInteger")
def matmul_integer(ctx, inputs, outputs):
    xp = ctx.xp
    a = inputs[0].astype(np.int32)
    b = inputs[1].astype(np.int32)
    if len(inputs) > 2 and inputs[2] is not None:
        za = inputs[2].astype(np.int32)
        # a_zero_point is per-row (shape [M]) or scalar
        a = a - (za.reshape(-1, 1) if za.ndim == 1 and za.size > 1 else za)
    if len(inputs) > 3 and inputs[3] is not None:
        b = b - inputs[3].astype(np.int32)
    write(outputs[0], xp.matmul(a, b))


@register("Einsum")
def einsum(ctx, inputs, outputs):
    xp = ctx.xp
    eq = ctx.attr("equation")
    eq = eq.decode() if isinstance(eq, bytes) else eq
    eq = eq.replace(" ", "")
    ops = [up(x) for x in inputs]
    write(outputs[0], xp.einsum(eq, *ops))
