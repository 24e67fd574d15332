"""The floor of a model: the smallest budget it plans at, and the task that bounds it from below.

Why: whether a budget plans is not monotone in the budget (the residency,
the arena layout and the tiling all change with it), so a refusal cannot
simply name "the largest task" of whatever tiling was tried last, and a
bisection can step over budgets that plan. This module answers two
questions separately:

* :func:`tiling_floor` - a *proof* that no budget below some number of bytes
  can plan: every op, split as finely as the partition pass allows along
  its best axis, still needs that much at once for the op that sets it,
  counting what making an input whole costs where that split reads one whole.
  It is computed per task from the pass's own split rules (no plan is made),
  so it costs milliseconds: no budget below it is ever planned, and a budget
  below it is refused without a search.
* :func:`min_feasible_budget` - the smallest budget found that plans: an
  untiled bisection (the old answer), then, with tiling, a geometric walk
  down from there that does not stop at the first budget that fails (it
  stops after :data:`PATIENCE` failures in a row, at the floor, or when a
  step would be finer than 1/:data:`RESOLUTION` of the no-offload peak), then
  a bisection between the smallest budget that planned and the largest that
  failed below it, to the same resolution. Every answer is a budget that was
  actually planned.

Speed comes from probing less, not from probing differently: no budget
below the floor is probed, no budget twice, and the search stops at a fixed
resolution (probes near the floor are the dearest: the finest blocks, the
biggest graph to lay out); each probe is the planner's own (fewer tightening
retries, one task-size limit), so the answer always plans. Nothing depends
on wall-clock time.
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
#: The min search resolves budgets to 1/RESOLUTION of the no-offload peak (its walk's
#: smallest step and its bisection's width).
RESOLUTION = 128


@dataclass(frozen=True)
class Floor:
    """No budget below ``bytes`` plans: task ``task`` (op ``op``) needs that much at once, split as finely as allowed."""

    bytes: int
    task: str
    op: str
    #: The input the task reads whole in its best split, when making it whole is what sets ``bytes``
    #: (:func:`whole_input_bound`); "" when the task's own blocks do.
    whole_input: str = ""

    def describe(self) -> str:
        if self.whole_input:
            return (f"task {self.task!r} ({self.op}) reads {self.whole_input!r} whole even split into blocks, and making it "
                    f"whole needs {self.bytes} bytes at once")
        return f"task {self.task!r} ({self.op}) needs {self.bytes} bytes at once even split into blocks"


def tiling_floor(graph: TaskGraph, tiling: bool = True, whole_inputs: bool = True) -> Floor:
    """The largest, over tasks, of the smallest working set the partition pass can split each task into.

    With ``tiling`` off: the largest working set of a whole task. With it, a task's
    split that reads an input whole also counts what making that input whole costs
    (:func:`whole_input_bound`): light_squeezenet's last Conv splits into 357,376-byte
    blocks, but each reads its 346,112-byte input whole, and that input's producer
    (a Concat) needs 692,224 bytes whole or split and assembled: no budget below
    692,224 plans (the old floor said 357,376). ``whole_inputs`` off: the blocks alone
    (the bound the min search's grid is anchored to, see :func:`min_feasible`).
    """
    from .partition import _Builder, task_working_set
    from .partition_conv import is_constant_fill

    b = _Builder(graph, 0) if tiling else None
    writers = _writers(graph)
    best = Floor(0, "", "")
    for t in graph.tasks:
        if b is not None and is_constant_fill(t):
            continue  # filled per consumer block in a tiled graph (turnipc/partition_conv.py): never a task of its own
        need, via = task_working_set(graph, t), ""
        if b is not None and t.outputs and t.outputs[0] is not None:
            # (bytes, the input whose making whole sets them) run whole, then split each way; the least is the floor
            w = writers if whole_inputs else {}
            cands = [_with_whole_inputs(graph, w, t, need, [None] * len(t.inputs))]
            cands += [_with_whole_inputs(graph, w, t, o[5], _input_axes(o[4][0], t)) for o in b.options(t)]
            need, via = min(cands, key=lambda c: c[0])
        if need > best.bytes:
            best = Floor(need, t.name, t.op_type, via)
    return best


def _input_axes(rule_inputs, t) -> list:
    """A split's input axes; a Conv grid (turnipc/partition_conv.py ``Grid``) reads no input whole
    (input rows with their halo, filter and bias by channels; its working set counts the row Concat)."""
    from .partition_conv import Grid

    if isinstance(rule_inputs, Grid):
        return [rule_inputs.rows.axis] * len(t.inputs)
    return rule_inputs


def _writers(graph: TaskGraph) -> dict[str, int | None]:
    """storage -> index of the one task writing it (None where several do)."""
    out: dict[str, int | None] = {}
    for i, t in enumerate(graph.tasks):
        for s in t.storages_written(graph):
            out[s] = i if s not in out else None
    return out


def whole_input_bound(graph: TaskGraph, writers: dict[str, int | None], name: str) -> int:
    """Bytes some task of any tiled graph needs at once so that value ``name`` exists whole.

    WHY a bound: the partition pass makes a value whole in one of two ways
    (turnipc/partition.py ``get_whole``): its producer runs whole (or, when it is
    generated, is recomputed whole), needing that task's whole working set; or the
    producer runs in blocks and an assemble Concat joins them, needing the blocks and
    the whole at once, at least twice the storage's bytes (a split of the reduction
    axis writes the output whole from three of its size). Graph inputs, weights and
    constants are whole from the start (0).
    """
    from .partition import task_working_set

    s = graph.values[name].storage
    w = writers.get(s)
    if w is None:
        return 0
    return min(task_working_set(graph, graph.tasks[w]), 2 * graph.storage_bytes(s))


def _with_whole_inputs(graph: TaskGraph, writers: dict[str, int | None], t, ws: int, in_axes) -> tuple[int, str]:
    """(bytes, input) a split of ``t`` with working set ``ws`` needs, counting the inputs it reads whole (axis None):
    ``ws`` and "" when its blocks need the most, else the largest :func:`whole_input_bound` and its input."""
    best = (ws, "")
    for nm, ax in zip(t.inputs, in_axes, strict=False):
        if nm is not None and ax is None:
            need = whole_input_bound(graph, writers, nm)
            if need > best[0]:
                best = (need, nm)
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


def walk_down(ok: Callable[[int], bool], start: int, bottom: int, tol: int) -> int:
    """The smallest budget found planning at or below ``start`` (which plans), never probing below ``bottom``.

    A geometric walk down (factor :data:`STEP`) that survives up to
    :data:`PATIENCE` - 1 failures in a row (feasibility is not monotone: a
    budget that fails can sit between two that plan), and stops once a step
    would be narrower than ``tol``; then a bisection between the smallest
    budget that planned and the largest failure below it, to within ``tol``.
    Why ``tol`` bounds both: probes get dearer as the budget falls (more
    blocks, a bigger graph to lay out), so the search resolves the floor to a
    fixed share of the no-offload peak instead of chasing bytes near it.
    """
    best = b = start
    fails, below = 0, None
    while fails < PATIENCE:
        nb = max(int(b * STEP), bottom)
        if b - nb < tol:
            break  # the next step is below the search's resolution (or the floor was probed)
        b = nb
        if ok(b):
            best, fails, below = b, 0, None
        else:
            fails += 1
            below = b if below is None else below
    if below is not None:
        best = _bisect(ok, below, best, tol)
    return best


@dataclass
class MinFound:
    """The min search's answer: the smallest budget found planning, and, where it can stand for it,
    the probe's own plan at that budget (``plan_tiled``'s triple, hoisting deferred).

    ``plan`` is set only when the probe made exactly the plan the planner's full options make
    at ``budget`` (:func:`probe_is_final`), so ``--gpu-mem min`` finishes it instead of planning
    the same budget a second time.
    """

    budget: int
    plan: tuple | None = None


def probe_is_final(graph: TaskGraph, budget: int, opts: "PlanOptions", report) -> bool:
    """Whether a probe's plan at ``budget`` (:data:`~turnipc.planner.MIN_SEARCH_TRIES` tries, task-size
    limit ``budget // MIN_SEARCH_SHARES[0]``) is exactly what ``plan_tiled`` with ``opts`` makes there.

    WHY it can be: the full planner tries the same first limit (``TILE_SHARES[0]``), and its first
    tightening tries are the probe's, so a probe that planned within them is the full plan. Not
    when the probe fell back to tiling after the untiled graph failed its fewer tries (the full
    planner's later untiled tries might plan), nor with CP-SAT (its candidates depend on the
    greedy tries that did not run).
    """
    from .partition import largest_task
    from .planner import MIN_SEARCH_SHARES, TILE_SHARES

    if opts.solver == "cpsat" or MIN_SEARCH_SHARES[0] != TILE_SHARES[0]:
        return False
    return report is None or opts.max_task_bytes is not None or largest_task(graph)[0] > budget


def min_feasible_budget(graph: TaskGraph, order: list[int], device_of: list[int], opts: "PlanOptions", lo: int, hi: int,
                        progress: Callable[[str], None] | None = None, floor: Floor | None = None) -> int:
    """Smallest budget that plans (:func:`min_feasible`'s budget)."""
    return min_feasible(graph, order, device_of, opts, lo, hi, progress, floor).budget


def min_feasible(graph: TaskGraph, order: list[int], device_of: list[int], opts: "PlanOptions", lo: int, hi: int,
                 progress: Callable[[str], None] | None = None, floor: Floor | None = None) -> MinFound:
    """Smallest budget that plans (see the module docstring); ``lo``: the untiled lower bound, ``hi``: the no-offload peak.

    Each tiled probe is the planner's own :func:`~turnipc.planner.plan_tiled`
    (one task-size limit, fewer tightening tries), whose first tries the
    final plan repeats exactly, so the answer always plans. A budget probed
    once is never probed again, none is probed below the floor (so CP-SAT,
    with ``--solver cpsat``, never starts on a budget known to be infeasible),
    and the search resolves budgets to 1/:data:`RESOLUTION` of ``hi``.

    Probes plan without hoisting reloads into the layout's holes (``defer_hoist``: it never
    decides whether a budget fits, and was over half of a probe on light_inception_v2); the
    probe's plan at the smallest budget found is kept when it is the final plan
    (:func:`probe_is_final`).
    """
    from .planner import MIN_SEARCH_SHARES, MIN_SEARCH_TRIES, plan_residency, plan_tiled

    full = dataclasses.replace(opts, max_tries=MIN_SEARCH_TRIES)
    tol = max(hi // RESOLUTION, 4096)

    def ok_untiled(b: int) -> bool:
        try:
            plan_residency(graph, order, device_of, b, opts, defer_hoist=True)
            return True
        except BudgetError:
            return False

    cache: dict[int, bool] = {}
    kept: list[MinFound] = []  # the probe plan at the smallest budget that planned, when it is final
    proof = (floor or tiling_floor(graph, opts.tiling)).bytes

    def ok(b: int) -> bool:
        if b not in cache and b < proof:  # proven infeasible: no plan is made
            cache[b] = False
            if progress:
                progress(f"min budget: {b} B is below the floor ({proof} B)")
        if b not in cache:
            try:
                found = plan_tiled(graph, order, device_of, b, full, shares=MIN_SEARCH_SHARES, defer_hoist=True)
                cache[b] = True
                if not kept or b < kept[0].budget:
                    kept[:] = [MinFound(b, found if probe_is_final(graph, b, opts, found[2]) else None)]
            except BudgetError:
                cache[b] = False
            if progress:
                progress(f"min budget: {b} B {'plans' if cache[b] else 'does not plan'}")
        return cache[b]

    best = lo if ok_untiled(lo) else _bisect(ok_untiled, lo, hi, tol)
    if not opts.min_search_tiled:
        return MinFound(best)
    cache[best] = True
    # the grid of budgets walked stops at the floor of the blocks alone, as it did before the floor counted whole
    # inputs: the same budgets are probed, so the same smallest budget is found (a grid clamped to the higher floor
    # moves every later midpoint: light_densenet121 2,204,331 instead of 2,162,999); the higher floor answers the
    # probes below it without planning
    grid = tiling_floor(graph, opts.tiling, whole_inputs=False)
    best = walk_down(ok, best, max(grid.bytes, 4096, hi // 1024), tol)
    return kept[0] if kept and kept[0].budget == best else MinFound(best)


def refusal(budget: int, floor: Floor, least: int | None, no_offload_peak: int) -> str:
    """The message for a refused budget: the smallest budget known to plan (or that it is not known) and the floor task."""
    why = f"no budget below {floor.bytes} bytes can plan ({floor.describe()})"
    if least is None and budget < floor.bytes:
        return (f"--gpu-mem {budget} bytes is below the floor of this model: {why}; the smallest feasible budget is at "
                f"least {floor.bytes} bytes: try `--gpu-mem min` to find it")
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
