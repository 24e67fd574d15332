"""Dump and study the arena-layout instance behind a light CNN plan (issue 14).

    python bench/residency_instance.py dump light_resnet50 0.5 OUT.csv
    python bench/residency_instance.py windows OUT.csv --caps 1.01 1.03 --effort 3 190:330 195:250 0:100000

``dump`` plans the model at the fraction with ``turnipc plan``'s defaults and
writes the residency that the planner's last fitting try laid out (GPU 0,
before prefetch is hoisted into its holes) as a MiniMalloc CSV with the search
engine's offsets (``turnipc layout OUT.csv`` reads it), then prints its size,
max-live and arena.

``windows`` cuts time windows [t0, t1) out of such a CSV (every buffer live in
the window, its lifetime clipped to it) and asks the compiled exact search
whether each fits below ``cap x max-live of the whole instance``. A window is a
relaxation of the whole instance (any layout of the whole lays out the window),
so a window proven infeasible at a cap is a lower bound on the whole instance
above that cap; a window found feasible says nothing about the whole. Effort is
the search's deterministic work (about a second of one core per unit).
"""

from __future__ import annotations

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(HERE, ".."), os.path.join(HERE, "..", "tests"), os.path.join(HERE, "..", "tests", "models")]

import numpy as np  # noqa: E402

from turnipc.layout.canonical import fit  # noqa: E402
from turnipc.layout.csvio import read_csv, write_csv  # noqa: E402
from turnipc.layout.model import Buffer, max_live  # noqa: E402


def dump(model: str, fraction: float, out: str) -> None:
    import fixtures

    import turnipc.planner as planner
    from turnipc.importer import import_model
    from turnipc.units import Budget

    fx = next(f for f in fixtures.available("light") if f.name == model)
    seen: list[tuple[list[Buffer], dict[str, int], int]] = []
    layout_residency = planner.layout_residency

    def recording(res, solver="greedy", effort=10.0, capacity=None, progress=None, **kw):
        lay = layout_residency(res, solver, effort, capacity, progress, **kw)
        if solver == "search" and capacity is not None and lay.arena.get(0, 0) <= capacity:
            bufs = planner.buffers_by_device(res).get(0, [])
            seen.append((bufs, {b.id: lay.offsets[int(b.id)] for b in bufs}, lay.arena[0]))
        return lay

    planner.layout_residency = recording  # a bench-only hook: the planner has no instance export
    try:
        plan = planner.build_plan(import_model(fx.path, None, None),
                                  planner.PlanOptions(Budget(fraction=fraction), fuse=True))
    finally:
        planner.layout_residency = layout_residency
    if not seen:
        raise SystemExit("error: no search layout fitted the budget in this plan (nothing to dump)")
    bufs, offsets, arena = seen[-1]
    write_csv(out, bufs, offsets)
    ml = max_live(bufs)
    st = plan.stats
    print(f"{model} {fraction:.0%}: {len(bufs)} buffers, max-live {ml}, search arena {arena} ({arena / ml:.4f}); "
          f"plan peak {st.peak_bytes} / max-live {max(st.max_live_bytes_per_device)} "
          f"= {st.peak_bytes / max(st.max_live_bytes_per_device):.4f}")


def windows(path: str, caps: list[float], effort: float, spans: list[str]) -> None:
    bufs = [b for b in read_csv(path) if b.live]
    ml = max_live(bufs)
    unit = int(np.gcd.reduce([b.size for b in bufs]))
    print(f"{path}: {len(bufs)} buffers, max-live {ml} (unit {unit} B)")
    for span in spans:
        t0, t1 = (int(x) for x in span.split(":"))
        w = [b for b in bufs if b.lower < t1 and b.upper > t0]
        lo = np.array([max(b.lower, t0) for b in w])
        hi = np.array([min(b.upper, t1) for b in w])
        size = np.array([b.size // unit for b in w])
        wml = max_live([Buffer(b.id, int(a), int(z), b.size) for b, a, z in zip(w, lo, hi)])
        for c in caps:
            r = fit(lo, hi, size, int(ml * c) // unit, effort)
            print(f"  [{t0}, {t1}): {len(w)} buffers, window max-live {wml / ml:.4f} x; cap {c}: "
                  f"{r.status.value} ({r.nodes} nodes)", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("dump")
    d.add_argument("model")
    d.add_argument("fraction", type=float)
    d.add_argument("out")
    w = sub.add_parser("windows")
    w.add_argument("csv")
    w.add_argument("spans", nargs="+", metavar="T0:T1")
    w.add_argument("--caps", nargs="+", type=float, default=[1.01])
    w.add_argument("--effort", type=float, default=3.0)
    args = ap.parse_args()
    if args.cmd == "dump":
        dump(args.model, args.fraction, args.out)
    else:
        windows(args.csv, args.caps, args.effort, args.spans)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
