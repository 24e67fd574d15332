"""Static arena layout: give every buffer an offset so that buffers live at the same
time never share bytes, with the arena (highest end) as small as possible.

    >>> from turnipc.layout import Buffer, solve_layout
    >>> lay = solve_layout([Buffer("a", 0, 2, 4), Buffer("b", 1, 3, 4), Buffer("c", 2, 4, 4)])
    >>> lay.arena_bytes, lay.max_live_bytes
    (8, 8)

Solvers: ``greedy`` (best fit over several orderings, fast), ``search`` (greedy, then an
exact MiniMalloc-style branch-and-bound), ``cpsat`` (greedy, the exact search on segments
of up to 2,500 buffers, then OR-Tools CP-SAT large-neighbourhood search). The last two
run under a deterministic effort budget.
"""

from __future__ import annotations

from typing import Sequence

from .cpsat import DEFAULT_EFFORT, cpsat_layout
from .csvio import LayoutInputError, parse_csv, read_csv, write_csv
from .greedy import ORDERINGS, Hole, greedy_layout
from .model import Buffer, Layout, check_layout, live_profile, max_live
from .search import search_layout

SOLVERS = ("greedy", "search", "cpsat")

__all__ = [
    "Buffer", "Layout", "Hole", "greedy_layout", "cpsat_layout", "search_layout", "solve_layout",
    "read_csv", "parse_csv", "write_csv", "check_layout", "max_live", "live_profile",
    "LayoutInputError", "SOLVERS", "ORDERINGS", "DEFAULT_EFFORT",
]


def solve_layout(
    buffers: Sequence[Buffer],
    solver: str = "greedy",
    capacity: int | None = None,
    effort: float = DEFAULT_EFFORT,
    progress=None,
) -> Layout:
    """Lay out ``buffers`` with the named solver; ``effort`` (deterministic units) applies to cpsat."""
    if solver == "greedy":
        return greedy_layout(buffers)
    if solver == "search":
        return search_layout(buffers, capacity=capacity, effort=effort, progress=progress)
    if solver == "cpsat":
        return cpsat_layout(buffers, capacity=capacity, effort=effort, progress=progress)
    raise ValueError(f"unknown solver {solver!r}; choose from {', '.join(SOLVERS)}")
