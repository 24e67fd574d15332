"""Peak / max-live of the light CNN plans at 50% and 25% (default options), before and after
the layout changes of issue 14's last stop, measured side by side on one machine.

    python bench/bench_layout_cnn.py [--only NAME ...] [--timeout SECONDS]
    TURNIP_BENCH_CODE=DIR python bench/bench_layout_cnn.py --label before

Each row is planned with ``build_plan`` and the default options, each plan verified,
and stored under ``--label`` ("after" by default). With ``TURNIP_BENCH_CODE`` the
compiler and runtime are imported from DIR instead of this checkout (an export of the
commit before, e.g. ``git archive 6c59d76 | tar -x -C DIR`` plus the built
``_canonical`` library): that run is the "before" column. The table also shows the
figures bench/results/cnn.json recorded (bench/bench_cnn.py, the ones the issue quotes).
Writes bench/results/layout_cnn.json and .md (rows and labels not re-run are kept).

Each plan runs in a child process stopped after ``--timeout`` wall seconds (the bench's
own limit on a shared machine; it never decides a plan's content): such a row says
"timeout".
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CODE = os.environ.get("TURNIP_BENCH_CODE") or os.path.join(HERE, "..")
sys.path[:0] = [CODE, os.path.join(CODE, "runtime"), os.path.join(HERE, "..", "tests"),
                os.path.join(HERE, "..", "tests", "models")]

import fixtures  # noqa: E402

from turnipc.importer import import_model  # noqa: E402
from turnipc.planner import PlanOptions, build_plan  # noqa: E402
from turnipc.units import Budget  # noqa: E402
from turnipc.verify import verify_plan  # noqa: E402

MODELS = ("light_densenet121", "light_inception_v1", "light_squeezenet", "light_shufflenet")
BUDGETS = (("50%", 0.5), ("25%", 0.25))


def _child(conn, name: str, frac: float) -> None:
    fx = next(f for f in fixtures.available("light") if f.name == name)
    graph = import_model(fx.path, None, None)
    t0 = time.perf_counter()
    plan = build_plan(graph, PlanOptions(Budget(fraction=frac)))
    secs = time.perf_counter() - t0
    verify_plan(plan)
    st = plan.stats
    ml = max(st.max_live_bytes_per_device)
    conn.send({"peak": st.peak_bytes, "max_live": ml, "ratio": round(st.peak_bytes / ml, 4),
               "budget_bytes": st.budget_bytes, "transfer": st.offload_bytes + st.reload_bytes + st.move_bytes,
               "seconds": round(secs, 2)})


def run_one(name: str, frac: float, timeout: float) -> dict:
    parent, child = multiprocessing.Pipe(duplex=False)
    p = multiprocessing.Process(target=_child, args=(child, name, frac))
    p.start()
    if parent.poll(timeout):
        out = parent.recv()
    else:
        out = {"error": "timeout"}
    p.terminate()
    p.join()
    return out


def before_rows() -> dict[tuple[str, str], dict]:
    path = os.path.join(HERE, "results", "cnn.json")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return {(r["model"], r["budget"]): r for r in json.load(f)}


def write(rows: dict, out: str) -> None:
    recorded = before_rows()
    with open(os.path.join(out, "layout_cnn.json"), "w") as f:
        json.dump([{"model": m, "budget": b, **r} for (m, b), r in sorted(rows.items())], f, indent=1)
    md = ["Light CNNs at 50% and 25% of their no-offload peak, default options: peak / max-live and whole-plan",
          "seconds before (the code of commit 6c59d76, `TURNIP_BENCH_CODE=... --label before`) and after (this branch),",
          "run one after the other on the same shared 2-core machine (`python bench/bench_layout_cnn.py`);",
          "\"recorded\": bench/results/cnn.json as bench/bench_cnn.py wrote it (its seconds on a more loaded machine).", "",
          "| model | budget | peak / max-live recorded | before | after | peak / budget after | transfer B before | after "
          "| plan s recorded | before | after |",
          "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]

    def cell(r: dict | None, key: str, fmt: str = "{}") -> str:
        if r is None:
            return "-"
        if "error" in r:
            return r["error"]
        return fmt.format(r[key])

    for m in MODELS:
        for b, _ in BUDGETS:
            r = rows.get((m, b))
            if r is None:
                continue
            old = recorded.get((m, b), {})
            rec = f"{old['peak_over_max_live']:.4f}" if old.get("planned") else "-"
            bef, aft = r.get("before"), r.get("after")
            ratio_budget = f"{aft['peak'] / aft['budget_bytes']:.3f}" if aft and "error" not in aft else "-"
            md.append(f"| {m} | {b} | {rec} | {cell(bef, 'ratio', '{:.4f}')} | {cell(aft, 'ratio', '{:.4f}')} | {ratio_budget} "
                      f"| {cell(bef, 'transfer')} | {cell(aft, 'transfer')} | {old.get('seconds', '-')} "
                      f"| {cell(bef, 'seconds')} | {cell(aft, 'seconds')} |")
    with open(os.path.join(out, "layout_cnn.md"), "w") as f:
        f.write("\n".join(md) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--fractions", nargs="*", choices=[b for b, _ in BUDGETS], default=[b for b, _ in BUDGETS])
    ap.add_argument("--label", choices=("before", "after"), default="after")
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    args = ap.parse_args()
    path = os.path.join(args.out, "layout_cnn.json")
    rows: dict = {}
    if os.path.exists(path):
        with open(path) as f:
            rows = {(r.pop("model"), r.pop("budget")): r for r in json.load(f)}
    for m in MODELS:
        if args.only and not any(s in m for s in args.only):
            continue
        for b, frac in BUDGETS:
            if b not in args.fractions:
                continue
            rows.setdefault((m, b), {})[args.label] = run_one(m, frac, args.timeout)
            print(m, b, args.label, json.dumps(rows[(m, b)][args.label]), flush=True)
            write(rows, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
