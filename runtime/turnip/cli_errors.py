"""Error plumbing shared by both command lines (``turnipc`` and ``turnip-run``).

Every failure ends the same way: one line ``error: ...`` on stderr (and, for a
command run with ``--json``, ``{"error": ...}`` on stdout) and the exit code of
:class:`turnip.errors.ExitCode`. :class:`ErrorHandlingCommand` /
:class:`ErrorHandlingGroup` put a last-resort handler around a command:

* a :class:`~turnip.errors.TurnipError`: its message, its ``exit_code``;
* ``MemoryError``: "out of memory", exit 4;
* an ``OSError``: its file and reason (a full disk: exit 5);
* Ctrl-C: exit 130; SIGTERM (turned into :class:`Terminated`, so ``finally``
  blocks remove temporary files): exit 143;
* anything else is a bug: "internal error", a hint to report it, exit 70.

``-v`` (:func:`verbose_option`) prints the traceback too.
"""

from __future__ import annotations

import contextlib
import errno
import json
import signal
import sys
import traceback
from typing import Any, Callable, Iterator, NoReturn

import click

from .errors import ExitCode, TurnipError, one_line

_VERBOSE = "turnip.verbose"
_JSON = "turnip.json"
_BAD_INPUT_CODE = "turnip.bad_input_code"

#: Exit status after SIGTERM (128 + 15, the shell's convention).
EXIT_TERMINATED = 143


class CommandFailure(TurnipError):
    """An error a command raises through :func:`fail` (message and exit code given there)."""

    def __init__(self, message: str, exit_code: int = ExitCode.BAD_INPUT) -> None:
        super().__init__(message)
        self.exit_code = int(exit_code)


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so that cleanup (``finally``) runs before the process exits."""


def fail(msg: str, code: int = ExitCode.BAD_INPUT) -> NoReturn:
    """End the command with ``error: msg`` and exit ``code`` (through the handler, so --json and -v apply)."""
    raise CommandFailure(msg, code)


def _set_meta(key: str, value: Any) -> None:
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        ctx.meta[key] = value


def mark_json(enabled: bool = True) -> None:
    """The running command prints JSON: errors also go to stdout as ``{"error": ...}``."""
    _set_meta(_JSON, bool(enabled))


def json_option(help: str) -> Callable[[Any], Any]:
    """``--json`` (parameter ``as_json``) for every command that has it: one definition, and the one place that marks
    the command as printing JSON (:func:`mark_json`), before any other option is read, so that even an error in an
    option's value reaches stdout as ``{"error": ...}``."""

    def cb(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
        if value:
            ctx.meta[_JSON] = True
        return value

    return click.option("--json", "as_json", is_flag=True, is_eager=True, callback=cb, help=help)


def verbose_option(f: Any) -> Any:
    """``-v/--verbose``: show the traceback of an error (for bug reports)."""

    def cb(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
        if value:
            ctx.meta[_VERBOSE] = True
        return value

    return click.option("-v", "--verbose", is_flag=True, expose_value=False, callback=cb, is_eager=True,
                        help="Show the traceback of an error (attach it to a bug report).")(f)


def verbosity_options(f: Any) -> Any:
    """``-q/--quiet`` and ``-v/--verbose`` as one ``verbosity`` parameter (-1, None or 1).

    ``-v`` also shows the traceback of an error, as :func:`verbose_option` does.
    """

    def cb(ctx: click.Context, param: click.Parameter, value: int | None) -> int | None:
        if value is not None and value > 0:
            ctx.meta[_VERBOSE] = True
        return value

    f = click.option("-v", "--verbose", "verbosity", flag_value=1, type=int, callback=cb,
                     help="Also say what was loaded, planned or taken from the cache; errors show their traceback.")(f)
    return click.option("-q", "--quiet", "verbosity", flag_value=-1, type=int, callback=cb,
                        help="Only errors (and the --check verdict's exit code).")(f)


def _terminate(signum: int, frame: Any) -> None:  # pragma: no cover - exercised through a subprocess test
    raise Terminated()


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """While inside, SIGTERM raises :class:`Terminated` in the main thread (no-op elsewhere); restored after."""
    try:
        old = signal.signal(signal.SIGTERM, _terminate)
    except ValueError:  # not the main thread (e.g. inside a test runner's worker thread)
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def classify(e: BaseException, bad_input_code: int = ExitCode.BAD_INPUT) -> tuple[str, int, bool]:
    """(one-line message, exit code, is_bug) for an exception that ended a command."""
    if isinstance(e, TurnipError):
        code = int(getattr(e, "exit_code", ExitCode.BAD_INPUT))
        if code == ExitCode.BAD_INPUT:
            code = bad_input_code
        return one_line(e) or type(e).__name__, code, False
    if isinstance(e, KeyboardInterrupt):
        return "interrupted", ExitCode.INTERRUPTED, False
    if isinstance(e, Terminated):
        return "terminated (SIGTERM); temporary files removed", EXIT_TERMINATED, False
    if isinstance(e, MemoryError):
        detail = f" ({one_line(e)})" if str(e) else ""
        return (f"out of memory{detail}; use a machine with more RAM, smaller --dim values, or a smaller plan",
                ExitCode.OUT_OF_MEMORY, False)
    if isinstance(e, OSError) and e.errno is not None:
        where = f"{e.filename}: " if e.filename else ""
        if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG):
            return f"{where}{e.strerror}; free space or write elsewhere", ExitCode.CANNOT_WRITE, False
        return f"{where}{e.strerror}", bad_input_code, False
    msg = one_line(e)
    return (f"internal error: {type(e).__name__}{': ' + msg if msg else ''}; this is a bug in Turnip, "
            "please report it with the output of the same command run with -v", ExitCode.INTERNAL, True)


def report(ctx: click.Context | None, e: BaseException) -> int:
    """Print ``e`` as Turnip prints every error; return the exit code."""
    meta = ctx.meta if ctx is not None else {}
    msg, code, bug = classify(e, meta.get(_BAD_INPUT_CODE, ExitCode.BAD_INPUT))
    if meta.get(_VERBOSE):
        traceback.print_exception(type(e), e, e.__traceback__, file=sys.stderr)
    if meta.get(_JSON):
        click.echo(json.dumps({"error": msg, "exit_code": code}))
    click.echo(f"error: {msg}", err=True)
    return code


class _HandlesErrors:
    """Mixin for click commands: the last-resort handler around ``invoke``."""

    #: exit code of a bad-input error in this command (``turnipc diff`` uses 3: its 2 means "threshold crossed").
    bad_input_exit_code: int = ExitCode.BAD_INPUT

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)  # type: ignore[misc]
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException, SystemExit):
            raise
        except BaseException as e:  # noqa: BLE001 - the last resort: every error ends as one line
            code = self.bad_input_exit_code
            sub = getattr(self, "commands", {}).get(ctx.invoked_subcommand or "")
            if sub is not None:  # a group: the subcommand that failed may declare its own (diff)
                code = getattr(sub, "bad_input_exit_code", code)
            ctx.meta.setdefault(_BAD_INPUT_CODE, code)
            ctx.exit(report(ctx, e))


class ErrorHandlingCommand(_HandlesErrors, click.Command):
    """A click command whose every failure is one line and an exit code of the table."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        with sigterm_raises():
            return super().main(*args, **kwargs)


class ErrorHandlingGroup(_HandlesErrors, click.Group):
    """A click group whose subcommands' failures are one line and an exit code of the table."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        with sigterm_raises():
            return super().main(*args, **kwargs)
