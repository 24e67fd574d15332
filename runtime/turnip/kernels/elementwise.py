"""Elementwise ops: unary math, activations, broadcasting binary and variadic ops, Cast, Where, Clip."""

from __future__ import annotations

import numpy as np

from . import has_output, register, to_str
from ._common import erf, host_scalar, is_float, up, write
from ._fast import erf_into, gelu_tanh_into

# ---------------------------------------------------------------------------
# Binary ops with numpy-style (multidirectional) broadcasting


def _binary(name):
    def kernel(ctx, inputs, outputs):
        a, b = inputs[0], inputs[1]
        out = outputs[0]
        fn = getattr(ctx.xp, name)
        if a.dtype == out.dtype and b.dtype == out.dtype:
            fn(a, b, out=out)
        else:
            write(out, fn(a, b))

    return kernel


def _compare(name):
    def kernel(ctx, inputs, outputs):
        getattr(ctx.xp, name)(inputs[0], inputs[1], out=outputs[0])

    return kernel


#: ONNX binary op -> (kernel factory, array-module function): arithmetic casts into the output, comparisons write bool.
_BINARY_OPS = {
    "Add": (_binary, "add"),
    "Sub": (_binary, "subtract"),
    "Mul": (_binary, "multiply"),
    "BitwiseAnd": (_binary, "bitwise_and"),
    "BitwiseOr": (_binary, "bitwise_or"),
    "BitwiseXor": (_binary, "bitwise_xor"),
    "Equal": (_compare, "equal"),
    "Less": (_compare, "less"),
    "LessOrEqual": (_compare, "less_equal"),
    "Greater": (_compare, "greater"),
    "GreaterOrEqual": (_compare, "greater_equal"),
    "And": (_compare, "logical_and"),
    "Or": (_compare, "logical_or"),
    "Xor": (_compare, "logical_xor"),
}
for _op, (_make, _fn) in _BINARY_OPS.items():
    register(_op)(_make(_fn))


@register("Div")
def div(ctx, inputs, outputs):
    xp = ctx.xp
    a, b = inputs
    out = outputs[0]
    if is_float(out.dtype):
        if a.dtype == out.dtype and b.dtype == out.dtype:
            xp.divide(a, b, out=out)
        else:
            write(out, xp.divide(a, b))
        return
    # Integer division truncates toward zero (C semantics), unlike numpy's floor division.
    q = xp.floor_divide(a, b)
    if np.dtype(out.dtype).kind == "i":
        r = a - q * b
        q = q + ((r != 0) & ((a < 0) != (b < 0))).astype(q.dtype)
    write(out, q)


@register("Pow")
def pow_(ctx, inputs, outputs):
    xp = ctx.xp
    a, b = inputs
    out = outputs[0]
    if isinstance(b, np.ndarray) and b.size == 1 and is_float(out.dtype) and a.dtype == out.dtype:
        # a plan-time constant exponent (GPT-2's x ** 3, x ** 2 in norms): generic powf is ~100x slower than a multiply
        e = float(b.reshape(-1)[0])
        if e == 2.0:
            xp.multiply(a, a, out=out)
            return
        if e == 3.0 and not xp.may_share_memory(a, out):
            xp.multiply(a, a, out=out)
            xp.multiply(out, a, out=out)
            return
        if e == 1.0:
            out[...] = a
            return
        if e == 0.5:
            xp.sqrt(a, out=out)
            return
    if a.dtype == b.dtype == out.dtype and is_float(out.dtype) and np.dtype(out.dtype).name != "bfloat16":
        xp.power(a, b, out=out)
        return
    if np.dtype(out.dtype).kind in "iu" and np.dtype(b.dtype).kind in "iu":
        write(out, xp.power(a.astype(np.int64), b.astype(np.int64)))
        return
    # Mixed types (the result has the base's type): compute in float64.
    write(out, xp.power(a.astype(np.float64), b.astype(np.float64)))


@register("Mod")
def mod(ctx, inputs, outputs):
    xp = ctx.xp
    a, b = inputs
    if int(ctx.attr("fmod", 0)):
        write(outputs[0], xp.fmod(a, b))
    else:
        write(outputs[0], xp.mod(a, b))


@register("BitShift")
def bitshift(ctx, inputs, outputs):
    xp = ctx.xp
    d = ctx.attr("direction", "LEFT")
    d = d.decode() if isinstance(d, bytes) else d
    fn = xp.left_shift if d == "LEFT" else xp.right_shift
    write(outputs[0], fn(inputs[0], inputs[1]))


@register("PRelu")
def prelu(ctx, inputs, outputs):
    xp = ctx.xp
    x, slope = inputs
    if ctx.opset < 7 and slope.ndim == 1 and x.ndim >= 2 and slope.shape[0] == x.shape[1] != x.shape[-1]:
        # opset 6 broadcast rule: a 1-D slope applies per channel (axis 1), not to the last axis
        slope = slope.reshape((slope.shape[0],) + (1,) * (x.ndim - 2))
    write(outputs[0], xp.where(x < 0, x * slope, x))


# ---------------------------------------------------------------------------
# Variadic ops


def _variadic(name, mean=False):
    def kernel(ctx, inputs, outputs):
        xp = ctx.xp
        xs = [x for x in inputs if x is not None]
        out = outputs[0]
        if mean:
            xs = [up(x) for x in xs]
        acc = xs[0]
        for x in xs[1:]:
            acc = getattr(xp, name)(acc, x)
        if mean:
            acc = acc / len(xs)
        write(out, acc)

    return kernel


register("Max")(_variadic("maximum"))
register("Min")(_variadic("minimum"))
register("Sum")(_variadic("add"))
register("Mean")(_variadic("add", mean=True))


# ---------------------------------------------------------------------------
# Unary ops


def _unary(name):
    def kernel(ctx, inputs, outputs):
        x, out = inputs[0], outputs[0]
        fn = getattr(ctx.xp, name)
        if x.dtype == out.dtype:
            fn(x, out=out)
        else:
            write(out, fn(x))

    return kernel


for _op, _fn in {
    "Neg": "negative",
    "Abs": "absolute",
    "Sqrt": "sqrt",
    "Exp": "exp",
    "Log": "log",
    "Tanh": "tanh",
    "Cos": "cos",
    "Sin": "sin",
    "Tan": "tan",
    "Acos": "arccos",
    "Asin": "arcsin",
    "Atan": "arctan",
    "Cosh": "cosh",
    "Sinh": "sinh",
    "Acosh": "arccosh",
    "Asinh": "arcsinh",
    "Atanh": "arctanh",
    "Floor": "floor",
    "Ceil": "ceil",
    "Sign": "sign",
    "Not": "logical_not",
    "IsNaN": "isnan",
    "BitwiseNot": "invert",
    "Round": "rint",  # round half to even, as ONNX
}.items():
    register(_op)(_unary(_fn))


@register("Reciprocal")
def reciprocal(ctx, inputs, outputs):
    x = inputs[0]
    write(outputs[0], 1.0 / up(x) if is_float(x.dtype) else ctx.xp.reciprocal(x))


@register("IsInf")
def isinf(ctx, inputs, outputs):
    xp = ctx.xp
    x = inputs[0]
    neg = int(ctx.attr("detect_negative", 1))
    pos = int(ctx.attr("detect_positive", 1))
    inf = xp.isinf(x)
    if neg and pos:
        write(outputs[0], inf)
    elif neg:
        write(outputs[0], inf & (x < 0))
    elif pos:
        write(outputs[0], inf & (x > 0))
    else:
        write(outputs[0], False)


def _sigmoid(xp, x):
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _softplus(xp, x):
    return xp.maximum(x, 0) + xp.log1p(xp.exp(-xp.abs(x)))


@register("Sigmoid")
def sigmoid(ctx, inputs, outputs):
    x, out = inputs[0], outputs[0]
    xp = ctx.xp
    if x.dtype == out.dtype and out.dtype.kind == "f" and out.dtype.itemsize >= 4:
        # in place in the output: 1 / (1 + exp(-x)); exp overflows to inf for x < -88 and gives exactly 0
        with np.errstate(over="ignore"):
            xp.negative(x, out=out)
            xp.exp(out, out=out)
            xp.add(out, out.dtype.type(1), out=out)
            xp.reciprocal(out, out=out)
        return
    write(out, _sigmoid(xp, up(x)))


@register("Relu")
def relu(ctx, inputs, outputs):
    x, out = inputs[0], outputs[0]
    ctx.xp.maximum(x, x.dtype.type(0), out=out)


@register("LeakyRelu")
def leaky_relu(ctx, inputs, outputs):
    x = inputs[0]
    alpha = float(ctx.attr("alpha", 0.01))
    write(outputs[0], ctx.xp.where(x >= 0, x, up(x) * alpha))


@register("ThresholdedRelu")
def thresholded_relu(ctx, inputs, outputs):
    x = inputs[0]
    alpha = float(ctx.attr("alpha", 1.0))
    write(outputs[0], ctx.xp.where(up(x) > alpha, x, 0))


def _activation(op, **defaults):
    """Register ``fn(xp, x, **attrs)`` as the kernel of the elementwise activation ``op``.

    The one place these activations read their input (in the accumulation dtype), read their float
    attributes (with the ONNX defaults given here) and write the result, so each op below is just its formula.
    """

    def deco(fn):
        def kernel(ctx, inputs, outputs):
            attrs = {name: float(ctx.attr(name, default)) for name, default in defaults.items()}
            write(outputs[0], fn(ctx.xp, up(inputs[0]), **attrs))

        register(op)(kernel)
        return fn

    return deco


@_activation("Elu", alpha=1.0)
def elu(xp, x, alpha):
    return xp.where(x > 0, x, alpha * xp.expm1(xp.minimum(x, 0)))


@_activation("Celu", alpha=1.0)
def celu(xp, x, alpha):
    return xp.maximum(x, 0) + xp.minimum(0, alpha * xp.expm1(xp.minimum(x, 0) / alpha))


@_activation("Selu", alpha=1.67326319217681884765625, gamma=1.05070102214813232421875)
def selu(xp, x, alpha, gamma):
    return xp.where(x > 0, gamma * x, gamma * alpha * xp.expm1(xp.minimum(x, 0)))


@_activation("HardSigmoid", alpha=0.2, beta=0.5)
def hard_sigmoid(xp, x, alpha, beta):
    return xp.clip(x * alpha + beta, 0, 1)


@_activation("HardSwish")
def hard_swish(xp, x):
    return x * xp.clip(x * (1.0 / 6.0) + 0.5, 0, 1)


_activation("Softplus")(_softplus)


@_activation("Softsign")
def softsign(xp, x):
    return x / (1 + xp.abs(x))


@_activation("Mish")
def mish(xp, x):
    return x * xp.tanh(_softplus(xp, x))


@_activation("Swish", alpha=1.0)
def swish(xp, x, alpha):
    return x * _sigmoid(xp, alpha * x)


@register("Shrink")
def shrink(ctx, inputs, outputs):
    xp = ctx.xp
    x = inputs[0]
    xf = up(x) if is_float(x.dtype) else x.astype(np.float64)
    lambd = float(ctx.attr("lambd", 0.5))
    bias = float(ctx.attr("bias", 0.0))
    write(outputs[0], xp.where(xf < -lambd, xf + bias, xp.where(xf > lambd, xf - bias, 0)))


@register("Erf")
def erf_(ctx, inputs, outputs):
    x, out = inputs[0], outputs[0]
    if is_float(out.dtype):
        erf_into(ctx.xp, x, out)
    else:  # integer Erf (allowed by the spec): compute in float32, round to the type
        write(out, erf(ctx.xp, x.astype(np.float32)))


@register("Gelu")
def gelu(ctx, inputs, outputs):
    approx = ctx.scratch.get("approx")
    if approx is None:
        approx = ctx.scratch["approx"] = to_str(ctx.attr("approximate", "none"))
    if approx == "tanh":
        gelu_tanh_into(ctx.xp, inputs[0], outputs[0])
    else:
        erf_into(ctx.xp, inputs[0], outputs[0], kind="gelu")


@register("Clip", host_inputs=(1, 2))
def clip(ctx, inputs, outputs):
    xp = ctx.xp
    x = inputs[0]
    if ctx.opset < 11:
        lo = ctx.attr("min", None)
        hi = ctx.attr("max", None)
    else:
        lo = inputs[1] if len(inputs) > 1 else None
        hi = inputs[2] if len(inputs) > 2 else None
        lo = None if lo is None else host_scalar(ctx, lo)
        hi = None if hi is None else host_scalar(ctx, hi)
    y = x
    if lo is not None:
        y = xp.maximum(y, x.dtype.type(lo))
    if hi is not None:
        y = xp.minimum(y, x.dtype.type(hi))
    write(outputs[0], y)


@register("Cast", "CastLike")
def cast(ctx, inputs, outputs):
    x, out = inputs[0], outputs[0]
    if x.dtype == out.dtype:
        write(out, x)
    else:
        write(out, x.astype(out.dtype))


@register("Where")
def where(ctx, inputs, outputs):
    write(outputs[0], ctx.xp.where(inputs[0], inputs[1], inputs[2]))


@register("Identity")
def identity(ctx, inputs, outputs):
    write(outputs[0], inputs[0].reshape(outputs[0].shape))


@register("Dropout", host_inputs=(1, 2))
def dropout(ctx, inputs, outputs):
    """Inference-mode Dropout: identity (training_mode with ratio > 0 is not supported)."""
    x = inputs[0]
    training = False
    if ctx.opset >= 12 and len(inputs) > 2 and inputs[2] is not None:
        training = bool(np.asarray(ctx.host(inputs[2])).reshape(-1)[0])
    if training:
        ratio = 0.5
        if len(inputs) > 1 and inputs[1] is not None:
            ratio = float(host_scalar(ctx, inputs[1]))
        if ratio != 0.0:
            raise NotImplementedError("Dropout in training mode is not supported")
    write(outputs[0], x)
    if has_output(outputs, 1):
        write(outputs[1], True)
