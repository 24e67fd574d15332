"""Step "weights": every initializer's dtype and shape; the small inline ones also as arrays, for folding.

Why: a weight is planned from its metadata alone (its bytes are read only by
the runtime), but folding needs the values of small constants (shape
vectors, axes, masks). An initializer's bytes are parsed only when it is
inline and at most ``folding.FOLD_INPUT_MAX_BYTES``; graph inputs that are
also initializers (IR 3 models) are weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .. import folding


@dataclass
class Weights:
    """The model's initializers."""

    meta: dict[str, tuple[int, tuple[int, ...]]] = field(default_factory=dict)  # name -> (ONNX elem type, shape), model order
    consts: dict[str, np.ndarray] = field(default_factory=dict)  # small inline ones, as arrays (folding reads them)
    protos: list[TensorProto] = field(default_factory=list)  # the same, as protos (the inference model keeps them)


def collect_weights(g: onnx.GraphProto) -> Weights:
    """The initializers of ``g``: metadata of all, arrays of the small inline ones."""
    w = Weights()
    for t in g.initializer:
        w.meta[t.name] = (t.data_type, tuple(int(d) for d in t.dims))
        if t.data_location != TensorProto.EXTERNAL and t.data_type != TensorProto.STRING:
            nbytes = nbytes_or_none(t.data_type, w.meta[t.name][1])
            if nbytes is not None and nbytes <= folding.FOLD_INPUT_MAX_BYTES:
                try:
                    w.consts[t.name] = numpy_helper.to_array(t)
                    w.protos.append(t)
                except Exception:
                    pass
    return w


def nbytes_or_none(elem_type: int, dims: tuple[int, ...]) -> int | None:
    """Bytes of a tensor of that type and shape, None for a type NumPy cannot hold."""
    try:
        size = np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)).itemsize
    except Exception:
        return None
    return int(np.prod(dims, dtype=np.int64)) * size


#: Integer initializers up to this many elements are op parameters (axes, pads, shapes), read at plan time.
SMALL_INT_MAX = 64


def small_int_weights(consts: dict[str, np.ndarray], values: dict) -> dict[str, tuple[int, ...]]:
    """The small integer initializers among ``values``, as tuples (``TaskGraph.small_ints``)."""
    out: dict[str, tuple[int, ...]] = {}
    for name, arr in consts.items():
        if name in values and arr.dtype.kind in "iu" and arr.size <= SMALL_INT_MAX:
            out[name] = tuple(int(x) for x in arr.reshape(-1))
    return out
