"""One place for the CP-SAT solver parameters every turnipc model uses.

WHY: plans must be byte-identical on any machine, so CP-SAT may only stop on
deterministic counters (deterministic time, conflicts), never on wall-clock
time, and its parallel portfolio must be the interleaved (deterministic) one.
The offload schedule (turnipc/offload.py) and the layout engine
(turnipc/layout/cpsat.py) both build their solver here so the two cannot drift.
"""

from __future__ import annotations


def deterministic_solver(effort: float, seed: int = 0, num_workers: int = 1,
                         max_conflicts: int | None = None, log: bool = False):
    """A CpSolver bounded by ``effort`` deterministic-time units (and ``max_conflicts``).

    ``num_workers > 1`` turns on CP-SAT's interleaved search, which keeps several
    workers deterministic; no wall-clock limit is ever set.
    """
    from ortools.sat.python import cp_model  # imported on use: ortools is slow to import

    solver = cp_model.CpSolver()
    prm = solver.parameters
    prm.max_deterministic_time = max(0.01, effort)
    if max_conflicts is not None:
        prm.max_number_of_conflicts = max_conflicts
    prm.random_seed = seed
    prm.num_workers = num_workers
    if num_workers > 1:
        prm.interleave_search = True
    if log:
        prm.log_search_progress = True
    return solver
