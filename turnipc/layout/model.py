"""Data model of the static arena layout problem (dynamic storage allocation).

A :class:`Buffer` is live over the half-open time interval ``[lower, upper)``
and needs ``size`` bytes. A layout gives each buffer an integer ``offset >= 0``
so that no two buffers live at the same instant share a byte of
``[offset, offset + size)``. The arena is ``max(offset + size)``; no layout
beats :func:`max_live`, the largest total size live at one instant.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence


@dataclass(frozen=True)
class Buffer:
    id: str
    lower: int
    upper: int
    size: int
    alignment: int = 1  # offsets must be multiples of this (1: no constraint)

    @property
    def live(self) -> bool:
        """A buffer takes room only if it has bytes and a non-empty lifetime."""
        return self.size > 0 and self.upper > self.lower


@dataclass
class Layout:
    offsets: dict[str, int]
    arena_bytes: int
    max_live_bytes: int
    solver: str
    optimal: bool
    stats: dict = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.arena_bytes / self.max_live_bytes if self.max_live_bytes else 1.0


def validate_buffers(buffers: Sequence[Buffer]) -> None:
    """Reject malformed input: duplicate ids, negative sizes, inverted lifetimes."""
    seen: set[str] = set()
    for b in buffers:
        if b.id in seen:
            raise ValueError(f"duplicate buffer id {b.id!r}: give every buffer a unique id")
        seen.add(b.id)
        if b.size < 0:
            raise ValueError(f"buffer {b.id!r} has negative size {b.size}: sizes must be >= 0")
        if b.upper < b.lower:
            raise ValueError(
                f"buffer {b.id!r} has upper {b.upper} < lower {b.lower}: lifetimes are [lower, upper)"
            )
        if b.alignment < 1:
            raise ValueError(f"buffer {b.id!r} has alignment {b.alignment}: alignment must be >= 1")


def max_live(buffers: Iterable[Buffer]) -> int:
    """Largest total size of buffers live at one instant (lower bound on the arena)."""
    events: list[tuple[int, int]] = []
    for b in buffers:
        if b.live:
            events.append((b.lower, b.size))
            events.append((b.upper, -b.size))
    # At equal times frees (negative) sort first: lifetimes are half-open.
    events.sort()
    cur = best = 0
    for _, d in events:
        cur += d
        if cur > best:
            best = cur
    return best


def live_profile(buffers: Sequence[Buffer]) -> tuple[list[int], list[int]]:
    """Step function of live bytes: ``(times, live)`` with live[i] over [times[i], times[i+1])."""
    delta: dict[int, int] = {}
    for b in buffers:
        if b.live:
            delta[b.lower] = delta.get(b.lower, 0) + b.size
            delta[b.upper] = delta.get(b.upper, 0) - b.size
    times = sorted(delta)
    live = []
    cur = 0
    for t in times:
        cur += delta[t]
        live.append(cur)
    return times, live


def arena_of(buffers: Iterable[Buffer], offsets: Mapping[str, int]) -> int:
    return max((offsets[b.id] + b.size for b in buffers if b.live), default=0)


def check_layout(
    buffers: Sequence[Buffer], offsets: Mapping[str, int], capacity: int | None = None
) -> None:
    """Raise ValueError if ``offsets`` is not a valid layout of ``buffers``.

    Checks: every buffer has an integer offset >= 0 honouring its alignment,
    no two buffers live at the same instant overlap in memory (the message names
    the first such pair found by a sweep over time), and, if ``capacity`` is
    given, every buffer ends at or below it. O(n log n) plus list moves.
    """
    events: list[tuple[int, int, int]] = []  # (time, kind 0=free 1=alloc, index)
    for i, b in enumerate(buffers):
        if b.id not in offsets:
            raise ValueError(f"buffer {b.id!r} has no offset")
        off = offsets[b.id]
        if not isinstance(off, int) or isinstance(off, bool):
            raise ValueError(f"buffer {b.id!r} has non-integer offset {off!r}")
        if off < 0:
            raise ValueError(f"buffer {b.id!r} has negative offset {off}")
        if off % b.alignment:
            raise ValueError(f"buffer {b.id!r} offset {off} is not a multiple of its alignment {b.alignment}")
        if capacity is not None and off + b.size > capacity:
            raise ValueError(
                f"buffer {b.id!r} ends at {off + b.size} > capacity {capacity}"
            )
        if b.live:
            events.append((b.lower, 1, i))
            events.append((b.upper, 0, i))
    events.sort()
    starts: list[int] = []  # sorted offsets of live buffers (disjoint, so unique)
    owner: list[int] = []  # buffer index at the same position
    for _, kind, i in events:
        b = buffers[i]
        off = offsets[b.id]
        if kind == 0:
            k = bisect.bisect_left(starts, off)
            # the invariant keeps starts unique; the entry at k is this buffer
            del starts[k]
            del owner[k]
            continue
        k = bisect.bisect_left(starts, off)
        if k > 0:
            p = buffers[owner[k - 1]]
            if offsets[p.id] + p.size > off:
                raise ValueError(_overlap_msg(p, b, offsets))
        if k < len(starts):
            q = buffers[owner[k]]
            if starts[k] < off + b.size:
                raise ValueError(_overlap_msg(b, q, offsets))
        starts.insert(k, off)
        owner.insert(k, i)


def _overlap_msg(a: Buffer, b: Buffer, offsets: Mapping[str, int]) -> str:
    oa, ob = offsets[a.id], offsets[b.id]
    return (
        f"buffers {a.id!r} [{oa}, {oa + a.size}) live [{a.lower}, {a.upper}) and "
        f"{b.id!r} [{ob}, {ob + b.size}) live [{b.lower}, {b.upper}) overlap"
    )
