"""Prefetch into the holes of a finished layout.

WHY: hoisting every reload as early as the *budget* allows (the residency's own
prefetch) fills each GPU to the byte between uses, and the arena layout of such
an instance fragments far above max-live (densenet121 at 50%: a third of the
time steps at >= 95% of max-live, best layout found 1.25-1.36x, so the planner
tightened the effective budget and offloaded more). Here the residency is first
laid out without prefetch, and only then is each reload moved earlier, keeping
its offset, as far as its bytes stay free in that layout. The arena never grows,
so a layout that met the budget still does, and prefetch costs no fragmentation.

Time is measured in the events of the residency without prefetch, doubled so
that a reload hoisted to step ``s`` (it runs just before the compute of ``s``)
sits at ``2 * compute_event(s) - 1``, between two events. An occupant holds its
bytes over the closed range [2 * writer, 2 * last reader] (a preload from -2).
Hoisting only moves starts earlier and leaves every end in place, so each reload
is decided alone: it may start after the last end of any occupant on its device
whose bytes it shares and which ended before it started.
"""

from __future__ import annotations

import numpy as np

from .residency import HOST, Residency


def hoist_into_layout(res: Residency, offsets: dict[int, int]) -> dict[tuple[str, int, int], int]:
    """``(storage, device, reload step) -> earliest step`` for every reload that can move earlier.

    ``res``: a residency simulated without prefetch; ``offsets``: its layout.
    Feed the result to ``simulate(..., hoist_to=...)``: the residency it gives has
    the same occupants, and ``offsets`` stay valid for them (see ``remap_offsets``).
    """
    events = res.events
    compute_at: dict[int, int] = {}  # step -> index of its compute event
    for e, ev in enumerate(events):
        if ev.kind == "compute":
            compute_at.setdefault(ev.step, e)
    steps = sorted(compute_at)
    if not steps:
        return {}
    step_arr = np.array(steps, dtype=np.int64)
    start_arr = np.array([2 * compute_at[s] - 1 for s in steps], dtype=np.int64)  # increasing with the step

    gpu = [o for o in res.occupants if o.device != HOST]
    if not gpu:
        return {}
    dev = np.array([o.device for o in gpu], dtype=np.int64)
    lo = np.array([offsets[o.id] for o in gpu], dtype=np.int64)
    hi = lo + np.array([o.size for o in gpu], dtype=np.int64)
    end = np.array([2 * max([-1 if o.writer is None else o.writer] + o.readers) for o in gpu], dtype=np.int64)
    end = np.where(np.array([o.to_end for o in gpu]), 2 * len(events) + 2, end)
    index = {o.id: k for k, o in enumerate(gpu)}

    out: dict[tuple[str, int, int], int] = {}
    for e, ev in enumerate(events):
        if ev.kind != "reload" or ev.device == HOST or not ev.writes:
            continue
        k = index[ev.writes[0]]
        if gpu[k].size == 0:
            continue
        w = 2 * e
        shared = (dev == dev[k]) & (lo < hi[k]) & (hi > lo[k]) & (end < w)
        shared[k] = False
        last = int(end[shared].max()) if shared.any() else -3
        # first step whose hoisted start comes after ``last``; step 0 becomes a preload
        # (before every event), so it needs nothing ending before it at all
        j = int(np.searchsorted(start_arr, last, side="right"))
        if j < len(steps) and step_arr[j] == 0 and last >= -2:
            j += 1
        if j < len(steps) and step_arr[j] < ev.step:
            out[(ev.storage, ev.device, ev.step)] = int(step_arr[j])
    return out


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
