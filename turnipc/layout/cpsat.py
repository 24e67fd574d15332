"""CP-SAT layout: greedy start, exact search on small segments, then CP-SAT
large-neighbourhood search (LNS).

One CP-SAT model over thousands of buffers does not scale, so:

1. Start from the greedy layout (the result is never worse than it).
2. Split time into independent segments (no lifetime crosses a cut) and work
   only on the segments that set the arena.
3. A squeaky-wheel iterated greedy (buffers that end near the top get placed
   earlier next pass) with up to a quarter of the effort (70 % on segments too
   big for the exact search); it takes pangu_2.6B from 0.76 % above max-live
   to max-live in three passes.
4. Segments of up to ``SEARCH_MAX_BUFFERS`` buffers get a portfolio at the
   target (max-live or the capacity) with up to three quarters of what is left:
   the exact canonical search (:mod:`.search`) and CP-SAT on the whole segment
   take turns with doubling slices. Without a capacity, if max-live is out of
   reach the search bisects upward with half of the rest.
5. Then LNS: take the buffer at the top of the arena, open a window of time
   around it, free the buffers whose lifetime lies in the window (all others
   stay where they are) and ask CP-SAT "do the free buffers fit below C?",
   bisecting C between the best conceivable value and the current arena.

The model of a window: one offset variable per free buffer whose domain is
``[0, C - size]`` minus the places taken by fixed buffers live at the same
time (multiples of the alignment), and one 1-D ``NoOverlap`` over the memory
intervals of every maximal set of buffers live at one instant (a maximal clique
of the interval graph), fixed buffers included as constant intervals merged
where they touch. Two buffers overlap in time exactly when both are live at
the later of their starts, so these cliques say the same as ``NoOverlap2D`` over
(time x memory) boxes while giving CP-SAT per-instant energy reasoning (a
clique whose bytes exceed C fails at once, which ``NoOverlap2D`` did not do on
the windows we tried; search speed was the same). A cumulative over time adds
nothing since times are fixed. Sizes are divided by
their gcd; identical free buffers (same lifetime, size, alignment) have their
offsets ordered (symmetry breaking); every variable gets a hint from the
current layout (identical buffers' hints sorted to agree with that order).

Determinism: the budget ``effort`` is deterministic: CP-SAT work (deterministic
time, conflicts and branches; see ``CONFLICTS_PER_EFFORT``), search work
(``search.WORK_PER_EFFORT`` per unit) and greedy passes, never a clock; units
are near one second of one core. One CP-SAT worker with a fixed seed is the
default because CP-SAT's multi-worker portfolio is not deterministic (workers
race); ``num_workers > 1`` switches on CP-SAT's ``interleave_search``, its
deterministic interleaved portfolio. The wall time per unit still varies by
instance (the results do not).

``TURNIP_LAYOUT_DEBUG=1`` prints one line per CP-SAT call (2: CP-SAT's log).
"""

from __future__ import annotations

import os
from typing import Callable, Sequence

import numpy as np

from ..cpsat_params import deterministic_solver
from .decompose import Segment, prepare
from .greedy import squeaky_improve
from .model import Buffer, Layout, max_live, validate_buffers
from .search import WORK_PER_EFFORT, improve_segment

Progress = Callable[[int, int], None]

#: Default effort (deterministic units, about seconds of one core).
DEFAULT_EFFORT = 60.0
#: Free buffers per LNS window.
WINDOW_BUFFERS = 150
#: Segments up to this many buffers get the exact search before CP-SAT.
SEARCH_MAX_BUFFERS = 2500
#: ... and CP-SAT on the whole segment takes turns with the search up to this many.
PORTFOLIO_CPSAT_MAX = 400

#: CP-SAT's own deterministic time undercounts propagation-heavy no-overlap models (we
#: measured 0.01 units for 15 s of search), so each call is also limited by conflicts and
#: charged by the largest of: deterministic time, conflicts and branches per unit. All three
#: counters are deterministic; the rates match about one second of one core.
CONFLICTS_PER_EFFORT = 150
BRANCHES_PER_EFFORT = 2000
BUILD_ITEMS_PER_EFFORT = 200_000

_DEBUG = int(os.environ.get("TURNIP_LAYOUT_DEBUG") or 0)


class _Budget:
    def __init__(self, total: float):
        self.total = float(total)
        self.used = 0.0

    @property
    def left(self) -> float:
        return max(0.0, self.total - self.used)


def _canonical_identical(p: Segment) -> None:
    """Within each group of identical buffers, offsets ascend with the index (matches symmetry breaking)."""
    groups: dict[tuple[int, int, int, int], list[int]] = {}
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


def _fits(p: Segment, free: np.ndarray, cap: int, effort: float, seed: int, num_workers: int):
    """Can the ``free`` buffers be re-placed below ``cap``, all others fixed?

    Returns (status, new offsets of ``free`` or None, deterministic time used)."""
    from ortools.sat.python import cp_model

    L, U, S, A, off = p.L, p.U, p.S, p.A, p.off
    is_free = np.zeros(len(L), dtype=bool)
    is_free[free] = True
    if np.any(S[free] > cap):
        return "INFEASIBLE", None, 0.0
    lo_t, hi_t = int(L[free].min()), int(U[free].max())
    near = np.flatnonzero((~is_free) & (L < hi_t) & (U > lo_t) & (off < cap))
    model = cp_model.CpModel()
    x: dict[int, cp_model.LinearExpr | cp_model.IntVar] = {}
    itv: dict[int, cp_model.IntervalVar] = {}
    nL, nU, nO, nE = L[near], U[near], off[near], off[near] + S[near]
    for i in free.tolist():
        a, s = int(A[i]), int(S[i])
        m = (nL < U[i]) & (nU > L[i])
        # offsets o with o < e_j and o + s > o_j collide with fixed j: forbid [o_j - s + 1, e_j - 1]
        bad = sorted(zip((nO[m] - s + 1).tolist(), (nE[m] - 1).tolist()))
        top = cap - s
        allowed = []
        cur = 0
        for b0, b1 in bad:
            if b0 > cur:
                allowed.append((cur, min(b0 - 1, top)))
            cur = max(cur, b1 + 1)
            if cur > top:
                break
        if cur <= top:
            allowed.append((cur, top))
        if a > 1:
            allowed = [(-(-lo // a), hi // a) for lo, hi in allowed]
        domain = [[lo, hi] for lo, hi in allowed if lo <= hi]
        if not domain:
            return "INFEASIBLE", None, 0.0
        v = model.new_int_var_from_domain(cp_model.Domain.from_intervals(domain), f"x{i}")
        x[i] = a * v if a > 1 else v
        model.add_hint(v, int(off[i]) // a)
        itv[i] = model.new_fixed_size_interval_var(x[i], s, f"m{i}")
    const: dict[tuple[int, int], cp_model.IntervalVar] = {}
    members = np.concatenate([free, near])
    items_total = 0
    for clique in _cliques(members, L, U):
        fr = [i for i in clique if is_free[i]]
        if not fr:
            continue
        fx = sorted((int(off[i]), int(off[i] + S[i])) for i in clique if not is_free[i])
        blocks: list[list[int]] = []
        for s0, e0 in fx:
            if s0 >= cap:
                break
            if blocks and blocks[-1][1] >= s0:
                blocks[-1][1] = max(blocks[-1][1], e0)
            else:
                blocks.append([s0, e0])
        items = [itv[i] for i in fr]
        for s0, e0 in blocks:
            e0 = min(e0, cap)
            key = (s0, e0)
            if key not in const:
                const[key] = model.new_fixed_size_interval_var(s0, e0 - s0, f"f{s0}_{e0}")
            items.append(const[key])
        items_total += len(clique)
        if len(items) > 1:
            model.add_no_overlap(items)
    groups: dict[tuple[int, int, int, int], list[int]] = {}
    for i in free.tolist():
        groups.setdefault((int(L[i]), int(U[i]), int(S[i]), int(A[i])), []).append(i)
    for g in groups.values():
        for a_, b_ in zip(g, g[1:]):
            model.add(x[a_] + int(S[a_]) <= x[b_])

    solver = deterministic_solver(effort, seed, num_workers, max_conflicts=max(20, int(effort * CONFLICTS_PER_EFFORT)),
                                  log=_DEBUG > 1)
    status = solver.solve(model)
    used = max(solver.deterministic_time, solver.num_conflicts / CONFLICTS_PER_EFFORT,
               solver.num_branches / BRANCHES_PER_EFFORT)
    # building the model in Python costs too: about a second per 200,000 clique entries
    used += 0.01 + items_total / BUILD_ITEMS_PER_EFFORT
    name = solver.status_name(status)
    if _DEBUG:
        print(f"    cpsat window free={len(free)} fixed={len(near)} cap={cap} effort={effort:.2f} -> {name} "
              f"dt={used:.2f} wall={solver.wall_time:.1f} br={solver.num_branches} cf={solver.num_conflicts}", flush=True)
    if status in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        new = np.array([int(solver.value(x[i])) for i in free.tolist()], dtype=np.int64)
        return "FEASIBLE", new, used
    return name, None, used


def _window(p: Segment, v: int, want: int) -> np.ndarray:
    """Buffers whose lifetime lies inside a time window around buffer ``v``: the window
    grows equally on both sides (in lifetime boundaries) until it holds ``want`` buffers."""
    n = len(p.L)
    if n <= want:
        return np.arange(n)
    L, U = p.L, p.U
    times = np.unique(np.concatenate([L, U]))
    a = int(np.searchsorted(times, L[v]))
    b = int(np.searchsorted(times, U[v]))
    last = len(times) - 1

    def inside(step: int) -> np.ndarray:
        return np.flatnonzero((L >= times[max(0, a - step)]) & (U <= times[min(last, b + step)]))

    lo, hi = 0, max(a, last - b)
    while lo < hi:  # smallest step holding ``want`` buffers (the count grows with the step)
        mid = (lo + hi) // 2
        if len(inside(mid)) >= want:
            hi = mid
        else:
            lo = mid + 1
    return inside(lo)


def _lns(p: Segment, goal: int, budget: _Budget, seed: int, num_workers: int, report, window: int) -> None:
    """LNS on one segment until its arena is <= goal or the budget is spent."""
    L, U, S = p.L, p.U, p.S
    _canonical_identical(p)
    failed: dict[int, int] = {}
    while budget.left > 0.005:
        ends = p.off + S
        arena = int(ends.max())
        if arena <= goal:
            return
        tops = np.flatnonzero(ends == arena)
        v = int(tops[np.lexsort((tops, L[tops]))][0])
        tries = failed.get(v, 0)
        free = _window(p, v, window * (2 ** tries))
        whole = len(free) == len(L)
        # every buffer above the goal in the window's time span must move too
        span_lo, span_hi = int(L[free].min()), int(U[free].max())
        free = np.union1d(free, np.flatnonzero((ends > goal) & (L < span_hi) & (U > span_lo)))
        is_free = np.zeros(len(L), dtype=bool)
        is_free[free] = True
        outside = ends[~is_free]
        lo = max(goal, int(outside.max()) if len(outside) else 0, int(S[free].max()))
        hi = arena - 1
        improved = False
        first = True
        while lo <= hi and budget.left > 0.005:
            cap = lo if first else (lo + hi) // 2
            share = budget.left * ((0.6 if first else 0.3) if whole else (0.25 if first else 0.1))
            share = max(min(share, budget.left), 0.01)
            first = False
            status, new, used = _fits(p, free, cap, share, seed, num_workers)
            budget.used += used
            if new is not None:
                p.off[free] = new
                p.engine = "cpsat"
                improved = True
                report()
                hi = int((p.off[free] + S[free]).max()) - 1
            else:
                lo = cap + 1
        if not improved:
            if whole:
                return
            failed[v] = tries + 1
            if tries + 1 >= 3:
                return


def _portfolio(seg: Segment, target: int, budget: _Budget, effort: float, seed: int,
               num_workers: int, report) -> None:
    """Alternate the exact search and CP-SAT on the whole segment at ``target``, each
    slice twice the last, until one fits it, one proves it infeasible, or ``effort`` is spent.

    Neither engine dominates: the search fits MiniMalloc's A, B, C, F in seconds where
    CP-SAT stalls, CP-SAT fits one segment of E in one unit where the search stalls."""
    stop = budget.used + effort
    slice_ = max(0.5, effort / 32)
    everything = np.arange(len(seg.ids))
    state: dict = {}  # the search resumes its schedule from slice to slice
    use_cpsat = len(seg.ids) <= PORTFOLIO_CPSAT_MAX
    while seg.arena > target:
        left = stop - budget.used
        if left <= 0.005:
            return
        share = min(slice_, left) if use_cpsat else left
        work, status = improve_segment(seg, target, int(share * WORK_PER_EFFORT), report,
                                       fit_only=True, state=state)
        budget.used += work / WORK_PER_EFFORT
        if seg.arena <= target or status == "infeasible" or not use_cpsat:
            return
        left = stop - budget.used
        if left <= 0.005:
            return
        _canonical_identical(seg)
        status, new, used = _fits(seg, everything, target, min(slice_, left), seed, num_workers)
        budget.used += used
        if new is not None:
            seg.off = new
            seg.engine = "cpsat"
            seg.proven = True
            report()
            return
        if status == "INFEASIBLE":
            return
        slice_ *= 2


def cpsat_layout(
    buffers: Sequence[Buffer],
    capacity: int | None = None,
    effort: float = DEFAULT_EFFORT,
    progress: Progress | None = None,
    num_workers: int = 1,
    seed: int = 0,
    window: int = WINDOW_BUFFERS,
    use_search: bool = True,
    use_squeaky: bool = True,
) -> Layout:
    """Layout by greedy, exact search on small segments, then CP-SAT LNS.

    ``capacity``: stop as soon as the arena fits (else minimise toward max-live).
    ``effort``: deterministic budget (CP-SAT work plus search work; units of about a
    second of one core); the result depends only on the input and the arguments.
    ``progress``: optional ``callback(best_arena_bytes, lower_bound_bytes)``.
    ``use_search`` / ``use_squeaky``: switch those stages off (CP-SAT LNS alone remains).
    Never returns a larger arena than :func:`greedy_layout`.
    """
    validate_buffers(buffers)
    ml = max_live(buffers)
    prep = prepare(buffers)
    unit = prep.unit

    def report() -> None:
        if progress is not None:
            progress(prep.arena * unit, ml)

    report()
    budget = _Budget(effort)
    goal = ml // unit if capacity is None else max(ml // unit, capacity // unit)
    done: set[int] = set()
    stuck: set[int] = set()
    while budget.left > 0.005 and prep.arena > goal:
        k = max(range(len(prep.segments)), key=lambda j: (prep.segments[j].arena, -j))
        seg = prep.segments[k]
        if k in stuck:
            break
        before = seg.arena
        target = max(goal, seg.lb)
        if k not in done:
            done.add(k)
            if use_squeaky:
                # too big for the exact search: the squeaky wheel is the main tool
                share = 0.25 if len(seg.ids) <= SEARCH_MAX_BUFFERS else 0.7
                budget.used += squeaky_improve(seg, goal, budget.left * share, report)
                if seg.arena <= goal:
                    continue
            if use_search and len(seg.ids) <= SEARCH_MAX_BUFFERS:
                _portfolio(seg, target, budget, budget.left * 0.75, seed, num_workers, report)
                if seg.arena <= goal:
                    continue
                if capacity is None and budget.left > 0.005:
                    # the target itself was out of reach: bisect upward with the search
                    work, _ = improve_segment(seg, target + 1, int(budget.left * 0.5 * WORK_PER_EFFORT), report)
                    budget.used += work / WORK_PER_EFFORT
        _lns(seg, target, budget, seed, num_workers, report, window)
        if seg.arena >= before:
            stuck.add(k)
    arena = prep.arena * unit
    engines = sorted({s.engine for s in prep.segments})
    return Layout(
        prep.offsets(), arena, ml, "cpsat", arena == ml,
        stats={"effort_used": round(budget.used, 3), "segments": len(prep.segments), "engines": engines,
               "search_nodes": sum(s.stats.get("search_nodes", 0) for s in prep.segments),
               "proven_infeasible": capacity is not None and any(
                   s.stats.get("infeasible_below", 0) > capacity // unit for s in prep.segments)},
    )
