"""Benchmark the arena layout solvers on the shared datasets.

    python bench/bench_layout.py [--effort 20] [--only NAME ...] [--cpsat]

Runs greedy and the exact search (deterministic effort cap, default 20 units;
``--cpsat`` adds the CP-SAT engine) on every instance under ../shared/datasets
and writes bench/results/layout.json and bench/results/layout.md, with wall
seconds and search nodes. Instances named ``*.<N>.csv`` must fit capacity N
(the search stops once they fit); the others are minimised toward max-live. Every layout is checked before it is recorded.

``--extra DIR``: also run every ``*.csv`` in DIR (for example the rest of MiniMalloc's
challenging suite, G-K, from a checkout of github.com/google/minimalloc's
``benchmarks/challenging``, which this repository does not bundle) and write them to
bench/results/layout_extra.{json,md} instead, so the main table stays reproducible
from ../shared/datasets alone.

``--before FILE``: a layout.json of an earlier version of the code, run just before on
the same machine; its search ratio, seconds and nodes become "before" columns.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from turnipc.layout import check_layout, cpsat_layout, greedy_layout, max_live, read_csv, search_layout  # noqa: E402
from turnipc.layout.canonical import compiled_available  # noqa: E402

DATASETS = ROOT.parent / "shared" / "datasets"
INSTANCES = [
    "minimalloc/examples/input.12.csv",
    "minimalloc/challenging/A.1048576.csv",
    "minimalloc/challenging/B.1048576.csv",
    "minimalloc/challenging/C.1048576.csv",
    "minimalloc/challenging/D.1048576.csv",
    "minimalloc/challenging/E.1048576.csv",
    "minimalloc/challenging/F.1048576.csv",
    "idealloc/somas_tensors/resnet50.csv",
    "idealloc/iopddl/G_1.csv",
    "idealloc/somas_tensors/pangu_2.6B.csv",
]


def capacity_of(name: str) -> int | None:
    m = re.search(r"\.(\d+)\.csv$", name)
    return int(m.group(1)) if m else None


def run(rel: str, effort: float, with_cpsat: bool, path: Path | None = None) -> dict:
    path = path or DATASETS / rel
    buffers = read_csv(path)
    cap = capacity_of(rel)
    ml = max_live(buffers)
    t = time.perf_counter()
    g = greedy_layout(buffers)
    g_s = time.perf_counter() - t
    check_layout(buffers, g.offsets)
    t, c0 = time.perf_counter(), time.process_time()
    srch = search_layout(buffers, capacity=cap, effort=effort)
    s_s, s_cpu = time.perf_counter() - t, time.process_time() - c0
    check_layout(buffers, srch.offsets)
    t = time.perf_counter()
    c = cpsat_layout(buffers, capacity=cap, effort=effort) if with_cpsat else None
    c_s = time.perf_counter() - t
    if c is not None:
        check_layout(buffers, c.offsets)
    return {
        "instance": rel,
        "buffers": len(buffers),
        "max_live": ml,
        "capacity": cap,
        "greedy_arena": g.arena_bytes,
        "greedy_ratio": g.arena_bytes / ml,
        "greedy_seconds": round(g_s, 2),
        "greedy_fits": None if cap is None else g.arena_bytes <= cap,
        "search_arena": srch.arena_bytes,
        "search_ratio": srch.arena_bytes / ml,
        "search_seconds": round(s_s, 2),
        "search_cpu_seconds": round(s_cpu, 2),
        "search_nodes": srch.stats.get("search_nodes"),
        "search_effort_used": srch.stats.get("effort_used"),
        "search_engines": srch.stats.get("engines"),
        "search_fits": None if cap is None else srch.arena_bytes <= cap,
        "cpsat_arena": c.arena_bytes if c else None,
        "cpsat_ratio": c.arena_bytes / ml if c else None,
        "cpsat_seconds": round(c_s, 2) if c else None,
        "cpsat_effort_used": c.stats.get("effort_used") if c else None,
        "cpsat_engines": c.stats.get("engines") if c else None,
        "cpsat_fits": None if (cap is None or c is None) else c.arena_bytes <= cap,
    }


def markdown(rows: list[dict], effort: float, before: dict | None = None, before_note: str = "") -> str:
    before = before or {}
    out = [
        f"Arena layout benchmark (effort cap {effort:g} deterministic units; compiled search "
        f"{'yes' if compiled_available() else 'NO (Python fallback)'}; {platform.machine()}, "
        f"Python {platform.python_version()}). Seconds are wall clock (shared machine); "
        "cpu s is the process CPU time of the search (one thread, less sensitive to load); "
        "nodes are exact-search nodes (deterministic).",
        "",
    ]
    if before:
        out += [f"Before columns: {before_note}", ""]
    head = ("| instance | buffers | max-live | greedy ratio | greedy s | search arena | search ratio | search s | "
            "search cpu s | search nodes | search via | cpsat ratio | cpsat s | fits capacity |")
    rule = "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | --- |"
    if before:
        head = head.replace("| search arena |", "| search ratio before | search s before | search cpu s before | search nodes before | search arena |")
        rule = rule.replace("| ---: | ---: | ---: | ---: | --- |", "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |", 1)
    out += [head, rule]
    for r in rows:
        fits = "-" if r["capacity"] is None else (
            f"{'yes' if r['search_fits'] else 'no'} (greedy {'yes' if r['greedy_fits'] else 'no'})")
        cr = "-" if r["cpsat_ratio"] is None else f"{r['cpsat_ratio']:.4f}"
        cs = "-" if r["cpsat_seconds"] is None else f"{r['cpsat_seconds']:.2f}"
        b = before.get(r["instance"])
        was = ""
        if before:
            was = ("- | - | - | - | " if b is None else
                   f"{b['search_ratio']:.4f} | {b['search_seconds']:.2f} | {b.get('search_cpu_seconds', float('nan')):.2f} | "
                   f"{b['search_nodes']:,} | ")
        out.append(
            f"| {r['instance']} | {r['buffers']:,} | {r['max_live']:,} | {r['greedy_ratio']:.4f} | "
            f"{r['greedy_seconds']:.2f} | {was}{r['search_arena']:,} | {r['search_ratio']:.4f} | {r['search_seconds']:.2f} | {r['search_cpu_seconds']:.2f} | {r['search_nodes']:,} | "
            f"{'+'.join(r['search_engines'] or [])} | {cr} | {cs} | {fits} |"
        )
    fitted = [r for r in rows if r["capacity"] is not None]
    out += ["", f"Capacity instances fitted by search: {sum(bool(r['search_fits']) for r in fitted)} of {len(fitted)}."]
    return "\n".join(out) + "\n"


def run_extra(folder: Path, args: argparse.Namespace) -> int:
    """Instances from outside the shared datasets, e.g. MiniMalloc's challenging G-K."""
    files = sorted(folder.glob("*.csv"))
    if not files:
        print(f"no *.csv in {folder}", file=sys.stderr)
        return 2
    rows = []
    for f in files:
        if args.only and not any(s in f.name for s in args.only):
            continue
        r = run(f.name, args.effort, args.cpsat, path=f)
        rows.append(r)
        print(f"{f.name}: search {r['search_ratio']:.4f} ({r['search_seconds']}s, {r['search_nodes']} nodes, "
              f"fits {r['search_fits']})", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "layout_extra.json").write_text(json.dumps({"effort": args.effort, "folder": folder.name, "results": rows}, indent=2) + "\n")
    md = markdown(rows, args.effort)
    (out / "layout_extra.md").write_text(f"Instances from a folder outside ../shared/datasets ({folder.name}/).\n\n" + md)
    print(md)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--effort", type=float, default=20.0, help="deterministic effort per instance")
    ap.add_argument("--only", nargs="*", help="substrings of instance names to run")
    ap.add_argument("--cpsat", action="store_true", help="also run the cpsat engine (slow)")
    ap.add_argument("--before", help="layout.json of an earlier version, for the before columns")
    ap.add_argument("--before-note", default="", help="what the before columns were run from (printed above the table)")
    ap.add_argument("--extra", help="a folder of more instances (*.csv), written to layout_extra.{json,md}")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"), help="output folder")
    args = ap.parse_args()
    if args.extra:
        return run_extra(Path(args.extra), args)
    if not DATASETS.is_dir():
        print(f"datasets not found at {DATASETS}", file=sys.stderr)
        return 2
    rows = []
    for rel in INSTANCES:
        if args.only and not any(s in rel for s in args.only):
            continue
        if not (DATASETS / rel).exists():
            print(f"skip {rel}: missing", file=sys.stderr)
            continue
        r = run(rel, args.effort, args.cpsat)
        rows.append(r)
        print(f"{rel}: greedy {r['greedy_ratio']:.4f} ({r['greedy_seconds']}s)  "
              f"search {r['search_ratio']:.4f} ({r['search_seconds']}s, {r['search_nodes']} nodes, "
              f"{r['search_engines']})", flush=True)
    before = None
    if args.before:
        before = {r["instance"]: r for r in json.loads(Path(args.before).read_text())["results"]}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "layout.json").write_text(json.dumps({"effort": args.effort, "results": rows}, indent=2) + "\n")
    md = markdown(rows, args.effort, before, args.before_note)
    (out / "layout.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
