#!/usr/bin/env bash
# The GPU device check: one script, under 5 minutes, for a host with an NVIDIA GPU.
#
#   bash tests/gpu/device_check.sh OUTDIR
#
# Needs on the host: python3 with cupy (cupy-cuda12x or -13x), onnx,
# onnxruntime (the CPU build is fine), msgpack, click, numpy, pytest. No
# OR-Tools (the plans were made beforehand by tests/gpu/make_device_plans.py
# and travel in tests/gpu/plans/), no network, nothing installed.
#
# Steps (each under its own timeout; later optional steps are skipped when
# the time is nearly spent):
#   1. environment (GPU, driver, CUDA runtime, CuPy, onnxruntime build)
#   2. the LLaMA-shaped model's weights (numpy + onnx, seeded; ~0.9 GiB)
#   3. pytest tests/gpu -m gpu
#   4. every pre-made fixture plan through `python -m turnip.cli PLAN
#      --random-inputs --check --backend cupy --json` (PASSED/FAILED, timings)
#   5. benchmark: peak pinned H2D/D2H bandwidth (one big cudaMemcpyAsync);
#      the LLaMA plan (needs 4x its budget) in dynamic, fixed and
#      async-release orders: wall time, achieved H2D bandwidth during
#      reloads, memory outside the plan; a fixture plan vs onnxruntime (CPU)
#   6. onnxruntime (CPU) reference for the LLaMA plan, compared with the GPU run
# Writes OUTDIR/report.md and OUTDIR/report.json (and the raw logs beside them).
# SKIP_LLAMA=1 leaves out the LLaMA model (steps 2, 5 and 6 partly): a dry run.
set -u
OUT="${1:?usage: device_check.sh OUTDIR}"
mkdir -p "$OUT/cli"
OUT="$(cd "$OUT" && pwd)"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
export PYTHONPATH="$ROOT/runtime:$ROOT:$ROOT/tests:$ROOT/tests/models${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONDONTWRITEBYTECODE=1
PY="${PYTHON:-python3}"
START=$(date +%s)
elapsed() { echo $(( $(date +%s) - START )); }
log() { echo "[$(elapsed)s] $*" | tee -a "$OUT/steps.log"; }
: > "$OUT/steps.log"

# -- 1. environment ---------------------------------------------------------
log "environment"
"$PY" - > "$OUT/env.json" 2> "$OUT/env.err" <<'EOF'
import json, os, platform, subprocess
env = {"python": platform.python_version(), "cpus": os.cpu_count()}
try:
    import cupy as cp
    env["cupy"] = cp.__version__
    env["cuda_available"] = bool(cp.cuda.is_available())
    env["cuda_runtime"] = cp.cuda.runtime.runtimeGetVersion()
    env["cuda_driver"] = cp.cuda.runtime.driverGetVersion()
    n = cp.cuda.runtime.getDeviceCount()
    env["gpus"] = []
    for i in range(n):
        p = cp.cuda.runtime.getDeviceProperties(i)
        name = p["name"].decode() if isinstance(p["name"], bytes) else str(p["name"])
        env["gpus"].append({"id": i, "name": name, "memory_bytes": int(p["totalGlobalMem"])})
except Exception as e:  # noqa: BLE001
    env["cupy_error"] = f"{type(e).__name__}: {e}"
try:
    import onnxruntime as ort
    env["onnxruntime"] = ort.__version__
    env["onnxruntime_device"] = ort.get_device()
    env["onnxruntime_providers"] = ort.get_available_providers()
except Exception as e:  # noqa: BLE001
    env["onnxruntime_error"] = f"{type(e).__name__}: {e}"
try:
    env["nvidia_smi"] = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                                       capture_output=True, text=True, timeout=20).stdout.strip()
except Exception:  # noqa: BLE001
    pass
print(json.dumps(env))
EOF
cat "$OUT/env.json"

# -- 2. LLaMA weights --------------------------------------------------------
log "llama weights"
[ "${SKIP_LLAMA:-0}" = 1 ] || timeout 150 "$PY" tests/gpu/make_device_plans.py --weights > "$OUT/weights.log" 2>&1
echo "rc=$?" >> "$OUT/weights.log"

# -- 3. pytest -----------------------------------------------------------------
log "pytest tests/gpu -m gpu"
timeout 150 "$PY" -m pytest tests/gpu -m gpu -q -p no:cacheprovider --junitxml="$OUT/pytest.xml" > "$OUT/pytest.txt" 2>&1
echo "rc=$?" >> "$OUT/pytest.txt"
tail -n 3 "$OUT/pytest.txt"

# -- 4. every fixture plan through the CLI ---------------------------------------
log "turnip.cli --check on every fixture plan"
"$PY" - <<'EOF' > "$OUT/cli/list.txt"
import json
for e in json.load(open("tests/gpu/plans/manifest.json"))["plans"]:
    if e["kind"] == "fixture":
        print(e["plan"])
EOF
run_cli() {
  local rel="$1" name
  name="$(basename "$rel" .plan)"
  local t0 t1
  t0=$(date +%s.%N)
  timeout 90 "$PY" -m turnip.cli "tests/gpu/plans/$rel" --random-inputs --check --backend cupy --json --repeat 2 \
    > "$OUT/cli/$name.json" 2> "$OUT/cli/$name.err"
  echo "$?" > "$OUT/cli/$name.rc"
  t1=$(date +%s.%N)
  echo "$t0 $t1" > "$OUT/cli/$name.time"
}
export -f run_cli
export OUT PY SKIP_LLAMA="${SKIP_LLAMA:-0}"
# four at a time: these are correctness runs (timings come from step 5)
xargs -P 4 -I{} bash -c 'run_cli "$@"' _ {} < "$OUT/cli/list.txt"

# -- 5. benchmark ----------------------------------------------------------------
if [ "$(elapsed)" -lt 230 ]; then
log "benchmark"
timeout 120 "$PY" - > "$OUT/bench.log" 2>&1 <<'EOF'
import json, os, statistics, time, warnings
import numpy as np
import cupy as cp
from turnip.backends.cupy_backend import CupyBackend
from turnip.plan import read_plan
from turnip.run import random_feeds, run_plan

OUT = os.environ["OUT"]
res = {}
rt = cp.cuda.runtime

# peak pinned bandwidth: one big cudaMemcpyAsync each way, timed with events
n = 1 << 30
try:
    h = cp.cuda.PinnedMemory(n, rt.hostAllocPortable)
    d = cp.cuda.Memory(n)
    s = cp.cuda.Stream(non_blocking=True)
    e0, e1 = cp.cuda.Event(), cp.cuda.Event()
    peak = {}
    for name, kind, dst, src in (("h2d", rt.memcpyHostToDevice, d.ptr, h.ptr), ("d2h", rt.memcpyDeviceToHost, h.ptr, d.ptr)):
        best = 0.0
        for _ in range(3):
            e0.record(s); rt.memcpyAsync(dst, src, n, kind, s.ptr); e1.record(s); e1.synchronize()
            best = max(best, n / (cp.cuda.get_elapsed_time(e0, e1) / 1e3))
        peak[name + "_GBps"] = round(best / 1e9, 2)
    del h, d
    res["peak_pinned"] = peak
except Exception as e:  # noqa: BLE001
    res["peak_pinned"] = {"error": f"{type(e).__name__}: {e}"}
print(res, flush=True)

def timeline_h2d(stats, wall):
    ev = [e for e in stats.timeline if e.kind == "reload" and e.end > e.start]
    if not ev:
        return {}
    nbytes = sum(e.bytes for e in ev)
    busy = sum(e.end - e.start for e in ev)
    iv = sorted((e.start, e.end) for e in ev)
    union, cur = 0.0, None
    for a, b in iv:
        if cur is None or a > cur[1]:
            if cur: union += cur[1] - cur[0]
            cur = [a, b]
        else:
            cur[1] = max(cur[1], b)
    union += cur[1] - cur[0]
    return {"reload_bytes": nbytes, "per_copy_GBps": round(nbytes / busy / 1e9, 2),
            "h2d_busy_fraction": round(union / wall, 3), "reload_bytes_over_wall_GBps": round(nbytes / wall / 1e9, 2)}

def bench_plan(path, label, repeat=3, ort_model=None):
    plan = read_plan(path)
    feeds = random_feeds(plan, 0)
    row = {"plan": os.path.relpath(path), "label": label, "budget_bytes": plan.stats.budget_bytes,
           "no_offload_peak_bytes": plan.stats.no_offload_peak_bytes, "nodes": len(plan.nodes)}
    outs = None
    for mode, kw in (("dynamic", dict(order="dynamic")), ("fixed", dict(order="fixed")), ("dynamic_async", dict(order="dynamic", async_release=True))):
        be = CupyBackend(async_release=kw.pop("async_release", False))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            r = run_plan(path, feeds, backend=be, repeat=repeat, **kw)
        w = r.stats.wall_s
        row[mode] = {"first_s": round(w[0], 4), "best_s": round(min(w[1:] or w), 4), "median_s": round(statistics.median(w[1:] or w), 4)}
        if mode == "dynamic":
            row[mode].update(timeline_h2d(r.stats, w[-1]))
            row["backend_report"] = be.report
            outs = r.outputs
        elif outs is not None:
            row[mode]["bit_identical_to_dynamic"] = all(np.array_equal(outs[k], r.outputs[k]) for k in outs)
    if ort_model:
        import onnxruntime as ort
        so = ort.SessionOptions(); so.log_severity_level = 3
        sess = ort.InferenceSession(ort_model, so, providers=["CPUExecutionProvider"])
        t = []
        for _ in range(5):
            t0 = time.perf_counter(); sess.run(None, feeds); t.append(time.perf_counter() - t0)
        row["onnxruntime_cpu_s"] = round(statistics.median(t), 4)
        row["onnxruntime"] = f"onnxruntime {ort.__version__} {ort.get_device()} build, CPUExecutionProvider, {so.intra_op_num_threads or os.cpu_count()} threads (default)"
    return row, feeds, outs

rows = []
llama = "tests/gpu/plans/llama8x2048/llama8x2048.plan"
if os.environ.get("SKIP_LLAMA") != "1" and os.path.isfile(llama) and os.path.isfile("tests/gpu/plans/llama8x2048/weights.bin"):
    try:
        row, feeds, outs = bench_plan(llama, "llama8x2048 fp16 (needs 4x its budget)")
        np.savez(os.path.join(OUT, "llama_gpu.npz"), **outs)
        np.savez(os.path.join(OUT, "llama_feeds.npz"), **feeds)
        rows.append(row)
    except Exception as e:  # noqa: BLE001
        rows.append({"plan": llama, "error": f"{type(e).__name__}: {e}"})
    print(rows[-1], flush=True)
for rel, model in (("gpt2_dynamo18-25.plan", "tests/models/gpt2_dynamo18.onnx"), ("gpt2_dynamo18-100.plan", "tests/models/gpt2_dynamo18.onnx"),
                   ("demo_mlp-25.plan", "tests/models/demo_mlp.onnx")):
    try:
        row, _, _ = bench_plan(os.path.join("tests/gpu/plans", rel), rel, repeat=5, ort_model=model)
        row.pop("backend_report", None)
        rows.append(row)
    except Exception as e:  # noqa: BLE001
        rows.append({"plan": rel, "error": f"{type(e).__name__}: {e}"})
    print(rows[-1], flush=True)
res["plans"] = rows
json.dump(res, open(os.path.join(OUT, "bench.json"), "w"), indent=1, default=str)
EOF
echo "rc=$?" >> "$OUT/bench.log"
else
  log "benchmark skipped (time)"
fi

# -- 6. onnxruntime reference for the LLaMA plan -------------------------------------
if [ -f "$OUT/llama_gpu.npz" ] && [ "$(elapsed)" -lt 250 ]; then
log "onnxruntime (CPU) reference for llama8x2048"
timeout $(( 290 - $(elapsed) )) "$PY" - > "$OUT/llama_ref.log" 2>&1 <<'EOF'
import json, os, time
import numpy as np
import onnxruntime as ort
from turnip.check import compare
OUT = os.environ["OUT"]
feeds = dict(np.load(os.path.join(OUT, "llama_feeds.npz")))
gpu = dict(np.load(os.path.join(OUT, "llama_gpu.npz")))
so = ort.SessionOptions(); so.log_severity_level = 3
t0 = time.perf_counter()
sess = ort.InferenceSession("tests/gpu/plans/llama8x2048/llama8x2048.onnx", so, providers=["CPUExecutionProvider"])
t1 = time.perf_counter()
ref = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
t2 = time.perf_counter()
cmp = compare(gpu, ref, atol=5e-2, rtol=5e-2)  # fp16 logits: cuBLAS vs MLAS accumulation order
out = {"onnxruntime_cpu_s": round(t2 - t1, 3), "load_s": round(t1 - t0, 3),
       "check": [{"name": c.name, "max_abs": c.max_abs, "max_rel": c.max_rel, "ok": c.ok} for c in cmp],
       "passed": all(c.ok for c in cmp), "atol": 5e-2, "rtol": 5e-2}
json.dump(out, open(os.path.join(OUT, "llama_ref.json"), "w"), indent=1)
print(out)
EOF
echo "rc=$?" >> "$OUT/llama_ref.log"
else
  log "llama onnxruntime reference skipped"
fi

# -- report ------------------------------------------------------------------------
log "report"
"$PY" - <<'EOF'
import glob, json, os, re
OUT = os.environ["OUT"]
def load(p, default=None):
    try:
        return json.load(open(os.path.join(OUT, p)))
    except Exception:  # noqa: BLE001
        return default
rep = {"env": load("env.json", {}), "steps": open(os.path.join(OUT, "steps.log")).read().splitlines()}
txt = open(os.path.join(OUT, "pytest.txt")).read() if os.path.exists(os.path.join(OUT, "pytest.txt")) else ""
m = re.findall(r"^(?:=+ )?(.*(?:passed|failed|skipped|error).*?)(?: in [\d.]+s)?(?: =+)?$", txt, re.M)
rep["pytest"] = {"summary": m[-1] if m else "(no summary)", "rc": (re.findall(r"rc=(\d+)", txt) or ["?"])[-1],
                 "failures": re.findall(r"^FAILED (.*)$", txt, re.M)}
cli = []
for rcf in sorted(glob.glob(os.path.join(OUT, "cli", "*.rc"))):
    name = os.path.basename(rcf)[:-3]
    rc = open(rcf).read().strip()
    row = {"plan": name, "rc": rc}
    try:
        t0, t1 = map(float, open(os.path.join(OUT, "cli", name + ".time")).read().split())
        row["process_s"] = round(t1 - t0, 2)
    except Exception:  # noqa: BLE001
        pass
    j = load(os.path.join("cli", name + ".json"))
    if isinstance(j, dict) and "stats" in j:
        row["result"] = "PASSED" if (j.get("check") or {}).get("passed") else "FAILED"
        row["wall_s"] = j["stats"]["wall_s"]
        row["max_abs"] = max((o["max_abs"] for o in j["check"]["outputs"]), default=None) if j.get("check") else None
        row["fallback_ops"] = j.get("fallback_ops")
        row["reloaded"] = j["stats"]["bytes_reloaded"]
    else:
        row["result"] = "ERROR"
        err = open(os.path.join(OUT, "cli", name + ".err")).read().strip().splitlines()
        row["error"] = (j or {}).get("error") if isinstance(j, dict) else (err[-1] if err else f"exit {rc}")
    cli.append(row)
rep["cli"] = cli
rep["bench"] = load("bench.json", {})
rep["llama_reference"] = load("llama_ref.json", {})
json.dump(rep, open(os.path.join(OUT, "report.json"), "w"), indent=1, default=str)

env = rep["env"]
L = ["# Turnip GPU device check", ""]
g = ", ".join(f"{x['name']} ({x['memory_bytes'] / 2**30:.0f} GiB)" for x in env.get("gpus", []))
L += [f"- GPU: {g or env.get('cupy_error', '?')}; driver {env.get('cuda_driver')}, CUDA runtime {env.get('cuda_runtime')}, CuPy {env.get('cupy')}",
      f"- onnxruntime {env.get('onnxruntime')} ({env.get('onnxruntime_device')} build; providers {env.get('onnxruntime_providers')}); python {env.get('python')}, {env.get('cpus')} CPUs", ""]
L += ["## pytest tests/gpu -m gpu", "", f"{rep['pytest']['summary']} (rc {rep['pytest']['rc']})", ""]
L += [f"- FAILED {f}" for f in rep["pytest"]["failures"]] + [""]
n_pass = sum(r.get("result") == "PASSED" for r in cli)
L += ["## Fixture plans: `python -m turnip.cli PLAN --random-inputs --check --backend cupy --json --repeat 2`", "",
      f"{n_pass}/{len(cli)} PASSED", "", "| plan | result | wall s (run 1, run 2) | max abs | reloaded B | fallback ops |", "|---|---|---|---|---|---|"]
for r in cli:
    w = ", ".join(f"{x:.4f}" for x in r.get("wall_s", [])) if r.get("wall_s") else ""
    L.append(f"| {r['plan']} | {r['result']} | {w} | {r.get('max_abs', '')} | {r.get('reloaded', '')} | {r.get('fallback_ops') or r.get('error', '')} |")
b = rep["bench"] or {}
L += ["", "## Benchmark", "", f"Peak pinned copy (1 GiB cudaMemcpyAsync): {b.get('peak_pinned')}", ""]
L += ["| plan | order | first s | best s | median s | notes |", "|---|---|---|---|---|---|"]
for r in b.get("plans", []):
    if "error" in r:
        L.append(f"| {r['plan']} | - | - | - | - | ERROR {r['error']} |")
        continue
    for mode in ("dynamic", "fixed", "dynamic_async"):
        x = r.get(mode, {})
        note = ""
        if mode == "dynamic" and "per_copy_GBps" in x:
            note = f"H2D {x['per_copy_GBps']} GB/s per copy, busy {x['h2d_busy_fraction']:.0%} of wall, {x['reload_bytes'] / 2**20:.0f} MiB reloaded"
        if "bit_identical_to_dynamic" in x:
            note = "bit-identical to dynamic" if x["bit_identical_to_dynamic"] else "DIFFERS from dynamic"
        L.append(f"| {r['label']} | {mode} | {x.get('first_s')} | {x.get('best_s')} | {x.get('median_s')} | {note} |")
    if "onnxruntime_cpu_s" in r:
        L.append(f"| {r['label']} | onnxruntime CPU | | {r['onnxruntime_cpu_s']} (median of 5) | | {r['onnxruntime']} |")
    br = r.get("backend_report")
    if br:
        L += ["", f"Memory outside the plan ({r['label']}): {br.get('outside_plan_nodes')} nodes allocated, largest {br.get('outside_plan_bytes_max_node')} B, "
              f"first {br.get('outside_plan_first')}, CuPy pool growth {br.get('pool_growth_bytes')} B, device free-memory drop {br.get('device_free_drop_bytes')} B "
              f"(arena {br.get('arena_bytes')} B); host pinned {br.get('host_pinned')}; ORT-CUDA nodes {len(br.get('ort_cuda_nodes', []))}, "
              f"host round trips {len(br.get('host_round_trip_nodes', []))}", ""]
lr = rep["llama_reference"]
if lr:
    L += ["", f"LLaMA fp16 vs onnxruntime CPU: {'PASSED' if lr.get('passed') else 'FAILED'} (atol {lr.get('atol')}, rtol {lr.get('rtol')}): {lr.get('check')}; "
          f"onnxruntime CPU one run {lr.get('onnxruntime_cpu_s')} s"]
L += ["", "## Steps", "", "```"] + rep["steps"] + ["```", ""]
open(os.path.join(OUT, "report.md"), "w").write("\n".join(L))
print("\n".join(L))
EOF
log "done"
