"""Numeric helpers shared by the kernel modules (array-API only: numpy or cupy)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

_LOW_FLOATS = ("float16", "bfloat16")


def is_float(dtype: Any) -> bool:
    d = np.dtype(dtype)
    return d.kind == "f" or d.name == "bfloat16"


def compute_dtype(dtype: Any) -> np.dtype:
    """The dtype to accumulate in: float32 for float16/bfloat16, else the dtype itself."""
    d = np.dtype(dtype)
    if d.name in _LOW_FLOATS:
        return np.dtype(np.float32)
    return d


def up(x: Any) -> Any:
    """``x`` in its accumulation dtype (float16/bfloat16 -> float32); no copy otherwise."""
    if x is None:
        return None
    cd = compute_dtype(x.dtype)
    return x if cd == x.dtype else x.astype(cd)


def is_numpy(xp: Any) -> bool:
    return xp is np


def write(out: Any, value: Any) -> None:
    """Store ``value`` (broadcast, cast) into the preallocated output ``out``."""
    out[...] = value


def norm_axis(axis: int, rank: int) -> int:
    a = int(axis)
    if a < 0:
        a += rank
    if not 0 <= a < max(rank, 1):
        raise ValueError(f"axis {axis} out of range for rank {rank}")
    return a


def host_ints(ctx: Any, x: Any) -> list[int]:
    return [int(v) for v in np.asarray(ctx.host(x)).reshape(-1)]


def host_scalar(ctx: Any, x: Any) -> Any:
    return np.asarray(ctx.host(x)).reshape(-1)[0].item()


def erf(xp: Any, x: Any) -> Any:
    """Error function in x's dtype (float32 rational approximation, see ``_fast``); allocates its result."""
    from ._fast import erf_into

    out = xp.empty(x.shape, dtype=x.dtype)
    erf_into(xp, x, out)
    return out


SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
