"""A session's second call vs a fresh `turnip-run` on the same plan, side by side.

    python bench/bench_api.py        # writes bench/results/api.{json,md}

What a user of `turnip-run` pays per inference (start Python, read the plan,
allocate the arenas, hash and map the weights, prepare every node, run, write
nothing) against what a `turnip.Session` pays from its second call on (write
the feeds and the weights the plan overwrites, run, copy the outputs out).
Both use the NumPy backend and the same random feeds (`--random-inputs
--seed 0` = `random_feeds(plan, 0)`), measured alternately in one script, so
the ratio is what to read. Models: the GPT-2 fixture (always), and the
LLaMA exports under /work/models (small, and the 246M-parameter real one)
when they are present.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..")
sys.path[:0] = [os.path.join(ROOT, "tests", "models")]

import numpy as np  # noqa: E402
import turnip  # noqa: E402
from turnip.run import random_feeds  # noqa: E402

import turnipc  # noqa: E402

MODELS = [
    # name, path, dims, budget, fresh turnip-run repeats, session calls
    ("gpt2 fixture", os.path.join(ROOT, "tests", "models", "gpt2_dynamo18.onnx"), {"batch": 2, "seq": 16}, "25%", 5, 6),
    ("llama small (2x128)", "/work/models/small/llama_dynamo18.onnx", {"batch": 1, "seq": 64}, "50%", 5, 6),
    ("llama real (16x1024, 246M)", "/work/models/real/llama_dynamo18.onnx", {"batch": 1, "seq": 128}, "25%", 2, 3),
]


def turnip_run_cli() -> list[str]:
    exe = os.path.join(os.path.dirname(sys.executable), "turnip-run")
    return [exe] if os.path.exists(exe) else [sys.executable, "-m", "turnip.cli"]


def bench(name: str, model: str, dims: dict, budget: str, fresh_n: int, calls: int, folder: str) -> dict:
    plan_path = os.path.join(folder, f"{abs(hash(name))}.plan")
    t0 = time.perf_counter()
    plan = turnipc.plan(model, gpu_mem=budget, dims=dims)
    plan_s = time.perf_counter() - t0
    plan.save(plan_path)
    feeds = random_feeds(plan, 0)

    fresh: list[float] = []
    call: list[float] = []
    cmd = turnip_run_cli() + [plan_path, "--random-inputs", "--seed", "0", "--backend", "numpy"]
    t0 = time.perf_counter()
    session = turnip.Session(plan_path, backend="numpy")
    load_s = time.perf_counter() - t0
    first = None
    try:
        for i in range(max(fresh_n, calls)):  # alternate, so load drifts hit both alike
            if i < calls:
                t0 = time.perf_counter()
                out = session.run(feeds)
                call.append(time.perf_counter() - t0)
                if first is None:
                    first = out
                else:
                    assert all(np.array_equal(out[k], first[k]) for k in out), "a session call changed its outputs"
            if i < fresh_n:
                t0 = time.perf_counter()
                r = subprocess.run(cmd, capture_output=True, text=True)
                fresh.append(time.perf_counter() - t0)
                if r.returncode != 0:
                    raise SystemExit(f"turnip-run failed on {name}: {r.stderr.strip()}")
    finally:
        session.close()
    second = call[1]
    warm = statistics.median(call[1:])
    fresh_med = statistics.median(fresh)
    row = {
        "model": name,
        "budget": budget,
        "dims": dims,
        "nodes": len(plan.nodes),
        "plan_s": round(plan_s, 3),
        "session_load_s": round(load_s, 3),
        "session_first_call_s": round(call[0], 4),
        "session_second_call_s": round(second, 4),
        "session_warm_median_s": round(warm, 4),
        "fresh_turnip_run_median_s": round(fresh_med, 4),
        "ratio_fresh_over_second_call": round(fresh_med / second, 2),
        "ratio_fresh_over_warm_median": round(fresh_med / warm, 2),
        "fresh_runs": fresh_n,
        "session_calls": calls,
    }
    print(row, flush=True)
    return row


def main() -> None:
    out_dir = os.path.join(HERE, "results")
    os.makedirs(out_dir, exist_ok=True)
    only = set(sys.argv[1:])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, model, dims, budget, fresh_n, calls in MODELS:
            if only and not any(o in name for o in only):
                continue
            if not os.path.exists(model):
                print(f"skipped {name}: {model} not present", flush=True)
                continue
            rows.append(bench(name, model, dims, budget, fresh_n, calls, tmp))
    with open(os.path.join(out_dir, "api.json"), "w") as f:
        json.dump(rows, f, indent=1)
    cols = ["model", "budget", "nodes", "session_load_s", "session_second_call_s", "session_warm_median_s",
            "fresh_turnip_run_median_s", "ratio_fresh_over_second_call"]
    lines = [
        "Fresh `turnip-run PLAN --random-inputs` (process start, load, run) vs the second `Session.run` "
        "of one session on the same plan and feeds; NumPy backend; ratio = fresh / second call.",
        "",
        "| " + " | ".join(cols) + " |",
        "|" + "---|" * len(cols),
    ]
    for r in rows:
        lines.append("| " + " | ".join(str(r[c]) for c in cols) + " |")
    with open(os.path.join(out_dir, "api.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
