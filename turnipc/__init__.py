"""turnipc: the Turnip ahead-of-time compiler (ONNX -> TASKGRAPH -> MEMGRAPH plan).

    >>> import turnipc
    >>> plan = turnipc.plan("model.onnx", gpu_mem="25%", dims={"batch": 2, "seq": 16})
    >>> plan.save("model.plan")

Public names are listed in ``__all__`` and imported lazily (so ``turnipc
--help`` stays fast); every other module is internal.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:  # pragma: no cover
    from turnip.plan import Plan

    from .api import plan
    from .errors import TurnipError

__all__ = ["Plan", "TurnipError", "__version__", "plan"]


def __getattr__(name: str) -> Any:
    import importlib

    if name == "plan":
        value = importlib.import_module(".api", __name__).plan
    elif name == "TurnipError":
        value = importlib.import_module(".errors", __name__).TurnipError
    elif name == "Plan":
        value = importlib.import_module("turnip.plan").Plan
    else:
        raise AttributeError(f"module 'turnipc' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
