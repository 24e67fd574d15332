"""How many bytes of temporaries a kernel allocates outside the planned arena: ``temp_bytes``.

WHY: a kernel's outputs live in the arena at planned offsets, but its
intermediate arrays (a widened float16 block, a row's maximum, the result of
``xp.where`` before it is copied into place) are allocated by the array
library, outside the arena. On a GPU they count against the same device
memory, so the plan must reserve room for them: the planner asks this module
for a per-node upper bound and records the largest per device (a device's
compute queue runs one node at a time, so temporaries of two nodes on one
device never coexist).

The bound is per op: exact formulas for the kernels written to bound their
scratch (``_fast``: Erf, Gelu, Softmax, LogSoftmax, LayerNormalization,
RMSNormalization, MatMul in float32/float64), and for every other op a
conservative default (every output and every input, widened to at least 4
bytes per element, twice). tests/test_kernel_workspace.py runs every node of
real plans under ``tracemalloc`` and checks the measured peak stays within
this bound.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..dtypes import np_dtype
from ._fast import CHUNK

#: (dtype name, shape) of one input or output, or None when omitted.
TensorSpec = "tuple[str, Sequence[int]] | None"

#: Python-object overhead a kernel call may add on top of its arrays (views, scalars, small lists).
SMALL_OBJECTS = 64 << 10


def _n(spec: Any) -> int:
    return int(np.prod(spec[1], dtype=np.int64)) if spec[1] else 1


def _wide(spec: Any) -> int:
    """Bytes of the tensor widened to its compute dtype (at least float32 / 4 bytes per element)."""
    return _n(spec) * max(4, np_dtype(spec[0]).itemsize)


def _rows_cols(shape: Sequence[int], axis: int) -> tuple[int, int]:
    axis = axis + len(shape) if axis < 0 else axis
    cols = int(np.prod(shape[axis:], dtype=np.int64)) if shape else 1
    rows = int(np.prod(shape[:axis], dtype=np.int64)) if shape else 1
    return rows, cols


def _default(inputs: Sequence[Any], outputs: Sequence[Any]) -> int:
    specs = [s for s in list(inputs) + list(outputs) if s is not None]
    return 2 * sum(_wide(s) for s in specs)


def temp_bytes(op: str, inputs: Sequence[Any], outputs: Sequence[Any], attrs: dict[str, Any] | None = None, opset: int = 18) -> int:
    """Upper bound of the bytes a kernel for ``op`` allocates outside its outputs (plus small objects).

    ``inputs``/``outputs`` are ``(dtype name, shape)`` or None; ``attrs`` the node's attributes.
    """
    attrs = attrs or {}
    out = outputs[0] if outputs else None
    x = inputs[0] if inputs else None
    if out is None or x is None:
        return SMALL_OBJECTS + _default(inputs, outputs)
    wd = 8 if np_dtype(out[0]) == np.float64 else 4
    n = _n(out)
    if op in ("Erf", "Gelu") and (np_dtype(out[0]).kind == "f" or out[0] == "bfloat16"):
        return SMALL_OBJECTS + 4 * min(n, CHUNK) * wd + _wide(x)  # 4 block buffers (+ a copy if x is not contiguous)
    if op in ("Softmax", "LogSoftmax", "LayerNormalization", "RMSNormalization"):
        shape = list(out[1])
        if not shape:
            return SMALL_OBJECTS + _default(inputs, outputs)
        default_axis = -1 if op != "Softmax" and op != "LogSoftmax" or opset >= 13 else 1
        axis = int(attrs.get("axis", default_axis))
        rows, cols = _rows_cols(shape, axis)
        block = max(1, min(rows, CHUNK // max(cols, 1))) * cols * wd
        row_stats = 4 * rows * wd
        params = sum(_wide(s) for s in inputs[1:] if s is not None)  # scale/bias widened or broadcast
        # the fast paths need a block (widening or log-softmax's exp); the generic paths (other axes) a few full copies
        return SMALL_OBJECTS + max(2 * block + row_stats + params, 4 * rows * cols * wd + params)
    if op == "FusedAttention" and len(outputs) > 1 and outputs[1] is not None:
        rows = _n(outputs[1]) // max(1, int(outputs[1][1][-1]) if outputs[1][1] else 1)
        return SMALL_OBJECTS + 3 * rows * wd  # each row's maximum, sum and NaN test; the scores are planned
    if op == "MatMul":
        a, b = inputs[0], inputs[1]
        if a is not None and b is not None and np_dtype(a[0]) == np_dtype(out[0]) and np_dtype(out[0]).itemsize >= 4:
            return SMALL_OBJECTS + _wide(out)  # numpy may compute a broadcast product into a fresh array first
        return SMALL_OBJECTS + _default(inputs, outputs)
    return SMALL_OBJECTS + _default(inputs, outputs)
