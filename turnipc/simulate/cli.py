"""`turnipc simulate`: predict a plan's run time on a device profile."""

from __future__ import annotations

import json
import sys
from typing import NoReturn

import click

from .profiles import UnknownDeviceError, get_profile
from .sim import JITTER_DISTS, ORDERS, SimResult, SimulationError, queue_label
from .sim import simulate as run_simulation


def _fail(msg: str, code: int = 2) -> NoReturn:
    click.echo(f"error: {msg}", err=True)
    sys.exit(code)


def _fmt_s(s: float) -> str:
    if s >= 1:
        return f"{s:.3f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.3f} ms"
    return f"{s * 1e6:.1f} us"


def _print_human(r: SimResult, path: str) -> None:
    from rich.console import Console
    from rich.table import Table

    title = f"{path}: simulated on {r.device}, order {r.order}"
    if r.jitter:
        title += f", jitter {r.jitter:g} seed {r.seed}"
    t = Table(title=title, show_header=True, header_style="bold")
    t.add_column("quantity")
    t.add_column("value", justify="right")
    t.add_row("makespan", _fmt_s(r.makespan))
    t.add_row("bound (busiest queue)", _fmt_s(r.bound))
    t.add_row("makespan / bound", f"{r.makespan / r.bound:.3f}" if r.bound > 0 else "-")
    t.add_row("critical path", _fmt_s(r.critical_path))
    t.add_row("compute (all devices)", _fmt_s(r.compute_s))
    t.add_row("exposed transfer", _fmt_s(r.exposed_transfer))
    for q, u in r.utilization.items():
        t.add_row(f"utilization {queue_label(q)}", f"{u * 100:.1f} %  ({_fmt_s(r.busy[q])})")
    Console().print(t)


@click.command("simulate", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("plan_path", metavar="PLAN", type=click.Path(dir_okay=False))
@click.option("--device", default="h100", show_default=True,
              help="Device profile: h100-sxm, h100-pcie, a100-40gb, a100-80gb, l4, cpu (aliases: h100, a100, ...).")
@click.option("--order", type=click.Choice(ORDERS), default="dynamic", show_default=True,
              help="dynamic: lowest pos first per queue (reloads by their reader's pos); fixed: issue strictly in "
                   "planned order, queues overlap; serial: one node at a time.")
@click.option("--jitter", default=0.0, show_default=True, type=click.FloatRange(0, None),
              help="Multiply each duration by a random factor (uniform in [1-j, 1+j], or lognormal sigma j).")
@click.option("--jitter-dist", type=click.Choice(JITTER_DISTS), default="uniform", show_default=True,
              help="Distribution of the jitter factor (both have mean 1).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the jitter draw.")
@click.option("--trace", "trace_path", type=click.Path(dir_okay=False), help="Write a Chrome/Perfetto trace JSON here.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of the table.")
def simulate_cmd(plan_path: str, device: str, order: str, jitter: float, jitter_dist: str, seed: int,
                 trace_path: str | None, as_json: bool) -> None:
    """Simulate running PLAN with the runtime's queues on a device profile.

    The cost model is a roofline per compute node (FLOPs at the peak of its
    output dtype, or bytes at memory bandwidth, plus a launch overhead) and
    bytes over the link for copies. Numbers are datasheet peaks: compare plans
    and orders with them, not wall-clock times.

    \b
    Exit codes: 0 simulated; 2 unreadable plan, unknown device, bad options.

    \b
    Examples:
      turnipc simulate plan.msgpack
      turnipc simulate plan.msgpack --device a100-40gb --order fixed
      turnipc simulate plan.msgpack --jitter 0.3 --seed 7 --json
      turnipc simulate plan.msgpack --trace sim.json   # open in https://ui.perfetto.dev
    """
    from turnip.plan import PlanFormatError, read_plan

    try:
        prof = get_profile(device)
    except UnknownDeviceError as e:
        _fail(str(e))
    if jitter_dist == "uniform" and jitter >= 1:
        _fail(f"--jitter {jitter:g} is too large for uniform jitter (durations would reach zero); use < 1 or --jitter-dist lognormal")
    try:
        plan = read_plan(plan_path)
    except PlanFormatError as e:
        _fail(str(e))
    try:
        r = run_simulation(plan, prof, order=order, jitter=jitter, seed=seed, jitter_dist=jitter_dist)
    except SimulationError as e:
        _fail(str(e))
    except (KeyError, IndexError, TypeError, AttributeError) as e:
        _fail(f"plan file is malformed ({type(e).__name__}: {e}); re-plan the model with `turnipc plan`")
    if trace_path:
        from .trace import write_sim_trace

        try:
            write_sim_trace(trace_path, plan, r)
        except OSError as e:
            _fail(f"cannot write trace {trace_path!r}: {e.strerror}")
    if as_json:
        click.echo(json.dumps(r.to_dict(), indent=2))
    else:
        _print_human(r, plan_path)

