"""Element types shared by the compiler and the runtime.

Plans name dtypes by their NumPy name. bfloat16 and the float8 types come from
ml_dtypes (a dependency of onnx), so NumPy can hold them.
"""

from __future__ import annotations

import numpy as np

_ONNX_TO_NAME = {
    1: "float32",
    2: "uint8",
    3: "int8",
    4: "uint16",
    5: "int16",
    6: "int32",
    7: "int64",
    9: "bool",
    10: "float16",
    11: "float64",
    12: "uint32",
    13: "uint64",
    16: "bfloat16",
}
_NAME_TO_ONNX = {v: k for k, v in _ONNX_TO_NAME.items()}


def dtype_name_from_onnx(elem_type: int) -> str:
    """ONNX TensorProto element type -> dtype name, or ValueError naming the type."""
    try:
        return _ONNX_TO_NAME[elem_type]
    except KeyError:
        import onnx

        raise ValueError(f"unsupported element type {onnx.TensorProto.DataType.Name(elem_type)}") from None


def onnx_elem_type(name: str) -> int:
    return _NAME_TO_ONNX[name]


def np_dtype(name: str) -> np.dtype:
    if name == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def itemsize(name: str) -> int:
    return np_dtype(name).itemsize
