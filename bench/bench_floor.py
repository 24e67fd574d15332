"""Planning time of the light CNNs at small budgets, before and after the min-search changes, side by side.

    python bench/bench_floor.py [--only NAME ...] [--budgets 10% min] [--timeout S] [--before REV]

For each light CNN of the onnx wheel and each budget (``--gpu-mem 10%`` and
``--gpu-mem min`` by default), ``turnipc plan`` runs twice, one right after
the other on the same machine: once from the compiler as it was at ``--before``
(a git revision, extracted with ``git archive`` into a temporary folder and put
first on PYTHONPATH) and once from this checkout. Each run is a child process
stopped after ``--timeout`` seconds. The table gives the wall seconds of both,
what each answered (planned at how many bytes, the smallest feasible budget
its refusal named, or the floor a refusal below it names as the lower bound),
whether the two answers agree (a floor must not exceed the minimum found before), and the sha256 of the plan
when both planned (the same bytes: the speed-up changed nothing the plan says).
The 1-minute load average before each row is recorded (the machine is shared).
Writes bench/results/floor.json and floor.md.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [HERE]

from benchlib import markdown_table, write_results  # noqa: E402

#: The commit the min-search work started from (branch floor10): the "before" column.
BEFORE = "4394899"
MODELS = ("bvlc_alexnet", "densenet121", "inception_v1", "inception_v2", "resnet50", "shufflenet", "squeezenet",
          "vgg19", "zfnet512")


def light_dir() -> str:
    import onnx

    return os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")


def extract(rev: str, into: str) -> str:
    """The compiler and runtime packages as they were at ``rev``, under ``into``; returns ``into``."""
    tar = subprocess.run(["git", "-C", ROOT, "archive", rev, "turnipc", "runtime"], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", into], input=tar, check=True)
    return into


def answer(rc: int, out: str, plan_path: str) -> dict:
    """What one ``turnipc plan`` run answered: the budget it planned at (and the plan's sha256), or the minimum its refusal named."""
    m = re.search(r"wrote .*?: peak .*? of (.*?) budget", out)
    if rc == 0 and os.path.exists(plan_path):
        from turnip.plan import read_plan

        plan = read_plan(plan_path)
        with open(plan_path, "rb") as f:
            sha = hashlib.sha256(f.read()).hexdigest()[:12]
        return {"answer": f"planned at {plan.stats.budget_bytes} B", "budget_bytes": plan.stats.budget_bytes, "sha256": sha,
                "peak": plan.stats.peak_bytes, "budget_text": m.group(1) if m else ""}
    err = next((ln for ln in out.splitlines() if ln.startswith("error:")), out.strip().splitlines()[-1] if out.strip() else "")
    least = re.search(r"smallest feasible budget found for this model, (\d+) bytes|though the smaller budget of (\d+) bytes", err)
    floor = re.search(r"below the floor of this model: no budget below (\d+) bytes can plan", err)
    row = {"answer": "refused", "error": err[:400]}
    if least:
        row["named_min"] = int(least.group(1) or least.group(2))
        row["answer"] = f"refused, min {row['named_min']} B"
    elif floor:
        row["floor"] = int(floor.group(1))
        row["answer"] = f"refused below the floor, min >= {row['floor']} B"
    return row


def run_one(pythonpath: str, model: str, budget: str, timeout: float) -> dict:
    """``turnipc plan MODEL --gpu-mem BUDGET`` with the packages under ``pythonpath`` first, stopped after ``timeout`` s."""
    with tempfile.TemporaryDirectory() as tmp:
        out_path = os.path.join(tmp, "p.plan")
        env = dict(os.environ, PYTHONPATH=pythonpath)
        cmd = [sys.executable, "-m", "turnipc.cli", "plan", model, "--gpu-mem", budget, "-o", out_path]
        t0 = time.perf_counter()
        try:
            p = subprocess.run(cmd, env=env, cwd=tmp, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"seconds": round(time.perf_counter() - t0, 1), "answer": f"not finished in {timeout:g} s", "timed_out": True}
        row = {"seconds": round(time.perf_counter() - t0, 1), "rc": p.returncode}
        row.update(answer(p.returncode, p.stdout + p.stderr, out_path))
        return row


def agree(b: dict, a: dict) -> str:
    if b.get("timed_out") or a.get("timed_out"):
        return "-"
    if "sha256" in b and "sha256" in a:
        return "same plan" if b["sha256"] == a["sha256"] else "plans differ"
    if "named_min" in b and "named_min" in a:
        return "same min" if b["named_min"] == a["named_min"] else f"min {a['named_min'] / b['named_min']:.3f}x"
    if "named_min" in b and "floor" in a:  # after names a lower bound: it must not exceed the minimum before found
        return "floor <= min" if a["floor"] <= b["named_min"] else "FLOOR ABOVE MIN"
    return "same" if b.get("answer") == a.get("answer") else "differ"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--budgets", nargs="*", default=["10%", "min"])
    ap.add_argument("--timeout", type=float, default=200.0)
    ap.add_argument("--before", default=BEFORE)
    args = ap.parse_args()
    models = [m for m in MODELS if not args.only or m in args.only]
    light = light_dir()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        before = extract(args.before, tmp)
        paths = {"before": os.pathsep.join([before, os.path.join(before, "runtime")]),
                 "after": os.pathsep.join([ROOT, os.path.join(ROOT, "runtime")])}
        for name in models:
            model = os.path.join(light, f"light_{name}.onnx")
            for budget in args.budgets:
                load = round(os.getloadavg()[0], 1)
                b = run_one(paths["before"], model, budget, args.timeout)
                a = run_one(paths["after"], model, budget, args.timeout)
                row = {"model": f"light_{name}", "gpu_mem": budget, "before_s": b["seconds"], "after_s": a["seconds"],
                       "speedup": round(b["seconds"] / a["seconds"], 1) if a["seconds"] else "",
                       "before": b["answer"], "after": a["answer"], "agree": agree(b, a),
                       "load_1min": load, "before_row": b, "after_row": a}
                rows.append(row)
                print(f"{row['model']:22} {budget:4} before {b['seconds']:7.1f} s  after {a['seconds']:7.1f} s  "
                      f"{row['agree']:10} | {b['answer']} | {a['answer']}", flush=True)
    cols = ["model", "gpu_mem", "before_s", "after_s", "speedup", "before", "after", "agree", "load_1min"]
    md = [f"`turnipc plan MODEL --gpu-mem B` wall seconds, before ({args.before}) and after, side by side "
          f"(each row: before then after, child processes stopped after {args.timeout:g} s; {os.cpu_count()} CPUs, shared). "
          "'before s' of a row that did not finish is the timeout.", ""]
    md += markdown_table(rows, cols)
    write_results("floor", {"before": args.before, "timeout": args.timeout, "rows": rows}, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
