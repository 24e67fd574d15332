"""Summary of the ONNX node conformance run (same cases and checks as tests/test_onnx_backend.py).

    python tests/conformance_report.py [-o bench/results/conformance.json] [--quiet]

Prints pass / fail / skip counts per claimed op type and overall, and writes
them (with every case's outcome and the reason of each failure or skip) as
JSON (per-op counts, every failure and skip with its reason; passes are
the rest). Takes about 30 s on one core.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import onnx  # noqa: E402
import onnx_backend_adapter as A  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--output", default=os.path.join(os.path.dirname(HERE), "bench", "results", "conformance.json"))
    ap.add_argument("--quiet", action="store_true", help="only the totals")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore", category=RuntimeWarning)  # the cases feed inf/nan/log(0) on purpose

    t0 = time.perf_counter()
    cases = A.collect_node_cases()
    by_name = {c.name: c for c in cases}
    claimed = A.claimed_ops()
    per_op: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    records = []
    for c in cases:
        op = A.case_op(c, by_name)
        if op not in claimed:
            continue
        expanded = len(c.model.graph.node) != 1
        why = A.skip_reason(c)
        rec = {"case": c.name, "op": op, "expanded": expanded}
        if why:
            rec.update(outcome="skip", reason=why)
        else:
            try:
                problems, info = A.run_node_case(c)
                rec["frozen_inputs"] = info["frozen"]
                rec["budgets"] = info["budgets"]
                if problems:
                    rec.update(outcome="fail", reason="; ".join(problems))
                else:
                    rec.update(outcome="pass")
            except Exception as e:  # noqa: BLE001 - every error is a failure to report
                rec.update(outcome="fail", reason=f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:500])
            if c.name in A.KNOWN_FAILURES:
                rec["known_failure"] = A.KNOWN_FAILURES[c.name]
        per_op[op][rec["outcome"]] += 1
        records.append(rec)

    def count(pred) -> collections.Counter:
        return collections.Counter(r["outcome"] for r in records if pred(r))

    total = count(lambda r: True)
    single = count(lambda r: not r["expanded"])
    expanded = count(lambda r: r["expanded"])
    run = total["pass"] + total["fail"]
    summary = {
        "onnx_version": onnx.__version__,
        "claimed_ops": len(claimed),
        "claimed_ops_with_cases": len(per_op),
        "cases": len(records),
        "pass": total["pass"],
        "fail": total["fail"],
        "skip": total["skip"],
        "single_node": dict(single),
        "expanded": dict(expanded),
        "planned_at_25pct_cases": sum(1 for r in records if r.get("budgets") and all(b != "min" for b in r["budgets"])),
        "frozen_input_cases": sum(1 for r in records if r.get("frozen_inputs")),
        "seconds": round(time.perf_counter() - t0, 1),
        "headline": f"{total['pass']} of {run} node cases pass for the {len(per_op)} op types we claim "
        f"({total['skip']} more skipped by design)",
    }
    out = {
        "summary": summary,
        "per_op": {op: dict(per_op[op]) for op in sorted(per_op)},
        "failures": [r for r in records if r["outcome"] == "fail"],
        "skips": [{"case": r["case"], "op": r["op"], "reason": r["reason"]} for r in records if r["outcome"] == "skip"],
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")

    if not args.quiet:
        print(f"{'op':28s} {'pass':>5s} {'fail':>5s} {'skip':>5s}")
        for op in sorted(per_op):
            c = per_op[op]
            print(f"{op:28s} {c['pass']:5d} {c['fail']:5d} {c['skip']:5d}")
        print()
        for r in out["failures"]:
            print(f"FAIL {r['case']} ({r['op']}): {r['reason'][:200]}")
    print(summary["headline"])
    print(f"single-node cases {dict(single)}; expanded (function-body) cases {dict(expanded)}; written {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
