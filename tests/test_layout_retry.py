"""turnipc.planner.retry_layout: a plan above 1.01 x max-live gets its residency loop run again.

The planned inputs are real (weight_reuse at 6U, planned by plan_residency); the
loose one is that plan with its topmost GPU occupant lifted above the arena, a
valid layout at a known peak / max-live, so what retry_layout must keep is
worked out by hand.
"""

from __future__ import annotations

import dataclasses
from fractions import Fraction

from tiny_graphs import U, weight_reuse

from turnipc.layout.model import check_layout
from turnipc.order import memory_aware_order
from turnipc.placement import place_stages
from turnipc.planner import (
    RETRY_SEARCH_EFFORTS,
    Layouts,
    PlanOptions,
    buffers_by_device,
    peak_over_max_live,
    plan_residency,
    retry_layout,
)
from turnipc.residency import HOST
from turnipc.units import Budget


def _planned(opts: PlanOptions, search_effort: float | None = None):
    g = weight_reuse()
    order = memory_aware_order(g)
    dev = place_stages(g, order, 1)
    kw = {} if search_effort is None else {"search_effort": search_effort}
    return g, order, dev, plan_residency(g, order, dev, 6 * U, opts, **kw)


def _loosened(planned):
    """``planned`` with its topmost GPU occupant moved to the arena's top: same residency, taller arena."""
    lay = planned.layouts
    gpu = [o for o in planned.residency.occupants if o.device != HOST]
    top = max(gpu, key=lambda o: (lay.offsets[o.id] + o.size, o.id))
    arena = lay.arena[0]
    offsets = {**lay.offsets, top.id: arena}
    loose = Layouts(offsets, {**lay.arena, 0: arena + top.size}, dict(lay.lower))
    bufs = buffers_by_device(planned.residency)[0]
    check_layout(bufs, {b.id: offsets[int(b.id)] for b in bufs})  # still a valid layout
    return dataclasses.replace(planned, layouts=loose)


def test_plan_within_one_percent_is_returned_as_is():
    opts = PlanOptions(Budget(bytes=6 * U))
    g, order, dev, planned = _planned(opts)
    assert peak_over_max_live(planned.layouts, 1) <= Fraction(101, 100)
    assert retry_layout(g, planned, 6 * U, opts, False, None, order, dev) is planned


def test_loose_plan_is_replaced_by_the_retried_one():
    opts = PlanOptions(Budget(bytes=6 * U))
    g, order, dev, planned = _planned(opts)
    loose = _loosened(planned)
    # weight_reuse at 6U: max-live 6U (t0 and t4 need all of it); the loose arena is 6U + one occupant
    assert loose.layouts.lower[0] == 6 * U
    assert peak_over_max_live(loose.layouts, 1) > Fraction(101, 100)
    got = retry_layout(g, loose, 6 * U, opts, False, None, order, dev)
    # the retry at the first retry effort is the residency loop run again: the same plan as the loop makes
    _, _, _, again = _planned(opts, search_effort=RETRY_SEARCH_EFFORTS[0])
    assert got is not loose
    assert got.layouts.offsets == again.layouts.offsets
    assert got.layouts.arena == again.layouts.arena == {0: 6 * U, HOST: got.layouts.arena[HOST]}
    assert peak_over_max_live(got.layouts, 1) == 1


def test_only_the_search_engine_is_retried():
    opts = PlanOptions(Budget(bytes=6 * U), solver="greedy")
    g, order, dev, planned = _planned(opts)
    loose = _loosened(planned)
    assert retry_layout(g, loose, 6 * U, opts, False, None, order, dev) is loose
