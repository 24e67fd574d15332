"""The fused elementwise chain (``ai.turnip`` ``FusedElementwise``), evaluated in place into its output.

The compiler (``turnipc/fuse.py``) replaces a single-consumer chain of
elementwise tasks by one task whose attributes are its program
(docs/plan-format.md, "Fused elementwise"): ``ops[k]`` is step k's ONNX op and
``a[k]``/``b[k]`` its operands, each an index into the node's inputs,
:data:`CHAIN` (-1: the value of the steps so far) or :data:`NONE` (-2: a unary
step's missing ``b``). Every step has the output's shape and dtype, so each
writes the whole output buffer in place (``out=``): the intermediates never
exist, in the arena or outside it. The same code runs on CuPy (its ufuncs
take ``out=`` too; Erf goes through the shared blocked kernel).
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import numpy as np

from ..plan import FUSED_CHAIN, FUSED_DOMAIN, FUSED_NONE, FUSED_OP
from . import KernelContext, prepares, register
from ._fast import erf_into

__all__ = ["CHAIN", "FUSED_DOMAIN", "FUSED_OP", "NONE", "steps"]

CHAIN = FUSED_CHAIN
NONE = FUSED_NONE

_BINARY = {"Add": "add", "Sub": "subtract", "Mul": "multiply", "Div": "divide"}
_UNARY = {"Tanh": "tanh", "Sqrt": "sqrt", "Exp": "exp", "Neg": "negative", "Abs": "absolute", "Reciprocal": "reciprocal"}


def _unary(xp: Any, op: str, x: Any, out: Any) -> Callable[[], Any]:
    if op == "Erf":
        return functools.partial(erf_into, xp, x, out)
    if op == "Relu":
        return functools.partial(xp.maximum, x, out.dtype.type(0), out=out)
    if op == "Sigmoid":
        one = out.dtype.type(1)

        def sigmoid() -> None:  # 1 / (1 + exp(-x)), in place
            xp.negative(x, out=out)
            xp.exp(out, out=out)
            xp.add(out, one, out=out)
            xp.divide(one, out, out=out)

        return sigmoid
    return functools.partial(getattr(xp, _UNARY[op]), x, out=out)


def steps(xp: Any, attrs: dict[str, Any], inputs: list, out: Any) -> list[Callable[[], Any]]:
    """One zero-argument call per step of the program in ``attrs``, each writing ``out`` in place."""
    ops, a, b = list(attrs["ops"]), [int(v) for v in attrs["a"]], [int(v) for v in attrs["b"]]
    if not (len(ops) == len(a) == len(b)) or not ops:
        raise ValueError(f"{FUSED_OP}: ops, a and b must be lists of one equal, non-zero length")

    def operand(k: int, code: int) -> Any:
        if code == CHAIN:
            if k == 0:
                raise ValueError(f"{FUSED_OP}: step 0 reads the chain value before any step wrote it")
            return out
        if not 0 <= code < len(inputs):
            raise ValueError(f"{FUSED_OP}: step {k} reads input {code}, but the node has {len(inputs)} inputs")
        return inputs[code]

    calls: list[Callable[[], Any]] = []
    for k, op in enumerate(ops):
        x = operand(k, a[k])
        if op in _BINARY:
            calls.append(functools.partial(getattr(xp, _BINARY[op]), x, operand(k, b[k]), out=out))
        elif op in _UNARY or op in ("Erf", "Relu", "Sigmoid"):
            if b[k] != NONE:
                raise ValueError(f"{FUSED_OP}: unary step {k} ({op}) has a second operand")
            calls.append(_unary(xp, op, x, out))
        else:
            raise ValueError(f"{FUSED_OP}: step {k} has op {op!r}, which is not fusable; re-plan the model")
    return calls


@register(FUSED_OP, domain=FUSED_DOMAIN)
def fused(ctx: KernelContext, inputs: list, outputs: list) -> None:
    for call in steps(ctx.xp, ctx.attrs, inputs, outputs[0]):
        call()


@prepares(FUSED_OP, domain=FUSED_DOMAIN)
def _prepared(ctx: KernelContext, inputs: list, outputs: list, consts: list) -> Callable[[], Any] | None:
    out = outputs[0]
    if not isinstance(out, np.ndarray) or any(not isinstance(x, np.ndarray) or x.dtype != out.dtype for x in inputs):
        return None
    calls = steps(np, ctx.attrs, inputs, out)
    if len(calls) == 1:
        return calls[0]

    def run() -> None:
        for call in calls:
            call()

    return run
