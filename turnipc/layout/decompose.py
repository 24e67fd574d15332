"""Shared preparation for the exact solvers: drop empty buffers, divide sizes by
their gcd, and split time into independent segments (no lifetime crosses a cut)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .greedy import ORDERINGS, greedy_offsets
from .model import Buffer


@dataclass
class Segment:
    """Buffers of one independent time segment, in scaled units (bytes / unit)."""

    ids: list[str]
    L: np.ndarray
    U: np.ndarray
    S: np.ndarray  # sizes / unit
    A: np.ndarray  # alignments / unit
    off: np.ndarray  # current offsets / unit
    lb: int  # max-live / unit
    engine: str = "greedy"  # what produced the current offsets
    proven: bool = False  # the current arena is proven optimal for the target
    stats: dict = field(default_factory=dict)

    @property
    def arena(self) -> int:
        return int((self.off + self.S).max()) if len(self.S) else 0


@dataclass
class Prepared:
    unit: int
    segments: list[Segment]
    empty_ids: list[str]  # zero-size or empty-lifetime buffers (offset 0)

    @property
    def arena(self) -> int:
        return max((s.arena for s in self.segments), default=0)

    def offsets(self) -> dict[str, int]:
        out = {bid: 0 for bid in self.empty_ids}
        for seg in self.segments:
            for bid, o in zip(seg.ids, seg.off.tolist()):
                out[bid] = int(o) * self.unit
        return out


def segment_max_live(L: np.ndarray, U: np.ndarray, S: np.ndarray) -> int:
    if len(L) == 0:
        return 0
    times = np.unique(np.concatenate([L, U]))
    d = np.zeros(len(times) + 1, dtype=np.int64)
    np.add.at(d, np.searchsorted(times, L), S)
    np.add.at(d, np.searchsorted(times, U), -S)
    return int(np.cumsum(d).max())


def split_segments(L: np.ndarray, U: np.ndarray) -> list[np.ndarray]:
    """Index groups whose lifetimes chain together; no lifetime crosses between groups."""
    order = np.lexsort((U, L))
    if len(order) == 0:
        return []
    Ls = L[order]
    reach = np.maximum.accumulate(U[order])
    cuts = np.flatnonzero(Ls[1:] >= reach[:-1]) + 1
    return [np.sort(g) for g in np.split(order, cuts)]


def prepare(buffers: Sequence[Buffer], start: dict[str, int] | None = None) -> Prepared:
    """Scale, split into segments, and start each segment from a greedy layout
    (or from ``start``, a valid layout of ``buffers`` already made, in bytes)."""
    live = [b for b in buffers if b.live]
    empty = [b.id for b in buffers if not b.live]
    unit = 0
    for b in live:
        unit = math.gcd(unit, b.size)
        if b.alignment > 1:
            unit = math.gcd(unit, b.alignment)
    unit = unit or 1
    ids = [b.id for b in live]
    L = np.array([b.lower for b in live], dtype=np.int64)
    U = np.array([b.upper for b in live], dtype=np.int64)
    S = np.array([b.size // unit for b in live], dtype=np.int64)
    A = np.array([max(1, b.alignment // unit) for b in live], dtype=np.int64)
    segs = []
    for g in split_segments(L, U):
        sub = [Buffer(ids[i], int(L[i]), int(U[i]), int(S[i]), int(A[i])) for i in g]
        if start is not None:
            off_map, name = {b.id: start[b.id] // unit for b in sub}, "given"
        else:
            off_map, _, name = greedy_offsets(sub, ORDERINGS)
        seg = Segment(
            [ids[i] for i in g], L[g], U[g], S[g], A[g],
            np.array([off_map[b.id] for b in sub], dtype=np.int64),
            segment_max_live(L[g], U[g], S[g]),
        )
        seg.stats["greedy_ordering"] = name
        segs.append(seg)
    return Prepared(unit, segs, empty)
