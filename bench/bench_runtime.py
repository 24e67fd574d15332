"""turnip-run (NumPy backend) vs onnxruntime (CPU) on the same model and inputs, side by side.

    python bench/bench_runtime.py        # writes bench/results/runtime.{json,md}

Models: a LLaMA-shaped fp32 decoder with random weights (4 layers, hidden 512,
seq 256: big enough that kernels, not Python, dominate), the GPT-2 fixture,
and the light ResNet-50. Each is planned at 100% and 25% of its no-offload
peak (or the smallest feasible budget when 25% is below it); wall times are
the median of several warm runs, measured alternately in one process, so the
ratio is what to read, not the absolute numbers.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(HERE, "..", "tests"), os.path.join(HERE, "..", "tests", "models")]

import fixtures  # noqa: E402
import numpy as np  # noqa: E402
import onnx  # noqa: E402
from benchlib import markdown_table, ort_session, plans_at, write_results  # noqa: E402
from synthetic import llama_shaped_model, write_random_weights  # noqa: E402
from turnip.check import compare  # noqa: E402
from turnip.plan import write_plan  # noqa: E402
from turnip.run import run_plan  # noqa: E402

from turnipc.importer import import_model  # noqa: E402

REPEAT = 5


def bench_model(name: str, path: str, dims: dict | None, feeds: dict, folder: str) -> list[dict]:
    graph = import_model(path, dims, None)
    sess = ort_session(path)
    ref = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
    rows = []
    for label, plan in plans_at(graph, path):
        plan_path = os.path.join(os.path.dirname(path), f".bench-{name}.plan")
        write_plan(plan, plan_path)
        try:
            t_ort, t_turnip, t_fixed = [], [], []
            out = None
            for _ in range(REPEAT):  # alternate, so load drifts hit both alike
                t0 = time.perf_counter()
                sess.run(None, feeds)
                t_ort.append(time.perf_counter() - t0)
                res = run_plan(plan_path, feeds, backend="numpy", order="dynamic")
                t_turnip.append(res.stats.wall_s[-1])
                out = res.outputs
                t_fixed.append(run_plan(plan_path, feeds, backend="numpy", order="fixed").stats.wall_s[-1])
        finally:
            os.unlink(plan_path)
        ok = all(c.ok for c in compare(out, ref, atol=1e-4, rtol=1e-3))
        s = plan.stats
        rows.append({
            "model": name, "budget": label, "check": "PASSED" if ok else "FAILED",
            "ort_s": round(statistics.median(t_ort), 4), "turnip_s": round(statistics.median(t_turnip), 4),
            "turnip_fixed_s": round(statistics.median(t_fixed), 4),
            "ratio_turnip_over_ort": round(statistics.median(t_turnip) / statistics.median(t_ort), 2),
            "peak_bytes": s.peak_bytes, "no_offload_peak_bytes": s.no_offload_peak_bytes,
            "reload_bytes": s.reload_bytes, "offload_bytes": s.offload_bytes, "nodes": sum(s.nodes.values()),
        })
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        m = llama_shaped_model(layers=4, hidden=512, heads=8, ffn=1376, vocab=4096, batch=1, seq=256, fp16=False)
        path = os.path.join(tmp, "llama_small.onnx")
        onnx.save(m, path)
        write_random_weights(m, tmp, seed=0)
        feeds = {"input_ids": np.random.default_rng(0).integers(0, 4096, (1, 256), dtype=np.int64)}
        rows += bench_model("llama-shaped 4x512 s256 fp32", path, {"batch": 1, "seq": 256}, feeds, tmp)
        fx = fixtures.get("gpt2_dynamo18")
        rows += bench_model("gpt2_dynamo18 (fixture)", fx.path, fx.dims, fixtures.make_inputs(fx, 0), tmp)
        fx = fixtures.get("light_resnet50")
        if fx.exists():
            rows += bench_model("light_resnet50", fx.path, None, fixtures.make_inputs(fx, 0), tmp)
    cols = ["model", "budget", "check", "ort_s", "turnip_s", "turnip_fixed_s", "ratio_turnip_over_ort", "nodes", "reload MiB"]
    table = markdown_table([{**r, "reload MiB": f"{r['reload_bytes'] / 2**20:.1f}"} for r in rows], cols)
    write_results("runtime", rows, table)


if __name__ == "__main__":
    main()
