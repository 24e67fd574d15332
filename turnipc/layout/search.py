"""Exact skyline branch-and-bound for "do these buffers fit in capacity C?".

A MiniMalloc-style search (Moffitt, ASPLOS 2023) over *canonical* layouts:
every layout can be pushed down until each buffer rests on address 0 or on the
end of a buffer live at the same time, without growing the arena, so only such
layouts are searched. Time is cut into sections (between consecutive lifetime
boundaries); each section has a floor, the end of the highest placed buffer
there. At each node the search takes the lowest run R of adjacent sections (at
height h, sections with unplaced buffers only) and branches on the leftmost
buffer placed at h inside R:

* a buffer whose lifetime lies inside R goes to offset h; the sections of R
  left of it get nothing at h, so their floor rises to their lower neighbour;
* or nothing goes at h in R: R rises to its lower neighbour.

This partitions the canonical layouts, so the search is complete. Pruning: a
section's floor plus the unplaced bytes live there must not exceed C (tight
when C is max-live), every buffer must fit below C, identical buffers are
placed in index order. Effort is counted in search nodes, so results are
deterministic.
"""

from __future__ import annotations

import sys
from typing import Sequence

import numpy as np

NODES_PER_EFFORT = 20_000  # search nodes per effort unit (about one second of CPython)


class _Limit(Exception):
    pass


class SkylineSearch:
    """Decide whether buffers (section ranges [a, b), sizes s) fit below ``cap``."""

    def __init__(self, a: Sequence[int], b: Sequence[int], s: Sequence[int], T: int, cap: int):
        self.a = [int(v) for v in a]
        self.b = [int(v) for v in b]
        self.s = [int(v) for v in s]
        self.n = len(self.a)
        self.T = T
        self.cap = int(cap)
        self.nodes = 0
        rem = [0] * T
        for i in range(self.n):
            for t in range(self.a[i], self.b[i]):
                rem[t] += self.s[i]
        self.rem = rem
        self.floor = [0] * T
        self.placed = [False] * self.n
        self.offset = [0] * self.n
        # candidates starting at each section: long lives first, then big sizes
        starts: list[list[int]] = [[] for _ in range(T)]
        for i in sorted(range(self.n), key=lambda i: (-(self.b[i] - self.a[i]), -self.s[i], i)):
            starts[self.a[i]].append(i)
        self.starts = starts
        # identical buffers: place in index order
        prev: dict[tuple, int] = {}
        self.twin = [-1] * self.n
        for i in range(self.n):
            key = (self.a[i], self.b[i], self.s[i])
            if key in prev:
                self.twin[i] = prev[key]
            prev[key] = i

    def solve(self, node_limit: int) -> str:
        """'found' (offsets in self.offset), 'infeasible' (proven), or 'limit'."""
        if any(r > self.cap for r in self.rem) or any(x > self.cap for x in self.s):
            return "infeasible"
        self.node_limit = node_limit
        old = sys.getrecursionlimit()
        sys.setrecursionlimit(max(old, 4 * (self.n + self.T) + 1000))
        try:
            return "found" if self._dfs() else "infeasible"
        except _Limit:
            return "limit"
        finally:
            sys.setrecursionlimit(old)

    def _raise(self, lo: int, hi: int, to: int, trail: list) -> bool:
        floor, rem, cap = self.floor, self.rem, self.cap
        ok = True
        for t in range(lo, hi):
            trail.append((t, floor[t]))
            floor[t] = to
            if to + rem[t] > cap:
                ok = False
        return ok

    def _undo(self, trail: list) -> None:
        floor = self.floor
        for t, v in reversed(trail):
            floor[t] = v

    def _dfs(self) -> bool:
        self.nodes += 1
        if self.nodes > self.node_limit:
            raise _Limit
        floor, rem, cap, T = self.floor, self.rem, self.cap, self.T
        h = cap + 1
        t0 = -1
        for t in range(T):
            if rem[t] and floor[t] < h:
                h = floor[t]
                t0 = t
        if t0 < 0:
            return True
        a = t0
        while a > 0 and rem[a - 1] and floor[a - 1] == h:
            a -= 1
        b = t0 + 1
        while b < T and rem[b] and floor[b] == h:
            b += 1
        left = floor[a - 1] if a > 0 and rem[a - 1] else cap
        right = floor[b] if b < T and rem[b] else cap
        A, B, S, placed, twin, off = self.a, self.b, self.s, self.placed, self.twin, self.offset
        for k in range(a, b):
            for i in self.starts[k]:
                if placed[i] or B[i] > b:
                    continue
                tw = twin[i]
                if tw >= 0 and not placed[tw]:
                    continue
                s = S[i]
                if h + s > cap:
                    continue
                trail: list = []
                ok = True
                if k > a:
                    ok = self._raise(a, k, min(left, h + s), trail)
                if ok:
                    placed[i] = True
                    off[i] = h
                    for t in range(k, B[i]):
                        floor[t] = h + s
                        rem[t] -= s
                    if self._dfs():
                        return True
                    for t in range(k, B[i]):
                        floor[t] = h
                        rem[t] += s
                    placed[i] = False
                self._undo(trail)
        # nothing at h in R
        to = min(left, right)
        trail = []
        if self._raise(a, b, to, trail) and self._dfs():
            return True
        self._undo(trail)
        return False


def sections(L: np.ndarray, U: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    times = np.unique(np.concatenate([L, U]))
    return np.searchsorted(times, L), np.searchsorted(times, U), max(len(times) - 1, 0)


def fits(L, U, S, cap: int, node_limit: int) -> tuple[str, np.ndarray | None, int]:
    """Search for a layout of all buffers below ``cap``: (status, offsets or None, nodes)."""
    a, b, T = sections(np.asarray(L), np.asarray(U))
    srch = SkylineSearch(a, b, S, T, cap)
    status = srch.solve(node_limit)
    offs = np.array(srch.offset, dtype=np.int64) if status == "found" else None
    return status, offs, srch.nodes
