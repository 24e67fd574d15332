"""Tiles (issue 11): how far below its largest op a model plans, and that tiled plans are exact.

For every transformer fixture, the demo MLP and the small exports of
/work/models/small (when present):

* the smallest budget that plans, as a fraction of the no-offload peak,
  before (untiled bisection) and after (tiling allowed, ``--gpu-mem min``);
* plans at 25% and 10% of the peak: verified, checked against onnxruntime
  (atol 1e-4, rtol 1e-3), and bit-identical over 20 random execution orders.

Then a LLaMA-shaped stack at seq 4,096, hidden 256 (fp32, random weights
written to a temporary folder) planned at 48 MiB, below one head's 4096 x 4096
fp32 scores (64 MiB), verified and checked on the CPU.

Each part below stores its own section of bench/results/tiles.json (the
others are kept) and renders tiles.md from the whole file, so the parts can
be run one at a time. Usage:
    python bench/bench_tiles.py [--quick] [--no-min] [--no-long]  # the table (and the seq-4,096 stack)
    python bench/bench_tiles.py --long4k # only the seq-4,096 stack on the CPU
    python bench/bench_tiles.py --render # tiles.md again from tiles.json
    python bench/bench_tiles.py --orders # only dynamic vs fixed order, tiled vs untiled (simulated)
    python bench/bench_tiles.py --big    # only the LLaMA-7B-shaped graph at 10% (planning time, nodes)
    python bench/bench_tiles.py --long   # only the seq-32,768 LLaMA-shaped stack (fp16, weights never read)
    python bench/bench_tiles.py --real-case MODEL SEQ BUDGET  # one real-size row (BUDGET: 25%, 10% or min)
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..")
sys.path[:0] = [ROOT, os.path.join(ROOT, "runtime"), os.path.join(ROOT, "tests"), os.path.join(ROOT, "tests", "models")]

import fixtures  # noqa: E402
import numpy as np  # noqa: E402
from turnip.check import compare, reference_outputs  # noqa: E402
from turnip.run import random_feeds, run_plan  # noqa: E402

from turnipc.errors import BudgetError  # noqa: E402
from turnipc.importer import import_model  # noqa: E402
from turnipc.planner import PlanOptions, build_plan  # noqa: E402
from turnipc.units import Budget  # noqa: E402
from turnipc.verify import verify_plan  # noqa: E402

SMALL = os.environ.get("TURNIP_SMALL_MODELS", "/work/models/small")
REAL = os.environ.get("TURNIP_REAL_MODELS", "/work/models/real")
ORDERS = 20


def cases() -> list[tuple[str, str, dict, dict | None]]:
    out = []
    for f in fixtures.FIXTURES:
        if f.kind in ("hf", "demo") and f.exists():
            out.append((f.name, f.path, dict(f.dims), fixtures.make_inputs(f, seed=0)))
    if os.path.isdir(SMALL):
        for fn in sorted(os.listdir(SMALL)):
            if fn.endswith(".onnx"):
                out.append((f"small/{fn[:-5]}", os.path.join(SMALL, fn), {"batch": 1, "seq": 16}, None))
    return out


def check_plan(plan, path: str, feeds, orders: int) -> dict:
    t0 = time.perf_counter()
    verify_plan(plan)
    plan.model_path = os.path.abspath(path)
    feeds = feeds if feeds is not None else random_feeds(plan, 0)
    ref = reference_outputs(path, feeds)
    first = run_plan(plan, feeds, backend="numpy")
    ok = all(c.ok for c in compare(first.outputs, ref))
    same = True
    for seed in range(orders):
        again = run_plan(plan, feeds, backend="numpy", order="random", seed=seed)
        same &= all(np.array_equal(v, again.outputs[k]) for k, v in first.outputs.items())
    st = plan.stats
    return {"check": ok, "orders_identical": same, "orders": orders, "peak": st.peak_bytes,
            "budget": st.budget_bytes, "nodes": len(plan.nodes), "tiled_ops": (st.tiling or {}).get("tiled_ops", 0),
            "check_s": round(time.perf_counter() - t0, 2)}


FLAGS = {"--quick", "--no-min", "--no-long", "--long4k", "--render", "--orders", "--big", "--long", "--real-case"}


def main() -> int:
    if "-h" in sys.argv or "--help" in sys.argv:
        print(__doc__)
        return 0
    unknown = [a for a in sys.argv[1:] if a.startswith("-") and a not in FLAGS]
    if unknown:  # an unknown flag must not start the whole (hour-long) bench
        print(f"error: unknown option {unknown[0]!r}; see python bench/bench_tiles.py --help", file=sys.stderr)
        return 2
    if "--long" in sys.argv:
        return main_long()
    if "--orders" in sys.argv:
        return main_orders()
    if "--big" in sys.argv:
        return main_big()
    if "--real-case" in sys.argv:
        i = sys.argv.index("--real-case")
        return main_real_case(sys.argv[i + 1], int(sys.argv[i + 2]), sys.argv[i + 3])
    if "--render" in sys.argv:
        return render_only()
    if "--long4k" in sys.argv:
        r = long_sequence()
        print(json.dumps(r), flush=True)
        store("long_sequence", r)
        return 0
    quick = "--quick" in sys.argv
    do_min = "--no-min" not in sys.argv
    rows = []
    for name, path, dims, feeds in cases():
        g = import_model(path, dims, None)
        row: dict = {"model": name}
        if do_min:
            for key, tiled in (("min_before", False), ("min_after", True)):
                t0 = time.perf_counter()
                p = build_plan(g, PlanOptions(Budget(minimum=True), min_search_tiled=tiled))
                row[key] = p.stats.budget_bytes / p.stats.no_offload_peak_bytes
                row[key + "_s"] = round(time.perf_counter() - t0, 1)
                if tiled:
                    row["min_after_check"] = check_plan(p, path, feeds, 0 if quick else 3)["check"]
        for frac in (0.25, 0.10):
            t0 = time.perf_counter()
            try:
                p = build_plan(g, PlanOptions(Budget(fraction=frac)))
            except BudgetError as e:
                row[f"{frac:.0%}"] = {"error": str(e)}
                continue
            r = check_plan(p, path, feeds, 3 if quick else ORDERS)
            r["plan_s"] = round(time.perf_counter() - t0 - r["check_s"], 2)
            r["ratio"] = p.stats.peak_bytes / p.stats.no_offload_peak_bytes
            row[f"{frac:.0%}"] = r
        print(json.dumps(row), flush=True)
        rows.append(row)

    store("models", rows)
    if "--no-long" not in sys.argv:
        long_seq = long_sequence()
        print(json.dumps(long_seq), flush=True)
        store("long_sequence", long_seq)
    return 0


#: tiles.json sections and how each is made; tiles.md is rendered from all of them, in this order.
COMMANDS = {
    "models": "python bench/bench_tiles.py --no-long",
    "long_sequence": "python bench/bench_tiles.py --long4k",
    "long_32k": "python bench/bench_tiles.py --long",
    "orders": "python bench/bench_tiles.py --orders",
    "llama7b_10pct": "python bench/bench_tiles.py --big",
    "real_table": "python bench/bench_tiles.py --real-case MODEL SEQ BUDGET",
}


def store(section: str, value) -> None:
    """Replace one section of bench/results/tiles.json, then render tiles.md from the whole file."""
    jpath = os.path.join(HERE, "results", "tiles.json")
    data = json.load(open(jpath)) if os.path.exists(jpath) else {}
    data[section] = value
    data.setdefault("made", {})[section] = made()
    for stale in ("real", "small_min"):  # sections of earlier versions of this script
        data.pop(stale, None)
    os.makedirs(os.path.dirname(jpath), exist_ok=True)
    with open(jpath, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
    with open(os.path.join(HERE, "results", "tiles.md"), "w") as f:
        f.write("\n".join(render_md(data)) + "\n")
    print(f"wrote bench/results/tiles.json [{section}] and tiles.md")


def render_only() -> int:
    """``--render``: write tiles.md again from tiles.json (no measurement)."""
    data = json.load(open(os.path.join(HERE, "results", "tiles.json")))
    with open(os.path.join(HERE, "results", "tiles.md"), "w") as f:
        f.write("\n".join(render_md(data)) + "\n")
    return 0


def made() -> str:
    """Which code made a figure: the commit (``+`` when the work tree had changes besides results) and the UTC time."""
    import subprocess

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", ROOT, *args], capture_output=True, text=True).stdout.strip()

    dirty = "+" if git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench/results") else ""
    return f"commit {git('rev-parse', '--short', 'HEAD')}{dirty}, {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC"


def render_md(data: dict) -> list[str]:
    md = ["# Tiles (issue 11): bench/bench_tiles.py", "",
          "Every figure below was made by the command named with it; tiles.md is rendered from tiles.json.", ""]
    when = data.get("made", {})

    def at(section: str) -> str:
        return f" (made at {when[section]})" if section in when else " (from an earlier run of this script, not re-made)"

    rows = data.get("models")
    if rows:
        md += [f"Small exports and fixtures (`{COMMANDS['models']}`): min = `--gpu-mem min` as a share of the no-offload "
               "peak, untiled (before) and tiled (after); plans at 25% and 10%: peak / no-offload peak, verify, `--check` "
               "against onnxruntime, outputs over 20 random orders" + at("models") + ".", "",
               "| model | min/peak before | min/peak after | 25%: peak/peak, check, 20 orders | 10%: peak/peak, check, 20 orders |",
               "| --- | --- | --- | --- | --- |"]
        for r in rows:
            cells = []
            for frac in ("25%", "10%"):
                c = r.get(frac, {})
                if "error" in c:
                    cells.append(f"refused: {c['error']}")
                else:
                    cells.append(f"{c['ratio']:.3f}, verify ok, check {'ok' if c['check'] else 'FAIL'}, "
                                 f"{'identical' if c['orders_identical'] else 'DIFFER'} ({c['tiled_ops']} ops tiled, {c['nodes']} nodes)")
            before = f"{r['min_before']:.3f}" if "min_before" in r else "-"
            after = (f"{r['min_after']:.3f} (verify ok, check {'ok' if r['min_after_check'] else 'FAIL'}, {r['min_after_s']} s)"
                     if "min_after" in r else "-")
            md.append(f"| {r['model']} | {before} | {after} | {cells[0]} | {cells[1]} |")
        md.append("")
    ls = data.get("long_sequence")
    if ls:
        md += [f"Long sequence (`{COMMANDS['long_sequence']}`; LLaMA-shaped, seq {ls['seq']}, hidden {ls['hidden']}, fp32): "
               f"budget {ls['budget']} B (one head's scores: {ls['head_scores_bytes']} B), "
               f"peak {ls['peak']} B, verify ok, check {'ok' if ls['check'] else 'FAIL'}, "
               f"{ls['nodes']} nodes ({ls['tiled_ops']} ops tiled), planned in {ls['plan_s']} s{at('long_sequence')}.", ""]
    if data.get("long_32k"):
        md += [f"`{COMMANDS['long_32k']}`{at('long_32k')}: " + long_32k_md(data["long_32k"]), ""]
    if data.get("orders"):
        md += [f"`{COMMANDS['orders']}`{at('orders')}: " + orders_md(data["orders"]), ""]
    if data.get("llama7b_10pct"):
        md += [f"`{COMMANDS['llama7b_10pct']}`{at('llama7b_10pct')}: " + big_md(data["llama7b_10pct"]), ""]
    if data.get("real_table"):
        md += [f"Real size (`{COMMANDS['real_table']}`; /work/models/real, random weights, random feeds; plan s includes "
               "the min search):", "", *_real_md(data["real_table"])]
    return md


def long_sequence(seq: int = 4096, hidden: int = 256, budget: int = 48 << 20) -> dict:
    import onnx
    from synthetic import llama_shaped_model

    with tempfile.TemporaryDirectory() as d:
        m = llama_shaped_model(layers=2, hidden=hidden, heads=4, ffn=hidden * 3, vocab=1000, batch=1, seq=seq, fp16=False)
        path = os.path.join(d, "llama_long.onnx")
        onnx.save(m, path)
        end = 0
        for t in m.graph.initializer:
            if t.data_location == onnx.TensorProto.EXTERNAL:
                info = {e.key: e.value for e in t.external_data}
                end = max(end, int(info["offset"]) + int(info["length"]))
        (np.random.default_rng(0).standard_normal(end // 4).astype(np.float32) * 0.05).tofile(os.path.join(d, "weights.bin"))
        t0 = time.perf_counter()
        plan = build_plan(import_model(path, {"batch": 1, "seq": seq}, None), PlanOptions(Budget(bytes=budget)))
        plan_s = round(time.perf_counter() - t0, 1)
        r = check_plan(plan, path, None, 0)
    return {"seq": seq, "hidden": hidden, "budget": budget, "head_scores_bytes": seq * seq * 4, "plan_s": plan_s, **r}


def long_32k(seq: int = 32768, layers: int = 2, budget: int = 1 << 30) -> dict:
    """A LLaMA-shaped stack (hidden 1,024, 8 heads, ffn 2,816, vocab 32,000, fp16) at seq 32,768.

    Planned without reading weights (they are declared, never written), under
    a budget below one head's n x n fp16 scores (2 GiB), then verified and
    simulated on the H100 profile. The causal mask is built in the graph
    (Range / Greater / Where: a 2 GiB constant would not fit in a protobuf
    message) and the logits are those of the last position (seq x vocab
    logits are a graph output, which must exist whole).
    """
    import onnx
    from synthetic import llama_shaped_model

    from turnipc.simulate import get_profile, simulate

    heads = 8
    m = llama_shaped_model(layers=layers, hidden=1024, heads=heads, ffn=2816, vocab=32000, batch=1, seq=seq, fp16=True,
                           mask_in_graph=True, last_logits=True)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "llama_32k.onnx")
        onnx.save(m, path)
        t0 = time.perf_counter()
        g = import_model(path, {"batch": 1, "seq": seq}, None)
        plan = build_plan(g, PlanOptions(Budget(bytes=budget)))
        plan_s = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    verify_plan(plan)
    verify_s = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    sim = simulate(plan, get_profile("h100"), order="dynamic")
    sim_s = round(time.perf_counter() - t0, 1)
    st = plan.stats
    return {"seq": seq, "layers": layers, "hidden": 1024, "heads": heads, "dtype": "float16", "budget": budget,
            "head_scores_bytes": seq * seq * 2, "layer_scores_bytes": heads * seq * seq * 2,
            "no_offload_peak": st.no_offload_peak_bytes, "peak": st.peak_bytes, "nodes": len(plan.nodes),
            "tiled_ops": (st.tiling or {}).get("tiled_ops", 0), "plan_s": plan_s, "verify": "ok", "verify_s": verify_s,
            "makespan_s": sim.makespan, "bound_s": sim.bound, "over_bound": sim.makespan / sim.bound, "simulate_s": sim_s,
            "offload_bytes": st.offload_bytes, "reload_bytes": st.reload_bytes, "compute_s": sim.compute_s,
            "h2d_s": sim.h2d_s, "d2h_s": sim.d2h_s}


def main_long() -> int:
    """``--long``: only the seq-32,768 stack; its row replaces the one in tiles.json / tiles.md, the rest is kept."""
    layers = int(os.environ.get("TURNIP_LONG_LAYERS", "2"))
    r = long_32k(layers=layers)
    print(json.dumps(r), flush=True)
    store("long_32k", r)
    return 0


def _orders_row(plan, seeds: int, jitter: float, mtb: int | None, plan_s: float | None) -> dict:
    """One plan's dynamic-vs-fixed figures, with what explains them: how much of the budget the plan
    uses, the bytes it transfers, the busiest queue (bound) and the longest dependency chain."""
    import statistics

    from turnipc.simulate import compare_orders, get_profile, simulate

    res = compare_orders(plan, get_profile("h100"), jitter=jitter, seeds=range(seeds))
    sp = [f / dyn for f, dyn in zip(res["fixed"], res["dynamic"], strict=True)]
    st = plan.stats
    sim = simulate(plan, "h100", order="dynamic")
    return {"max_task_bytes": mtb, "nodes": len(plan.nodes), "tiled_ops": (st.tiling or {}).get("tiled_ops", 0),
            "peak": st.peak_bytes, "budget": st.budget_bytes, "transfer_bytes": st.offload_bytes + st.reload_bytes + st.move_bytes,
            "plan_s": plan_s, "speedup_min": min(sp), "speedup_median": statistics.median(sp), "speedup_max": max(sp),
            "dynamic_ms": statistics.median(res["dynamic"]) * 1e3, "fixed_ms": statistics.median(res["fixed"]) * 1e3,
            "bound_ms": sim.bound * 1e3, "critical_path_ms": sim.critical_path * 1e3}


def orders_tiled_vs_untiled(layers: int = 4, seq: int = 2048, seeds: int = 20, jitter: float = 0.3) -> dict:
    """Dynamic vs fixed order (simulated, H100) at 25% of the no-offload peak, untiled and tiled.

    tests/synthetic.py's LLaMA-7B-shaped stack (``layers`` layers, seq 2,048,
    fp16, weights never read). At 25% it plans untiled; the tiled plan forces
    blocks with ``max_task_bytes`` = budget / 8. Every node's duration is
    multiplied by U[1 - jitter, 1 + jitter] (the same draw for both orders);
    speedup = fixed makespan / dynamic makespan, per seed. A second model
    (/work/models/small llama_dynamo18, when present) checks that the figure
    is not a property of one graph.
    """
    import onnx
    from synthetic import llama_shaped_model

    m = llama_shaped_model(layers=layers, seq=seq)
    out: dict = {"model": f"llama_shaped layers={layers} seq={seq} fp16", "budget": "25%", "jitter": jitter, "seeds": seeds}
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "llama.onnx")
        onnx.save(m, path)
        g = import_model(path, {"batch": 1, "seq": seq}, None)
    base = build_plan(g, PlanOptions(Budget(fraction=0.25)))
    budget = base.stats.budget_bytes
    for key, mtb in (("untiled", None), ("tiled", budget // 8)):
        t0 = time.perf_counter()
        plan = base if mtb is None else build_plan(g, PlanOptions(Budget(bytes=budget), max_task_bytes=mtb))
        plan_s = round(time.perf_counter() - t0, 1)
        out[key] = _orders_row(plan, seeds, jitter, mtb, plan_s if mtb else None)
        print(key, json.dumps(out[key]), flush=True)
    second = os.path.join(SMALL, "llama_dynamo18.onnx")
    if os.path.exists(second):
        g2 = import_model(second, {"batch": 1, "seq": 128}, None)
        base2 = build_plan(g2, PlanOptions(Budget(fraction=0.25)))
        b2 = base2.stats.budget_bytes
        rows = {}
        for key, mtb in (("planner", None), ("forced", b2 // 8)):
            t0 = time.perf_counter()
            plan = base2 if mtb is None else build_plan(g2, PlanOptions(Budget(bytes=b2), max_task_bytes=mtb))
            rows[key] = _orders_row(plan, seeds, jitter, mtb, round(time.perf_counter() - t0, 1) if mtb else None)
            print("small/llama_dynamo18", key, json.dumps(rows[key]), flush=True)
        out["second"] = {"model": "small/llama_dynamo18 batch=1 seq=128", **rows}
    return out


#: Why the tiled figure moved between stops (found by bisection; kept with the figure it explains).
ORDERS_NOTE = ("History: tiled 1.266 at bb61243 (prefetch in the residency walk, peak 506 MB); 1.078 from 946ad46 "
               "(c4b29af laid out without prefetch, then hoisted reloads into the layout's holes within 1% of max-live: "
               "peak 271 MB of the 590 MB budget, 20% more bytes reloaded, critical path 9.9 -> 23.6 ms through reuse "
               "edges); tiled graphs now keep the budget-bounded hoist when it moves fewer bytes (planner._prefetch_into_layout).")


def main_orders() -> int:
    """``--orders``: dynamic vs fixed order on tiled and untiled plans; stored beside the other results."""
    r = orders_tiled_vs_untiled()
    r["note"] = ORDERS_NOTE
    print(orders_md(r))
    store("orders", r)
    return 0


def _why(r: dict) -> str:
    if "dynamic_ms" not in r:
        return ""
    return (f" [peak/budget {r['peak'] / r['budget']:.2f}, {r['transfer_bytes'] / 1e6:.0f} MB moved, dynamic "
            f"{r['dynamic_ms']:.2f} ms vs fixed {r['fixed_ms']:.2f} ms, bound {r['bound_ms']:.2f} ms, critical path "
            f"{r['critical_path_ms']:.2f} ms]")


def orders_md(r: dict) -> str:
    line = (f"Dynamic vs fixed order ({r['model']}, {r['budget']}, H100 simulated, {r['jitter']:.0%} jitter, {r['seeds']} seeds), "
            f"median speedup fixed/dynamic: untiled {r['untiled']['speedup_median']:.3f} ({r['untiled']['nodes']} nodes)"
            f"{_why(r['untiled'])}, tiled {r['tiled']['speedup_median']:.3f} ({r['tiled']['nodes']} nodes, {r['tiled']['tiled_ops']} ops "
            f"tiled at {r['tiled']['max_task_bytes']} B per task){_why(r['tiled'])}; min/max untiled {r['untiled']['speedup_min']:.3f}/"
            f"{r['untiled']['speedup_max']:.3f}, tiled {r['tiled']['speedup_min']:.3f}/{r['tiled']['speedup_max']:.3f}.")
    if r.get("note"):
        line += " " + r["note"]
    s = r.get("second")
    if s:
        line += (f" Second model ({s['model']}, 25%): planner's own tiling {s['planner']['speedup_median']:.3f} "
                 f"({s['planner']['nodes']} nodes, {s['planner']['tiled_ops']} ops tiled){_why(s['planner'])}, blocks forced at "
                 f"budget / 8 {s['forced']['speedup_median']:.3f} ({s['forced']['nodes']} nodes, {s['forced']['tiled_ops']} ops tiled)"
                 f"{_why(s['forced'])}.")
    return line


def main_big() -> int:
    """``--big``: plan tests/synthetic.py's LLaMA-7B-shaped graph (32 layers, seq 2,048, fp16) at 10%.

    At 10% every task fits, so the planner does not tile; the second row forces
    tiling (``max_task_bytes`` 64 MiB) to time planning a tiled 7B graph.
    """
    import onnx
    from synthetic import llama_shaped_model

    m = llama_shaped_model(layers=32, seq=2048)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "llama7b.onnx")
        onnx.save(m, path)
        g = import_model(path, {"batch": 1, "seq": 2048}, None)
    rows = []
    for mtb in (None, 64 << 20):
        t0 = time.perf_counter()
        p = build_plan(g, PlanOptions(Budget(fraction=0.10), max_task_bytes=mtb))
        st = p.stats
        rows.append({"max_task_bytes": mtb, "plan_s": round(time.perf_counter() - t0, 1), "tasks": len(g.tasks),
                     "nodes": len(p.nodes), "tiled_ops": (st.tiling or {}).get("tiled_ops", 0), "budget": st.budget_bytes,
                     "peak": st.peak_bytes, "no_offload_peak": st.no_offload_peak_bytes})
        print(json.dumps(rows[-1]), flush=True)
    store("llama7b_10pct", rows)
    return 0


def big_md(rows: list) -> str:
    return "LLaMA-7B-shaped (32 layers, seq 2,048, fp16) at 10%: " + "; ".join(
        f"{'max_task_bytes ' + str(r['max_task_bytes']) if r['max_task_bytes'] else 'planner default'}: planned in "
        f"{r['plan_s']} s, {r['nodes']} nodes, {r['tiled_ops']} ops tiled, peak {r['peak']} B / budget {r['budget']} B"
        for r in rows) + "."


def long_32k_md(r: dict) -> str:
    return (f"Long sequence at {r['seq']:,} (LLaMA-shaped, {r['layers']} layers, hidden {r['hidden']}, {r['heads']} heads, fp16, "
            f"weights never read): budget {r['budget']} B (one head's scores: {r['head_scores_bytes']} B; one layer's: "
            f"{r['layer_scores_bytes']} B; no-offload peak {r['no_offload_peak']} B), peak {r['peak']} B, {r['nodes']} nodes "
            f"({r['tiled_ops']} ops tiled), planned in {r['plan_s']} s, verify ok in {r['verify_s']} s, simulated H100 makespan "
            f"{r['makespan_s'] * 1e3:.1f} ms / bound {r['bound_s'] * 1e3:.1f} ms = {r['over_bound']:.3f}.")


def plan_and_check(path: str, seq: int, budget: str) -> dict:
    """Plan ``path`` at ``budget`` (``25%``, ``10%`` or ``min``), verify, check against onnxruntime (random feeds)."""
    from turnipc.units import parse_budget

    g = import_model(path, {"batch": 1, "seq": seq}, None)
    t0 = time.perf_counter()
    try:
        p = build_plan(g, PlanOptions(parse_budget(budget), min_search_tiled=True))
    except BudgetError as e:
        return {"error": str(e), "plan_s": round(time.perf_counter() - t0, 1)}
    plan_s = round(time.perf_counter() - t0, 1)
    st = p.stats
    r = check_plan(p, path, None, 0)
    r.update(plan_s=plan_s, no_offload_peak=st.no_offload_peak_bytes, ratio=st.peak_bytes / st.no_offload_peak_bytes,
             budget_ratio=st.budget_bytes / st.no_offload_peak_bytes, verify="ok")
    return r


REAL_ORDER = ("gpt2_dynamo18", "llama_dynamo18", "bert_dynamo18", "bert_legacy17")


def _real_md(rows: dict) -> list[str]:
    head = ("| real-size model (seq) | budget | budget / no-offload peak | peak / no-offload peak | verify | check | nodes "
            "| ops tiled | plan s | made at |")
    out = [head, "| " + " | ".join(["---"] * 10) + " |"]

    def key(k: str) -> tuple:
        m, seq, b = k.split("|")
        return (REAL_ORDER.index(m) if m in REAL_ORDER else 99, int(seq), {"25%": 0, "10%": 1, "min": 2}.get(b, 3))

    for k in sorted(rows, key=key):
        m, seq, b = k.split("|")
        r = rows[k]
        if "error" in r:
            out.append(f"| real-size {m} ({seq}) | {b} | - | refused: {r['error']} | - | - | - | - | {r['plan_s']} | "
                       f"{r.get('made', 'an earlier run')} |")
            continue
        out.append(f"| real-size {m} ({seq}) | {b} | {r['budget_ratio']:.3f} | {r['ratio']:.3f} | {r['verify']} | "
                   f"{'ok' if r['check'] else 'FAIL'} | {r['nodes']} | {r['tiled_ops']} | {r['plan_s']} | {r.get('made', 'an earlier run')} |")
    return out


def main_real_case(model: str, seq: int, budget: str) -> int:
    """``--real-case``: one real-size export at one budget; its row is added to the real-size table of tiles.md."""
    r = plan_and_check(os.path.join(REAL, model + ".onnx"), seq, budget)
    r.update(model=model, seq=seq, gpu_mem=budget, made=made())
    print(json.dumps(r), flush=True)
    jpath = os.path.join(HERE, "results", "tiles.json")
    rows = (json.load(open(jpath)) if os.path.exists(jpath) else {}).get("real_table", {})
    rows[f"{model}|{seq}|{budget}"] = r
    store("real_table", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
