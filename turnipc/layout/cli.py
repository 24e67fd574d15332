"""``turnipc layout``: lay out the buffers of a CSV file in one arena."""

from __future__ import annotations

import json
import os
import sys
import time

import click
from turnip.cli_errors import ErrorHandlingCommand, fail, json_option

from . import DEFAULT_EFFORT, SOLVERS, check_layout, read_csv, solve_layout, write_csv
from .csvio import LayoutInputError
from .model import max_live

EPILOG = """\b
Examples:
  turnipc layout A.1048576.csv --capacity 1MiB --solver search
  turnipc layout resnet50.csv --solver cpsat --time-budget 30 -o offsets.csv
  turnipc layout pangu_2.6B.csv --json

\b
With --capacity, a solver that misses it hands over to the stronger ones
(greedy -> search -> cpsat) until the layout fits, the exact search proves it
cannot (proven_infeasible in --json), or the effort is spent.

\b
Exit status: 0 the layout fits (or no --capacity was given), 1 it does not fit
--capacity, 2 the input cannot be read.
"""


def _parse_bytes(ctx, param, value):
    if value is None:
        return None
    from turnip.units import FORMS, parse_size

    try:
        return parse_size(str(value).strip().replace("_", "").replace(",", ""))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a byte count: give {FORMS}, e.g. 1048576 or 1MiB") from None


@click.command("layout", cls=ErrorHandlingCommand, epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--capacity", callback=_parse_bytes, metavar="BYTES",
              help="Arena capacity to fit in (integer, or with KiB/MiB/GiB suffix). Exit 1 if not met.")
@click.option("--solver", type=click.Choice(SOLVERS), default="greedy", show_default=True,
              help="greedy: best fit over several orderings (fast). search: greedy, squeaky-wheel "
                   "passes, then an exact MiniMalloc-style branch-and-bound. cpsat: all of that "
                   "(search on segments of up to 2,500 buffers), then OR-Tools CP-SAT "
                   "large-neighbourhood search. search and cpsat are never worse than greedy.")
@click.option("--time-budget", "effort", type=click.FloatRange(min=0), default=DEFAULT_EFFORT,
              show_default=True, metavar="S",
              help="Effort for --solver search/cpsat in deterministic units: CP-SAT deterministic "
                   "time plus search nodes (about seconds of one core, but counted from solver "
                   "work, never a clock), so the same input and budget give the same offsets on "
                   "every machine. Wall time per unit varies by instance.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Write offsets as CSV: the input columns plus 'offset'.")
@json_option("Print one JSON object instead of a table.")
def layout(file, capacity, solver, effort, output, as_json):
    """Give every buffer of FILE an offset in one arena.

    FILE is a CSV with header id,lower,upper,size (optional alignment column):
    each buffer is live over [lower, upper) and needs size bytes. Buffers live at
    the same time never overlap; the arena is the highest end. The lower bound is
    max-live, the most bytes live at one instant.
    """
    try:
        buffers = read_csv(file)
    except LayoutInputError as e:
        fail(str(e))
    start = time.perf_counter()
    progress = None
    bar = None
    if solver in ("cpsat", "search") and not as_json:
        bar, progress = _progress_bar(max_live(buffers))
    try:
        lay = solve_layout(buffers, solver=solver, capacity=capacity, effort=effort, progress=progress)
        # --capacity: keep searching with the stronger engines until it fits, the
        # search proves it cannot, or the effort is spent (whatever --solver says)
        for stronger in _ESCALATION[solver]:
            if capacity is None or lay.arena_bytes <= capacity or lay.stats.get("proven_infeasible"):
                break
            better = solve_layout(buffers, solver=stronger, capacity=capacity, effort=effort, progress=progress)
            proven = lay.stats.get("proven_infeasible") or better.stats.get("proven_infeasible")
            if better.arena_bytes <= lay.arena_bytes:
                lay = better
            lay.stats["proven_infeasible"] = bool(proven)
    finally:
        if bar is not None:
            bar.stop()
    seconds = time.perf_counter() - start
    check_layout(buffers, lay.offsets)  # never print an answer we have not checked
    fits = None if capacity is None else lay.arena_bytes <= capacity
    if output:
        write_csv(output, buffers, lay.offsets)
    ratio = lay.arena_bytes / lay.max_live_bytes if lay.max_live_bytes else 1.0
    result = {
        "file": file,
        "solver": lay.solver,
        "buffers": len(buffers),
        "arena_bytes": lay.arena_bytes,
        "max_live_bytes": lay.max_live_bytes,
        "ratio": round(ratio, 6),
        "optimal": lay.optimal,
        "engine": _engine(lay),
        "proven_optimal": lay.optimal,
        # max-live above the capacity is already a proof; otherwise the exhausted search
        "proven_infeasible": bool(fits is False and (lay.max_live_bytes > capacity or lay.stats.get("proven_infeasible"))),
        "search_nodes": lay.stats.get("search_nodes"),
        "capacity": capacity,
        "fits": fits,
        "seconds": round(seconds, 3),
        "effort": effort if lay.solver != "greedy" else None,
        "output": output,
    }
    if as_json:
        click.echo(json.dumps(result))
    else:
        _table(result)
    sys.exit(1 if fits is False else 0)


#: Engines tried after --solver when --capacity is given and not yet met.
_ESCALATION = {"greedy": ("search", "cpsat"), "search": ("cpsat",), "cpsat": ()}


def _engine(lay) -> str:
    """The engine whose offsets were kept: greedy, squeaky, search or cpsat."""
    engines = [e for e in lay.stats.get("engines", []) if e != "greedy"]
    if lay.solver == "greedy" or not engines:
        return "greedy"
    for e in ("cpsat", "search", "squeaky"):
        if any(e in x for x in engines):
            return e
    return lay.solver


def _table(r: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"layout of {os.path.basename(r['file'])}", show_header=False)
    t.add_column(style="bold")
    t.add_column(justify="right")
    t.add_row("buffers", f"{r['buffers']:,}")
    t.add_row("max-live (lower bound)", f"{r['max_live_bytes']:,} B")
    t.add_row("arena", f"{r['arena_bytes']:,} B")
    t.add_row("arena / max-live", f"{r['ratio']:.4f}" + ("  (optimal)" if r["optimal"] else ""))
    if r["capacity"] is not None:
        verdict = "[green]fits[/green]" if r["fits"] else "[red]does not fit[/red]"
        t.add_row("capacity", f"{r['capacity']:,} B  {verdict}")
    t.add_row("solver", r["solver"] + (f" (effort {r['effort']:g})" if r["effort"] is not None else ""))
    t.add_row("answer from", r["engine"] + (f", {r['search_nodes']:,} search nodes" if r["search_nodes"] else ""))
    if r["proven_infeasible"]:
        t.add_row("capacity", "[red]proven infeasible[/red]")
    t.add_row("seconds", f"{r['seconds']:.2f}")
    if r["output"]:
        t.add_row("offsets written to", r["output"])
    Console().print(t)


def _progress_bar(lower: int):
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    prog = Progress(
        TextColumn("[bold]layout[/bold] arena {task.fields[arena]:,} / max-live {task.fields[lb]:,}"),
        BarColumn(),
        TextColumn("{task.fields[ratio]:.4f}x"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    task = prog.add_task("layout", total=1.0, arena=0, lb=lower, ratio=1.0)
    first: list[int] = []
    prog.start()

    def update(best: int, lb: int) -> None:
        if not first:
            first.append(best)
        gap0 = max(first[0] - lb, 1)
        done = 1.0 if best <= lb else (first[0] - best) / gap0
        prog.update(task, completed=done, arena=best, lb=lb, ratio=best / lb if lb else 1.0)

    return prog, update
