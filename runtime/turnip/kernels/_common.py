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


# erfc(x) for x >= 0 after Numerical Recipes' erfcc (Chebyshev fit, fractional
# error < 1.2e-7 everywhere): good to float32 precision and built only from
# exp and polynomials, so it runs on numpy and cupy alike.
_ERFC_COEF = (
    -1.26551223,
    1.00002368,
    0.37409196,
    0.09678418,
    -0.18628806,
    0.27886807,
    -1.13520398,
    1.48851587,
    -0.82215223,
    0.17087277,
)


def erf(xp: Any, x: Any) -> Any:
    """Error function (abs. error < 2e-8), computed in float64 and returned in x's dtype."""
    z = x.astype(np.float64)
    a = xp.abs(z)
    t = 1.0 / (1.0 + 0.5 * a)
    poly = xp.zeros_like(t) + _ERFC_COEF[-1]
    for c in reversed(_ERFC_COEF[:-1]):
        poly = poly * t + c
    erfc = t * xp.exp(-a * a + poly)
    r = 1.0 - erfc
    # Near zero 1 - erfc loses relative precision: use the Maclaurin series there.
    zz = xp.minimum(a, 0.75)
    z2 = zz * zz
    term = zz
    series = zz
    for n in range(1, 14):
        term = term * (-z2) / n
        series = series + term / (2 * n + 1)
    series = series * (2.0 / math.sqrt(math.pi))
    r = xp.where(a < 0.75, series, r)
    r = xp.where(z < 0, -r, r)
    return r.astype(x.dtype)


SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
