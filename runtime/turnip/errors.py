"""The runtime's user-facing errors: each carries a one-line message naming the problem and the fix.

They live apart from the executor so that every runtime module (the plan
graph, memories, weights, backends) can raise them without importing the
executor.
"""

from __future__ import annotations


class TurnipError(Exception):
    """A user-facing runtime error: one line naming the problem and the fix."""

    exit_code = 2


class PlanError(TurnipError):
    """The plan is inconsistent (bad ids, cycles, out-of-bounds locations)."""


class ExecutionError(TurnipError):
    """A node failed while the plan ran."""

    def __init__(self, message: str, node_id: int | None = None) -> None:
        super().__init__(message)
        self.node_id = node_id
