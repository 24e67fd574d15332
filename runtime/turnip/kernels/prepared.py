"""Prepared kernel calls: the per-node work that does not depend on the data, done once at load.

A plan's views never change (every node reads and writes fixed places of
fixed memories) and its small parameter inputs (Slice's starts, ReduceMean's
axes, Expand's shape) are usually plan-time constants. A preparer
(``@prepares("Add", ...)``) looks at a node's context, views and constant
parameters once and returns a zero-argument callable that does only the
arithmetic: a ``functools.partial`` of a NumPy ufunc with ``out=`` bound, or a
``copyto`` from a view derived once (a slice, a transpose, a reshape). The
generic kernels re-check dtypes, look ufuncs up by name, parse attributes and
rebuild index tuples on every call; for the small models that was as much
time as the arithmetic.

A preparer returns None when its fast form does not apply (mixed dtypes, a
parameter only known at run time, a shape it does not handle); the node then
runs the registered kernel as before. Preparers are NumPy-only (the backend
asks for them only when its arrays are NumPy arrays) and never allocate per
call: the callables write into the planned output views, as the kernels do.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import numpy as np

from . import KernelContext, prepares
from ._common import norm_axis
from .reduce import _axes
from .shape_ops import slice_params
from .threads import blas_threads, matmul_call

Call = Callable[[], Any]

_BINARY: dict[str, Any] = {
    "Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide,
    "Equal": np.equal, "Less": np.less, "LessOrEqual": np.less_equal, "Greater": np.greater,
    "GreaterOrEqual": np.greater_equal, "And": np.logical_and, "Or": np.logical_or, "Xor": np.logical_xor,
    "BitwiseAnd": np.bitwise_and, "BitwiseOr": np.bitwise_or, "BitwiseXor": np.bitwise_xor,
}
_UNARY: dict[str, Any] = {
    "Neg": np.negative, "Abs": np.absolute, "Sqrt": np.sqrt, "Exp": np.exp, "Log": np.log, "Tanh": np.tanh,
    "Cos": np.cos, "Sin": np.sin, "Floor": np.floor, "Ceil": np.ceil, "Not": np.logical_not, "IsNaN": np.isnan,
    "Reciprocal": np.reciprocal, "Relu": np.maximum,
}


def _plain(*arrays: Any) -> bool:
    """NumPy arrays of a built-in bool, integer or float dtype (not bfloat16 or other extension types)."""
    return all(isinstance(a, np.ndarray) and a.dtype.kind in "biuf" and a.dtype.name != "bfloat16" for a in arrays)


def _result_dtype(fn: Any, *dtypes: np.dtype) -> np.dtype:
    """The dtype ``fn`` gives for inputs of ``dtypes`` (probed on one-element arrays)."""
    with np.errstate(all="ignore"):
        return fn(*[np.ones(1, dtype=d) for d in dtypes]).dtype


@prepares(*_BINARY)
def _binary(ctx: KernelContext, inputs: list, outputs: list, consts: list) -> Call | None:
    a, b = inputs[0], inputs[1]
    out = outputs[0]
    fn = _BINARY[ctx.op]
    if not _plain(a, b, out) or a.dtype != b.dtype:
        return None
    if ctx.op == "Div" and out.dtype.kind != "f":  # integer Div truncates toward zero: the kernel handles it
        return None
    if _result_dtype(fn, a.dtype, b.dtype) != out.dtype or np.broadcast_shapes(a.shape, b.shape) != out.shape:
        return None
    return functools.partial(fn, a, b, out=out)


@prepares(*_UNARY)
def _unary(ctx: KernelContext, inputs: list, outputs: list, consts: list) -> Call | None:
    x, out = inputs[0], outputs[0]
    if not _plain(x, out) or x.shape != out.shape:
        return None
    if ctx.op == "Relu":
        return functools.partial(np.maximum, x, x.dtype.type(0), out=out) if x.dtype == out.dtype else None
    fn = _UNARY[ctx.op]
    if ctx.op == "Reciprocal" and x.dtype.kind != "f":
        return None
    if _result_dtype(fn, x.dtype) != out.dtype:
        return None
    return functools.partial(fn, x, out=out)


def _copy_from(out: Any, src: Any) -> Call | None:
    """``out[...] = src`` for a view ``src`` fixed at load (same shape and dtype: no broadcasting, no cast)."""
    if src.shape != out.shape or src.dtype != out.dtype:
        return None
    return functools.partial(np.copyto, out, src)


@prepares("Transpose")
def _transpose(ctx: KernelContext, inputs: list, outputs: list, consts: list) -> Call | None:
    x, out = inputs[0], outputs[0]
    perm = ctx.attr("perm")
    perm = list(range(x.ndim))[::-1] if not perm else [int(p) for p in perm]
    if not _plain(x, out) or x.size >= (1 << 20):  # big 2-D transposes: the kernel's cache-tiled copy
        return None
    return _copy_from(out, x.transpose(perm))


@prepares("Reshape", "Squeeze", "Unsqueeze", "Flatten")
def _reshape(ctx: KernelContext, inputs: list, outputs: list, consts: list) -> Call | None:
    x, out = inputs[0], outputs[0]
    if not _plain(x, out) or x.size != out.size:
        return None
    v = x.view()
    try:
        v.shape = out.shape  # a view, or an error where reshaping would copy
    except AttributeError:
        return None
    return _copy_from(out, v)


@prepares("Slice")
def _slice(ctx: KernelContext, inputs: list, outputs: list, consts: list) -> Call | None:
    x, out = inputs[0], outputs[0]
    if not _plain(x, out):
        return None
    if ctx.opset >= 10:
        if len(inputs) < 3 or any(c is None and given is not None for c, given in zip(consts[1:], inputs[1:])):
            return None  # a parameter computed at run time
    return _copy_from(out, x[slice_params(ctx, [x, *consts[1:]], x)])


@prepares("Expand")
def _expand(ctx: KernelContext, inputs: list, outputs: list, consts: list) -> Call | None:
    x, out = inputs[0], outputs[0]
    if not _plain(x, out) or x.dtype != out.dtype:
        return None
    try:
        if np.broadcast_shapes(x.shape, out.shape) != out.shape:
            return None
    except ValueError:
        return None
    return functools.partial(np.copyto, out, x)


@prepares("Concat")
def _concat(ctx: KernelContext, inputs: list, outputs: list, consts: list) -> Call | None:
    out = outputs[0]
    xs = [x for x in inputs if x is not None]
    if not _plain(out, *xs) or out.ndim == 0 or any(x.dtype != out.dtype or x.ndim != out.ndim for x in xs):
        return None
    axis = norm_axis(ctx.attr("axis", 0), out.ndim)
    pairs = []
    off = 0
    for x in xs:
        n = x.shape[axis]
        if n:
            dst = out[(slice(None),) * axis + (slice(off, off + n),)]
            if dst.shape != x.shape:
                return None
            pairs.append((dst, x))
        off += n
    if off != out.shape[axis]:
        return None
    copyto = np.copyto

    def run() -> None:
        for dst, x in pairs:
            copyto(dst, x)

    return run


@prepares("MatMul")
def _matmul(ctx: KernelContext, inputs: list, outputs: list, consts: list) -> Call | None:
    a, b = inputs
    out = outputs[0]
    if not _plain(a, b, out) or not a.dtype == b.dtype == out.dtype or out.dtype.kind != "f" or out.dtype.itemsize < 4:
        return None
    if a.ndim < 2 or b.ndim < 2:
        return None
    shape = np.broadcast_shapes(a.shape[:-2], b.shape[:-2]) + (a.shape[-2], b.shape[-1])
    if a.shape[-1] != b.shape[-2] or shape != out.shape:
        return None
    if np.may_share_memory(out, a) or np.may_share_memory(out, b):
        return functools.partial(np.matmul, a, b, out=out)  # NumPy buffers the overlap; blocks could not
    return matmul_call(a, b, out, blas_threads())  # the runtime's threads, not BLAS's (kernels/threads.py)


@prepares("ReduceSum", "ReduceMean")
def _reduce(ctx: KernelContext, inputs: list, outputs: list, consts: list) -> Call | None:
    x, out = inputs[0], outputs[0]
    if not _plain(x, out) or x.dtype != out.dtype or out.dtype.kind != "f" or out.dtype.itemsize < 4:
        return None
    if len(inputs) > 1 and inputs[1] is not None and consts[1] is None:
        return None  # axes computed at run time
    axes = _axes(ctx, [x] + consts[1:], x)
    if axes is None or any(x.shape[a] == 0 for a in axes):
        return None
    keep = bool(int(ctx.attr("keepdims", 1)))
    shape = tuple(1 if a in axes else d for a, d in enumerate(x.shape)) if keep else tuple(d for a, d in enumerate(x.shape) if a not in axes)
    if int(np.prod(shape, dtype=np.int64)) != out.size or not out.flags.c_contiguous:
        return None
    o = out.reshape(shape)  # a view (contiguous)
    total = 1
    for a in axes:
        total *= x.shape[a]
    add_reduce = functools.partial(np.add.reduce, x, axis=axes, keepdims=keep, out=o)
    if ctx.op == "ReduceSum":
        return add_reduce
    n = out.dtype.type(total)
    divide = functools.partial(np.true_divide, o, n, out=o)  # as np.mean: the sum, then divided by the count

    def mean() -> None:
        add_reduce()
        divide()

    return mean
