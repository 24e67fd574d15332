"""Exact branch-and-bound for "do these buffers fit in capacity C?".

A search over *canonical* layouts in the spirit of MiniMalloc (M. D. Moffitt,
ASPLOS 2023); this is an independent implementation. Every layout can be
pushed down until each buffer rests on address 0 or on a buffer live at the
same time, without growing the arena, and then listed in order of offset. So
the search places buffers one at a time in non-decreasing offset order, each
at its lowest possible offset (the highest end of the placed buffers it
overlaps in time). Inference and pruning:

* canonical order: offsets never decrease (ties: static preorder rank), and
  identical buffers (same lifetime and size) keep their preorder;
* dominance: a buffer is never placed at or above the lowest top any other
  unplaced buffer could reach (that buffer would fit in the gap below);
* hatless pruning: if placing a buffer changed nothing for the unplaced ones
  and its subtree failed, its siblings fail too;
* sections (time between consecutive lifetime boundaries): every section's
  floor is raised to the current offset and to the lowest offset any of its
  unplaced buffers could take; the floor plus the unplaced bytes live in the
  section must fit below C (tight when C is max-live).

Static preorders ("WAT", "TAW", "TWA": W width in sections, A area, T largest
section total, Z size) are tried round-robin under a node limit that doubles.
Effort is a deterministic work count (nodes and placement tries weighted by
instance size), so results never depend on the machine.
"""

from __future__ import annotations

import sys
from typing import Sequence

import numpy as np

from .canonical import HEURISTICS as CANONICAL_HEURISTICS
from .canonical import TICKS_PER_EFFORT
from .canonical import fit as canonical_fit

HEURISTICS = ("WAT", "TAW", "TWA")
#: Preorders for the planner's residency instances: "OZ" (most time-overlapping buffers
#: first, then the largest) before MiniMalloc's three. WHY: a residency keeps some
#: tensors resident across much of the run (weights made on the GPU, skip activations,
#: the blocks of a tiled op waiting for their consumer); placed first they settle at the
#: bottom and the short-lived activations pack above them. On light_squeezenet at 25%
#: the first residency tried (876 buffers) lays out at 1.009 x max-live with "OZ" first
#: and at 1.027 with the three alone, at effort 1 (the three stay at 1.027 up to effort
#: 30); the plans' figures are in bench/results/layout_cnn.md.
RESIDENCY_HEURISTICS = ("OZ",) + HEURISTICS
INF = np.iinfo(np.int64).max // 4


class _Limit(Exception):
    pass


class CanonicalSearch:
    """One search over buffers with section ranges [a, b) and sizes s, below ``cap``."""

    def __init__(self, a, b, s, T: int, cap: int, heuristic: str = "WAT", align=None):
        a = np.asarray(a, dtype=np.int64)
        b = np.asarray(b, dtype=np.int64)
        s = np.asarray(s, dtype=np.int64)
        n = len(a)
        self.n, self.T, self.cap = n, T, int(cap)
        self.a, self.b, self.s = a.tolist(), b.tolist(), s.tolist()
        self.s_np = s
        self.align = None
        if align is not None and np.any(np.asarray(align) > 1):
            self.align = np.asarray(align, dtype=np.int64)
        # members of each section, as a flat index array for np.minimum.reduceat
        width = b - a
        flat_sec = np.repeat(np.arange(n), width)
        sec_of = np.concatenate([np.arange(x, y) for x, y in zip(a.tolist(), b.tolist())]) if n else np.zeros(0, np.int64)
        order = np.argsort(sec_of, kind="stable")
        self.mem = flat_sec[order]
        counts = np.bincount(sec_of, minlength=T)
        self.live_sec = np.flatnonzero(counts > 0)
        ptr = np.concatenate([[0], np.cumsum(counts)])[:-1]
        self.ptr = ptr[self.live_sec]
        total = np.bincount(sec_of, weights=np.repeat(s, width), minlength=T).astype(np.int64)
        self.total = total
        self.floor = np.zeros(T, dtype=np.int64)
        # overlaps in time
        starts = np.argsort(a, kind="stable")
        self.ov: list[np.ndarray] = []
        for i in range(n):
            m = np.flatnonzero((a < b[i]) & (b > a[i]))
            self.ov.append(m[m != i])
        keys = {
            "W": width.tolist(),
            "A": (s * width).tolist(),
            "T": [int(total[x:y].max()) for x, y in zip(a.tolist(), b.tolist())],
            "Z": s.tolist(),
            "O": [len(m) for m in self.ov],
        }
        pre = sorted(range(n), key=lambda i: tuple(-keys[c][i] for c in heuristic) + (i,))
        self.rank = [0] * n
        for r, i in enumerate(pre):
            self.rank[i] = r
        self.pre = pre
        prev: dict[tuple, int] = {}
        self.twin = [-1] * n
        for i in pre:
            k = (self.a[i], self.b[i], self.s[i])
            if k in prev:
                self.twin[i] = prev[k]
            prev[k] = i
        self.mo = np.zeros(n, dtype=np.int64)  # lowest offset each buffer can take now
        self.placed = np.zeros(n, dtype=bool)
        self.masked = self.mo.copy()  # mo, with INF for placed buffers
        self.offset = [-1] * n
        self.nodes = 0
        # deterministic work estimate in microseconds of CPython (fitted on the datasets,
        # within about 30 %): a node ~0.1 us per buffer, a placement try 34 us plus
        # 0.001 us per section membership
        self.work = 0
        self._node_work = 1 + n // 10
        self._try_work = 34 + len(self.mem) // 1000
        del starts

    def solve(self, node_limit: int) -> str:
        """'found' (offsets in ``self.offset``), 'infeasible' (proven) or 'limit'.

        ``node_limit`` bounds the deterministic work estimate (see ``WORK_PER_EFFORT``)."""
        if self.n == 0:
            return "found"
        if int(self.total.max()) > self.cap or max(self.s) > self.cap:
            return "infeasible"
        self.node_limit = node_limit
        self.trail: list = []
        # cuts[t]: unplaced buffers live in both section t and t + 1
        d = np.zeros(self.T + 1, dtype=np.int64)
        a = np.asarray(self.a)
        b = np.asarray(self.b)
        np.add.at(d, a, 1)
        np.add.at(d, np.maximum(b - 1, a), -1)
        self.cuts = np.cumsum(d)[: max(self.T - 1, 0)]
        self.a_np, self.b_np = a, b
        old = sys.getrecursionlimit()
        sys.setrecursionlimit(max(old, 4 * self.n + 1000))
        try:
            everything = np.arange(self.n)
            return "found" if self._dfs(everything, 0, self.T, 0, -1) else "infeasible"
        except _Limit:
            return "limit"
        finally:
            sys.setrecursionlimit(old)

    def _ok(self, o: int, lo: int, hi: int) -> bool:
        """Section inference over sections [lo, hi) of the current partition."""
        uf = np.minimum.reduceat(self.masked[self.mem], self.ptr)
        sec = self.live_sec
        eff = np.maximum(np.maximum(self.floor[sec], uf), o)
        tot = self.total[sec]
        bad = (eff + tot > self.cap) & (tot > 0)
        if lo > 0 or hi < self.T:
            bad &= (sec >= lo) & (sec < hi)
        return not bad.any()

    def _place(self, i: int, o: int) -> int:
        """Place buffer i at o, push an undo record; returns how many unplaced buffers it lifted."""
        mo, floor, total, placed = self.mo, self.floor, self.total, self.placed
        s = self.s[i]
        h = o + s
        ai, bi = self.a[i], self.b[i]
        placed[i] = True
        self.offset[i] = o
        masked = self.masked
        masked[i] = INF
        ov = self.ov[i]
        upd = ov[(~placed[ov]) & (mo[ov] < h)]
        old_mo = mo[upd].copy()
        if self.align is None:
            mo[upd] = h
        else:
            al = self.align[upd]
            mo[upd] = -(-h // al) * al
        masked[upd] = mo[upd]
        old_floor = floor[ai:bi].copy()
        floor[ai:bi] = h
        total[ai:bi] -= s
        if bi - 1 > ai:
            self.cuts[ai:bi - 1] -= 1
        self.trail.append((i, upd, old_mo, old_floor))
        return len(upd)

    def _undo_to(self, mark: int) -> None:
        trail = self.trail
        while len(trail) > mark:
            i, upd, old_mo, old_floor = trail.pop()
            ai, bi, s = self.a[i], self.b[i], self.s[i]
            self.mo[upd] = old_mo
            self.masked[upd] = old_mo
            self.masked[i] = self.mo[i]
            self.floor[ai:bi] = old_floor
            self.total[ai:bi] += s
            if bi - 1 > ai:
                self.cuts[ai:bi - 1] += 1
            self.placed[i] = False
            self.offset[i] = -1

    def _split(self, un: np.ndarray) -> list[tuple[np.ndarray, int, int]]:
        """Independent groups of unplaced buffers ``un`` (no lifetime crosses between groups)."""
        a, b = self.a_np[un], self.b_np[un]
        order = np.argsort(a, kind="stable")
        a, b, un = a[order], b[order], un[order]
        reach = np.maximum.accumulate(b)
        cuts = np.flatnonzero(a[1:] >= reach[:-1]) + 1
        out = []
        for g_idx, g in zip(np.split(np.arange(len(un)), cuts), np.split(un, cuts)):
            out.append((g, int(a[g_idx].min()), int(reach[g_idx].max())))
        return out

    def _dfs(self, part: np.ndarray, lo: int, hi: int, last_off: int, last_rank: int) -> bool:
        self.nodes += 1
        self.work += self._node_work
        if self.work > self.node_limit:
            raise _Limit
        placed = self.placed
        un = part[~placed[part]]
        if len(un) == 0:
            return True
        mo_u = self.mo[un]
        tops = mo_u + self.s_np[un]
        if int(tops.max()) > self.cap:
            return False
        mh = int(tops.min())
        sel = (mo_u < mh) & (mo_u >= last_off)
        rank, twin, s, cap = self.rank, self.twin, self.s, self.cap
        cands = sorted(zip(mo_u[sel].tolist(), (rank[i] for i in un[sel].tolist()), un[sel].tolist()))
        for o, r, i in cands:
            if o == last_off and r < last_rank:
                continue
            tw = twin[i]
            if tw >= 0 and not placed[tw]:
                continue
            if o + s[i] > cap:
                continue
            mark = len(self.trail)
            self.work += self._try_work
            lifted = self._place(i, o)
            ok = False
            if self._ok(o, lo, hi):
                ai, bi = self.a[i], self.b[i]
                if bi - 1 > ai and not self.cuts[ai:bi - 1].all():
                    rest = un[~placed[un]]
                    groups = self._split(rest) if len(rest) else []
                else:
                    groups = None
                if groups is None or len(groups) <= 1:
                    ok = self._dfs(un, lo, hi, o, r)
                else:
                    # independent sub-problems: each restarts its canonical order
                    ok = all(self._dfs(g, g_lo, g_hi, 0, -1) for g, g_lo, g_hi in groups)
            if ok:
                return True
            self._undo_to(mark)
            if lifted == 0:
                break  # hatless: nothing above it was affected, siblings fail too
        return False


def sections(L, U) -> tuple[np.ndarray, np.ndarray, int]:
    """Section ranges [a, b) of each lifetime over the sorted distinct boundaries."""
    L = np.asarray(L)
    U = np.asarray(U)
    times = np.unique(np.concatenate([L, U]))
    return np.searchsorted(times, L), np.searchsorted(times, U), max(len(times) - 1, 0)


def search_fit(
    L, U, S, cap: int, node_budget: int, heuristics: Sequence[str] = HEURISTICS, A=None,
    state: dict | None = None,
) -> tuple[str, np.ndarray | None, int]:
    """Round-robin over preorders with a doubling work limit, as long as the budget lasts.

    Budgets are deterministic work (``WORK_PER_EFFORT`` per effort unit). Returns
    (status, offsets or None, work used); status 'found', 'infeasible' or 'limit'.
    ``state``: optional dict carried between calls on the same question so that a
    later call resumes the doubling schedule (limit and heuristic) where this one stopped.
    """
    a, b, T = sections(L, U)
    n = len(a)
    used = 0
    st = state if state is not None else {}
    limit = st.get("limit", max(2 * n, 64) * 60)  # about 2n placement tries
    k = st.get("k", 0)
    while used < node_budget:
        h = heuristics[k % len(heuristics)]
        left = node_budget - used
        if left < limit:
            # not enough left for a full run at this limit: spend it, keep the schedule
            srch = CanonicalSearch(a, b, S, T, cap, h, A)
            status = srch.solve(left)
            used += srch.work
            if status != "limit":
                return _finish(status, srch, used)
            break
        srch = CanonicalSearch(a, b, S, T, cap, h, A)
        status = srch.solve(limit)
        used += srch.work
        if status != "limit":
            return _finish(status, srch, used)
        k += 1
        if k % len(heuristics) == 0:
            limit *= 2
    st["limit"], st["k"] = limit, k
    return "limit", None, used


def _finish(status: str, srch: CanonicalSearch, used: int):
    if status == "found":
        return status, np.array(srch.offset, dtype=np.int64), used
    return status, None, used


#: Search work per effort unit (work is in estimated microseconds of CPython).
WORK_PER_EFFORT = 1_000_000


def improve_segment(seg, target: int, node_budget: int, report=None, fit_only: bool = False,
                    state: dict | None = None, heuristics: tuple[str, ...] = CANONICAL_HEURISTICS):
    """Lower ``seg``'s arena toward ``target`` (scaled units) by the exact search
    (the compiled canonical search of :mod:`.canonical`; ``node_budget`` is in
    ``WORK_PER_EFFORT`` units per effort unit, ``state`` is unused and kept for callers).

    Returns (work used, status of the query at ``target``: 'found', 'infeasible',
    'limit', or 'skipped' when the segment already meets it).

    ``fit_only``: only ``target`` matters (a capacity), so it gets the whole budget.
    Otherwise a ladder of caps closing in on ``target`` (target x (1 + 1/8), then
    1/16 ... 1/1024) is tried first, each with a tenth of the budget (feasible caps
    are cheap to fit, the tight ones can be hard or infeasible), stopping at the
    first that fails; then ``target`` itself gets what is left.
    """
    used = 0
    lo = max(target, seg.lb, int(seg.S.max()))
    first_status = "skipped"

    def query(cap: int, share: int) -> str:
        nonlocal used
        status, work = _query(seg, cap, share, target, report, heuristics)
        used += work
        return status

    if not fit_only:
        for k in (3, 4, 5, 6, 7, 8, 10):
            cap = lo + lo // (1 << k)
            if cap >= seg.arena or cap <= lo:
                continue
            if used >= node_budget or query(cap, node_budget // 10) != "found":
                break
    if lo < seg.arena and used < node_budget:
        first_status = query(lo, node_budget - used)
    return used, first_status


def _query(seg, cap: int, share: int, target: int, report=None,
           heuristics: tuple[str, ...] = CANONICAL_HEURISTICS) -> tuple[str, int]:
    """One "fits below ``cap``?" question to the compiled search with ``share`` work
    (preorders ``heuristics`` round-robin); keeps the offsets when found. Returns (status, work used)."""
    res = canonical_fit(seg.L, seg.U, seg.S, cap, max(share, 1) / WORK_PER_EFFORT, align=seg.A,
                        heuristics=heuristics)
    work = res.ticks * WORK_PER_EFFORT // TICKS_PER_EFFORT if res.engine == "c" else res.ticks
    seg.stats["search_nodes"] = seg.stats.get("search_nodes", 0) + res.nodes
    seg.stats["search_engine"] = res.engine
    if res.status.value == "infeasible":
        seg.stats["infeasible_below"] = max(seg.stats.get("infeasible_below", 0), cap + 1)  # proven
    if res.status.value == "found":
        seg.off = res.offsets
        seg.engine = "search"
        seg.proven = cap <= max(target, seg.lb)
        if report:
            report()
    return res.status.value, max(work, 1)


#: Share of a descent's effort spent first on the question "fits at max-live?".
DESCENT_FIRST_SHARE = 0.25
#: Bisection steps the rest of a descent's effort is split into.
DESCENT_STEPS = 12


#: Deterministic work (compiled-search ticks) of one dive over n buffers, per n * n: every node
#: scans the unplaced buffers of its window (2 ticks each) and a dive places about n buffers.
DIVE_TICKS_PER_N2 = 3


def dive_work(n: int) -> int:
    """Work units (``WORK_PER_EFFORT`` per effort) of about one dive of the compiled search over n buffers."""
    return DIVE_TICKS_PER_N2 * n * n * WORK_PER_EFFORT // TICKS_PER_EFFORT


def descend_segment(seg, target: int, node_budget: int, report=None,
                    heuristics: tuple[str, ...] = CANONICAL_HEURISTICS) -> tuple[int, str]:
    """Lower ``seg``'s arena toward ``target`` (scaled units) within ``node_budget`` work.

    WHY this order: the question at max-live (``target``) is asked first, with
    ``DESCENT_FIRST_SHARE`` of the work, because when it is answered the layout is
    optimal and nothing else is needed. When it is not, a bisection between the
    lowest cap not yet refused and the current arena follows, each step with an
    equal small share: a cap a little below a good layout is usually found by the
    first dive (about one node per buffer), while caps near max-live can exhaust
    any share, so a refused step only raises the lower end and never stops the
    descent (the old ladder stopped at its first refusal and kept the greedy
    layout). Every decision depends on counted work only.

    Big segments: a step's share is at least :func:`dive_work` (one dive), else no
    step could ever answer (light_densenet121 at 25%: 8,332 buffers, a dive costs
    about 0.2 effort, a twelfth of the planner's effort is less; the search kept
    the greedy layout at 1.257 x max-live). When the effort affords fewer than
    ``DESCENT_STEPS`` such steps, each cap is a quarter of the way down from the
    current arena instead of halfway: with a few dives each, a cap near the
    layout in hand is found (1.217 there), a cap halfway down is not.

    Returns (work used, status of the question at ``target``).
    """
    lo = max(target, seg.lb, int(seg.S.max()))
    if seg.arena <= lo:
        return 0, "skipped"
    used = 0
    first, work = _query(seg, lo, int(node_budget * DESCENT_FIRST_SHARE), target, report, heuristics)
    used += work
    if first in ("found", "infeasible") and seg.arena <= lo:
        return used, first
    rest = node_budget - used
    share = min(max(rest // DESCENT_STEPS, dive_work(len(seg.S))), rest)
    few = share * DESCENT_STEPS > rest
    floor = lo + 1  # lowest cap not yet refused
    tol = max(1, lo // 1024)
    while used + share <= node_budget and seg.arena - floor > tol:
        cap = floor + (seg.arena - 1 - floor) * 3 // 4 if few else floor + (seg.arena - 1 - floor) // 2
        status, work = _query(seg, cap, share, target, report, heuristics)
        used += work
        if status != "found":
            floor = cap + 1
    return used, first


#: Squeaky-wheel passes go before the exact search only on segments this large
#: (pangu_2.6B: 18,692 buffers); on smaller ones the search is the better use of effort.
SQUEAKY_MIN_BUFFERS = 2000


def search_layout(buffers, capacity=None, effort: float = 60.0, progress=None, use_squeaky: bool = True,
                  start=None, heuristics: tuple[str, ...] = CANONICAL_HEURISTICS):
    """Greedy start, squeaky-wheel passes, then the exact canonical search on every
    segment that sets the arena (it decides "fits in C?" at max-live or ``capacity``
    first, then bisects upward).

    ``effort`` is in deterministic units (WORK_PER_EFFORT search work each, about a second).
    ``start``: a valid layout of ``buffers`` to start from instead of the greedy one
    (the planner passes the greedy layout it already made).
    ``heuristics``: the static preorders the exact search tries round-robin
    (the planner passes :data:`RESIDENCY_HEURISTICS`).
    """
    from .decompose import prepare
    from .greedy import squeaky_improve
    from .model import Layout, max_live, validate_buffers

    validate_buffers(buffers)
    ml = max_live(buffers)
    prep = prepare(buffers, None if start is None else start.offsets)
    unit = prep.unit

    def report():
        if progress is not None:
            progress(prep.arena * unit, ml)

    report()
    budget = int(effort * WORK_PER_EFFORT)
    used = 0
    goal = ml // unit if capacity is None else max(ml // unit, capacity // unit)
    tried: set[int] = set()
    while used < budget and prep.arena > goal:
        seg_idx = max(range(len(prep.segments)), key=lambda k: (prep.segments[k].arena, -k))
        if seg_idx in tried:
            break
        tried.add(seg_idx)
        seg = prep.segments[seg_idx]
        if use_squeaky and len(seg.S) > SQUEAKY_MIN_BUFFERS:
            # squeaky passes are cheap and often close the last gap of large segments
            # (pangu_2.6B); capped so the exact search keeps most of the effort
            spent = squeaky_improve(seg, goal, (budget - used) / WORK_PER_EFFORT * 0.25, report)
            used += int(spent * WORK_PER_EFFORT)
        if seg.arena > goal:
            if capacity is None:
                used += descend_segment(seg, goal, budget - used, report, heuristics)[0]
            else:
                used += improve_segment(seg, goal, budget - used, report, fit_only=True, heuristics=heuristics)[0]
    arena = prep.arena * unit
    infeasible = capacity is not None and any(
        s.stats.get("infeasible_below", 0) > capacity // unit for s in prep.segments)
    return Layout(prep.offsets(), arena, ml, "search", arena == ml,
                  stats={"effort_used": round(used / WORK_PER_EFFORT, 3), "segments": len(prep.segments),
                         "engines": sorted({s.engine for s in prep.segments}),
                         "search_nodes": sum(s.stats.get("search_nodes", 0) for s in prep.segments),
                         "proven_infeasible": infeasible})


def search_layout_sets(buffers, start, effort: float,
                       heuristic_sets: Sequence[tuple[str, ...]] = (RESIDENCY_HEURISTICS, HEURISTICS)):
    """:func:`search_layout` once per preorder set, each from the best layout so far, ``effort``
    each; the smallest arena wins (ties: the earlier), and a set that reaches max-live ends it.

    WHY: on the planner's residency instances (tiled CNNs) neither preorder set is
    better everywhere: with "OZ" first light_squeezenet's residencies lay out closer
    to max-live, with MiniMalloc's three alone some of light_inception_v1's do, and the
    residency loop takes the first try that fits, so one bad layout sets its effective
    budget (and the plan's peak / max-live) for good. ``start``: a valid layout of
    ``buffers`` (the planner's greedy one); returned unchanged when nothing beats it.
    The winning set is in ``stats["heuristics"]``.
    """
    best = start
    for heuristics in heuristic_sets:
        if best.arena_bytes <= best.max_live_bytes:
            break
        found = search_layout(buffers, effort=effort, start=best, heuristics=heuristics)
        if found.arena_bytes < best.arena_bytes:
            found.stats["heuristics"] = list(heuristics)
            best = found
    return best
