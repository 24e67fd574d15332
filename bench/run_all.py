"""`make bench`: run every benchmark and gather the results into bench/results/summary.md.

Each benchmark is its own script (run alone for one area); this one runs them
in sequence, each in its own process, and concatenates their markdown tables.
Speed and memory targets live here, never in unit tests.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BENCHES = [
    ("planner", "bench_planner.py", "Planning time and peak / lower bound (compiler issue)"),
    ("runtime", "bench_runtime.py", "turnip-run vs onnxruntime CPU, side by side (runtime issue)"),
    ("api", "bench_api.py", "Session second call vs a fresh turnip-run on the same plan (Python API issue)"),
    ("executor", "bench_executor.py", "Executor overhead: nodes per second on trivial nodes"),
    ("layout", "bench_layout.py", "Arena layout on published instances (greedy vs exact search)"),
    ("layout_plans", "bench_layout_plans.py", "Plans: peak / max-live with greedy vs search layout at 50% and 25%"),
    ("layout_fused", "bench_layout_fused.py", "Plans as turnipc plan makes them (fusion on): peak / max-live of every fixture at 50% and 25%"),
    ("layout_cnn", "bench_layout_cnn.py", "Light CNNs: peak / max-live at 50% and 25%, before / after the layout changes"),
    ("cnn", "bench_cnn.py", "Light CNNs planned at 50%, 25%, 10%: verified, --check, random orders"),
    ("vision", "bench_vision.py", "transformers vision models (ResNet-50, MobileNetV2, ConvNeXt-tiny, random weights) at 50/25/10%, checked"),
    ("simulate", "bench_simulate.py", "Simulated makespan on H100 at reduced budgets; dynamic vs fixed order"),
    ("decode", "bench_decode.py", "Decode tokens/s: simulated OPT-30B / LLaMA-2 vs published; decode loop ids vs transformers"),
    ("kernels", "bench_kernels.py", "Kernels vs onnxruntime on real-size exports; peak RSS vs weights (issue 16)"),
    ("tiles", "bench_tiles.py", "Tiles: min budget before/after the partition pass; tiled plans at 25% and 10% checked"),
    ("floor", "bench_floor.py", "Light CNNs at --gpu-mem 10% and min: planning seconds before / after the min-search changes, side by side"),
]


def main() -> int:
    only = set(sys.argv[1:])
    out = ["# Benchmark results", "", f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs", ""]
    failed = []
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.join(HERE, ".."), os.path.join(HERE, "..", "runtime")]))
    for key, script, title in BENCHES:
        if only and key not in only:
            continue
        path = os.path.join(HERE, script)
        if not os.path.exists(path):
            continue
        print(f"== {key}: {title}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call([sys.executable, path], env=env)
        took = time.perf_counter() - t0
        out += [f"## {title}", "", f"`bench/{script}`: exit {rc}, {took:.0f} s", ""]
        md = os.path.join(HERE, "results", f"{key}.md")
        if os.path.exists(md):
            out += [open(md).read(), ""]
        if rc:
            failed.append(key)
    with open(os.path.join(HERE, "results", "summary.md"), "w") as f:
        f.write("\n".join(out))
    print(f"wrote bench/results/summary.md{'; failed: ' + ', '.join(failed) if failed else ''}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
