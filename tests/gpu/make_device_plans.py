"""Make the plans the GPU device check runs (on a CPU machine with turnipc + OR-Tools).

    python tests/gpu/make_device_plans.py            # plan everything into tests/gpu/plans/
    python tests/gpu/make_device_plans.py --weights  # (GPU host) only write the LLaMA weights file

A GPU host for the device check has CuPy, onnx, onnxruntime, msgpack, click
and NumPy but not OR-Tools, so it cannot run the planner: the plans are made
here and travel with the tree (tests/gpu/plans/, committed; every plan names
its model relative to itself, so the fixtures in tests/models/ are found).

* every transformer / demo fixture of tests/models/fixtures.py at 100% and 25%
  of its no-offload peak: ``plans/<fixture>-<100|25>.plan``;
* a LLaMA-shaped fp16 decoder (tests/synthetic.py ``llama_shaped_model``: 8
  layers, hidden 2048, 16 heads, ffn 5632, vocab 16000, batch 1, seq 1024)
  planned at 25% of its no-offload peak (or the next of 30/35/.../50% that
  is feasible), so it needs at least 2x its budget: ``plans/llama8x2048/``.
  Its weights (about 0.9 GiB) do not travel: ``--weights`` writes them on the GPU
  host with NumPy and onnx only (seeded, tests/synthetic.py
  ``write_random_weights``); the plan checks only the .onnx's sha256.

``plans/manifest.json`` lists every plan with its budget and planner stats.
Planning is deterministic, so re-running this gives the same bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)
ROOT = os.path.dirname(TESTS)
PLANS = os.path.join(HERE, "plans")
LLAMA_DIR = os.path.join(PLANS, "llama8x2048")
LLAMA_ONNX = os.path.join(LLAMA_DIR, "llama8x2048.onnx")
LLAMA_CFG = dict(layers=8, hidden=2048, heads=16, ffn=5632, vocab=16000, batch=1, seq=1024, fp16=True)
BUDGETS = {"100": 1.0, "25": 0.25}

for p in (os.path.join(ROOT, "runtime"), ROOT, TESTS, os.path.join(TESTS, "models")):
    if p not in sys.path:
        sys.path.insert(0, p)


def write_llama_weights(force: bool = False) -> str:
    """(numpy + onnx only) Write llama8x2048's weights.bin beside its .onnx; return its path."""
    import onnx
    from synthetic import write_random_weights

    path = os.path.join(LLAMA_DIR, "weights.bin")
    model = onnx.load(LLAMA_ONNX, load_external_data=False)
    want = 0
    for t in model.graph.initializer:
        for e in t.external_data:
            if e.key == "length":
                want += int(e.value)
    if not force and os.path.isfile(path) and os.path.getsize(path) == want:
        return path
    t0 = time.perf_counter()
    write_random_weights(model, LLAMA_DIR, seed=0)
    print(f"wrote {path} ({want / 2**30:.2f} GiB) in {time.perf_counter() - t0:.1f} s", flush=True)
    return path


def _plan_one(graph, fraction: float, out: str) -> dict:
    from turnip.plan import write_plan

    from turnipc.planner import PlanOptions, build_plan
    from turnipc.units import Budget
    from turnipc.verify import verify_plan

    plan = build_plan(graph, PlanOptions(Budget(fraction=fraction)), plan_dir=os.path.dirname(out))
    verify_plan(plan)
    write_plan(plan, out)
    s = plan.stats
    return {
        "plan": os.path.relpath(out, PLANS),
        "fraction": fraction,
        "budget_bytes": s.budget_bytes,
        "peak_bytes": s.peak_bytes,
        "no_offload_peak_bytes": s.no_offload_peak_bytes,
        "reload_bytes": s.get("reload_bytes", 0),
        "offload_bytes": s.get("offload_bytes", 0),
        "nodes": len(plan.nodes),
        "gpus": plan.num_devices,
        "file_bytes": os.path.getsize(out),
    }


def make_all() -> None:
    import fixtures
    import onnx
    from synthetic import llama_shaped_model

    from turnipc.importer import import_model

    os.makedirs(PLANS, exist_ok=True)
    entries = []
    for fx in fixtures.FIXTURES:
        if fx.kind not in ("hf", "demo") or not fx.exists():
            continue
        graph = import_model(fx.path, fx.dims, None)
        for label, frac in BUDGETS.items():
            e = _plan_one(graph, frac, os.path.join(PLANS, f"{fx.name}-{label}.plan"))
            e.update(model=fx.name, kind="fixture", budget=f"{label}%")
            entries.append(e)
            print(f"{e['plan']}: peak {e['peak_bytes']} / no-offload {e['no_offload_peak_bytes']}, {e['file_bytes']} bytes", flush=True)

    os.makedirs(LLAMA_DIR, exist_ok=True)
    model = llama_shaped_model(**LLAMA_CFG)
    onnx.save(model, LLAMA_ONNX)
    cfg = LLAMA_CFG
    graph = import_model(LLAMA_ONNX, {"batch": cfg["batch"], "seq": cfg["seq"]}, None)
    from turnipc.errors import BudgetError

    for pct in (25, 30, 35, 40, 45, 50):
        try:
            e = _plan_one(graph, pct / 100, os.path.join(LLAMA_DIR, "llama8x2048.plan"))
            break
        except BudgetError as err:
            print(f"llama8x2048 at {pct}%: {err}", flush=True)
    else:
        raise SystemExit("llama8x2048 does not plan at 50% or below")
    e.update(model="llama8x2048", kind="llama_fp16", budget=f"{pct}%", config=cfg)
    assert e["no_offload_peak_bytes"] >= 2 * e["budget_bytes"], "the LLaMA plan must need at least 2x its budget"
    entries.append(e)
    print(f"{e['plan']}: budget {e['budget_bytes']} B, no-offload peak {e['no_offload_peak_bytes']} B, reloads {e['reload_bytes']} B", flush=True)

    with open(os.path.join(PLANS, "manifest.json"), "w") as f:
        json.dump({"plans": entries}, f, indent=1, sort_keys=True)
        f.write("\n")
    total = sum(os.path.getsize(os.path.join(dp, fn)) for dp, _, fns in os.walk(PLANS) for fn in fns if fn != "weights.bin")
    print(f"tests/gpu/plans: {len(entries)} plans, {total / 2**20:.2f} MiB (without weights.bin)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", action="store_true", help="only write the LLaMA weights (numpy + onnx; for the GPU host)")
    ap.add_argument("--force", action="store_true", help="rewrite the weights even if a file of the right size exists")
    a = ap.parse_args()
    if a.weights:
        write_llama_weights(force=a.force)
    else:
        make_all()


if __name__ == "__main__":
    main()
