"""Every error Turnip reports to users, and the exit code each one gets.

One root, :class:`TurnipError`, for both programs (the compiler's errors in
``turnipc.errors`` derive from it too), so a command line needs one ``except``
clause to turn any expected failure into its one-line message. Anything else
that escapes is a bug; the command-line handler (:mod:`turnip.cli_errors`)
reports it as an internal error with its own exit code.

Why fixed exit codes: CI scripts branch on them. ``1`` already means "a
finding" (``verify`` found a violation, ``--check`` failed, ``diff`` saw a
change), so no error may exit 1, or a crash would read as a finding (a
crashing ``diff`` would pass ``[ $rc -le 1 ]``).
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """The exit status of ``turnipc`` and ``turnip-run`` (docs/cli.md lists it)."""

    OK = 0  #: success (diff: no change)
    FINDING = 1  #: verify found a violation, --check failed, diff saw changes within thresholds, layout does not fit
    BAD_INPUT = 2  #: bad input: options, unreadable/malformed/unsafe plan, model, weights, inputs; a node failed (diff: threshold crossed)
    DIFF_ERROR = 3  #: turnipc diff only: any error (2 is its "threshold crossed")
    OUT_OF_MEMORY = 4  #: a memory the plan needs cannot be allocated here, or the problem is too large to plan
    CANNOT_WRITE = 5  #: an output file cannot be written (disk full, not a regular file, missing folder)
    MISSING_DEPENDENCY = 6  #: an optional package the command needs is not installed (the input is fine: install it)
    INTERNAL = 70  #: an unexpected exception: a bug in Turnip (run with -v for the traceback and report it)
    INTERRUPTED = 130  #: Ctrl-C / SIGINT


#: One line per exit code, for docs/cli.md and --help epilogs.
EXIT_CODE_MEANINGS: dict[ExitCode, str] = {
    ExitCode.OK: "success (`diff`: no change; `run`: ran, and `--check` passed)",
    ExitCode.FINDING: "a finding: `verify` found a violation, `run --check` failed, `diff` saw changes within its thresholds, "
    "`layout` does not fit",
    ExitCode.BAD_INPUT: "bad input: command line, unreadable, malformed or unsafe plan, missing or changed model or weights, "
    "wrong inputs, a node failed (`diff`: a threshold was crossed)",
    ExitCode.DIFF_ERROR: "`diff` only: any error (unreadable input, bad command line)",
    ExitCode.OUT_OF_MEMORY: "out of memory: a memory the plan needs cannot be allocated here, or the problem is too large to plan",
    ExitCode.CANNOT_WRITE: "an output file cannot be written (disk full, not a regular file, missing folder); nothing half-written is left",
    ExitCode.MISSING_DEPENDENCY: "an optional package the command needs is not installed (onnxruntime, ortools, matplotlib); "
    "the message gives the pip command",
    ExitCode.INTERNAL: "internal error: an unexpected exception, a bug (rerun with `-v` for the traceback and report it)",
    ExitCode.INTERRUPTED: "interrupted (Ctrl-C)",
}


class TurnipError(Exception):
    """A user-facing error: one line naming the problem and the fix."""

    exit_code: int = ExitCode.BAD_INPUT


class PlanFormatError(TurnipError, ValueError):
    """The bytes are not a plan this runtime can read (or a field has the wrong type or range)."""


class PlanError(TurnipError):
    """The plan is inconsistent (bad ids, cycles, out-of-bounds locations)."""


class PlanCheckError(PlanError):
    """The plan is unsafe: a check of :mod:`turnip.plancheck` failed (the first violation, one line).

    ``turnipc verify`` reports it as a finding (exit 1); ``turnip-run`` refuses
    to run the plan (exit 2).
    """


class ModelError(TurnipError):
    """The model file is missing, changed since planning, or lacks a weight."""


class WeightsError(ModelError):
    """An external weight file escapes the model's folder, is missing, or changed since planning."""


class InputError(TurnipError, ValueError):
    """The user's feeds do not match the plan's inputs."""


class ExecutionError(TurnipError):
    """A node failed while the plan ran."""

    def __init__(self, message: str, node_id: int | None = None) -> None:
        super().__init__(message)
        self.node_id = node_id


class OutOfMemoryError(TurnipError, MemoryError):
    """A memory cannot be allocated (names the bytes), or a problem is too large to hold."""

    exit_code = ExitCode.OUT_OF_MEMORY


class OutputError(TurnipError):
    """An output file (plan, outputs, trace) cannot be written; nothing half-written is left."""

    exit_code = ExitCode.CANNOT_WRITE


class MissingDependencyError(TurnipError):
    """An optional package this command needs is not installed; nothing is wrong with the input."""

    exit_code = ExitCode.MISSING_DEPENDENCY


def one_line(msg: object) -> str:
    """A message as one line (newlines folded), as every error is printed."""
    return " ".join(str(msg).split())
