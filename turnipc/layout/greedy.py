"""Deterministic best-fit greedy layout.

Buffers are placed one at a time in a fixed order. For each buffer the already
placed buffers that overlap it in time leave holes in the address space; the
buffer goes to the bottom of the smallest hole it fits ("best fit"; ties go to
the lowest offset, or to the hole freed earliest), else on top of them.
Several orderings are tried and the smallest arena kept (ties: the first
ordering in the list), so the result is deterministic.

A pass runs in the compiled library (``greedy_place`` in ``_canonical.c``) when it
is built: one linear scan of the placed buffers per buffer, about 0.15 s for
pangu_2.6B's 18,692 buffers where the NumPy loop (one small array call per
buffer, kept as the reference and the fallback) took about a second. Both make
the same decisions (tests/test_layout.py compares them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import numpy as np

from .model import Buffer, Layout, max_live, validate_buffers


@dataclass(frozen=True)
class Hole:
    """A hole a buffer fits in: ``offset`` (aligned), usable ``size`` and ``freed_at``, when
    the latest earlier buffer in that place ended (-1: never used before)."""

    offset: int
    size: int
    freed_at: int


# name -> key function over the arrays (lower, upper, size, breadth); all sorted ascending,
# the input index breaks remaining ties.
def _orders(L: np.ndarray, U: np.ndarray, S: np.ndarray, B: np.ndarray) -> dict[str, np.ndarray]:
    n = len(L)
    idx = np.arange(n)
    length = U - L
    area = S.astype(np.float64) * length
    return {
        "size": np.lexsort((idx, L, -length, -S)),
        "breadth": np.lexsort((idx, L, -S, -B)),
        "length": np.lexsort((idx, L, -S, -length)),
        "area": np.lexsort((idx, L, -S, -area)),
        "lower": np.lexsort((idx, -S, -length, L)),
        "upper": np.lexsort((idx, -S, -length, -U)),
    }


ORDERINGS = ("size", "breadth", "length", "area", "lower", "upper")


def _breadth(L: np.ndarray, U: np.ndarray, S: np.ndarray) -> np.ndarray:
    """For each buffer the largest total live size during its lifetime."""
    times = np.unique(np.concatenate([L, U]))
    li = np.searchsorted(times, L)
    ui = np.searchsorted(times, U)
    delta = np.zeros(len(times) + 1, dtype=np.int64)
    np.add.at(delta, li, S)
    np.add.at(delta, ui, -S)
    live = np.cumsum(delta)[:-1]
    # range max over [li, ui) with a sparse table
    m = len(live)
    table = [live]
    k = 1
    while (1 << k) <= m:
        prev = table[-1]
        half = 1 << (k - 1)
        table.append(np.maximum(prev[:-half], prev[half:]))
        k += 1
    span = np.maximum(ui - li, 1)
    lev = np.floor(np.log2(span)).astype(np.int64)
    out = np.empty(len(L), dtype=np.int64)
    for k in np.unique(lev):
        sel = lev == k
        t = table[k]
        a = li[sel]
        b = ui[sel] - (1 << k)
        out[sel] = np.maximum(t[a], t[np.maximum(b, a)])
    return out


def _place(
    order: np.ndarray,
    L: np.ndarray,
    U: np.ndarray,
    S: np.ndarray,
    A: np.ndarray,
    tie_break: str,
    prefer: Callable[[Hole], object] | None,
    fit: str,
    limit: int | None = None,
    compiled: bool = True,
) -> tuple[np.ndarray, int]:
    """Place buffers in ``order``; returns (offsets, arena). Stops early (arena > limit) if limit given.

    Without ``prefer`` (and unless ``compiled`` is False) this runs in the compiled library
    when it is built (the same decisions, see ``greedy_place`` in ``_canonical.c``); the
    NumPy loop below is the reference and the fallback."""
    if prefer is None and compiled:
        from .canonical import place_compiled

        done = place_compiled(order, L, U, S, A, tie_break == "earliest_freed", fit == "first", limit)
        if done is not None:
            return done
    n = len(order)
    off = np.zeros(len(L), dtype=np.int64)
    pl = np.empty(n, dtype=np.int64)
    pu = np.empty(n, dtype=np.int64)
    po = np.empty(n, dtype=np.int64)
    pe = np.empty(n, dtype=np.int64)
    k = 0
    arena = 0
    need_freed = tie_break == "earliest_freed" or prefer is not None
    for i in order:
        l, u, s, a = int(L[i]), int(U[i]), int(S[i]), int(A[i])
        if s == 0 or u <= l:
            off[i] = 0
            continue
        m = (pl[:k] < u) & (pu[:k] > l)
        if not m.any():
            o = 0
        else:
            oo = po[:k][m]
            ee = pe[:k][m]
            srt = np.argsort(oo, kind="stable")
            oo = oo[srt]
            ee = np.maximum.accumulate(ee[srt])
            starts = np.empty(len(oo), dtype=np.int64)
            starts[0] = 0
            starts[1:] = ee[:-1]
            if a > 1:
                starts = -(-starts // a) * a
            room = oo - starts  # usable room of each hole below oo[j]
            top = int(ee[-1])
            if a > 1:
                top = -(-top // a) * a
            fits = np.flatnonzero(room >= s)
            if len(fits) == 0:
                o = top
            elif fit == "first":
                o = int(starts[fits[0]])
            elif not need_freed:
                j = fits[np.argmin(room[fits])]  # first minimum = lowest offset
                o = int(starts[j])
            else:
                cand = [Hole(int(starts[j]), int(room[j]), -1) for j in fits]
                if prefer is None:  # only the smallest holes compete
                    best = min(h.size for h in cand)
                    cand = [h for h in cand if h.size == best]
                cand = [_with_freed(h, s, l, pl, pu, po, pe, k) for h in cand]
                if prefer is not None:
                    h = min(cand, key=lambda h: (prefer(h), h.offset))
                else:
                    h = min(cand, key=lambda h: (h.freed_at, h.offset))
                o = h.offset
        off[i] = o
        pl[k], pu[k], po[k], pe[k] = l, u, o, o + s
        k += 1
        if o + s > arena:
            arena = o + s
            if limit is not None and arena > limit:
                return off, arena
    return off, arena


def _with_freed(h: Hole, s: int, l: int, pl, pu, po, pe, k: int) -> Hole:
    m = (pu[:k] <= l) & (po[:k] < h.offset + s) & (pe[:k] > h.offset)
    freed = int(pu[:k][m].max()) if m.any() else -1
    return Hole(h.offset, h.size, freed)


def _arrays(buffers: Sequence[Buffer]):
    L = np.fromiter((b.lower for b in buffers), dtype=np.int64, count=len(buffers))
    U = np.fromiter((b.upper for b in buffers), dtype=np.int64, count=len(buffers))
    S = np.fromiter((b.size for b in buffers), dtype=np.int64, count=len(buffers))
    A = np.fromiter((b.alignment for b in buffers), dtype=np.int64, count=len(buffers))
    return L, U, S, A


def greedy_offsets(
    buffers: Sequence[Buffer],
    orderings: Iterable[str] = ORDERINGS,
    tie_break: str = "lowest",
    prefer: Callable[[Hole], object] | None = None,
    fit: str = "best",
) -> tuple[dict[str, int], int, str]:
    """Best layout over ``orderings``: (offsets, arena, name of the winning ordering)."""
    if tie_break not in ("lowest", "earliest_freed"):
        raise ValueError(f"tie_break must be 'lowest' or 'earliest_freed', not {tie_break!r}")
    if fit not in ("best", "first"):
        raise ValueError(f"fit must be 'best' or 'first', not {fit!r}")
    if not buffers:
        return {}, 0, "empty"
    L, U, S, A = _arrays(buffers)
    B = _breadth(L, U, S)
    orders = _orders(L, U, S, B)
    best: tuple[int, np.ndarray, str] | None = None
    for name in orderings:
        if name not in orders:
            raise ValueError(f"unknown ordering {name!r}; choose from {', '.join(ORDERINGS)}")
        off, arena = _place(orders[name], L, U, S, A, tie_break, prefer, fit,
                            limit=None if best is None else best[0])
        if best is None or arena < best[0]:
            best = (arena, off, name)
    if best is None:
        raise ValueError(f"orderings is empty; choose from {', '.join(ORDERINGS)}")
    arena, off, name = best
    return {b.id: int(off[i]) for i, b in enumerate(buffers)}, int(arena), name


def greedy_layout(
    buffers: Sequence[Buffer],
    prefer: Callable[[Hole], object] | None = None,
    tie_break: str = "lowest",
    orderings: Iterable[str] = ORDERINGS,
    fit: str = "best",
) -> Layout:
    """Deterministic best-fit greedy over several orderings.

    ``tie_break``: among the smallest fitting holes, ``"lowest"`` takes the lowest offset,
    ``"earliest_freed"`` the hole whose latest earlier occupant (a buffer that ended at or
    before this buffer's ``lower``) ended earliest (never used counts as earliest).
    ``prefer``: optional key over :class:`Hole` (smallest wins, then lowest offset) that
    replaces best fit entirely, e.g. ``prefer=lambda h: h.freed_at`` picks, among every
    fitting hole, the one freed earliest. The top of the arena is used only when no hole fits.
    ``fit="first"``: lowest fitting hole instead of the smallest.
    """
    validate_buffers(buffers)
    offsets, arena, name = greedy_offsets(buffers, orderings, tie_break, prefer, fit)
    ml = max_live(buffers)
    return Layout(offsets, arena, ml, "greedy", arena == ml, stats={"ordering": name})


def squeaky_cost(n: int) -> float:
    """Deterministic effort charged per squeaky-wheel pass over n buffers (about seconds)."""
    return 0.005 + n * n / 3.0e8


def squeaky_improve(seg, goal: int, effort: float, report=None, passes: int = 40, patience: int = 12) -> float:
    """Squeaky-wheel iterated greedy on a segment (scaled units); returns the effort used.

    After each best-fit pass, the buffers that end in the upper half of the gap
    between max-live and the arena get a higher priority and the pass is
    repeated (priority first, then the base ordering). Keeps the best layout;
    stops at ``goal`` or when the effort is spent.
    """
    L, U, S, A = seg.L, seg.U, seg.S, seg.A
    n = len(L)
    if n == 0 or seg.arena <= goal:
        return 0.0
    orders = _orders(L, U, S, _breadth(L, U, S))
    bases = []
    for name in (seg.stats.get("greedy_ordering", "breadth"), "breadth", "size"):
        if name in orders and name not in bases:
            bases.append(name)
    cost = squeaky_cost(n)
    used = 0.0
    for name in bases:
        per_base = effort - used  # patience ends a base that stops improving
        base = orders[name]
        rank = np.empty(n, dtype=np.int64)
        rank[base] = np.arange(n)
        prio = np.zeros(n, dtype=np.int64)
        order = base
        spent = 0.0
        done = stale = 0
        while spent + cost <= per_base and seg.arena > goal and done < passes and stale < patience:
            off, arena = _place(order, L, U, S, A, "lowest", None, "best")
            spent += cost
            done += 1
            stale += 1
            if arena < seg.arena:
                seg.off = off
                seg.engine = "squeaky"
                stale = 0
                if report:
                    report()
            ends = off + S
            thr = seg.lb + (arena - seg.lb) // 2
            hot = ends > thr
            if not hot.any():
                break
            prio[hot] += 1
            order = np.lexsort((rank, -prio))
        used += spent
        if seg.arena <= goal:
            break
    return used
