"""CP-SAT layout with time decomposition and large-neighbourhood search.

One CP-SAT model over thousands of buffers does not scale, so:

1. Start from the greedy layout (never return anything worse).
2. Split time into independent segments (no buffer crosses a cut) and work on
   the segment that sets the arena.
3. Repeatedly take the buffer at the top of the arena, open a window of time
   around it, free the buffers whose lifetime lies in the window (all others
   stay at their offsets) and ask CP-SAT "do the free buffers fit below C?",
   bisecting C between the best conceivable value and the current arena.
   When the window holds the whole segment this is the exact model.

The model of one window: an offset variable per free buffer with domain
``[0, C - size]`` (multiples of its alignment), and one 1-D ``NoOverlap`` over
the memory intervals of every maximal set of buffers live at the same instant
(a maximal clique of the interval graph). Two buffers overlap in time exactly
when they are both live at the later of their two starts, so these cliques
encode the same thing as ``NoOverlap2D`` over (time x memory) boxes but
propagate far better (energy reasoning over each clique: total size <= C). Fixed
buffers enter as constant intervals, merged where they touch. Sizes are divided
by their gcd, identical free buffers (same lifetime and size) have their
offsets ordered, and every variable gets a hint from the current layout.

Determinism: the effort budget is CP-SAT *deterministic* time (its work
counters, units close to one second of one core), never wall time, and the
default is one search worker with a fixed seed, so the same input gives
byte-identical offsets on every machine. (CP-SAT's multi-worker portfolio is
not deterministic: its workers race. ``num_workers > 1`` turns on
``interleave_search``, CP-SAT's deterministic interleaved portfolio.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from .greedy import ORDERINGS, greedy_offsets
from .model import Buffer, Layout, max_live, validate_buffers

Progress = Callable[[int, int], None]
_MODE = __import__('os').environ.get('TURNIP_LAYOUT_MODE', 'clique')
_DEBUG = int(__import__('os').environ.get('TURNIP_LAYOUT_DEBUG') or 0)

#: Default effort (CP-SAT deterministic time units, roughly seconds of one core).
DEFAULT_EFFORT = 60.0
#: Free buffers per LNS window.
WINDOW_BUFFERS = 400


@dataclass
class _Problem:
    """A segment of the instance in scaled units (sizes divided by gcd)."""

    ids: list[str]
    L: np.ndarray
    U: np.ndarray
    S: np.ndarray  # scaled sizes
    A: np.ndarray  # scaled alignments
    off: np.ndarray  # current scaled offsets
    lb: int  # scaled max-live of the segment

    @property
    def arena(self) -> int:
        return int((self.off + self.S).max()) if len(self.S) else 0


class _Budget:
    def __init__(self, total: float):
        self.total = float(total)
        self.used = 0.0

    @property
    def left(self) -> float:
        return max(0.0, self.total - self.used)


def _segments(L: np.ndarray, U: np.ndarray) -> list[np.ndarray]:
    """Index groups of buffers whose lifetimes chain together (no cut between them)."""
    order = np.lexsort((U, L))
    groups: list[np.ndarray] = []
    start = 0
    reach = None
    for k, i in enumerate(order):
        if reach is not None and L[i] >= reach:
            groups.append(order[start:k])
            start = k
            reach = None
        reach = U[i] if reach is None else max(reach, U[i])
    if len(order):
        groups.append(order[start:])
    return groups


def _scaled_max_live(L: np.ndarray, U: np.ndarray, S: np.ndarray) -> int:
    times = np.unique(np.concatenate([L, U]))
    d = np.zeros(len(times) + 1, dtype=np.int64)
    np.add.at(d, np.searchsorted(times, L), S)
    np.add.at(d, np.searchsorted(times, U), -S)
    return int(np.cumsum(d).max())


def _canonical_identical(p: _Problem) -> None:
    """Within each group of identical buffers, give offsets in index order (for symmetry breaking)."""
    groups: dict[tuple, list[int]] = {}
    for i in range(len(p.ids)):
        groups.setdefault((int(p.L[i]), int(p.U[i]), int(p.S[i]), int(p.A[i])), []).append(i)
    for members in groups.values():
        if len(members) > 1:
            offs = sorted(int(p.off[i]) for i in members)
            for i, o in zip(members, offs):
                p.off[i] = o


def _cliques(members: np.ndarray, L: np.ndarray, U: np.ndarray) -> list[list[int]]:
    """Maximal sets of ``members`` live at one instant (lifetimes half-open)."""
    ev = [(int(L[i]), 1, int(i)) for i in members] + [(int(U[i]), 0, int(i)) for i in members]
    ev.sort()
    live: dict[int, None] = {}
    out: list[list[int]] = []
    grew = False
    for _, kind, i in ev:
        if kind:
            live[i] = None
            grew = True
        else:
            if grew:
                out.append(list(live))
                grew = False
            del live[i]
    return out


def _fits(
    p: _Problem,
    free: np.ndarray,
    cap: int,
    effort: float,
    seed: int,
    num_workers: int,
) -> tuple[str, np.ndarray | None, float]:
    """Can the ``free`` buffers be re-placed below ``cap`` with all others fixed?

    Returns (status, new offsets of ``free`` or None, deterministic time used)."""
    from ortools.sat.python import cp_model

    L, U, S, A, off = p.L, p.U, p.S, p.A, p.off
    is_free = np.zeros(len(L), dtype=bool)
    is_free[free] = True
    if np.any(S[free] > cap):
        return "INFEASIBLE", None, 0.0
    # fixed buffers overlapping a free one in time and reaching below cap
    lo_t, hi_t = int(L[free].min()), int(U[free].max())
    near = np.flatnonzero((~is_free) & (L < hi_t) & (U > lo_t) & (off < cap))
    # a fixed buffer crossing cap while overlapping a free one: still an obstacle below cap
    members = np.concatenate([free, near])
    model = cp_model.CpModel()
    x: dict[int, object] = {}
    itv: dict[int, object] = {}
    # fixed neighbours become holes in the domain of each free offset
    nL, nU, nO, nE = L[near], U[near], off[near], off[near] + S[near]
    for i in free:
        i = int(i)
        a, s = int(A[i]), int(S[i])
        m = (nL < U[i]) & (nU > L[i])
        # offsets o with o < e_j and o + s > o_j collide: forbid (o_j - s, e_j)
        bad = sorted(zip((nO[m] - s + 1).tolist(), (nE[m] - 1).tolist()))
        allowed = []
        cur = 0
        top = cap - s
        for b0, b1 in bad:
            if b0 > cur:
                allowed.append((cur, min(b0 - 1, top)))
            cur = max(cur, b1 + 1)
            if cur > top:
                break
        if cur <= top:
            allowed.append((cur, top))
        allowed = [(lo_, hi_) for lo_, hi_ in allowed if lo_ <= hi_]
        if a > 1:
            allowed = [(-(-lo_ // a), hi_ // a) for lo_, hi_ in allowed]
            allowed = [(lo_, hi_) for lo_, hi_ in allowed if lo_ <= hi_]
        if not allowed:
            return "INFEASIBLE", None, 0.0
        dom = cp_model.Domain.from_intervals([list(t) for t in allowed])
        if a > 1:
            k = model.new_int_var_from_domain(dom, f"k{i}")
            x[i] = a * k
            model.add_hint(k, int(off[i]) // a)
        else:
            v = model.new_int_var_from_domain(dom, f"x{i}")
            x[i] = v
            model.add_hint(v, int(off[i]))
        itv[i] = model.new_fixed_size_interval_var(x[i], s, f"m{i}")
    if _MODE == "pairs":
        fl = [int(i) for i in free]
        for ai, i in enumerate(fl):
            for j in fl[ai + 1:]:
                if L[i] < U[j] and L[j] < U[i]:
                    b = model.new_bool_var(f"b{i}_{j}")
                    model.add(x[i] + int(S[i]) <= x[j]).only_enforce_if(b)
                    model.add(x[j] + int(S[j]) <= x[i]).only_enforce_if(~b)
    else:
        for clique in _cliques(free, L, U):
            if len(clique) > 1:
                model.add_no_overlap([itv[i] for i in clique])
    # symmetry: identical free buffers keep their order
    groups: dict[tuple, list[int]] = {}
    for i in free:
        i = int(i)
        groups.setdefault((int(L[i]), int(U[i]), int(S[i]), int(A[i])), []).append(i)
    for g in groups.values():
        g.sort()
        for a_, b_ in zip(g, g[1:]):
            model.add(x[a_] + int(S[a_]) <= x[b_])

    solver = cp_model.CpSolver()
    prm = solver.parameters
    prm.max_deterministic_time = max(0.01, effort)
    prm.random_seed = seed
    prm.num_workers = num_workers
    if num_workers > 1:
        prm.interleave_search = True
    if _DEBUG > 1:
        prm.log_search_progress = True
    if _DEBUG > 2:
        prm.max_time_in_seconds = 15.0  # diagnosis only
    if _DEBUG > 3:
        global _DUMP
        _DUMP = getattr(__import__(__name__), '_DUMP', 0) if False else globals().get('_DUMP', 0) + 1
        model.export_to_file(f"/tmp/exp/model{_DUMP}.pb.txt")
    status = solver.solve(model)
    used = solver.deterministic_time
    name = solver.status_name(status)
    if _DEBUG:
        print(f"    fits n_free={len(free)} near={len(near)} cap={cap} effort={effort:.2f} -> {name} "
              f"dt={used:.2f} wall={solver.wall_time:.1f}", flush=True)
    if status in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        new = np.array([int(solver.value(x[int(i)])) for i in free], dtype=np.int64)
        return "FEASIBLE", new, used
    return name, None, used


def _window(p: _Problem, v: int, want: int) -> np.ndarray:
    """Buffers whose lifetime lies inside a time window around buffer ``v`` (about ``want`` of them)."""
    n = len(p.L)
    if n <= want:
        return np.arange(n)
    L, U = p.L, p.U
    lo, hi = int(L[v]), int(U[v])
    times = np.unique(np.concatenate([L, U]))
    a = int(np.searchsorted(times, lo))
    b = int(np.searchsorted(times, hi))
    step = 1
    sel = np.flatnonzero((L >= lo) & (U <= hi))
    while len(sel) < want and (a > 0 or b < len(times) - 1):
        a2 = max(0, a - step)
        b2 = min(len(times) - 1, b + step)
        sel2 = np.flatnonzero((L >= times[a2]) & (U <= times[b2]))
        if len(sel2) > want and step > 1:
            step = max(1, step // 2)
            continue
        a, b, sel = a2, b2, sel2
        if len(sel) > want:
            break
        step *= 2
    if v not in set(sel.tolist()):
        sel = np.append(sel, v)
    return np.sort(sel)


def _improve(
    p: _Problem,
    goal: int,
    budget: _Budget,
    seed: int,
    num_workers: int,
    report: Callable[[], None],
    window: int = WINDOW_BUFFERS,
) -> None:
    """LNS on one segment until its arena is <= goal or the budget is spent."""
    L, U, S = p.L, p.U, p.S
    failed_tops: dict[int, int] = {}
    while budget.left > 0.005:
        ends = p.off + S
        arena = int(ends.max())
        if arena <= goal:
            return
        # topmost buffer: highest end, then earliest lower, then index
        tops = np.flatnonzero(ends == arena)
        v = int(tops[np.lexsort((tops, L[tops]))][0])
        tries = failed_tops.get(v, 0)
        want = window * (2 ** tries)
        free = _window(p, v, want)
        whole = len(free) == len(L)
        # buffers above the arena-to-beat must all move: add every other one overlapping the window
        others = np.flatnonzero((ends > goal) & (L < U[free].max()) & (U > L[free].min()))
        free = np.union1d(free, others)
        is_free = np.zeros(len(L), dtype=bool)
        is_free[free] = True
        outside = ends[~is_free]
        floor = max(goal, int(outside.max()) if len(outside) else 0, int(S[free].max()))
        # best conceivable: live bytes in the window (free + fixed) at its peak
        hi = arena - 1
        lo = floor
        improved = False
        first = True
        while lo <= hi and budget.left > 0.005:
            cap = lo if first else (lo + hi) // 2
            share = budget.left * (0.5 if first else 0.25)
            if whole:
                share = budget.left * (0.6 if first else 0.3)
            share = max(min(share, budget.left), 0.01)
            status, new, used = _fits(p, free, cap, share, seed, num_workers)
            budget.used += used
            first = False
            if new is not None:
                p.off[free] = new
                improved = True
                report()
                hi = int((p.off[free] + S[free]).max()) - 1
                if hi < lo:
                    break
            else:
                lo = cap + 1
        if not improved:
            if whole or want >= len(L):
                return
            failed_tops[v] = tries + 1
            if tries + 1 >= 3:
                return


def cpsat_layout(
    buffers: Sequence[Buffer],
    capacity: int | None = None,
    effort: float = DEFAULT_EFFORT,
    progress: Progress | None = None,
    num_workers: int = 1,
    seed: int = 0,
    window: int = WINDOW_BUFFERS,
) -> Layout:
    """Layout by CP-SAT large-neighbourhood search from the greedy start.

    ``capacity``: stop as soon as the arena fits (else minimise the arena down to max-live).
    ``effort``: budget in CP-SAT deterministic time units (about seconds of one core; the
    result depends only on the input and these arguments, never on the machine).
    ``progress``: optional ``callback(best_arena_bytes, lower_bound_bytes)``.
    Never returns a larger arena than :func:`greedy_layout`.
    """
    validate_buffers(buffers)
    ml = max_live(buffers)
    live = [i for i, b in enumerate(buffers) if b.live]
    offsets = {b.id: 0 for b in buffers}
    if not live:
        return Layout(offsets, 0, 0, "cpsat", True)
    g = 0
    for i in live:
        g = math.gcd(g, buffers[i].size, buffers[i].alignment if buffers[i].alignment > 1 else 0)
    ids = [buffers[i].id for i in live]
    L = np.array([buffers[i].lower for i in live], dtype=np.int64)
    U = np.array([buffers[i].upper for i in live], dtype=np.int64)
    S = np.array([buffers[i].size // g for i in live], dtype=np.int64)
    A = np.array([max(1, buffers[i].alignment // g) for i in live], dtype=np.int64)
    lb = ml // g  # exact: every size is a multiple of g

    probs: list[_Problem] = []
    for seg in _segments(L, U):
        seg = np.sort(seg)
        sub = [Buffer(ids[i], int(L[i]), int(U[i]), int(S[i]), int(A[i])) for i in seg]
        off_map, _, _ = greedy_offsets(sub, ORDERINGS)
        p = _Problem(
            [ids[i] for i in seg], L[seg], U[seg], S[seg], A[seg],
            np.array([off_map[b.id] for b in sub], dtype=np.int64),
            _scaled_max_live(L[seg], U[seg], S[seg]),
        )
        _canonical_identical(p)
        probs.append(p)

    def arena() -> int:
        return max(q.arena for q in probs)

    def report() -> None:
        if progress is not None:
            progress(arena() * g, ml)

    report()
    budget = _Budget(effort)
    if capacity is not None:
        goal = max(lb, capacity // g)
    else:
        goal = lb
    # work on the segments that set the arena, worst first; segment goals rise if unreachable
    while budget.left > 0.005:
        cur = arena()
        if cur <= goal:
            break
        worst = sorted(range(len(probs)), key=lambda k: (-probs[k].arena, k))
        k = worst[0]
        p = probs[k]
        target = max(goal, p.lb)
        before = p.arena
        _improve(p, target, budget, seed, num_workers, report, window)
        if p.arena >= before:
            break  # stuck on the segment that sets the arena
    final = arena()
    for p in probs:
        for bid, o in zip(p.ids, p.off):
            offsets[bid] = int(o) * g
    return Layout(
        offsets,
        final * g,
        ml,
        "cpsat",
        final * g == ml,
        stats={"deterministic_time": round(budget.used, 3), "segments": len(probs)},
    )
