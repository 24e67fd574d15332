"""Cost of the runtime's pre-run plan check on the LLaMA-7B-shaped plan (issue 15).

    python bench/bench_plancheck.py      # writes bench/results/plancheck.{json,md}

The runtime checks every plan before its first node runs (turnip.plancheck,
the code `turnipc verify` runs), unless a plan with the same bytes passed
before (turnip.cache). This measures, side by side in one run, what each part
costs: reading the plan (msgpack decode + type/range checks), the structural
checks (devices, alignment, budgets, bounds, hazard ordering), the data
replay, the sha256 of the encoding the cache is keyed by, and the cache hit.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(HERE, "..", "tests"), os.path.join(HERE, "..", "tests", "models")]

import onnx  # noqa: E402
from synthetic import llama_shaped_model  # noqa: E402
from turnip import cache  # noqa: E402
from turnip.plan import decode_plan, encode_plan  # noqa: E402
from turnip.plancheck import check_plan, plan_digest  # noqa: E402

from turnipc.importer import import_model  # noqa: E402
from turnipc.planner import PlanOptions, build_plan  # noqa: E402
from turnipc.units import Budget  # noqa: E402


def best(f, n: int = 3) -> float:
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t0)
    return min(ts)


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["TURNIP_CACHE_DIR"] = os.path.join(tmp, "cache")
        path = os.path.join(tmp, "llama7b_shaped.onnx")
        onnx.save(llama_shaped_model(), path)
        g = import_model(path, {"batch": 1, "seq": 2048}, None)
        for label, frac in (("100%", 1.0), ("25%", 0.25), ("10%", 0.10)):
            plan = build_plan(g, PlanOptions(Budget(fraction=frac)))
            data = encode_plan(plan)
            digest = plan_digest(plan)
            cache.remember_verified(digest)
            row = _measure(plan, data, label)
            rows.append(row)
            print(row, flush=True)
    _write(rows)


def _measure(plan, data: bytes, label: str) -> dict:
    return {
        "plan": f"llama7b_shaped b1 s2048 fp16 at {label}",
        "nodes": len(plan.nodes),
        "plan_bytes": len(data),
        "read_s": round(best(lambda: decode_plan(data)), 4),
        "check_structure_s": round(best(lambda: check_plan(plan, data=False)), 4),
        "check_full_s": round(best(lambda: check_plan(plan, data=True)), 4),
        "digest_s": round(best(lambda: plan_digest(plan)), 4),
        "cache_hit_s": round(best(lambda: cache.is_verified(plan_digest(plan))), 4),
        "weights_gib": round(sum(t.nbytes for t in plan.tensors if t.kind == "weight") / 2**30, 2),
    }


def _write(rows: list[dict]) -> None:
    out = os.path.join(HERE, "results")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "plancheck.json"), "w") as f:
        json.dump(rows, f, indent=1)
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    ratio = statistics.mean(r["check_full_s"] / max(r["check_structure_s"], 1e-9) for r in rows)
    lines += ["", f"Data replay costs {ratio:.2f}x the structural checks on average; both run before every run of an unverified plan."]
    with open(os.path.join(out, "plancheck.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
