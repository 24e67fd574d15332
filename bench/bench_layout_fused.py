"""Peak / max-live of every transformer fixture at 50% and 25% as ``turnipc plan`` makes it by default (fusion on).

    python bench/bench_layout_fused.py

bench/bench_layout_plans.py compares layout engines on the library default
(``PlanOptions`` without fusion); since fusion became ``turnipc plan``'s default
its graphs differ (fused chains and attention), so this table is issue 14's
"default options" figure for the fixtures. The light CNNs' figures (fused too)
are in bench/results/cnn.md. Every plan is verified. Writes
bench/results/layout_fused.md.
"""

from __future__ import annotations

import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(HERE, ".."), os.path.join(HERE, "..", "tests", "models")]

import fixtures  # noqa: E402

from turnipc.importer import import_model  # noqa: E402
from turnipc.planner import PlanOptions, build_plan  # noqa: E402
from turnipc.units import Budget  # noqa: E402
from turnipc.verify import verify_plan  # noqa: E402


def main() -> int:
    md = ["Transformer fixtures planned with `turnipc plan`'s defaults (search layout, fusion on) at 50% and 25% of",
          "their no-offload peak (`python bench/bench_layout_fused.py`); every plan verified. Seconds: wall clock.", "",
          "| model | budget | peak / max-live | peak B | budget B | reload B | nodes | plan s |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    worst = 0.0
    for fx in fixtures.available():
        if fx.kind == "light":
            continue
        for frac in (0.5, 0.25):
            t0 = time.perf_counter()
            plan = build_plan(import_model(fx.path, fx.dims or {}, None), PlanOptions(Budget(fraction=frac), fuse=True))
            secs = time.perf_counter() - t0
            verify_plan(plan)
            st = plan.stats
            ml = max(st.max_live_bytes_per_device)
            ratio = st.peak_bytes / ml if ml else 1.0
            worst = max(worst, ratio)
            md.append(f"| {fx.name} | {frac:.0%} | {ratio:.4f} | {st.peak_bytes} | {st.budget_bytes} | {st.reload_bytes} "
                      f"| {len(plan.nodes)} | {secs:.2f} |")
            print(md[-1], flush=True)
    md += ["", f"Worst peak / max-live: {worst:.4f}."]
    with open(os.path.join(HERE, "results", "layout_fused.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
