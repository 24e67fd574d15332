"""Errors the compiler reports to users.

Each carries a one-line message that names the problem and the fix; the CLI
prints it and exits with ``exit_code`` (:class:`turnip.errors.ExitCode`).

There is one exception root for both programs, :class:`turnip.errors.TurnipError`
(re-exported here): the compiler's errors derive from it, so the command
line turns any of them, and any runtime error met while planning (an
unreadable plan, say), into its one line with one ``except`` clause.
"""

from __future__ import annotations

from turnip.errors import ExitCode, MissingDependencyError, OutOfMemoryError, OutputError, PlanFormatError, TurnipError

__all__ = [
    "BudgetError",
    "CompileError",
    "ExitCode",
    "MissingDependencyError",
    "ModelError",
    "ModelImportError",
    "OutOfMemoryError",
    "OutputError",
    "PlanFormatError",
    "ProblemTooLargeError",
    "TurnipError",
    "UnboundDimError",
    "require",
]


class CompileError(TurnipError):
    """Root of the compiler's own errors (bad input to planning)."""


class ModelImportError(CompileError):
    """The model cannot be read or imported (unreadable, truncated, unsupported ops)."""


#: The compiler's name for it before the errors were unified (the runtime's
#: ``turnip.errors.ModelError`` is about a model that changed since planning).
ModelError = ModelImportError


class UnboundDimError(ModelImportError):
    """A dynamic dimension has no value: bind it with --dim NAME=N."""


class BudgetError(CompileError):
    """The memory budget is below the smallest feasible one."""


class ProblemTooLargeError(CompileError, OutOfMemoryError):
    """The bound shapes make tensors too large to plan on any machine (checked before building anything big)."""

    exit_code = ExitCode.OUT_OF_MEMORY


def require(module: str, extra: str, what: str) -> None:
    """Raise MissingDependencyError naming the pip command when ``module`` cannot be imported."""
    import importlib

    try:
        importlib.import_module(module)
    except ImportError:
        raise MissingDependencyError(
            f"{what} needs {module}, which is not installed; pip install 'turnip[{extra}]' (or pip install {module})"
        ) from None
