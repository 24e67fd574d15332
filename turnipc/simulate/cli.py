"""`turnipc simulate`: predict a plan's run time on a device profile."""

from __future__ import annotations

import json

import click
from turnip.cli_errors import ErrorHandlingCommand, fail, json_option

from .profiles import UnknownDeviceError, get_profile
from .sim import JITTER_DISTS, ORDERS, SimResult, SimulationError, queue_label
from .sim import simulate as run_simulation


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


@click.command("simulate", cls=ErrorHandlingCommand, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("plan_path", metavar="[PLAN]", type=click.Path(dir_okay=False), required=False)
@click.option("--device", default=None,
              help="Device profile: h100-sxm, h100-pcie, a100-40gb, a100-80gb, l4, t4, a6000, rtx4090, cpu (aliases: h100, a100, ...). "
                   "Default: h100; with --decode: t4.")
@click.option("--order", type=click.Choice(ORDERS), default="dynamic", show_default=True,
              help="dynamic: lowest pos first per queue (reloads by their reader's pos); fixed: issue strictly in "
                   "planned order, queues overlap; serial: one node at a time.")
@click.option("--jitter", default=0.0, show_default=True, type=click.FloatRange(0, None),
              help="Multiply each duration by a random factor (uniform in [1-j, 1+j], or lognormal sigma j).")
@click.option("--jitter-dist", type=click.Choice(JITTER_DISTS), default="uniform", show_default=True,
              help="Distribution of the jitter factor (both have mean 1).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the jitter draw.")
@click.option("--trace", "trace_path", type=click.Path(dir_okay=False), help="Write a Chrome/Perfetto trace JSON here.")
@json_option("Print one JSON object instead of the table.")
@click.option("--decode", "decode_model", metavar="SHAPE", default=None,
              help="Instead of a plan: predict prefill / decode tokens per second of a decoder SHAPE (opt-30b, llama-2-7b, "
                   "llama-2-70b, ...) with weights and KV cache offloaded (turnipc/simulate/decode.py).")
@click.option("--gpu-mem", "gpu_mem", default=None, metavar="SIZE", help="With --decode: GPU memory (e.g. 16G); default: the card's.")
@click.option("--host-mem", "host_mem", default=None, metavar="SIZE", help="With --decode: host memory for what is offloaded; default: unlimited.")
@click.option("--prompt", "prompt", default=512, show_default=True, type=click.IntRange(1), help="With --decode: prompt length.")
@click.option("--new-tokens", "new_tokens", default=32, show_default=True, type=click.IntRange(1), help="With --decode: tokens generated per sequence.")
@click.option("--batch", "batch", default=None, type=click.IntRange(1), help="With --decode: batch size; default: the best one found.")
@click.option("--cache-on-gpu", is_flag=True, help="With --decode: never offload the KV cache (stream weights only).")
def simulate_cmd(plan_path: str | None, device: str | None, order: str, jitter: float, jitter_dist: str, seed: int,
                 trace_path: str | None, as_json: bool, decode_model: str | None = None, gpu_mem: str | None = None,
                 host_mem: str | None = None, prompt: int = 512, new_tokens: int = 32, batch: int | None = None,
                 cache_on_gpu: bool = False) -> None:
    """Simulate running PLAN with the runtime's queues on a device profile (or, with --decode, a decoder's tokens/s).

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
      turnipc simulate --decode opt-30b --device t4 --gpu-mem 16G --host-mem 208G
      turnipc simulate --decode llama-2-70b --device rtx4090 --batch 8 --json
    """
    from turnip.plan import PlanFormatError, read_plan

    if decode_model is not None:
        if plan_path is not None:
            fail(f"--decode predicts from a model shape, not a plan: drop {plan_path!r} (or drop --decode to simulate the plan)")
        _simulate_decode(decode_model, device or "t4", gpu_mem, host_mem, prompt, new_tokens, batch, cache_on_gpu, as_json)
        return
    if plan_path is None:
        fail("give a PLAN to simulate, or --decode SHAPE for a decoder's predicted tokens/s (e.g. --decode opt-30b)")
    if gpu_mem or host_mem or batch or cache_on_gpu:
        fail("--gpu-mem, --host-mem, --batch and --cache-on-gpu go with --decode; a plan already has its budget")
    device = device or "h100"
    try:
        prof = get_profile(device)
    except UnknownDeviceError as e:
        fail(str(e))
    if jitter_dist == "uniform" and jitter >= 1:
        fail(f"--jitter {jitter:g} is too large for uniform jitter (durations would reach zero); use < 1 or --jitter-dist lognormal")
    try:
        plan = read_plan(plan_path)
    except PlanFormatError as e:
        fail(str(e))
    try:
        r = run_simulation(plan, prof, order=order, jitter=jitter, seed=seed, jitter_dist=jitter_dist)
    except SimulationError as e:
        fail(str(e))
    except (KeyError, IndexError, TypeError, AttributeError) as e:
        fail(f"plan file is malformed ({type(e).__name__}: {e}); re-plan the model with `turnipc plan`")
    if trace_path:
        from .trace import write_sim_trace

        try:
            write_sim_trace(trace_path, plan, r)
        except OSError as e:
            fail(f"cannot write trace {trace_path!r}: {e.strerror}")
    if as_json:
        click.echo(json.dumps(r.to_dict(), indent=2))
    else:
        _print_human(r, plan_path)



def _simulate_decode(model: str, device: str, gpu_mem: str | None, host_mem: str | None, prompt: int, new_tokens: int,
                     batch: int | None, cache_on_gpu: bool, as_json: bool) -> None:
    """``turnipc simulate --decode SHAPE``: what ``python -m turnipc.simulate.decode`` prints."""
    from .decode import DecodeCliError, decode_lines, decode_report

    try:
        r, gpu, host = decode_report(model, device, gpu_mem, host_mem, prompt, new_tokens, batch, cache_on_gpu)
    except DecodeCliError as e:
        fail(str(e))
    if as_json:
        click.echo(json.dumps(r.to_dict(), indent=2))
    else:
        click.echo("\n".join(decode_lines(r, gpu, host, searched=not batch)))
