"""Simulated slowdown of memory-limited plans, and dynamic vs fixed order.

(a) For each model, plan at 100 % of the no-offload peak (no transfers on one
GPU: the "unlimited memory" run) and at 50 %, 25 % and 10 %, with the greedy
layout and, when available, CP-SAT; simulate every plan on a device profile
(h100-sxm by default) and report

* ``slowdown``: simulated makespan (dynamic order) / makespan of the 100 % plan;
* ``over_bound``: makespan / bound, where bound = the busiest queue's total
  work (compute of one device, or all its host-to-device copies, ...): how
  close the schedule is to the best any order could do with those queues.

(b) On the 25 % plan (or the tightest one that planned) of each model: the
makespan of the ``fixed`` order (issue strictly in planned order, queues
overlap) over that of the ``dynamic`` order, with every node's duration
multiplied by U[0.7, 1.3] (the same draw for both orders) over 20 seeds:
min / median / max of that speedup, plus the speedup without jitter.

Models:

* ``mlp``, ``skip``: tests/synthetic.py's TaskGraphs at their default (tiny,
  launch-bound) sizes, and scaled up (``mlp-large``: 24 layers of
  4096x4096 fp32 at batch 2048; ``skip-large``: 16 residual blocks of
  4096x4096 at batch 4096), where the roofline terms dominate;
* ``llama32``: tests/synthetic.py's llama_shaped_model(layers=32) (LLaMA-7B
  shapes, fp16), saved to a temporary .onnx (weights are declared, never
  written) and imported with batch=1, seq=2048.

Results: bench/results/simulate.json and simulate.md.

    python bench/bench_simulate.py [--device h100] [--no-cpsat] [--no-cpsat-llama] [--effort 1] [--seeds 20]

CP-SAT on llama32 is slow (about 1-10 min per budget at --effort 1; the
recorded results used --effort 1); --no-cpsat-llama skips it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from typing import Any, Callable

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
sys.path.insert(0, os.path.join(HERE, "..", "runtime"))

from synthetic import mlp_taskgraph, skip_taskgraph  # noqa: E402

from turnipc.errors import TurnipError  # noqa: E402
from turnipc.planner import PlanOptions, build_plan  # noqa: E402
from turnipc.simulate import compare_orders, get_profile, simulate, unlimited_makespan  # noqa: E402
from turnipc.units import Budget, format_bytes  # noqa: E402

FRACTIONS = (1.0, 0.5, 0.25, 0.1)


def _llama_graph(batch: int = 1):
    try:
        from turnipc.importer import import_model
    except ImportError:
        return None
    import onnx
    from synthetic import llama_shaped_model

    d = tempfile.mkdtemp(prefix="turnip-bench-")
    path = os.path.join(d, "llama32.onnx")
    onnx.save(llama_shaped_model(layers=32, batch=batch), path)
    return import_model(path, dims={"batch": batch, "seq": 2048})


def models(with_llama: bool) -> dict[str, Callable[[], Any]]:
    m: dict[str, Callable[[], Any]] = {
        "mlp": mlp_taskgraph,
        "skip": skip_taskgraph,
        "mlp-large": lambda: mlp_taskgraph(layers=24, hidden=4096, batch=2048),
        "skip-large": lambda: skip_taskgraph(layers=16, hidden=4096, batch=4096),
    }
    if with_llama:
        m["llama32"] = _llama_graph
        # batch 8: compute-bound (8x the FLOPs, the same weights to stream)
        m["llama32-b8"] = lambda: _llama_graph(batch=8)
    return m


def solvers(with_cpsat: bool) -> list[str]:
    out = ["greedy"]
    if with_cpsat:
        try:
            import turnipc.layout.cpsat  # noqa: F401

            build_plan(mlp_taskgraph(), PlanOptions(Budget(fraction=0.5), solver="cpsat", effort=1.0))
            out.append("cpsat")
        except Exception as e:  # noqa: BLE001
            print(f"cpsat unavailable: {type(e).__name__}: {e}", file=sys.stderr)
    return out


def sim_row(plan, profile) -> dict[str, Any]:
    r = simulate(plan, profile, order="dynamic")
    f = simulate(plan, profile, order="fixed")
    return {
        "nodes": dict(plan.stats.nodes),
        "peak_bytes": plan.stats.peak_bytes,
        "reload_bytes": plan.stats.reload_bytes,
        "offload_bytes": plan.stats.offload_bytes,
        "makespan_s": r.makespan,
        "fixed_makespan_s": f.makespan,
        "bound_s": r.bound,
        "critical_path_s": r.critical_path,
        "compute_s": r.compute_s,
        "h2d_s": r.h2d_s,
        "d2h_s": r.d2h_s,
        "exposed_transfer_s": r.exposed_transfer,
        "compute_only_s": unlimited_makespan(plan, profile),
        "over_bound": r.makespan / r.bound if r.bound else 1.0,
        "utilization": {f"{q[1]}": u for q, u in r.utilization.items()},
    }


def run(args) -> dict[str, Any]:
    profile = get_profile(args.device)
    results: dict[str, Any] = {"slowdown": {}, "orders": {}}
    sols = solvers(not args.no_cpsat)
    for name, make in models(not args.no_llama).items():
        t0 = time.perf_counter()
        g = make()
        if g is None:
            continue
        print(f"{name}: {len(g.tasks)} tasks ({time.perf_counter() - t0:.1f} s to build)", file=sys.stderr)
        for solver in sols:
            if solver == "cpsat" and name.startswith("llama32") and args.no_cpsat_llama:
                continue
            rows: dict[str, Any] = {}
            base = None
            for frac in FRACTIONS:
                key = f"{frac * 100:g}%"
                t0 = time.perf_counter()
                try:
                    opts = PlanOptions(Budget(fraction=frac), solver=solver, effort=args.effort)
                    plan = build_plan(g, opts)
                except TurnipError as e:
                    rows[key] = {"infeasible": str(e).split(":")[0]}
                    print(f"  {solver} {key}: infeasible", file=sys.stderr)
                    continue
                plan_s = time.perf_counter() - t0
                row = sim_row(plan, profile)
                row["plan_s"] = plan_s
                if frac == 1.0:
                    base = row["makespan_s"]
                row["slowdown"] = row["makespan_s"] / base if base else None
                row["fixed_slowdown"] = row["fixed_makespan_s"] / base if base else None
                rows[key] = row
                print(f"  {solver} {key}: makespan {row['makespan_s'] * 1e3:.3f} ms, slowdown {row['slowdown']:.3f}, "
                      f"over bound {row['over_bound']:.3f}, fixed {row['fixed_slowdown']:.3f} ({plan_s:.1f} s to plan)",
                      file=sys.stderr)
                if solver == "greedy" and frac in (0.25, 0.5, 0.1):
                    results.setdefault("_plans", {}).setdefault(name, {})[frac] = plan
            results["slowdown"].setdefault(name, {})[solver] = rows

        # (b) dynamic vs fixed under jitter, on the 25 % plan (else the tightest greedy plan that planned)
        plans = results.get("_plans", {}).get(name, {})
        for frac in (0.25, 0.1, 0.5):
            if frac in plans:
                plan = plans[frac]
                break
        else:
            continue
        res = compare_orders(plan, profile, jitter=args.jitter, seeds=range(args.seeds))
        sp = [f / d for f, d in zip(res["fixed"], res["dynamic"])]
        det = simulate(plan, profile, order="fixed").makespan / simulate(plan, profile, order="dynamic").makespan
        results["orders"][name] = {
            "budget": f"{frac * 100:g}%",
            "jitter": args.jitter,
            "seeds": args.seeds,
            "speedup_no_jitter": det,
            "speedup_min": min(sp),
            "speedup_median": statistics.median(sp),
            "speedup_max": max(sp),
            "dynamic_makespan_median_s": statistics.median(res["dynamic"]),
            "fixed_makespan_median_s": statistics.median(res["fixed"]),
            "speedups": sp,
        }
        print(f"  orders ({frac * 100:g}%): fixed/dynamic no jitter {det:.3f}; jitter {args.jitter}: "
              f"min {min(sp):.3f} median {statistics.median(sp):.3f} max {max(sp):.3f}", file=sys.stderr)
    results.pop("_plans", None)
    return {
        "device": profile.name,
        "profile": profile.to_dict(),
        "fractions": [f"{f * 100:g}%" for f in FRACTIONS],
        "solvers": sols,
        "python": platform.python_version(),
        **results,
    }


def markdown(out: dict[str, Any]) -> str:
    L = [f"# Simulated slowdown and order comparison ({out['device']})", "",
         "Generated by `bench/bench_simulate.py`. Datasheet peaks (see turnipc/simulate/profiles.py): the ratios "
         "matter, not the absolute times.", "",
         "## Slowdown vs the 100 % plan (dynamic order)", "",
         "slowdown = simulated makespan / makespan at 100 % of the no-offload peak; over bound = makespan / busiest "
         "queue's total work; fixed = slowdown of the fixed (in-order issue) order.", "",
         "| model | solver | budget | peak | reloaded | makespan | slowdown | over bound | fixed | exposed transfer | plan time |",
         "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, by_solver in out["slowdown"].items():
        for solver, rows in by_solver.items():
            for key in out["fractions"]:
                r = rows.get(key)
                if r is None:
                    continue
                if "infeasible" in r:
                    L.append(f"| {name} | {solver} | {key} | - | - | infeasible | - | - | - | - | - |")
                    continue
                L.append(f"| {name} | {solver} | {key} | {format_bytes(r['peak_bytes'])} | {format_bytes(r['reload_bytes'])} "
                         f"| {_t(r['makespan_s'])} | {r['slowdown']:.3f} | {r['over_bound']:.3f} | {r['fixed_slowdown']:.3f} "
                         f"| {_t(r['exposed_transfer_s'])} | {r['plan_s']:.1f} s |")
    L += ["", "## Dynamic vs fixed order", "",
          "speedup = fixed makespan / dynamic makespan; jitter: each duration x U[1-j, 1+j], the same draw for both "
          "orders, one draw per seed.", "",
          "| model | budget | no jitter | jitter | seeds | min | median | max |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in out["orders"].items():
        L.append(f"| {name} | {r['budget']} | {r['speedup_no_jitter']:.3f} | {r['jitter']:g} | {r['seeds']} "
                 f"| {r['speedup_min']:.3f} | {r['speedup_median']:.3f} | {r['speedup_max']:.3f} |")
    return "\n".join(L) + "\n"


def _t(s: float) -> str:
    return f"{s * 1e3:.3f} ms" if s >= 1e-3 else f"{s * 1e6:.1f} us"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="h100-sxm")
    ap.add_argument("--no-cpsat", action="store_true", help="Greedy layout only.")
    ap.add_argument("--no-cpsat-llama", action="store_true", help="Skip CP-SAT on the LLaMA graph (slow).")
    ap.add_argument("--no-llama", action="store_true")
    ap.add_argument("--effort", type=float, default=1.0, help="CP-SAT deterministic effort per layout.")
    ap.add_argument("--jitter", type=float, default=0.3)
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--out", default=os.path.join(HERE, "results", "simulate.json"))
    ap.add_argument("--markdown-only", action="store_true", help="Rewrite the .md from an existing --out JSON; run nothing.")
    args = ap.parse_args()
    if args.markdown_only:
        with open(args.out) as f:
            out = json.load(f)
        with open(os.path.splitext(args.out)[0] + ".md", "w") as f:
            f.write(markdown(out))
        return
    t0 = time.perf_counter()
    out = run(args)
    out["bench_s"] = time.perf_counter() - t0
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1, sort_keys=True)
    md = os.path.splitext(args.out)[0] + ".md"
    with open(md, "w") as f:
        f.write(markdown(out))
    print(markdown(out))
    print(f"wrote {args.out} and {md} in {out['bench_s']:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
