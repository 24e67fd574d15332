"""What several benchmark scripts do alike: plan a model at the usual budgets,
open an onnxruntime reference session, and write result tables.

Each bench script runs as its own process from bench/ (``make bench`` runs
them one by one), so this module sits beside them and is imported by name.
It joins compiler and runtime, which no package module may do; that is why it
lives in bench/ and not in turnip or turnipc.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import onnxruntime as ort
from turnip.plan import Plan

from turnipc.errors import BudgetError
from turnipc.planner import PlanOptions, build_plan
from turnipc.taskgraph import TaskGraph
from turnipc.units import Budget

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")

#: The two budgets the speed benchmarks compare: no offload, and a quarter of it.
FULL_AND_QUARTER = (("100%", Budget(fraction=1.0)), ("25%", Budget(fraction=0.25)))


def plans_at(graph: TaskGraph, model_path: str, fuse: bool = False) -> Iterator[tuple[str, Plan]]:
    """(label, plan) at 100% and 25% of the no-offload peak; ``min`` where 25% is below the smallest feasible budget.

    ``fuse``: plan with attention and elementwise chains fused (turnipc/fuse_attention.py, turnipc/fuse.py)."""
    plan_dir = os.path.dirname(model_path)
    for label, budget in FULL_AND_QUARTER:
        try:
            yield label, build_plan(graph, PlanOptions(budget, fuse=fuse), plan_dir=plan_dir)
        except BudgetError:
            yield "min", build_plan(graph, PlanOptions(Budget(minimum=True), fuse=fuse), plan_dir=plan_dir)


def ort_session(path: str, threads: int = 0) -> ort.InferenceSession:
    """onnxruntime on the CPU with ``threads`` intra-op threads (0: every CPU), the reference each ratio divides by."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads or os.cpu_count() or 1
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def markdown_table(rows: Sequence[dict[str, Any]], cols: Sequence[str]) -> list[str]:
    """A markdown table, one column per key in ``cols`` (a missing key is an empty cell)."""
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in rows]
    return lines


def write_results(key: str, data: Any, md_lines: Sequence[str]) -> None:
    """bench/results/KEY.json (``data``) and KEY.md (``md_lines``, which ``make bench`` gathers); prints the table."""
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, f"{key}.json"), "w") as f:
        json.dump(data, f, indent=1)
    with open(os.path.join(RESULTS, f"{key}.md"), "w") as f:
        f.write("\n".join(md_lines) + "\n")
    print("\n".join(md_lines))


def replace_result(key: str, section: str, value: Any, line: str, line_prefix: str) -> None:
    """Store one section of a result set run on its own, keeping the rest.

    ``value`` replaces ``section`` in bench/results/KEY.json, and ``line``
    replaces the line of KEY.md starting with ``line_prefix``, so a partial run
    (e.g. ``bench_tiles.py --long``) refreshes its figures without losing the
    others.
    """
    os.makedirs(RESULTS, exist_ok=True)
    jpath, mpath = (os.path.join(RESULTS, f"{key}.{ext}") for ext in ("json", "md"))
    data = {}
    if os.path.exists(jpath):
        with open(jpath) as f:
            data = json.load(f)
    data[section] = value
    with open(jpath, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
    lines = []
    if os.path.exists(mpath):
        with open(mpath) as f:
            lines = f.read().splitlines()
    lines = [ln for ln in lines if not ln.startswith(line_prefix)] + [line]
    with open(mpath, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(line)


def best_seconds(f: Callable[[], object], n: int = 2) -> float:
    """The fastest of ``n`` wall-clock runs of ``f`` (the least disturbed by a shared, noisy machine)."""
    best = float("inf")
    for _ in range(n):
        t0 = time.perf_counter()
        f()
        best = min(best, time.perf_counter() - t0)
    return best
