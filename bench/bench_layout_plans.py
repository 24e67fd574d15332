"""Peak / max-live of plans made with greedy (the old default) and search (the new
default layout engine) on every fixture and light CNN at 50% and 25%.

    python bench/bench_layout_plans.py [--only NAME ...]

Writes bench/results/layout_plans.json and .md. Each plan is verified.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(HERE, ".."), os.path.join(HERE, "..", "tests"), os.path.join(HERE, "..", "tests", "models")]

import fixtures  # noqa: E402

from turnipc.importer import import_model  # noqa: E402
from turnipc.planner import PlanOptions, build_plan  # noqa: E402
from turnipc.units import Budget  # noqa: E402
from turnipc.verify import verify_plan  # noqa: E402

BUDGETS = [("50%", 0.5), ("25%", 0.25)]
SOLVERS = ("greedy", "search")


def one(graph, frac: float, solver: str) -> dict:
    t0 = time.perf_counter()
    try:
        plan = build_plan(graph, PlanOptions(Budget(fraction=frac), solver=solver))
    except Exception as e:  # noqa: BLE001  (budget below the feasible minimum: say so)
        return {"error": str(e)[:100]}
    s = time.perf_counter() - t0
    verify_plan(plan)
    st = plan.stats
    ml = max(st.max_live_bytes_per_device)
    return {"peak": st.peak_bytes, "max_live": ml, "ratio": round(st.peak_bytes / ml, 4) if ml else 1.0,
            "seconds": round(s, 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    args = ap.parse_args()
    rows = []
    for fx in fixtures.available():
        if args.only and not any(s in fx.name for s in args.only):
            continue
        g = import_model(fx.path, fx.dims if fx.kind != "light" else None, None)
        for label, frac in BUDGETS:
            r = {"model": fx.name, "budget": label}
            for solver in SOLVERS:
                r[solver] = one(g, frac, solver)
            rows.append(r)
            print(json.dumps(r), flush=True)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "layout_plans.json"), "w") as f:
        json.dump(rows, f, indent=1)
    md = ["Plans: peak / max-live with the greedy layout (old default) and the search layout (new default).",
          "Seconds are whole-plan wall clock on a shared machine.", "",
          "| model | budget | greedy peak/max-live | search peak/max-live | greedy s | search s |",
          "| --- | --- | ---: | ---: | ---: | ---: |"]
    for r in rows:
        g, s = r["greedy"], r["search"]
        md.append(f"| {r['model']} | {r['budget']} | {g.get('ratio', g.get('error'))} | {s.get('ratio', s.get('error'))} | "
                  f"{g.get('seconds', '-')} | {s.get('seconds', '-')} |")
    worst = max((r["search"].get("ratio", 0) for r in rows), default=0)
    md += ["", f"Worst search peak / max-live: {worst}."]
    with open(os.path.join(args.out, "layout_plans.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
