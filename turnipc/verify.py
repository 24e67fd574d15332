"""`turnipc verify`: an independent static checker for plan files.

It reads only the plan (never the planner's data structures) and proves it
safe: within budget, every location in bounds and aligned, every node on a
device the plan has, every two conflicting accesses ordered by a dependency
path, and every read sees its producer's bytes. The checks themselves live in
the runtime (:mod:`turnip.plancheck`), which runs the same ones before the
first node of every run; this module keeps the compiler's API
(:func:`verify_plan`, :class:`VerifyError`, :class:`VerifyReport`).
"""

from __future__ import annotations

from turnip.plan import Plan
from turnip.plancheck import PLACED, CheckReport, PlanCheckError, topological_order

__all__ = ["PLACED", "VerifyError", "VerifyReport", "topological_order", "verify_plan"]

#: The first violation found, as a one-line message.
VerifyError = PlanCheckError
VerifyReport = CheckReport


def verify_plan(plan: Plan) -> VerifyReport:
    """Prove ``plan`` safe (every check of :func:`turnip.plancheck.check_plan`, data replay included)."""
    from turnip.plancheck import check_plan

    return check_plan(plan, data=True)
