"""Byte sizes, read and written in one place for both programs.

Reading (``--gpu-mem``, ``--capacity``, ``turnipc.plan(gpu_mem=...)``) follows
the convention of accelerate and of disk vendors: ``K``/``KB``, ``M``/``MB``,
``G``/``GB``, ``T``/``TB`` are powers of ten (``24G`` = 24 * 10^9 bytes) and
``KiB``, ``MiB``, ``GiB``, ``TiB`` are powers of two (``24GiB`` = 24 * 2^30).
Units are case-insensitive (``24gib``); a bare number is bytes.

Writing (:func:`format_bytes`) always uses binary units with three
significant digits (``1536`` -> ``1.5 KiB``), so a printed size reads back
to within rounding.

Budgets (:class:`Budget`) add ``25%`` (a fraction of the model's no-offload
peak), ``min`` (the smallest budget that plans) and ``auto`` (the free memory
of each GPU minus a reserve, measured when planning); :func:`parse_budgets`
reads one budget, or one per GPU separated by commas (``20GiB,24GiB``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_DECIMAL = {"K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
_BINARY = {"KI": 1 << 10, "MI": 1 << 20, "GI": 1 << 30, "TI": 1 << 40}
_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][0-9]+)?)\s*([A-Za-z]*)\s*$")
FORMS = "bytes, or a number with K/M/G/T (powers of 10: 24G = 24*10^9) or KiB/MiB/GiB/TiB (powers of 2: 24GiB = 24*2^30)"


def _multiplier(suffix: str) -> int | None:
    s = suffix.upper()
    if s in ("", "B"):
        return 1
    if s.endswith("B"):
        s = s[:-1]
    if s in _DECIMAL:
        return _DECIMAL[s]
    if s in _BINARY:
        return _BINARY[s]
    return None


def parse_size(text: str) -> int:
    """'24G' -> 24_000_000_000, '24GiB' -> 25_769_803_776, '512' -> 512. Raises ValueError naming the forms."""
    m = _RE.match(str(text))
    mult = _multiplier(m.group(2)) if m else None
    if not m or mult is None:
        raise ValueError(f"cannot read size {text!r}: use {FORMS}")
    return int(round(float(m.group(1)) * mult))


def format_bytes(n: float) -> str:
    """Binary units, 3 significant digits: 1536 -> '1.5 KiB', 512 -> '512 B'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.3g} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover


@dataclass(frozen=True)
class Budget:
    """A GPU memory budget: absolute bytes, a fraction of the no-offload peak, ``min`` or ``auto``."""

    bytes: int | None = None
    fraction: float | None = None
    minimum: bool = False  # "min": the smallest budget that plans
    auto: bool = False  # "auto": the GPU's free memory minus a reserve (resolved before planning)

    def resolve(self, no_offload_peak: int) -> int:
        if self.bytes is not None:
            return self.bytes
        if self.fraction is None:
            raise ValueError(f"budget {self.describe()!r} must be resolved before planning")
        return max(1, int(no_offload_peak * self.fraction))

    def describe(self) -> str:
        if self.minimum:
            return "min"
        if self.auto:
            return "auto"
        if self.bytes is not None:
            return format_bytes(self.bytes)
        assert self.fraction is not None
        return f"{self.fraction * 100:g}%"


def parse_budget(text: str) -> Budget:
    """One budget: bytes / size with unit, ``25%``, ``min`` or ``auto``. Raises ValueError."""
    t = str(text).strip()
    if t.lower() == "min":
        return Budget(minimum=True)
    if t.lower() == "auto":
        return Budget(auto=True)
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


def parse_budgets(text: str, gpus: int | None = None) -> list[Budget]:
    """One budget for every GPU (``24GiB``) or one per GPU (``20GiB,24GiB``); with ``gpus``, the count must match."""
    parts = [p for p in str(text).split(",")]
    if any(not p.strip() for p in parts):
        raise ValueError(f"cannot read budget {text!r}: an empty item; write one budget (24GiB) or one per GPU (20GiB,24GiB)")
    budgets = [parse_budget(p) for p in parts]
    if len(budgets) > 1:
        if any(b.minimum or b.fraction is not None for b in budgets):
            raise ValueError(f"per-GPU budgets {text!r} must be sizes or auto (not % or min): e.g. 20GiB,24GiB")
        if gpus is not None and len(budgets) != gpus:
            raise ValueError(f"{len(budgets)} per-GPU budgets {text!r} for {gpus} GPU(s): give one, or one per GPU")
    return budgets
