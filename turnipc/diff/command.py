"""The `turnipc diff` command: read two plans leniently, compare, print, exit with the verdict."""

from __future__ import annotations

import json
import sys
from typing import Any

import click
from turnip.cli_errors import json_option

from .compare import EXIT_UNREADABLE, diff_plans
from .metrics import Threshold, parse_threshold
from .reading import UnreadablePlan, read_plan_lenient
from .render import render_markdown, render_text


def _threshold_option(name: str, example: str, what: str):
    def cb(ctx: click.Context, param: click.Parameter, value: str | None) -> Threshold | None:
        if value is None:
            return None
        try:
            return parse_threshold(name, value)
        except ValueError as e:
            raise click.BadParameter(str(e)) from None

    return click.option(f"--{name}", metavar="PCT|AMOUNT", default=None, callback=cb,
                        help=f"Fail (exit 2) if {what} grows by more than this: a percentage of the old value, or {example}.")


class _DiffCommand(click.Command):
    """Usage errors exit 3 (bad input), so that exit 2 always means a threshold was crossed."""

    #: read by the group's last-resort handler (turnip.cli_errors): any error of diff exits 3
    bad_input_exit_code: int = EXIT_UNREADABLE

    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        try:
            return super().make_context(*args, **kwargs)
        except click.UsageError as e:
            e.exit_code = EXIT_UNREADABLE  # type: ignore[misc]  # click reads it per instance; the class default is 2
            raise


def _device_cb(ctx: click.Context, param: click.Parameter, value: str) -> str | None:
    if value.lower() == "none":
        return None
    try:
        from ..simulate.profiles import get_profile, profile_names
    except Exception:
        return value  # no simulator: the makespan line says n/a
    try:
        get_profile(value)
    except Exception:
        raise click.BadParameter(f"unknown device profile {value!r}; known: {', '.join(profile_names())}, or 'none'") from None
    return value


@click.command("diff", cls=_DiffCommand, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("old_path", metavar="OLD", type=click.Path(dir_okay=False))
@click.argument("new_path", metavar="NEW", type=click.Path(dir_okay=False))
@_threshold_option("max-peak-increase", "bytes (64M)", "the peak GPU arena")
@_threshold_option("max-transfer-increase", "bytes (1G)", "offload + reload + move bytes")
@_threshold_option("max-makespan-increase", "a time (20ms)", "the simulated makespan")
@click.option("--device", default="h100", show_default=True, metavar="PROFILE", callback=_device_cb,
              help="Simulator device profile for the makespan line; 'none' to skip the simulation.")
@json_option("Print one JSON object (keys below).")
@click.option("--markdown", "as_markdown", is_flag=True, help="Print a GitHub-flavoured Markdown report (for a PR comment).")
@click.option("--top", default=10, show_default=True, type=click.IntRange(0), help="Tensors listed per category (text/Markdown).")
def diff_cmd(old_path: str, new_path: str, max_peak_increase: Threshold | None, max_transfer_increase: Threshold | None,
             max_makespan_increase: Threshold | None, device: str | None, as_json: bool, as_markdown: bool, top: int) -> None:
    """Compare two plans of a model semantically: peak, budget, bounds, bytes moved, node counts, simulated makespan, and tensors
    added, removed, resized, newly offloaded or reloaded (largest first).

    \b
    Exit codes:
      0  no change (the plans are semantically identical)
      1  changes, all within the thresholds given (none given: any change)
      2  a threshold was crossed
      3  an input is unreadable (missing file, not a plan, truncated),
         or the command line is wrong

    \b
    Thresholds are off unless given; a percentage is relative to OLD:
      --max-peak-increase 5%        or an absolute amount: 64M
      --max-transfer-increase 10%   or 1G
      --max-makespan-increase 5%    or 20ms

    \b
    JSON (--json): {"changed", "exit_code", "metrics": {name: {old, new, delta, pct}},
      "tensors": {"added", "removed", "resized", "newly_offloaded", "no_longer_offloaded",
      "newly_reloaded", "no_longer_reloaded", "kind_changed"}, "thresholds": [{name, limit, value, crossed}],
      "notes", "not_compared", "model", "options"}

    \b
    CI example (fail the job only when a threshold is crossed):
      turnipc plan model.onnx --gpu-mem 25% -o new.plan
      turnipc diff plans/golden.plan new.plan --max-peak-increase 5% --markdown > diff.md
      rc=$?; [ $rc -le 1 ] || exit $rc
    """
    if as_json and as_markdown:
        raise click.UsageError("--json and --markdown are exclusive")
    plans = []
    for p in (old_path, new_path):
        try:
            plans.append(read_plan_lenient(p))
        except UnreadablePlan as e:
            if as_json:
                click.echo(json.dumps({"changed": None, "exit_code": EXIT_UNREADABLE, "error": str(e)}))
            click.echo(f"error: {e}", err=True)
            sys.exit(EXIT_UNREADABLE)
    thresholds = [t for t in (max_peak_increase, max_transfer_increase, max_makespan_increase) if t is not None]
    d = diff_plans(plans[0], plans[1], device=device, thresholds=thresholds)
    if as_json:
        click.echo(json.dumps(d.to_obj(), indent=2))
    elif as_markdown:
        click.echo(render_markdown(d, old_path, new_path, top), nl=False)
    else:
        render_text(d, old_path, new_path, top)
    sys.exit(d.exit_code)
