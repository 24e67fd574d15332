"""`turnipc`: the compiler's command line.

Exit codes: the table of :class:`turnip.errors.ExitCode` (docs/cli.md): 0
success; 1 a finding (verify found a violation); 2 bad input (unreadable
model or plan, unbound dims, budget too small); 4 too large; 5 cannot write;
70 internal error. `turnipc diff` has its own codes for CI (0 same, 1
changed, 2 threshold crossed, 3 any error). Every error is one line; the
group's handler (turnip.cli_errors) turns anything unexpected into one too.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from typing import Any

import click
from turnip.cli_errors import ErrorHandlingGroup, fail, json_option, verbose_option
from turnip.errors import ExitCode

from . import __version__
from .errors import TurnipError, require
from .plot import inspect_plot_options, write_plots

__all__ = ["fail", "main"]


def _progress(quiet: bool):
    if quiet:
        return None
    from rich.console import Console

    console = Console(stderr=True)

    def say(msg: str) -> None:
        console.log(msg)

    return say


@click.group(cls=ErrorHandlingGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="turnipc")
@verbose_option
def main() -> None:
    """Turnip compiler: plan ONNX models that do not fit in GPU memory.

    \b
    Examples:
      turnipc plan model.onnx --gpu-mem 24G -o plan.msgpack --dim batch=8 --dim seq=512
      turnipc plan model.onnx --gpu-mem 25% -o plan.msgpack --input-shape input_ids:8x512
      turnipc verify plan.msgpack
      turnipc inspect plan.msgpack --json
      turnipc layout buffers.csv --solver cpsat --capacity 1048576
      turnipc -v verify plan.msgpack     (-v: the traceback of an error, for bug reports)
    """


@main.command("plan")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--gpu-mem", "gpu_mem", required=True,
              help="GPU memory budget per device: bytes, 24GiB (2^30) or 24G (10^9), 512MiB, a fraction of the no-offload peak (25%), "
                   "'min', 'auto' (each GPU's free memory minus the plan's reserve), or one per GPU: 20GiB,24GiB.")
@click.option("-o", "--output", "output", required=True, type=click.Path(dir_okay=False), help="Plan file to write (msgpack).")
@click.option("--dim", "dims", multiple=True, metavar="NAME=N", help="Bind a dynamic dimension (repeatable).")
@click.option("--input-shape", "input_shapes", multiple=True, metavar="NAME:AxBxC", help="Bind a graph input's whole shape (polygraphy style).")
@click.option("--gpus", default=1, show_default=True, type=click.IntRange(1, 64), help="Number of GPUs to plan for.")
@click.option("--solver", type=click.Choice(["greedy", "search", "cpsat"]), default="search", show_default=True,
              help="Arena layout engine: greedy (best fit), search (greedy, then the exact search toward max-live, bounded effort), cpsat (also CP-SAT offload schedule and layout).")
@click.option("--effort", "effort", default=10.0, show_default=True, type=click.FloatRange(min=0),
              help="CP-SAT effort per solver call, in deterministic units (results do not depend on the machine). "
                   "One unit is roughly one second of one core; --solver cpsat makes up to 6 calls, so expect at most "
                   "about 6 x EFFORT seconds of wall clock (small models stop early: GPT-2 fixture, 7 s at 2 or 10).")
@click.option("--time-budget", "time_budget", type=click.FloatRange(min=0), hidden=True, help="Old name of --effort.")
@click.option("--no-prefetch", is_flag=True, help="Reload just in time instead of as early as memory allows.")
@click.option("--max-task-bytes", "max_task_bytes", default=None, metavar="SIZE",
              help="Split every task needing more than SIZE (bytes, 4M, ...) into blocks; default: tile only when the budget needs it.")
@click.option("--state", "state", multiple=True, metavar="NAME",
              help="Mark graph input NAME as state that outlives a run (a KV cache: home in host memory, kept between runs). "
                   "Static-cache (ScatterND) and past/present caches are marked without it (repeatable).")
@click.option("--no-auto-state", is_flag=True, help="Mark only the --state inputs, not the KV caches found in the graph.")
@click.option("--fuse/--no-fuse", default=True, show_default=True,
              help="Fuse attention (scores and softmax in one planned buffer) and single-consumer elementwise chains "
                   "into one task each, evaluated in place; --no-fuse plans every ONNX node as its own task.")
@click.option("--decode", "decode_prompt", type=click.IntRange(min=1), metavar="PROMPT_LEN", default=None,
              help="MODEL is a KV-cache decoder: write its decode plan (seq 1) to -o and its prompt plan (seq PROMPT_LEN) "
                   "beside it as NAME.prefill.plan (batch: --dim, default 1).")
@click.option("--prefill-model", "prefill_model", type=click.Path(dir_okay=False), default=None,
              help="With --decode and a past/present decoder: its prompt graph (optimum's decoder_model.onnx).")
@click.option("--new-tokens", "new_tokens", type=click.IntRange(min=1), default=32, show_default=True, metavar="N",
              help="With --decode and a past/present decoder: also write the past-length bucket plans covering N new tokens "
                   "beside -o as NAME.bucketB.plan (B: powers of two from 8).")
@click.option("--past-buckets", "past_buckets", default=None, metavar="LIST",
              help="With --decode and a past/present decoder: the bucket capacities to write instead, e.g. 16,32,64.")
@json_option("Print the plan summary as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="No progress messages.")
@click.option("-v", "--verbose", is_flag=True, help="Also print the resolved options: budget per GPU, reserve, dims.")
def plan_cmd(model: str, gpu_mem: str, output: str, dims: tuple[str, ...], input_shapes: tuple[str, ...], gpus: int,
             solver: str, effort: float, time_budget: float | None, no_prefetch: bool, max_task_bytes: str | None, as_json: bool,
             quiet: bool, verbose: bool = False, state: tuple[str, ...] = (), no_auto_state: bool = False,
             decode_prompt: int | None = None, prefill_model: str | None = None, fuse: bool = True, new_tokens: int = 32,
             past_buckets: str | None = None) -> None:
    """Plan MODEL (ONNX) for a GPU memory budget and write the MEMGRAPH plan file.

    \b
    Exit codes: 0 planned; 2 bad input (unreadable model, unbound dims,
    unsupported ops, budget below the smallest feasible one); 3 a package the
    options need is missing (ortools for --solver cpsat: pip install
    'turnip[compiler]'). On error no output file is written.

    \b
    Examples:
      turnipc plan gpt2.onnx --gpu-mem 2G --dim batch=4 --dim seq=512 -o gpt2.plan
      turnipc plan llama.onnx --gpu-mem 25% --gpus 2 -o llama.plan
      turnipc plan bert.onnx --gpu-mem min --input-shape input_ids:1x128 -o bert.plan
    """
    from turnip.atomic import check_target
    from turnip.autoplan import FileKind, sniff
    from turnip.plan import write_plan
    from turnip.planschema import MAX_BYTES

    from .api import plan_options
    from .dims import parse_dim_options
    from .importer import import_model
    from .planner import build_plan
    from .summary import summary_obj
    from .units import format_bytes, parse_budgets

    if time_budget is not None:
        effort = time_budget
    if os.path.exists(output) and os.path.exists(model) and os.path.samefile(output, model):
        fail(f"-o {output} is the input model; write the plan to another file (e.g. {os.path.splitext(output)[0]}.plan)")
    if sniff(model) == FileKind.PLAN:
        fail(f"{model} is a Turnip plan, not an ONNX model; plan the model it was made from, or run this plan with `turnip-run {model}`")
    if solver == "cpsat":
        require("ortools", "compiler", "--solver cpsat")  # MissingDependencyError: one line with the pip command
    say = _progress(quiet or as_json)
    try:
        budgets = parse_budgets(gpu_mem, gpus)
    except (ValueError, OverflowError) as e:
        fail(f"--gpu-mem: {e}")
    for budget in budgets:
        if budget.bytes is not None and budget.bytes >= MAX_BYTES:
            fail(f"--gpu-mem {gpu_mem!r} is {budget.bytes} bytes, more than a plan can address (2**62); give a real GPU's memory, e.g. 80G")
    check_target(output, "plan")  # refuse a bad -o before planning, not after
    task_limit = None
    if max_task_bytes is not None:
        from .units import parse_size

        try:
            task_limit = parse_size(max_task_bytes)
        except ValueError as e:
            fail(f"--max-task-bytes: {e}")
    if prefill_model is not None and decode_prompt is None:
        fail("--prefill-model goes with --decode PROMPT_LEN; add it, or drop --prefill-model")
    if past_buckets is not None and decode_prompt is None:
        fail("--past-buckets goes with --decode PROMPT_LEN; add it, or drop --past-buckets")
    capacities: tuple[int, ...] = ()
    if past_buckets is not None:
        try:
            capacities = tuple(sorted({int(x) for x in past_buckets.split(",") if x.strip()}))
        except ValueError:
            fail(f"--past-buckets {past_buckets!r} is not comma-separated integers; write e.g. 16,32,64")
        if not capacities or capacities[0] < 1:
            fail(f"--past-buckets {past_buckets!r}: give capacities of at least 1, e.g. 16,32,64")

    def plan_one(path: str, dim_map: dict[str, int], shape_map: dict, out: str) -> Any:
        t0 = time.perf_counter()
        graph = import_model(path, dim_map, shape_map)
        if say:
            say(f"imported {path}: {len(graph.tasks)} tasks, {len(graph.values)} values in {time.perf_counter() - t0:.2f}s")
        opts = plan_options(graph, budgets, gpus, solver, effort, prefetch=not no_prefetch)
        opts = dataclasses.replace(opts, max_task_bytes=task_limit, min_search_tiled=True, state=state, auto_state=not no_auto_state,
                                   fuse=fuse)
        return build_plan(graph, opts, plan_dir=os.path.dirname(os.path.abspath(out)), progress=say)

    try:
        dim_map, shape_map = parse_dim_options(list(dims), list(input_shapes))
        prefill_plan = None
        buckets: list[tuple[Any, Any]] = []  # (BucketPlan, its plan)
        if decode_prompt is not None:
            from .decode_plans import decode_plans

            pair = decode_plans(model, decode_prompt, dim_map, output, prefill_model)
            check_target(pair.prefill_output, "plan")
            plan = plan_one(pair.decode[0], pair.decode[1], shape_map, output)
            prefill_plan = plan_one(pair.prefill[0], pair.prefill[1], {}, pair.prefill_output)
            if pair.prefill[0] != model:  # a past/present decoder: its later steps' bucket plans
                buckets = _plan_buckets(model, decode_prompt, pair.decode[1], output, new_tokens, capacities, plan_one)
        elif past_buckets is not None:
            fail("--past-buckets goes with --decode PROMPT_LEN; add it, or drop --past-buckets")
        else:
            plan = plan_one(model, dim_map, shape_map, output)
    except TurnipError:
        raise  # one line and its exit code, from the group's handler
    except ValueError as e:
        fail(str(e))
    write_plan(plan, output)  # atomic; a disk error is one OutputError line (exit 5)
    if prefill_plan is not None:
        write_plan(prefill_plan, pair.prefill_output)
        if not quiet and not as_json:
            click.echo(f"wrote {pair.prefill_output}: the prompt plan (seq {decode_prompt}), "
                       f"peak {format_bytes(prefill_plan.stats.peak_bytes or 0)}, {len(prefill_plan.state)} state inputs")
    for b, bplan in buckets:
        write_plan(bplan, b.output)
        if not quiet and not as_json:
            click.echo(f"wrote {b.output}: the bucket plan of past capacity {b.capacity} (seq 1), "
                       f"peak {format_bytes(bplan.stats.peak_bytes or 0)}, {len(bplan.state)} state inputs")
    if as_json:
        obj = summary_obj(plan)
        if decode_prompt is not None:
            obj["decode"] = {
                "prefill_plan": pair.prefill_output,
                "bucket_plans": [{"capacity": b.capacity, "path": b.output, "peak_bytes": bplan.stats.peak_bytes} for b, bplan in buckets],
            }
        click.echo(json.dumps(obj, indent=2))
    elif not quiet:
        s = plan.stats
        click.echo(
            f"wrote {output}: peak {format_bytes(s.peak_bytes or 0)} of {format_bytes(s.budget_bytes or 0)} budget, "
            f"offload {format_bytes(s.offload_bytes or 0)}, reload {format_bytes(s.reload_bytes or 0)}, "
            f"{sum((s.nodes or {}).values())} nodes"
            + (f", state: {len(plan.state)} inputs kept between runs" if plan.state else "")
        )
        if verbose:
            per_gpu = ", ".join(f"GPU {m.device}: arena {format_bytes(m.size)} of {format_bytes(m.budget)}" for m in plan.gpu_memories())
            click.echo(f"  {per_gpu}; reserve {format_bytes(s.reserve_bytes or 0)} per GPU for kernel temporaries and workspaces")
            click.echo(f"  options: {json.dumps(plan.options, sort_keys=True)}")


def _plan_buckets(model: str, prompt_len: int, decode_dims: dict[str, int], output: str, new_tokens: int,
                  capacities: tuple[int, ...], plan_one: Any) -> list[tuple[Any, Any]]:
    """Plan a past/present decoder's bucket plans (turnipc/decode_plans.py): the masked decoder, re-labelled with ``model``.

    The masked graph is written to a temporary folder and planned like the
    decode plan; each plan names the ORIGINAL model for its weights. A graph
    the rewrite cannot mask gets no bucket plans (the runtime then plans one
    per past length): said on stderr.
    """
    import tempfile

    from turnip.atomic import check_target
    from turnip.generate import DecoderSignature, GenerateError
    from turnip.generate_bucket import as_bucket_plan, masked_model_path
    from turnip.weights import file_sha256

    from .decode_plans import bucket_plans

    todo = bucket_plans(model, prompt_len, decode_dims, output, new_tokens, capacities)
    for b in todo:
        check_target(b.output, "plan")
    sha = file_sha256(model)
    out = []
    with tempfile.TemporaryDirectory(prefix="turnipc-buckets-") as folder:
        try:
            masked = masked_model_path(model, DecoderSignature.from_onnx(model), folder)
        except GenerateError as e:
            click.echo(f"note: no bucket plans written ({e})", err=True)
            return []
        for b in todo:
            out.append((b, as_bucket_plan(plan_one(masked, b.dims, {}, b.output), model, sha)))
    return out


@main.command("verify")
@click.argument("plan_path", metavar="PLAN", type=click.Path(dir_okay=False))
@json_option("Print the result as JSON.")
def verify_cmd(plan_path: str, as_json: bool) -> None:
    """Prove PLAN safe: within budget, every conflicting pair ordered, every read sees its producer's data.

    \b
    Exit codes: 0 verified; 1 a violation (the first one is named); 2 unreadable plan.
    """
    from turnip.plan import read_plan

    from .verify import VerifyError, verify_plan

    plan = read_plan(plan_path)  # unreadable: PlanFormatError, one line, exit 2
    try:
        rep = verify_plan(plan)
    except VerifyError as e:
        if as_json:
            click.echo(json.dumps({"ok": False, "violation": str(e)}))
            sys.exit(ExitCode.FINDING)
        fail(f"{plan_path}: {e}", ExitCode.FINDING)
    from turnip.cache import remember_verified
    from turnip.plancheck import plan_digest

    remember_verified(plan_digest(plan))  # turnip-run then skips re-checking these exact bytes
    if as_json:
        click.echo(json.dumps({"ok": True, "nodes": rep.nodes, "accesses": rep.accesses,
                               "ordered_pairs_checked": rep.ordered_pairs_checked, "reads_checked": rep.reads_checked}))
    else:
        click.echo(f"{plan_path}: OK ({rep.nodes} nodes, {rep.ordered_pairs_checked} conflicting pairs ordered, "
                   f"{rep.reads_checked} reads checked; {'; '.join(rep.memories)})")


@main.command("inspect")
@click.argument("plan_path", metavar="PLAN", type=click.Path(dir_okay=False))
@json_option("Machine-readable summary (keys documented in docs/cli.md).")
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
    from turnip.plan import read_plan

    from .summary import summary_obj, summary_text

    plan = read_plan(plan_path)  # unreadable: PlanFormatError, one line, exit 2
    if plot_png:
        require("matplotlib", "plot", "--plot")  # MissingDependencyError: one line with the pip command
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
