"""Prefetch into the free bytes of a finished layout.

WHY: hoisting every reload as early as the *resident-bytes* budget allows (the
residency's own prefetch) fills each GPU to the byte between uses, and the
arena layout of such an instance fragments far above max-live (densenet121 at
50%: a third of the time steps at >= 95% of max-live, best layout found
1.25-1.36x), so the planner tightened the effective budget and offloaded more.
Here the residency is first laid out without prefetch (an easy instance, laid
out near max-live), and only then is each reload moved earlier, one at a time
in event order, to the earliest step at which some bytes are free for its whole
new lifetime (its own offset first, else the smallest gap it fits), below the
budget and below 1.01 x the max-live it leads to (or the starting arena). Every placement is checked against the fixed layout and the reloads
already moved, so the result is a valid layout below the budget by construction,
and prefetch fills only what the layout leaves free.

Time is measured in the events of the residency without prefetch, doubled so
that a reload hoisted to step ``s`` (it runs just before the compute of ``s``)
sits at ``2 * compute_event(s) - 1``, between two events; a preload (step 0 of
an initial storage with no earlier stay) sits before everything, at -3. An occupant holds its bytes
over the closed range [2 * writer, 2 * last reader] (a preload from -3, a graph
output to the end).
"""

from __future__ import annotations

import numpy as np

from .residency import HOST, Residency

PRELOAD_AT = -3
#: A hoisted reload may end at most this much above the max-live it leads to (numerator,
#: denominator) unless it stays below the arena it started from: prefetch then fills
#: memory without lifting peak / max-live above 1.01.
SLACK = (101, 100)


def _lowest_gap(lo: np.ndarray, hi: np.ndarray, size: int, cap: int, prefer: int, is_sorted: bool = False) -> int | None:
    """Lowest offset in [0, cap - size] clear of every [lo, hi) (``prefer`` if it is clear).

    ``is_sorted``: ``lo`` is already in stable ascending order (the caller keeps a sorted index).
    """
    if not ((lo < prefer + size) & (hi > prefer)).any() and prefer + size <= cap:
        return prefer
    if len(lo) == 0:
        return 0 if size <= cap else None
    if not is_sorted:
        order = np.argsort(lo, kind="stable")
        lo, hi = lo[order], hi[order]
    reach = np.maximum.accumulate(hi)
    starts = np.concatenate(([0], reach))  # a gap starts where everything below has ended
    ends = np.concatenate((lo, [cap]))
    room = ends - starts
    ok = np.flatnonzero((room >= size) & (starts + size <= cap))
    if len(ok) == 0:
        return None
    k = ok[np.argmin(room[ok] - size)]  # best fit: the smallest gap it fits (ties: lowest)
    return int(starts[k])


def hoist_into_layout(res: Residency, offsets: dict[int, int], budgets: dict[int, int],
                      slack: tuple[int, int] | None = SLACK) -> tuple[dict[tuple[str, int, int], int], dict[int, int]]:
    """Where each reload of ``res`` (simulated without prefetch, laid out at ``offsets``) can start.

    Returns ``(hoist_to, moved)``: ``(storage, device, reload step) -> earliest step``
    for ``simulate(..., hoist_to=...)``, and the new offset of every hoisted occupant
    (by its id in ``res``) that had to leave its own bytes. ``budgets``: device -> bytes.
    ``slack``: the (numerator, denominator) bound over max-live explained at ``SLACK``;
    None: only the budget bounds a hoisted reload.
    """
    events = res.events
    compute_at: dict[int, int] = {}  # step -> index of its compute event
    for e, ev in enumerate(events):
        if ev.kind == "compute":
            compute_at.setdefault(ev.step, e)
    steps = sorted(compute_at)
    gpu = [o for o in res.occupants if o.device != HOST]
    if not steps or not gpu:
        return {}, {}
    step_arr = np.array(steps, dtype=np.int64)
    start_arr = np.array([2 * compute_at[s] - 1 for s in steps], dtype=np.int64)
    initial = {o.storage for o in res.occupants if o.device == HOST and o.writer is None}

    dev = np.array([o.device for o in gpu], dtype=np.int64)
    lo = np.array([offsets[o.id] for o in gpu], dtype=np.int64)
    size = np.array([o.size for o in gpu], dtype=np.int64)
    begin = np.array([PRELOAD_AT if o.writer is None else 2 * o.writer for o in gpu], dtype=np.int64)
    end = np.array([2 * max([-1 if o.writer is None else o.writer] + o.readers) for o in gpu], dtype=np.int64)
    end = np.where(np.array([o.to_end for o in gpu]), 2 * len(events) + 2, end)
    index = {o.id: k for k, o in enumerate(gpu)}
    # live bytes per device at every (doubled) time point, shifted so PRELOAD_AT is 0
    span = 2 * len(events) + 3 - PRELOAD_AT
    live: dict[int, np.ndarray] = {}
    for d in np.unique(dev).tolist():
        diff = np.zeros(span + 1, dtype=np.int64)
        sel = dev == d
        np.add.at(diff, begin[sel] - PRELOAD_AT, size[sel])
        np.add.at(diff, end[sel] - PRELOAD_AT + 1, -size[sel])
        live[d] = np.cumsum(diff)[:span]
    arena0 = {d: int((lo + size)[dev == d].max()) for d in live}
    peak = {d: int(live[d].max()) for d in live}
    # previous stay of the same storage on the same device: a reload never starts before it ends
    prev_end: dict[int, int] = {}
    last_of: dict[tuple[str, int], int] = {}
    for k, o in enumerate(gpu):
        key = (o.storage, o.device)
        if key in last_of:
            prev_end[k] = int(end[last_of[key]])
        last_of[key] = k

    hoist: dict[tuple[str, int, int], int] = {}
    moved: dict[int, int] = {}

    # occupants in ascending (offset, index) order, the order of a stable argsort of ``lo``; kept sorted
    # as occupants move (one delete and one insert each, not a re-sort per move)
    n_occ = len(gpu)
    by_offset = [np.argsort(lo, kind="stable")]
    offset_keys = [lo[by_offset[0]] * n_occ + by_offset[0]]

    def move_to(k: int, off: int) -> None:
        keys, order = offset_keys[0], by_offset[0]
        at = int(np.searchsorted(keys, int(lo[k]) * n_occ + k))
        keys, order = np.delete(keys, at), np.delete(order, at)
        new_key = off * n_occ + k
        at = int(np.searchsorted(keys, new_key))
        offset_keys[0], by_offset[0] = np.insert(keys, at, new_key), np.insert(order, at, k)
        lo[k] = off

    def place(k: int, b: int, cap: int) -> int | None:
        """Offset where occupant k fits from time ``b`` to its end (None: nowhere below the caps)."""
        d = int(dev[k])
        near = (dev == d) & (begin <= end[k]) & (end >= b)
        near[k] = False
        grown = int(live[d][b - PRELOAD_AT: begin[k] - PRELOAD_AT].max(initial=0)) + int(size[k])
        top = cap if slack is None else min(cap, max(arena0[d], max(peak[d], grown) * slack[0] // slack[1]))
        sel = by_offset[0][near[by_offset[0]]]
        return _lowest_gap(lo[sel], lo[sel] + size[sel], int(size[k]), top, int(lo[k]), is_sorted=True)

    for ev in events:
        if ev.kind != "reload" or ev.device == HOST or not ev.writes:
            continue
        k = index[ev.writes[0]]
        if size[k] == 0:
            continue
        cap = budgets[ev.device]
        first = int(np.searchsorted(start_arr, prev_end.get(k, PRELOAD_AT - 1), side="right"))
        last = int(np.searchsorted(step_arr, ev.step, side="left"))  # index of the reload's own step
        if first >= last:
            continue
        # step 0 of an initial storage with no earlier stay is a preload (before every event)
        can_preload = k not in prev_end and gpu[k].storage in initial

        def start(i: int, first: int = first, can_preload: bool = can_preload) -> int:
            """The i-th candidate start (computed on demand: the range can span the whole run)."""
            j = first + i
            return PRELOAD_AT if (j == 0 and can_preload) else int(start_arr[j])

        # a later start meets a subset of the occupants, so bisect for the earliest that fits
        a, z = 0, last - first  # z == last - first: the reload's own place, without moving
        while z > a:
            mid = (a + z) // 2
            if place(k, start(mid), cap) is not None:
                z = mid
            else:
                a = mid + 1
        if z == last - first:
            continue
        b = start(z)
        off = place(k, b, cap)
        if off is None:  # the max-live cap depends on the start: the bisection can land on a miss
            continue
        hoist[(ev.storage, ev.device, ev.step)] = int(step_arr[first + z])
        d = int(dev[k])
        live[d][b - PRELOAD_AT: begin[k] - PRELOAD_AT] += size[k]
        peak[d] = max(peak[d], int(live[d][b - PRELOAD_AT: begin[k] - PRELOAD_AT].max(initial=0)))
        begin[k] = b
        if off != lo[k]:
            move_to(k, off)
            moved[gpu[k].id] = off
    return hoist, moved


def remap_offsets(before: Residency, after: Residency, offsets: dict[int, int]) -> dict[int, int]:
    """GPU offsets of ``before``'s occupants carried over to ``after`` (same stays, hoisted).

    Occupants are matched per (storage, device) in order of their stays; host
    occupants are left out (the host region is laid out again).
    """
    def keyed(res: Residency) -> dict[tuple[str, int, int], int]:
        seen: dict[tuple[str, int], int] = {}
        out = {}
        for o in res.occupants:
            if o.device == HOST:
                continue
            n = seen.get((o.storage, o.device), 0)
            seen[(o.storage, o.device)] = n + 1
            out[(o.storage, o.device, n)] = o.id
        return out

    old, new = keyed(before), keyed(after)
    if old.keys() != new.keys():
        raise AssertionError("internal: hoisting changed the GPU occupants")
    return {new[key]: offsets[oid] for key, oid in old.items()}
