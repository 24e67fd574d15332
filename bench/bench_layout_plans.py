"""Peak / max-live of plans made with greedy (the old default) and search (the new
default layout engine) on every fixture and light CNN at 50% and 25%.

    python bench/bench_layout_plans.py [--only NAME ...] [--timeout SECONDS]

Writes bench/results/layout_plans.json and .md. Each plan is verified. The
"search before" column is read from bench/results/layout_plans_before.json (the
search default as it was before the layout was prefetched into and the search
descended from its start; kept so the table shows the change side by side), the
"search stop 19" column from bench/results/layout_plans_stop19.json (the table of
the previous stop, measured on the layout branch before that stop's merges).

Each plan runs in a child process and is stopped after ``--timeout`` wall seconds
(the bench's own limit on a shared machine; it never decides a plan's content):
such a row says "timeout" instead of a figure.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
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
            "budget": st.budget_bytes, "transfer": st.offload_bytes + st.reload_bytes + st.move_bytes,
            "seconds": round(s, 2)}


def _child(conn, name: str, frac: float, solver: str) -> None:
    fx = next(f for f in fixtures.available() if f.name == name)
    g = import_model(fx.path, fx.dims if fx.kind != "light" else None, None)
    conn.send(one(g, frac, solver))


def one_with_timeout(name: str, frac: float, solver: str, timeout: float) -> dict:
    """``one`` in a forked child, stopped after ``timeout`` seconds (then {"timeout": seconds})."""
    ctx = multiprocessing.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    p = ctx.Process(target=_child, args=(send, name, frac, solver))
    t0 = time.perf_counter()
    p.start()
    send.close()
    got = recv.recv() if recv.poll(timeout) else None
    p.join(1 if got is None else None)
    if p.is_alive():
        p.terminate()
        p.join()
    if got is None:
        return {"timeout": round(time.perf_counter() - t0)} if p.exitcode in (None, -15) else {
            "error": f"child exited with {p.exitcode}"}
    return got


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--solvers", nargs="*", default=list(SOLVERS),
                    help="engines to plan with; the others are copied from layout_plans_before.json "
                         "(greedy is unchanged by the layout work and slow to refuse on light CNNs)")
    ap.add_argument("--timeout", type=float, default=600, help="wall seconds per plan (child process)")
    ap.add_argument("--note", default="", help="a line printed above the table (e.g. what changed the budgets)")
    ap.add_argument("--render-only", action="store_true", help="rewrite the .md from the .json in --out, run nothing")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    args = ap.parse_args()
    def table(name: str) -> dict:
        path = os.path.join(HERE, "results", name)
        if not os.path.exists(path):
            return {}
        with open(path) as f:
            return {(r["model"], r["budget"]): r for r in json.load(f)}

    before = table("layout_plans_before.json")
    stop19 = table("layout_plans_stop19.json")
    rows = []
    if args.render_only:
        with open(os.path.join(args.out, "layout_plans.json")) as f:
            rows = json.load(f)
    for fx in ([] if args.render_only else fixtures.available()):
        if args.only and not any(s in fx.name for s in args.only):
            continue
        for label, frac in BUDGETS:
            r = {"model": fx.name, "budget": label}
            for solver in SOLVERS:
                if solver in args.solvers:
                    r[solver] = one_with_timeout(fx.name, frac, solver, args.timeout)
                else:
                    r[solver] = dict(before.get((fx.name, label), {}).get(solver, {}), copied=True)
            rows.append(r)
            print(json.dumps(r), flush=True)
    os.makedirs(args.out, exist_ok=True)
    if not args.render_only:
        with open(os.path.join(args.out, "layout_plans.json"), "w") as f:
            json.dump(rows, f, indent=1)
    md = ["Plans: peak / max-live with the greedy layout (old default) and the search layout (new default).",
          "Seconds are whole-plan wall clock on a shared machine. Columns marked before come from",
          "layout_plans_before.json; greedy figures are copied from there when the run left greedy out",
          f"({'copied' if all(r['greedy'].get('copied') for r in rows) else 'run'} in this run).", "",
          f"Plans stopped after {args.timeout:g} s say timeout." + (f" {args.note}" if args.note else ""), "",
          "| model | budget | greedy peak/max-live | search before | search stop 19 | search peak/max-live "
          "| search peak / budget | search transfer B | greedy s | search s before | search s stop 19 | search s |",
          "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]

    def cell(x: dict, key: str):
        if "timeout" in x:
            return f"timeout ({x['timeout']} s)"
        return x.get(key, "refused" if "error" in x else "-")

    for r in rows:
        g, s = r["greedy"], r["search"]
        b = before.get((r["model"], r["budget"]), {}).get("search", {})
        p = stop19.get((r["model"], r["budget"]), {}).get("search", {})
        use = f"{s['peak'] / s['budget']:.3f}" if "peak" in s and s.get("budget") else "-"
        md.append(f"| {r['model']} | {r['budget']} | {cell(g, 'ratio')} | {cell(b, 'ratio')} | {cell(p, 'ratio')} | "
                  f"{cell(s, 'ratio')} | {use} | {cell(s, 'transfer')} | {cell(g, 'seconds')} | {cell(b, 'seconds')} | "
                  f"{cell(p, 'seconds')} | {cell(s, 'seconds')} |")
    errors = sorted({x["error"] for r in rows for x in (r["greedy"], r["search"]) if "error" in x and "exited" not in x["error"]})
    if errors:
        md += ["", "refused: the budget is below the smallest feasible one for that model (untiled or tiled), e.g. "
               f"`{errors[0]}`"]
    worst = max((r["search"].get("ratio", 0) for r in rows), default=0)
    md += ["", f"Worst search peak / max-live: {worst}."]
    with open(os.path.join(args.out, "layout_plans.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
