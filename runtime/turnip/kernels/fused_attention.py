"""Fused attention (``ai.turnip`` ``FusedAttention``): scores and softmax in the planned scores buffer.

The compiler (``turnipc/fuse_attention.py``) replaces an exported attention
pattern (MatMul(Q, K^T) [* scales] [+ mask] -> Softmax -> [NaN guard] ->
MatMul(., V)) by one node with inputs (Q, K^T, V, then the optional mask, Q
scale, K scale and NaN fill, whose indices the attrs ``mask``, ``scale_q``,
``scale_k``, ``fill`` give, -2 when absent) and outputs (the result, the
scores). The scores output is arena workspace the plan budgets: the logits are
written into it by the first product, scaled, masked and normalised there in
place, and read by the second product straight into the result. The only
other memory is row-sized: each row's maximum and sum (and, with the NaN
guard, which rows' sums are NaN).

The NaN guard (torch's ``Where(IsNaN(p), 0, p)`` after the softmax) is exact
without an element-sized test: a softmax row has a NaN element exactly when
its sum is NaN (a NaN or +inf logit, or a fully masked row, makes the whole row
NaN; otherwise every element is in [0, 1]), so rows whose sum is NaN are
filled whole. The same code runs on CuPy (``out=`` ufuncs and ``copyto``).
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import numpy as np

from ..plan import FUSED_ATTENTION_OP, FUSED_DOMAIN, FUSED_NONE
from . import KernelContext, prepares, register
from .threads import blas_threads, matmul_call

__all__ = ["attention_steps"]


def _operand(inputs: list, attrs: dict[str, Any], key: str) -> Any:
    i = int(attrs.get(key, FUSED_NONE))
    if i == FUSED_NONE:
        return None
    if not 3 <= i < len(inputs):
        raise ValueError(f"{FUSED_ATTENTION_OP}: attribute {key}={i} is not an input index (the node has {len(inputs)} inputs)")
    return inputs[i]


def attention_steps(xp: Any, attrs: dict[str, Any], inputs: list, outputs: list, threads: int = 1) -> Callable[[], None]:
    """A zero-argument call computing the node on exactly these arrays (outputs[1] is the scores workspace).

    ``threads``: NumPy only, the runtime's MatMul threads (kernels/threads.py) for the two products.
    """
    if len(inputs) < 3 or len(outputs) < 2 or outputs[1] is None:
        raise ValueError(f"{FUSED_ATTENTION_OP}: needs inputs (Q, K^T, V, ...) and outputs (result, scores)")
    q, kt, v = inputs[0], inputs[1], inputs[2]
    out, s = outputs[0], outputs[1]
    mask = _operand(inputs, attrs, "mask")
    sq, sk = _operand(inputs, attrs, "scale_q"), _operand(inputs, attrs, "scale_k")
    fill = _operand(inputs, attrs, "fill")
    if s.dtype.kind != "f" or any(x is not None and x.dtype != s.dtype for x in (q, kt, v, out, mask, sq, sk, fill)):
        raise ValueError(f"{FUSED_ATTENTION_OP}: every input and output must have the scores' float dtype")

    # NumPy: the ufuncs' reduce directly (np.max / np.sum add a Python wrapper per call)
    row_max = functools.partial(np.maximum.reduce, s, axis=-1, keepdims=True) if xp is np else functools.partial(xp.max, s, axis=-1, keepdims=True)
    row_sum = functools.partial(np.add.reduce, s, axis=-1, keepdims=True) if xp is np else functools.partial(xp.sum, s, axis=-1, keepdims=True)

    if xp is np:
        scores_mm, out_mm = matmul_call(q, kt, s, threads), matmul_call(s, v, out, threads)
    else:
        scores_mm = functools.partial(xp.matmul, q, kt, out=s)
        out_mm = functools.partial(xp.matmul, s, v, out=out)
    sq0 = None if sq is None else sq.reshape(())
    sk0 = None if sk is None else sk.reshape(())
    fill0 = None if fill is None else fill.reshape(())

    def compute() -> None:
        scores_mm()
        if sq0 is not None:
            xp.multiply(s, sq0, out=s)
        if sk0 is not None:
            xp.multiply(s, sk0, out=s)
        if mask is not None:
            xp.add(s, mask, out=s)
        m = row_max()
        xp.subtract(s, m, out=s)
        xp.exp(s, out=s)
        total = row_sum()
        xp.divide(s, total, out=s)
        if fill is not None:
            xp.copyto(s, fill0, where=xp.isnan(total))
        out_mm()

    if xp is not np:
        return compute

    def run() -> None:  # a fully masked row is -inf - -inf = NaN by design (then filled): no warning
        with np.errstate(invalid="ignore"):
            compute()

    return run


@register(FUSED_ATTENTION_OP, domain=FUSED_DOMAIN)
def fused_attention(ctx: KernelContext, inputs: list, outputs: list) -> None:
    attention_steps(ctx.xp, ctx.attrs, inputs, outputs)()


@prepares(FUSED_ATTENTION_OP, domain=FUSED_DOMAIN)
def _prepared(ctx: KernelContext, inputs: list, outputs: list, consts: list) -> Callable[[], Any] | None:
    if any(not isinstance(x, np.ndarray) for x in list(inputs) + list(outputs[:2])):
        return None
    return attention_steps(np, ctx.attrs, inputs, outputs, blas_threads())
