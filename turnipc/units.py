"""Parsing and printing byte sizes (``24G``, ``512M``, ``300K``, ``1048576``, ``25%``)."""

from __future__ import annotations

import re
from dataclasses import dataclass

_SUFFIX = {"": 1, "B": 1, "K": 1 << 10, "KB": 1 << 10, "KIB": 1 << 10, "M": 1 << 20, "MB": 1 << 20, "MIB": 1 << 20,
           "G": 1 << 30, "GB": 1 << 30, "GIB": 1 << 30, "T": 1 << 40, "TB": 1 << 40, "TIB": 1 << 40}
_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*$")


@dataclass(frozen=True)
class Budget:
    """A GPU memory budget: absolute bytes, or a fraction of the no-offload peak."""

    bytes: int | None = None
    fraction: float | None = None
    minimum: bool = False  # "min": the smallest budget that plans

    def resolve(self, no_offload_peak: int) -> int:
        if self.bytes is not None:
            return self.bytes
        assert self.fraction is not None
        return max(1, int(no_offload_peak * self.fraction))

    def describe(self) -> str:
        if self.minimum:
            return "min"
        if self.bytes is not None:
            return format_bytes(self.bytes)
        assert self.fraction is not None  # a Budget is min, bytes or a fraction
        return f"{self.fraction * 100:g}%"


def parse_size(text: str) -> int:
    """'24G' -> 25769803776 (binary units). Raises ValueError with the accepted forms."""
    m = _RE.match(text)
    if not m or m.group(2).upper() not in _SUFFIX:
        raise ValueError(f"cannot read size {text!r}: use bytes or a number with K, M, G or T (e.g. 24G, 512M, 300K)")
    return int(float(m.group(1)) * _SUFFIX[m.group(2).upper()])


def parse_budget(text: str) -> Budget:
    t = text.strip()
    if t.lower() == "min":
        return Budget(minimum=True)
    if t.endswith("%"):
        try:
            f = float(t[:-1]) / 100.0
        except ValueError:
            raise ValueError(f"cannot read budget {text!r}: a percentage looks like 25%") from None
        if not 0 < f:
            raise ValueError(f"budget {text!r} must be a positive percentage")
        return Budget(fraction=f)
    n = parse_size(t)
    if n <= 0:
        raise ValueError(f"budget {text!r} must be positive")
    return Budget(bytes=n)


def format_bytes(n: float) -> str:
    """Binary units, 3 significant digits: 1536 -> '1.50 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.3g} {unit}"
        n /= 1024
    return f"{n} B"
