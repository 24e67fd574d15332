"""Executor overhead: nodes per second on plans of trivial nodes.

Two plans, both hand-built (no compiler needed):

* ``chain``: N Identity nodes on a 1-element float32 tensor, each depending on
  the previous one (one queue: pure per-node overhead of the worker loop).
* ``pipeline``: N/4 stages of reload -> Identity -> offload on a 1-element
  tensor, with double-buffered slots so the h2d, compute and d2h queues all
  work at once (cross-queue wake-ups on every node).

For each plan and order (dynamic, fixed) it runs ``run_plan`` (NumPy backend,
real Identity kernel and copies) and reports the best of several repeats, and
also the executor alone with no-op tasks. Results go to
bench/results/executor.json.

    PYTHONPATH=runtime python bench/bench_executor.py [--nodes 20000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(HERE, "..", "runtime"), os.path.join(HERE, "..", "tests")]

from hand_plans import SLOT, make_identity_chain  # noqa: E402
from turnip.executor import Executor  # noqa: E402
from turnip.plan import Loc, Memory, Node, Placement, Plan, TensorInfo  # noqa: E402
from turnip.run import run_plan  # noqa: E402


def pipeline_plan(n: int) -> Plan:
    """Stages k = 0..S-1: reload a_k (host) -> GPU slot A[k%2]; Identity -> slot B[k%2]; offload -> host b_k."""
    stages = max(1, n // 3)
    tensors: list[TensorInfo] = []
    placements = []
    nodes: list[Node] = []
    outputs = []
    inputs = []
    for k in range(stages):
        a = len(tensors)
        tensors.append(TensorInfo(f"a{k}", "float32", (1,), 4, "input", a))
        b = len(tensors)
        tensors.append(TensorInfo(f"b{k}", "float32", (1,), 4, "output", b))
        inputs.append(a)
    host = Memory(1, "host", -1, 2 * SLOT * stages, 2 * SLOT * stages)
    gpu = Memory(0, "gpu", 0, 4 * SLOT, 4 * SLOT)
    for k in range(stages):
        a, b = 2 * k, 2 * k + 1
        ha, hb = Loc(1, 2 * SLOT * k, a), Loc(1, 2 * SLOT * k + SLOT, b)
        ga, gb = Loc(0, SLOT * (k % 2), a), Loc(0, 2 * SLOT + SLOT * (k % 2), b)
        placements.append(Placement(a, ha, "input"))
        r, c, o = 3 * k, 3 * k + 1, 3 * k + 2
        prev = 3 * (k - 2)  # the stage that used the same slots
        r_deps = (prev + 1,) if k >= 2 else ()  # WAR: slot A read by that stage's compute
        c_deps = (r,) + ((prev + 2,) if k >= 2 else ())  # WAR: slot B read by that stage's offload
        nodes.append(Node(r, "reload", 0, r_deps, (ha,), (ga,), bytes=4, pos=r))
        nodes.append(Node(c, "compute", 0, c_deps, (ga,), (gb,), op="Identity", name=f"id{k}", pos=c))
        nodes.append(Node(o, "offload", 0, (c,), (gb,), (hb,), bytes=4, pos=o))
        outputs.append(hb)
    return Plan("/nonexistent.onnx", "", {"": 17}, {}, tensors, [gpu, host], placements, nodes, inputs, outputs)


def bench_plan(plan: Plan, feeds: dict, order: str, repeat: int) -> dict:
    res = run_plan(plan, feeds, backend="numpy", order=order, repeat=repeat)
    best = min(res.stats.wall_s)
    return {"nodes": res.stats.nodes, "best_s": best, "nodes_per_s": res.stats.nodes / best, "load_s": res.stats.load_s}


def bench_noop(plan: Plan, order: str, repeat: int) -> dict:
    tasks = [lambda: None] * len(plan.nodes)
    ex = Executor(plan.nodes, tasks, order=order)
    walls = [ex.run().wall_s for _ in range(repeat)]
    best = min(walls)
    return {"nodes": len(plan.nodes), "best_s": best, "nodes_per_s": len(plan.nodes) / best}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "executor.json"))
    args = ap.parse_args()

    chain = make_identity_chain(args.nodes)
    pipe = pipeline_plan(args.nodes)
    chain_feeds = {"t0": np.array([1.0], np.float32)}
    pipe_feeds = {pipe.tensors[i].name: np.array([float(i)], np.float32) for i in pipe.inputs}
    results = {}
    for name, plan, feeds in (("chain", chain, chain_feeds), ("pipeline", pipe, pipe_feeds)):
        for order in ("dynamic", "fixed"):
            r = bench_plan(plan, feeds, order, args.repeat)
            r["noop_nodes_per_s"] = bench_noop(plan, order, args.repeat)["nodes_per_s"]
            results[f"{name}/{order}"] = r
            print(
                f"{name:9s} {order:8s} {r['nodes']:6d} nodes  {r['nodes_per_s']:>10,.0f} nodes/s  (executor alone, no-op tasks: {r['noop_nodes_per_s']:,.0f} nodes/s)"
            )
    out = {
        "benchmark": "executor",
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "nodes": args.nodes,
        "repeat": args.repeat,
        "results": results,
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=2, sort_keys=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
