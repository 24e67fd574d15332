"""turnip: the Turnip runtime. Loads a MEMGRAPH plan once and runs it many times.

    >>> import turnip
    >>> with turnip.Session("model.plan") as session:
    ...     outputs = session.run({"input_ids": ids})

Public names are listed in ``__all__`` and imported lazily (so ``turnip-run
--help`` stays fast); every other module is internal.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:  # pragma: no cover
    from .executor import TurnipError
    from .plan import Plan, PlanFormatError
    from .run import RunResult, RunStats, run_plan
    from .session import Session, TensorSpec, load_plan

__all__ = [
    "Plan",
    "PlanFormatError",
    "RunResult",
    "RunStats",
    "Session",
    "TensorSpec",
    "TurnipError",
    "__version__",
    "load_plan",
    "run_plan",
]

_WHERE = {
    "Plan": "plan",
    "PlanFormatError": "plan",
    "RunResult": "run",
    "RunStats": "run",
    "run_plan": "run",
    "Session": "session",
    "TensorSpec": "session",
    "load_plan": "session",
    "TurnipError": "executor",
}


def __getattr__(name: str) -> Any:
    mod = _WHERE.get(name)
    if mod is None:
        raise AttributeError(f"module 'turnip' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{mod}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
