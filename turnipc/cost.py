"""Rough cost of one task: floating point operations and bytes touched.

Used to estimate compute time against transfer time; it needs to be right in
order of magnitude, not exact.

* bytes: the nbytes of every distinct storage read or written.
* flops: MatMul/Gemm 2*M*N*K (batched); Conv 2*out*Cin/group*prod(kernel);
  Attention 4*B*H*Sq*Sk*D; Einsum 2*prod(index extents); pooling
  out*prod(kernel); elementwise ~ output elements (x4 for transcendental ops);
  reductions ~ input elements; normalizations and softmax ~ 5x elements; pure
  data movement 0.
"""

from __future__ import annotations

import math
from typing import Mapping

from turnip.kernels.reduce import REDUCE_OPS

from .taskgraph import Task, Value

TRANSCENDENTAL_FACTOR = 4
NORM_FACTOR = 5

DATA_MOVEMENT = frozenset(
    {
        "Reshape",
        "Squeeze",
        "Unsqueeze",
        "Flatten",
        "Identity",
        "Dropout",
        "Transpose",
        "Concat",
        "Split",
        "Slice",
        "Gather",
        "GatherElements",
        "GatherND",
        "Scatter",
        "ScatterElements",
        "ScatterND",
        "Expand",
        "Tile",
        "Pad",
        "Shape",
        "Size",
        "ConstantOfShape",
        "Constant",
        "Cast",
        "CastLike",
        "Trilu",
        "DepthToSpace",
        "SpaceToDepth",
        "Compress",
        "NonZero",
        "OneHot",
        "EyeLike",
        "Range",
        "ReverseSequence",
        "SplitToSequence",
        "ConcatFromSequence",
        "Optional",
        "OptionalGetElement",
        "OptionalHasElement",
        "QuantizeLinear",
        "DequantizeLinear",
        "Col2Im",
        "CenterCropPad",
        "Resize",
        "Upsample",
    }
)
TRANSCENDENTAL = frozenset(
    {
        "Exp",
        "Log",
        "Tanh",
        "Sigmoid",
        "Erf",
        "Gelu",
        "FastGelu",
        "BiasGelu",
        "QuickGelu",
        "Sin",
        "Cos",
        "Tan",
        "Asin",
        "Acos",
        "Atan",
        "Sinh",
        "Cosh",
        "Asinh",
        "Acosh",
        "Atanh",
        "Pow",
        "Softplus",
        "Softsign",
        "Selu",
        "Elu",
        "Celu",
        "Mish",
        "Sqrt",
        "Reciprocal",
        "HardSwish",
        "ThresholdedRelu",
        "LogSoftmax",
    }
)
#: Ops costing one operation per input element: the Reduce* family (named once, by the runtime's kernels) and
#: the other ops that read every element once.
REDUCTIONS = frozenset(REDUCE_OPS) | frozenset(
    {
        "ArgMax",
        "ArgMin",
        "GlobalAveragePool",
        "GlobalMaxPool",
        "GlobalLpPool",
        "CumSum",
        "TopK",
    }
)
NORMS = frozenset(
    {
        "LayerNormalization",
        "RMSNormalization",
        "SimplifiedLayerNormalization",
        "SkipLayerNormalization",
        "SkipSimplifiedLayerNormalization",
        "BatchNormalization",
        "InstanceNormalization",
        "GroupNormalization",
        "LpNormalization",
        "MeanVarianceNormalization",
        "LRN",
        "Softmax",
    }
)
POOLS = frozenset({"MaxPool", "AveragePool", "LpPool"})
VARIADIC = frozenset({"Sum", "Max", "Min", "Mean"})


def _elems(v: Value | None) -> int:
    return math.prod(v.shape) if v is not None else 0


def _bytes_touched(task: Task, values: Mapping[str, Value]) -> int:
    seen: set[str] = set()
    total = 0
    for name in list(task.inputs) + list(task.outputs):
        if name is None:
            continue
        v = values[name]
        if v.storage in seen:
            continue
        seen.add(v.storage)
        total += v.nbytes
    return total


def _flops(task: Task, values: Mapping[str, Value]) -> int:
    op = task.op_type
    ins = [values[n] if n is not None else None for n in task.inputs]
    outs = [values[n] for n in task.outputs if n is not None]
    out0 = outs[0] if outs else None
    out_elems = _elems(out0)

    def inp(i: int) -> Value | None:
        return ins[i] if i < len(ins) else None

    if op in DATA_MOVEMENT:
        return 0
    if op in ("MatMul", "MatMulInteger", "FusedMatMul"):
        a = inp(0)
        k = a.shape[-1] if a is not None and a.shape else 1
        return 2 * out_elems * k
    if op == "QLinearMatMul":
        a = inp(0)
        k = a.shape[-1] if a is not None and a.shape else 1
        return 2 * out_elems * k
    if op == "Gemm":
        a = inp(0)
        trans_a = int(task.attrs.get("transA", 0))
        k = 1
        if a is not None and len(a.shape) == 2:
            k = a.shape[0] if trans_a else a.shape[1]
        return 2 * out_elems * k + (out_elems if inp(2) is not None else 0)
    if op in ("Conv", "ConvInteger", "QLinearConv"):
        w = inp(3 if op == "QLinearConv" else 1)
        per_out = math.prod(w.shape[1:]) if w is not None and len(w.shape) > 1 else 1
        return 2 * out_elems * per_out
    if op == "ConvTranspose":
        x, w = inp(0), inp(1)
        per_in = math.prod(w.shape[1:]) if w is not None and len(w.shape) > 1 else 1
        return 2 * _elems(x) * per_in
    if op in ("Attention", "MultiHeadAttention", "GroupQueryAttention"):
        return _attention_flops(ins, outs)
    if op == "Einsum":
        return _einsum_flops(str(task.attrs.get("equation", "")), ins, out_elems)
    if op in POOLS:
        kernel: list[int] | None = task.attrs.get("kernel_shape")
        return out_elems * (math.prod(kernel) if kernel else 1)
    if op in REDUCTIONS:
        return _elems(inp(0))
    if op in NORMS:
        return NORM_FACTOR * _elems(inp(0))
    if op in VARIADIC:
        return out_elems * max(1, len([i for i in ins if i is not None]) - 1)
    if op in TRANSCENDENTAL:
        return TRANSCENDENTAL_FACTOR * out_elems
    return out_elems


def _attention_flops(ins: list[Value | None], outs: list[Value]) -> int:
    """4*B*H*Sq*Sk*D, written as 2*|Q|*Sk + 2*|Y|*Sk (QK^T, then PV)."""
    q = ins[0] if ins else None
    k = ins[1] if len(ins) > 1 else None
    if q is None or k is None or not outs:
        return _elems(outs[0]) if outs else 0
    sk = k.shape[-2] if len(k.shape) == 4 else (k.shape[1] if len(k.shape) == 3 else 1)
    past = ins[4] if len(ins) > 4 else None
    if past is not None and len(past.shape) == 4:
        sk += past.shape[-2]
    return 2 * _elems(q) * sk + 2 * _elems(outs[0]) * sk


def _einsum_flops(equation: str, ins: list[Value | None], out_elems: int) -> int:
    eq = equation.replace(" ", "")
    lhs = eq.split("->")[0]
    terms = lhs.split(",")
    sizes: dict[str, int] = {}
    for term, v in zip(terms, ins, strict=False):
        if v is None or "..." in term:
            return 2 * out_elems
        for letter, n in zip(term, v.shape, strict=False):
            sizes[letter] = max(sizes.get(letter, 1), n)
    return 2 * math.prod(sizes.values()) if sizes else out_elems


def estimate(task: Task, values: Mapping[str, Value]) -> tuple[int, int]:
    """(flops, bytes_touched) of ``task`` (whose own flops/bytes fields are ignored)."""
    return int(_flops(task, values)), int(_bytes_touched(task, values))
