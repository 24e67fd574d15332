"""Planning time and plan quality (peak / lower bound) for the fixtures and a LLaMA-7B-shaped graph.

    python bench/bench_planner.py            # writes bench/results/planner.{json,md}

The LLaMA-7B-shaped graph is 32 decoder layers, hidden 4096, 32 heads, FFN
11008, vocab 32000, batch 1, seq 2048, fp16, with weights declared as
external data that does not exist: the planner never reads weights.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(HERE, "..", "tests"), os.path.join(HERE, "..", "tests", "models")]

import fixtures  # noqa: E402
import onnx  # noqa: E402
from benchlib import markdown_table, write_results  # noqa: E402
from synthetic import llama_shaped_model  # noqa: E402

from turnipc.importer import import_model  # noqa: E402
from turnipc.planner import PlanOptions, build_plan  # noqa: E402
from turnipc.units import Budget  # noqa: E402
from turnipc.verify import verify_plan  # noqa: E402

BUDGETS = [("100%", Budget(fraction=1.0)), ("50%", Budget(fraction=0.5)), ("25%", Budget(fraction=0.25)), ("10%", Budget(fraction=0.10))]


def bench_graph(name: str, graph, import_s: float) -> list[dict]:
    rows = []
    for label, budget in BUDGETS:
        t0 = time.perf_counter()
        try:
            plan = build_plan(graph, PlanOptions(budget))
        except Exception as e:  # budget below the smallest feasible one: say so
            rows.append({"model": name, "budget": label, "error": str(e)[:120]})
            continue
        plan_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        verify_plan(plan)
        verify_s = time.perf_counter() - t0
        s = plan.stats
        max_live = max(s.max_live_bytes_per_device)
        rows.append({
            "model": name, "budget": label, "tasks": len(graph.tasks), "import_s": round(import_s, 3),
            "plan_s": round(plan_s, 3), "verify_s": round(verify_s, 3),
            "budget_bytes": s.budget_bytes, "peak_bytes": s.peak_bytes, "max_live_bytes": max_live,
            "lower_bound_bytes": s.lower_bound_bytes, "no_offload_peak_bytes": s.no_offload_peak_bytes,
            "peak_over_lower_bound": round(s.peak_bytes / s.lower_bound_bytes, 3),
            "peak_over_max_live": round(s.peak_bytes / max_live, 4),
            "reload_bytes": s.reload_bytes, "offload_bytes": s.offload_bytes, "nodes": sum(s.nodes.values()),
        })
    return rows


def main() -> None:
    rows: list[dict] = []
    for fx in fixtures.FIXTURES:
        if not fx.exists():
            continue
        t0 = time.perf_counter()
        g = import_model(fx.path, fx.dims if fx.kind != "light" else None, None)
        rows += bench_graph(fx.name, g, time.perf_counter() - t0)
        print(rows[-1], flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "llama7b_shaped.onnx")
        onnx.save(llama_shaped_model(), path)
        t0 = time.perf_counter()
        g = import_model(path, {"batch": 1, "seq": 2048}, None)
        rows += bench_graph("llama7b_shaped (b1 s2048 fp16)", g, time.perf_counter() - t0)
        print(rows[-1], flush=True)
    cols = ["model", "budget", "tasks", "import_s", "plan_s", "verify_s", "peak_over_lower_bound", "peak_over_max_live", "nodes"]
    table = markdown_table([], cols + ["peak MiB", "reload MiB"])
    for r in rows:
        if "error" in r:
            table.append(f"| {r['model']} | {r['budget']} | infeasible: {r['error']} |")
        else:
            mib = {"peak MiB": f"{r['peak_bytes'] / 2**20:.1f}", "reload MiB": f"{r['reload_bytes'] / 2**20:.1f}"}
            table += markdown_table([{**r, **mib}], cols + list(mib))[2:]
    write_results("planner", rows, table)


if __name__ == "__main__":
    main()
