"""`turnipc`: the compiler's command line.

Exit codes: 0 success; 1 a check failed (verify found a violation); 2 bad
input (unreadable model or plan, unbound dims, budget too small). `turnipc
diff` has its own codes for CI (0 same, 1 changed, 2 threshold crossed, 3
unreadable). Each command's --help lists its own.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import NoReturn

import click

from . import __version__
from .errors import TurnipError
from .plot import inspect_plot_options, write_plots


def fail(msg: str, code: int = 2) -> NoReturn:
    click.echo(f"error: {msg}", err=True)
    sys.exit(code)


def _progress(quiet: bool):
    if quiet:
        return None
    from rich.console import Console

    console = Console(stderr=True)

    def say(msg: str) -> None:
        console.log(msg)

    return say


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="turnipc")
def main() -> None:
    """Turnip compiler: plan ONNX models that do not fit in GPU memory.

    \b
    Examples:
      turnipc plan model.onnx --gpu-mem 24G -o plan.msgpack --dim batch=8 --dim seq=512
      turnipc plan model.onnx --gpu-mem 25% -o plan.msgpack --input-shape input_ids:8x512
      turnipc verify plan.msgpack
      turnipc inspect plan.msgpack --json
      turnipc layout buffers.csv --solver cpsat --capacity 1048576
    """


@main.command("plan")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--gpu-mem", "gpu_mem", required=True,
              help="GPU memory budget per device: bytes, 24G, 512M, 300K, a fraction of the no-offload peak (25%), or 'min'.")
@click.option("-o", "--output", "output", required=True, type=click.Path(dir_okay=False), help="Plan file to write (msgpack).")
@click.option("--dim", "dims", multiple=True, metavar="NAME=N", help="Bind a dynamic dimension (repeatable).")
@click.option("--input-shape", "input_shapes", multiple=True, metavar="NAME:AxBxC", help="Bind a graph input's whole shape (polygraphy style).")
@click.option("--gpus", default=1, show_default=True, type=click.IntRange(1, 64), help="Number of GPUs to plan for.")
@click.option("--solver", type=click.Choice(["greedy", "cpsat"]), default="greedy", show_default=True, help="Arena layout engine.")
@click.option("--time-budget", "effort", default=10.0, show_default=True, type=float,
              help="CP-SAT effort in deterministic time units (about seconds on a typical core; results do not depend on the machine).")
@click.option("--no-prefetch", is_flag=True, help="Reload just in time instead of as early as memory allows.")
@click.option("--max-task-bytes", "max_task_bytes", default=None, metavar="SIZE",
              help="Split every task needing more than SIZE (bytes, 4M, ...) into blocks; default: tile only when the budget needs it.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan summary as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="No progress messages.")
def plan_cmd(model: str, gpu_mem: str, output: str, dims: tuple[str, ...], input_shapes: tuple[str, ...], gpus: int,
             solver: str, effort: float, no_prefetch: bool, max_task_bytes: str | None, as_json: bool, quiet: bool) -> None:
    """Plan MODEL (ONNX) for a GPU memory budget and write the MEMGRAPH plan file.

    \b
    Exit codes: 0 planned; 2 bad input (unreadable model, unbound dims,
    unsupported ops, budget below the smallest feasible one). On error no
    output file is written.

    \b
    Examples:
      turnipc plan gpt2.onnx --gpu-mem 2G --dim batch=4 --dim seq=512 -o gpt2.plan
      turnipc plan llama.onnx --gpu-mem 25% --gpus 2 -o llama.plan
      turnipc plan bert.onnx --gpu-mem min --input-shape input_ids:1x128 -o bert.plan
    """
    from turnip.plan import write_plan

    from .dims import parse_dim_options
    from .importer import import_model
    from .planner import PlanOptions, build_plan
    from .summary import summary_obj
    from .units import format_bytes, parse_budget

    say = _progress(quiet or as_json)
    try:
        budget = parse_budget(gpu_mem)
    except ValueError as e:
        fail(f"--gpu-mem: {e}")
    task_limit = None
    if max_task_bytes is not None:
        from .units import parse_size

        try:
            task_limit = parse_size(max_task_bytes)
        except ValueError as e:
            fail(f"--max-task-bytes: {e}")
    try:
        dim_map, shape_map = parse_dim_options(list(dims), list(input_shapes))
        t0 = time.perf_counter()
        graph = import_model(model, dim_map, shape_map)
        if say:
            say(f"imported {model}: {len(graph.tasks)} tasks, {len(graph.values)} values in {time.perf_counter() - t0:.2f}s")
        opts = PlanOptions(budget=budget, gpus=gpus, solver=solver, effort=effort, prefetch=not no_prefetch,
                           max_task_bytes=task_limit, min_search_tiled=True)
        plan = build_plan(graph, opts, plan_dir=os.path.dirname(os.path.abspath(output)), progress=say)
    except TurnipError as e:
        fail(str(e), e.exit_code)
    except ValueError as e:
        fail(str(e))
    try:
        write_plan(plan, output)
    except OSError as e:
        fail(f"cannot write {output}: {e.strerror}")
    if as_json:
        click.echo(json.dumps(summary_obj(plan), indent=2))
    elif not quiet:
        s = plan.stats
        click.echo(
            f"wrote {output}: peak {format_bytes(s['peak_bytes'])} of {format_bytes(s['budget_bytes'])} budget, "
            f"offload {format_bytes(s['offload_bytes'])}, reload {format_bytes(s['reload_bytes'])}, "
            f"{sum(s['nodes'].values())} nodes"
        )


@main.command("verify")
@click.argument("plan_path", metavar="PLAN", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def verify_cmd(plan_path: str, as_json: bool) -> None:
    """Prove PLAN safe: within budget, every conflicting pair ordered, every read sees its producer's data.

    \b
    Exit codes: 0 verified; 1 a violation (the first one is named); 2 unreadable plan.
    """
    from turnip.plan import PlanFormatError, read_plan

    from .verify import VerifyError, verify_plan

    try:
        plan = read_plan(plan_path)
    except PlanFormatError as e:
        fail(str(e))
    try:
        rep = verify_plan(plan)
    except VerifyError as e:
        if as_json:
            click.echo(json.dumps({"ok": False, "violation": str(e)}))
            sys.exit(1)
        fail(f"{plan_path}: {e}", 1)
    if as_json:
        click.echo(json.dumps({"ok": True, "nodes": rep.nodes, "accesses": rep.accesses,
                               "ordered_pairs_checked": rep.ordered_pairs_checked, "reads_checked": rep.reads_checked}))
    else:
        click.echo(f"{plan_path}: OK ({rep.nodes} nodes, {rep.ordered_pairs_checked} conflicting pairs ordered, "
                   f"{rep.reads_checked} reads checked; {'; '.join(rep.memories)})")


@main.command("inspect")
@click.argument("plan_path", metavar="PLAN", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable summary (keys documented in docs/cli.md).")
@click.option("--top", default=10, show_default=True, help="How many of the largest tensors to list.")
@inspect_plot_options
def inspect_cmd(plan_path: str, as_json: bool, top: int, plot_png: str | None, plot_html: str | None) -> None:
    """Summarize PLAN: budget, peak, lower bound, bytes moved, largest tensors, node counts.

    \b
    Examples:
      turnipc inspect plan.msgpack
      turnipc inspect plan.msgpack --json | jq .peak_bytes
      turnipc inspect plan.msgpack --plot memory.png --html memory.html
    """
    from turnip.plan import PlanFormatError, read_plan

    from .summary import summary_obj, summary_text

    try:
        plan = read_plan(plan_path)
    except PlanFormatError as e:
        fail(str(e))
    if plot_png or plot_html:
        write_plots(plan, png=plot_png, html=plot_html)
    if as_json:
        click.echo(json.dumps(summary_obj(plan, top), indent=2))
    else:
        click.echo(summary_text(plan, top))


def _attach_commands() -> None:
    """Commands that live in their own modules (layout engine, simulator, diff)."""
    from .diff import diff_cmd
    from .layout.cli import layout as layout_cmd
    from .simulate.cli import simulate_cmd
    from .timeline import timeline_cmd

    main.add_command(layout_cmd, "layout")
    main.add_command(timeline_cmd, "timeline")
    main.add_command(simulate_cmd, "simulate")
    main.add_command(diff_cmd, "diff")


_attach_commands()

if __name__ == "__main__":  # pragma: no cover
    main()
