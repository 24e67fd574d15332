"""Vision models nobody here wrote, planned as a user would: transformers' CNNs at 50%, 25%, 10%.

    python bench/bench_vision.py [--only resnet50 ...] [--fractions 0.5 0.25 0.1] [--models DIR] [--res 224]

Exports transformers' ResNet-50, MobileNetV2 and ConvNeXt-tiny (library
default configs, random weights, offline; ``torch.onnx.export`` with the
TorchScript exporter, opset 17, input ``pixel_values`` 1x3xRESxRES, output
the pooled features) into ``--models`` (default build/models/vision; skipped
when present). Needs the ``bench`` extra (torch 2.13.0 CPU, transformers);
without it every row says so and the script exits 0.

Each model is planned with ``turnipc plan``'s defaults (``--json``) at each
budget, in a child process as a user runs it, then run with
``turnip-run --check --random-inputs --atol 0`` (relative error only: with
random weights some of these models' outputs are ~1e-21, which any absolute
tolerance would pass). Records planned or refused (the message), peak /
max-live (from the plan's stats), plan wall seconds, nodes, reload bytes and
the check's worst error as a fraction of the tolerance.
Writes bench/results/vision.json and vision.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BIN = os.path.dirname(sys.executable)
MODELS = ("resnet50", "mobilenetv2", "convnext_tiny")


def export(name: str, path: str, res: int) -> None:
    """One transformers vision model, default config, random weights (seeded), exported to ``path``."""
    import torch
    import transformers as T

    torch.manual_seed(0)
    make = {
        "resnet50": lambda: T.ResNetModel(T.ResNetConfig()),
        "mobilenetv2": lambda: T.MobileNetV2Model(T.MobileNetV2Config()),
        "convnext_tiny": lambda: T.ConvNextModel(T.ConvNextConfig()),
    }[name]
    model = make().eval()

    class Pooled(torch.nn.Module):
        def __init__(self, m: torch.nn.Module) -> None:
            super().__init__()
            self.m = m

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.m(pixel_values=x).pooler_output

    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".part"
    torch.onnx.export(Pooled(model), (torch.randn(1, 3, res, res),), tmp, input_names=["pixel_values"],
                      output_names=["pooled"], dynamo=False, opset_version=17)
    os.replace(tmp, path)


def plan_stats(plan_path: str) -> dict:
    """peak and max-live per device from the plan file (the runtime's own reader)."""
    sys.path.insert(0, os.path.join(ROOT, "runtime"))
    from turnip.plan import read_plan

    p = read_plan(plan_path)
    return {"peak": list(p.stats.peak_bytes_per_device), "max_live": list(p.stats.max_live_bytes_per_device)}


def one(model: str, frac: float, out_dir: str) -> dict:
    plan = os.path.join(out_dir, f"{os.path.basename(model)[:-5]}.{int(frac * 100)}.plan")
    row: dict = {"model": os.path.basename(model), "fraction": frac}
    t = time.perf_counter()
    p = subprocess.run([os.path.join(BIN, "turnipc"), "plan", model, "--gpu-mem", f"{frac:.0%}", "-o", plan, "--json"],
                       capture_output=True, text=True)
    row["plan_seconds"] = round(time.perf_counter() - t, 1)
    try:
        info = json.loads(p.stdout)
    except json.JSONDecodeError:
        info = {"error": (p.stderr.strip().splitlines() or ["no output"])[-1]}
    row["exit"] = p.returncode
    if p.returncode:
        row["refused"] = info.get("error", "")
        return row
    st = plan_stats(plan)
    row.update(nodes=sum(info["nodes"].values()) if isinstance(info.get("nodes"), dict) else info.get("nodes"),
               reload_bytes=info.get("reload_bytes"), budget=info.get("budget_bytes"), **st)
    row["peak_over_max_live"] = max(a / b for a, b in zip(st["peak"], st["max_live"]))
    c = subprocess.run([os.path.join(BIN, "turnip-run"), plan, "--check", "--random-inputs", "--atol", "0", "--json"],
                       capture_output=True, text=True)
    try:
        chk = json.loads(c.stdout).get("check") or {}
    except json.JSONDecodeError:
        chk = {}
    row["check_exit"] = c.returncode
    row["check_worst"] = chk.get("worst_tol_ratio")
    return row


def write(rows: list[dict], path_md: str, res: int) -> None:
    out = [f"transformers vision models (default configs, random weights, {res}x{res}, batch 1), "
           "planned with `turnipc plan`'s defaults; check: `turnip-run --check --random-inputs --atol 0` "
           "(rtol 1e-3).", "",
           "| model | budget | result | peak / max-live | nodes | reload MB | plan s | check |",
           "| --- | ---: | --- | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        if "skipped" in r:
            out.append(f"| {r['model']} | - | skipped: {r['skipped']} | - | - | - | - | - |")
        elif r.get("exit"):
            out.append(f"| {r['model']} | {r['fraction']:.0%} | refused (exit {r['exit']}): {r['refused'][:160]} | - | - | - | "
                       f"{r['plan_seconds']} | - |")
        else:
            worst = r.get("check_worst")
            chk = ("passed" if r["check_exit"] == 0 else f"FAILED (exit {r['check_exit']})") + (
                f", worst {worst:.3g}x tol" if isinstance(worst, (int, float)) else "")
            out.append(f"| {r['model']} | {r['fraction']:.0%} | planned | {r['peak_over_max_live']:.4f} | {r['nodes']:,} | "
                       f"{(r['reload_bytes'] or 0) / 1e6:.1f} | {r['plan_seconds']} | {chk} |")
    with open(path_md, "w") as f:
        f.write("\n".join(out) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="*", choices=MODELS)
    ap.add_argument("--fractions", nargs="*", type=float, default=[0.5, 0.25, 0.1])
    ap.add_argument("--models", default=os.path.join(ROOT, "build", "models", "vision"))
    ap.add_argument("--res", type=int, default=224)
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    args = ap.parse_args()
    rows: list[dict] = []
    plans = os.path.join(args.models, "plans")
    os.makedirs(plans, exist_ok=True)
    for name in args.only or MODELS:
        path = os.path.join(args.models, f"{name}_{args.res}.onnx")
        if not os.path.exists(path):
            try:
                export(name, path, args.res)
            except ImportError as e:
                rows.append({"model": os.path.basename(path), "skipped": f"needs the bench extra ({e.name})"})
                continue
        for frac in args.fractions:
            r = one(path, frac, plans)
            rows.append(r)
            print(json.dumps(r), flush=True)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "vision.json"), "w") as f:
        json.dump({"res": args.res, "rows": rows}, f, indent=2)
        f.write("\n")
    write(rows, os.path.join(args.out, "vision.md"), args.res)
    print(open(os.path.join(args.out, "vision.md")).read())
    return 0


if __name__ == "__main__":
    sys.exit(main())
