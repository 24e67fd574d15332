"""``turnipc.plan``: plan a model from Python, the same plan ``turnipc plan`` writes.

    >>> import turnipc
    >>> plan = turnipc.plan("gpt2.onnx", gpu_mem="25%", dims={"batch": 2, "seq": 16})
    >>> plan.save("gpt2.plan")          # same bytes as `turnipc plan ... -o gpt2.plan`

The returned :class:`turnip.plan.Plan` names its model by absolute path until
it is saved; :meth:`~turnip.plan.Plan.save` rewrites that path relative to the
plan file's folder, as the command line does, so the plan can travel with its
model.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

from turnip.plan import Plan

if TYPE_CHECKING:  # pragma: no cover
    from .planner import PlanOptions
    from .taskgraph import TaskGraph

from .errors import TurnipError, require
from .units import Budget, parse_budgets


class PlanOptionError(TurnipError, ValueError):
    """An argument of ``turnipc.plan`` that cannot be used (bad budget, solver, ...)."""


SOLVERS = ("greedy", "search", "cpsat")


def _budgets(gpu_mem: str | int | float | Budget | Sequence[int], gpus: int) -> list[Budget]:
    if isinstance(gpu_mem, Budget):
        return [gpu_mem]
    if isinstance(gpu_mem, (list, tuple)):
        if len(gpu_mem) != gpus or not all(isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in gpu_mem):
            raise PlanOptionError(f"gpu_mem={list(gpu_mem)!r}: per-GPU budgets are one positive byte count per GPU ({gpus})")
        return [Budget(bytes=int(b)) for b in gpu_mem]
    if isinstance(gpu_mem, bool):
        raise PlanOptionError(f"gpu_mem={gpu_mem!r}: give bytes (int), a fraction of the no-offload peak (0.25) or text ('24GiB', '25%', 'min')")
    if isinstance(gpu_mem, int):
        if gpu_mem <= 0:
            raise PlanOptionError(f"gpu_mem={gpu_mem} must be a positive number of bytes")
        return [Budget(bytes=gpu_mem)]
    if isinstance(gpu_mem, float):
        if not 0 < gpu_mem:
            raise PlanOptionError(f"gpu_mem={gpu_mem} must be a positive fraction of the no-offload peak (0.25 = 25%)")
        return [Budget(fraction=gpu_mem)]
    try:
        return parse_budgets(str(gpu_mem), gpus)
    except ValueError as e:
        raise PlanOptionError(f"gpu_mem: {e}") from e


def plan_options(graph: TaskGraph, budgets: Sequence[Budget], gpus: int, solver: str = "search", effort: float = 10.0,
                 prefetch: bool = True) -> PlanOptions:
    """PlanOptions for parsed budgets: one for every GPU, or one per GPU; ``auto`` = free memory minus the reserve."""
    from .planner import PlanOptions
    from .reserve import auto_budgets

    if len(budgets) == 1 and not budgets[0].auto:
        return PlanOptions(budget=budgets[0], gpus=gpus, solver=solver, effort=effort, prefetch=prefetch)
    auto = auto_budgets(graph, gpus) if any(b.auto for b in budgets) else []
    if len(budgets) == 1:
        per_gpu = auto
    else:
        per_gpu = [auto[d] if b.auto else int(b.bytes or 0) for d, b in enumerate(budgets)]
    return PlanOptions(budget=Budget(bytes=min(per_gpu)), gpus=gpus, solver=solver, effort=effort, prefetch=prefetch,
                       budgets=tuple(per_gpu))


def plan(
    model: str | os.PathLike[str],
    gpu_mem: str | int | float | Budget | Sequence[int] = "100%",
    dims: Mapping[str, int] | None = None,
    gpus: int = 1,
    solver: str = "search",
    *,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    effort: float = 10.0,
    prefetch: bool = True,
    progress: Callable[[str], None] | None = None,
    state: Sequence[str] = (),
    auto_state: bool = True,
    fuse: bool = True,
) -> Plan:
    """Plan the ONNX ``model`` for a GPU memory budget and return the MEMGRAPH plan.

    ``gpu_mem``: per-GPU budget: bytes (int), a fraction of the no-offload
    peak (float, 0.25), a list of byte counts (one per GPU), or text as on
    the command line (``"24GiB"``, ``"25%"``, ``"min"``, ``"auto"``,
    ``"20GiB,24GiB"``). ``auto`` is each GPU's free memory minus the reserve
    the plan records for kernel temporaries and library workspaces. ``dims`` binds dynamic dimensions
    (``{"batch": 2, "seq": 16}``), ``input_shapes`` whole input shapes.
    ``gpus``: how many GPUs to plan for. ``solver``: arena layout engine,
    ``"search"`` (default: greedy, then the exact layout search), ``"greedy"`` or ``"cpsat"`` (``effort`` in deterministic solver units).
    ``progress(message)`` receives planning progress lines. ``state``: graph
    inputs that outlive a run (a KV cache; docs/generate.md), besides those
    found when ``auto_state`` (static-cache and past/present decoders).
    ``fuse``: fuse attention patterns and elementwise chains into one task
    each (as ``turnipc plan`` does unless ``--no-fuse``).

    Raises a :class:`turnipc.errors.TurnipError` subclass with a one-line
    message (unreadable model, unbound dimension, budget too small, ...).
    Deterministic: the same arguments give a byte-identical plan (``auto``
    reads this machine's free GPU memory, so it is the one exception).
    """
    from .importer import import_model
    from .planner import build_plan

    if not isinstance(gpus, int) or isinstance(gpus, bool) or not 1 <= gpus <= 64:
        raise PlanOptionError(f"gpus={gpus!r}: plan for 1 to 64 GPUs")
    budgets = _budgets(gpu_mem, gpus)
    if solver not in SOLVERS:
        raise PlanOptionError(f"solver={solver!r}: use one of {', '.join(SOLVERS)}")
    if solver == "cpsat":
        require("ortools", "compiler", "solver 'cpsat'")
    model_path = os.path.abspath(os.fspath(model))
    shapes = {k: tuple(int(d) for d in v) for k, v in (input_shapes or {}).items()}
    graph = import_model(model_path, dict(dims or {}), shapes)
    opts = plan_options(graph, budgets, gpus, solver, float(effort), prefetch)
    import dataclasses

    opts = dataclasses.replace(opts, state=tuple(state), auto_state=bool(auto_state), fuse=bool(fuse))
    return build_plan(graph, opts, plan_dir=None, progress=progress)
