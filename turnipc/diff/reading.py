"""Plans read for comparison: any format version, damaged sections tolerated.

The decoding lives in ``turnip.plan`` (the one definition of the format);
this module only gives its errors the diff's own type, which the command
maps to exit 3.
"""

from __future__ import annotations

from turnip.plan import Plan, PlanFormatError
from turnip.plan import read_plan_lenient as _read_plan_lenient


class UnreadablePlan(PlanFormatError):
    """The file is missing, is not a plan, or is truncated (exit 3)."""


def read_plan_lenient(path: str) -> Plan:
    """:func:`turnip.plan.read_plan_lenient`, raising :class:`UnreadablePlan` for a file that is not a plan."""
    try:
        return _read_plan_lenient(path)
    except PlanFormatError as e:
        raise UnreadablePlan(str(e)) from e
