"""`turnipc timeline`: draw Chrome traces (real runs from `turnip-run --trace`, simulated ones
from `turnipc simulate --trace`) as PNG Gantt charts, one panel per trace, stacked so a
predicted and a real run can be compared.

Both producers write the same format (``turnip.trace.chrome_trace``): one process per
device, one thread per queue (compute, h2d, d2h, peer), one complete event per node.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import click
from turnip.cli_errors import ErrorHandlingCommand, fail, json_option
from turnip.plan import QueueKind

QUEUE_COLORS: dict[str, str] = {QueueKind.COMPUTE: "#4C72B0", QueueKind.H2D: "#DD8452", QueueKind.D2H: "#55A868", QueueKind.PEER: "#8172B3"}


@dataclass(frozen=True)
class Lane:
    device: int
    queue: str
    spans: list[tuple[float, float]]  # (start µs, duration µs)
    busy_us: float


def read_trace(path: str) -> dict[str, Any]:
    with open(path) as f:
        obj = json.load(f)
    if not isinstance(obj, dict) or "traceEvents" not in obj:
        raise ValueError(f"{path} is not a Chrome trace (no traceEvents)")
    return obj


def lanes(trace: dict[str, Any]) -> list[Lane]:
    """Per (device, queue) track: its spans and busy time, in device then queue order."""
    names: dict[tuple[int, int], str] = {}
    spans: dict[tuple[int, int], list[tuple[float, float]]] = {}
    for e in trace["traceEvents"]:
        key = (int(e.get("pid", 0)), int(e.get("tid", 0)))
        if e.get("ph") == "M" and e.get("name") == "thread_name":
            names[key] = e["args"]["name"]
        elif e.get("ph") == "X":
            spans.setdefault(key, []).append((float(e["ts"]), float(e["dur"])))
    out = []
    for key in sorted(spans):
        s = sorted(spans[key])
        out.append(Lane(key[0], names.get(key, str(key[1])), s, sum(d for _, d in s)))
    return out


def makespan_us(trace: dict[str, Any]) -> float:
    xs = [e for e in trace["traceEvents"] if e.get("ph") == "X"]
    if not xs:
        return 0.0
    return max(e["ts"] + e["dur"] for e in xs) - min(e["ts"] for e in xs)


def plot_timelines(traces: list[tuple[str, dict[str, Any]]], png: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(traces)
    heights = [max(1, len(lanes(t))) for _, t in traces]
    fig, axes = plt.subplots(n, 1, figsize=(12, 1.2 + 0.45 * sum(heights) + 0.6 * n), squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    for ax, (label, tr) in zip(axes[:, 0], traces):
        ls = lanes(tr)
        t0 = min((s[0][0] for s in (lane.spans for lane in ls) if s), default=0.0)
        span = makespan_us(tr)
        unit, scale = ("ms", 1e3) if span >= 2e3 else ("µs", 1.0)
        for row, lane in enumerate(ls):
            ax.broken_barh([((s - t0) / scale, max(d / scale, span / scale * 1e-4)) for s, d in lane.spans], (row - 0.4, 0.8),
                           facecolors=QUEUE_COLORS.get(lane.queue, "#999999"), edgecolors="none")
        ax.set_yticks(range(len(ls)))
        ax.set_yticklabels([f"dev {lane.device} {lane.queue}  {100 * lane.busy_us / span:.0f}% busy" if span else lane.queue for lane in ls])
        ax.invert_yaxis()
        ax.set_xlim(0, span / scale * 1.01 if span else 1)
        ax.set_xlabel(f"time ({unit})")
        ax.set_title(f"{label}: makespan {span / scale:.3g} {unit}", loc="left", fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


@click.command("timeline", cls=ErrorHandlingCommand, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("traces", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--png", "png", required=True, type=click.Path(dir_okay=False), help="Picture to write.")
@json_option("Also print per-trace makespan and queue busy times as JSON.")
def timeline_cmd(traces: tuple[str, ...], png: str, as_json: bool) -> None:
    """Draw Chrome TRACES (real `turnip-run --trace` and simulated `turnipc simulate --trace`) as one PNG.

    \b
    One panel per trace, one row per device queue, so a prediction and a real
    run of the same plan can be compared.
    Examples:
      turnip-run plan.msgpack --random-inputs --trace real.json
      turnipc simulate plan.msgpack --device h100 --trace predicted.json
      turnipc timeline predicted.json real.json --png compare.png
    """
    loaded = []
    for p in traces:
        try:
            loaded.append((os.path.basename(p), read_trace(p)))
        except (OSError, ValueError) as e:
            fail(f"cannot read trace {p}: {e}")
    plot_timelines(loaded, png)
    if as_json:
        click.echo(json.dumps([
            {"trace": name, "makespan_us": makespan_us(t),
             "busy_us": {f"dev{lane.device}/{lane.queue}": lane.busy_us for lane in lanes(t)}} for name, t in loaded
        ], indent=2))
    else:
        click.echo(f"wrote {png}")
