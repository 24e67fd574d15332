"""The 2-thread pathology of issue 16, as a controlled experiment: one plan, one process, three ways to use 2 threads.

    python bench/bench_kernel_threads.py [MODEL] [--seq 128] [--rounds 4]
        # adds MODEL's section to bench/results/kernels_threads.{json,md}

Sessions of the same plan, loaded once each, timed interleaved round by round
(best of 2 calls per round), so load drifts hit all alike:

* ``1 thread``: BLAS at 1 thread;
* ``2 threads, OpenBLAS``: BLAS at 2 threads, MatMul one ``np.matmul`` call
  (what the runtime did before ``turnip/kernels/threads.py``);
* ``2 threads, runtime``: BLAS at 2 threads when the plan is loaded, so the
  runtime splits large MatMuls into blocks for its own 2 threads and holds
  BLAS at 1 thread around each call (now).

onnxruntime at 1 and 2 intra-op threads is timed in the same rounds for scale.
Needs threadpoolctl (the runtime's dependency) to set BLAS's thread count.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE]

import numpy as np  # noqa: E402
from benchlib import best_seconds, markdown_table, ort_session  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402
from turnip import Session  # noqa: E402
from turnip.kernels import prepared  # noqa: E402
from turnip.plan import write_plan  # noqa: E402
from turnip.run import random_feeds  # noqa: E402
from turnip.units import Budget  # noqa: E402

from turnipc.importer import import_model  # noqa: E402
from turnipc.planner import PlanOptions, build_plan  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", nargs="?", default="/work/models/real/bert_dynamo18.onnx")
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=4)
    args = ap.parse_args()
    if not os.path.exists(args.model):
        print(f"skip: {args.model} not found (make it with bench/make_models.py)")
        return 0
    plan = build_plan(import_model(args.model, {"batch": 1, "seq": args.seq}, None), PlanOptions(Budget(fraction=1.0)),
                      plan_dir=os.path.dirname(args.model))
    plan_path = os.path.join(os.path.dirname(args.model), f".bench-kthreads-{os.getpid()}.plan")
    write_plan(plan, plan_path)
    load_start = [round(v, 1) for v in os.getloadavg()]
    try:
        feeds = random_feeds(plan, 0)
        sess: dict[str, Session] = {}
        with threadpool_limits(1, user_api="blas"):
            sess["1 thread"] = Session(plan_path, model=args.model, backend="numpy")
        with threadpool_limits(2, user_api="blas"):
            real = prepared.matmul_call
            prepared.matmul_call = lambda a, b, out, width: functools.partial(np.matmul, a, b, out=out)  # type: ignore[assignment]
            try:
                sess["2 threads, OpenBLAS"] = Session(plan_path, model=args.model, backend="numpy")
            finally:
                prepared.matmul_call = real
            sess["2 threads, runtime"] = Session(plan_path, model=args.model, backend="numpy")
        ort = {1: ort_session(args.model, 1), 2: ort_session(args.model, 2)}
        blas = {"1 thread": 1, "2 threads, OpenBLAS": 2, "2 threads, runtime": 2}
        best = {k: float("inf") for k in [*sess, "onnxruntime 1", "onnxruntime 2"]}
        for s in sess.values():
            s.run(feeds)
        for o in ort.values():
            o.run(None, feeds)
        for _ in range(args.rounds):
            for k, s in sess.items():
                with threadpool_limits(blas[k], user_api="blas"):
                    best[k] = min(best[k], best_seconds(lambda s=s: s.run(feeds)))
            for n, o in ort.items():
                best[f"onnxruntime {n}"] = min(best[f"onnxruntime {n}"], best_seconds(lambda o=o: o.run(None, feeds)))
        for s in sess.values():
            s.close()
    finally:
        os.unlink(plan_path)
    rows = [{"how": k, "best_ms": round(v * 1e3, 1), "vs_1_thread": round(v / best["1 thread"], 2)} for k, v in best.items()]
    head = (
        f"`python bench/bench_kernel_threads.py {args.model} --seq {args.seq} --rounds {args.rounds}` "
        f"({time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC): one 100% plan, best of {args.rounds} interleaved rounds x 2 calls; "
        f"load average {load_start} at start, {[round(v, 1) for v in os.getloadavg()]} at end ({os.cpu_count()} CPUs, shared)."
    )
    # one section per model and seq, kept across runs (bench/results/kernels_threads.json)
    store = os.path.join(HERE, "results", "kernels_threads.json")
    runs = {}
    if os.path.exists(store):
        with open(store) as f:
            runs = json.load(f)
    runs[f"{os.path.basename(args.model)} seq {args.seq}"] = {"head": head, "rows": rows}
    with open(store, "w") as f:
        json.dump(runs, f, indent=1)
    md = ["The 2-thread experiment of issue 16 (module docstring of bench/bench_kernel_threads.py).", ""]
    for name in sorted(runs):
        md += [f"**{name}**: {runs[name]['head']}", "", *markdown_table(runs[name]["rows"], ["how", "best_ms", "vs_1_thread"]), ""]
    with open(os.path.join(HERE, "results", "kernels_threads.md"), "w") as f:
        f.write("\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
