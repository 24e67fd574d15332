"""Errors the compiler reports to users.

Each carries a one-line message that names the problem and the fix; the CLI
prints it and exits with ``exit_code`` (2 for bad input, by convention).
"""

from __future__ import annotations


class TurnipError(Exception):
    """A user-facing error: one line, names the problem and the fix."""

    exit_code = 2


class ModelError(TurnipError):
    """The model cannot be read or imported (unreadable, truncated, unsupported ops)."""


class UnboundDimError(ModelError):
    """A dynamic dimension has no value: bind it with --dim NAME=N."""


class BudgetError(TurnipError):
    """The memory budget is below the smallest feasible one."""


class MissingDependencyError(TurnipError):
    """An optional package the command needs is not installed (exit 3: install it; the input is fine)."""

    exit_code = 3


def require(module: str, extra: str, what: str) -> None:
    """Raise MissingDependencyError naming the pip command when ``module`` cannot be imported."""
    import importlib

    try:
        importlib.import_module(module)
    except ImportError:
        raise MissingDependencyError(
            f"{what} needs {module}, which is not installed; pip install 'turnip[{extra}]' (or pip install {module})"
        ) from None
