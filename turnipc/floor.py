"""The floor of a model: the smallest budget it plans at, and the task that bounds it from below.

Why: whether a budget plans is not monotone in the budget (the residency,
the arena layout and the tiling all change with it), so a refusal cannot
simply name "the largest task" of whatever tiling was tried last, and a
bisection can step over budgets that plan. This module answers two
questions separately:

* :func:`tiling_floor` - a *proof* that no budget below some number of bytes
  can plan: every op, split as finely as the partition pass allows along
  its best axis, still needs that much at once for the op that sets it. It is
  computed per task from the pass's own split rules (no plan is made), so it
  costs milliseconds, and no probe below it is ever made.
* :func:`min_feasible_budget` - the smallest budget found that plans: an
  untiled bisection (the old answer), then, with tiling, a geometric walk
  down from there that does not stop at the first budget that fails (it
  stops after :data:`PATIENCE` failures in a row, or at the floor), then a
  bisection between the smallest budget that planned and the largest that
  failed below it. Every answer is a budget that was actually planned.

Speed comes from probing less, not from probing differently: no budget
below the floor is probed, and each probe is the planner's own (fewer
tightening retries, one task-size limit), so the answer always plans.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from .errors import BudgetError
from .taskgraph import TaskGraph

if TYPE_CHECKING:
    from .planner import PlanOptions

#: Failures in a row after which the downward walk stops (one failure does not end it:
#: a budget that fails can sit between two that plan).
PATIENCE = 2
#: Each step of the downward walk multiplies the budget by this.
STEP = 0.7


@dataclass(frozen=True)
class Floor:
    """No budget below ``bytes`` plans: task ``task`` (op ``op``) needs that much at once, split as finely as allowed."""

    bytes: int
    task: str
    op: str

    def describe(self) -> str:
        return f"task {self.task!r} ({self.op}) needs {self.bytes} bytes at once even split into blocks"


def tiling_floor(graph: TaskGraph, tiling: bool = True) -> Floor:
    """The largest, over tasks, of the smallest working set the partition pass can split each task into.

    With ``tiling`` off: the largest working set of a whole task.
    """
    from .partition import _Builder, task_working_set
    from .partition_conv import is_constant_fill

    b = _Builder(graph, 0) if tiling else None
    best = Floor(0, "", "")
    for t in graph.tasks:
        if b is not None and is_constant_fill(t):
            continue  # filled per consumer block in a tiled graph (turnipc/partition_conv.py): never a task of its own
        need = task_working_set(graph, t)
        if b is not None and t.outputs and t.outputs[0] is not None:
            opts = b.options(t)
            if opts:
                need = min(need, min(o[5] for o in opts))
        if need > best.bytes:
            best = Floor(need, t.name, t.op_type)
    return best


def _bisect(ok: Callable[[int], bool], bad: int, good: int, tol: int) -> int:
    """Smallest budget found planning between ``bad`` (fails) and ``good`` (plans), to within ``tol`` bytes."""
    while good - bad > tol:
        mid = (bad + good) // 2
        if ok(mid):
            good = mid
        else:
            bad = mid
    return good


def min_feasible_budget(graph: TaskGraph, order: list[int], device_of: list[int], opts: "PlanOptions", lo: int, hi: int,
                        progress: Callable[[str], None] | None = None, floor: Floor | None = None) -> int:
    """Smallest budget that plans (see the module docstring); ``lo``: the untiled lower bound, ``hi``: the no-offload peak."""
    from .planner import MIN_SEARCH_SHARES, MIN_SEARCH_TRIES, plan_residency, plan_tiled

    full = dataclasses.replace(opts, max_tries=MIN_SEARCH_TRIES)

    def ok_untiled(b: int) -> bool:
        try:
            plan_residency(graph, order, device_of, b, opts)
            return True
        except BudgetError:
            return False

    cache: dict[int, bool] = {}

    def ok(b: int) -> bool:
        if b not in cache:
            try:
                plan_tiled(graph, order, device_of, b, full, shares=MIN_SEARCH_SHARES)
                cache[b] = True
            except BudgetError:
                cache[b] = False
            if progress:
                progress(f"min budget: {b} B {'plans' if cache[b] else 'does not plan'}")
        return cache[b]

    best = lo if ok_untiled(lo) else _bisect(ok_untiled, lo, hi, max(hi // 128, 4096))
    if not opts.min_search_tiled:
        return best
    cache[best] = True
    if floor is None:
        floor = tiling_floor(graph, opts.tiling)
    bottom = max(floor.bytes, 4096, hi // 1024)
    b, fails, below = best, 0, None
    while fails < PATIENCE:
        nb = max(int(b * STEP), bottom)
        if nb >= b:
            break  # the floor was probed: nothing below it can plan
        b = nb
        if ok(b):
            best, fails, below = b, 0, None
        else:
            fails += 1
            below = b if below is None else below
    if below is not None:
        best = _bisect(ok, below, best, max(best // 32, 1024))
    return best


def refusal(budget: int, floor: Floor, least: int | None, no_offload_peak: int) -> str:
    """The message for a refused budget: the smallest budget known to plan (or that it is not known) and the floor task."""
    why = f"no budget below {floor.bytes} bytes can plan ({floor.describe()})"
    if least is None:
        return (f"--gpu-mem {budget} bytes does not plan for this model; {why}; the smallest feasible budget is not known "
                "without a search: try `--gpu-mem min` to find it")
    share = f"{least / max(no_offload_peak, 1):.1%} of the no-offload peak"
    if least < budget:
        return (f"--gpu-mem {budget} bytes does not plan for this model, though the smaller budget of {least} bytes ({share}) "
                f"does: feasibility is not monotone in the budget; {least} bytes is the smallest feasible budget found "
                f"(`--gpu-mem min` plans at it); {why}")
    return (f"--gpu-mem {budget} bytes is below the smallest feasible budget found for this model, {least} bytes ({share}; "
            f"`--gpu-mem min` plans at it); {why}")
