"""Kernels at library speed (issue 16): turnip-run (NumPy) vs onnxruntime CPU, side by side, plus peak RSS.

    python bench/bench_kernels.py                 # writes bench/results/kernels.{json,md}
    python bench/bench_kernels.py --quick         # fixtures + one real model, fewer rounds
    python bench/bench_kernels.py --fixtures-only # or --real-only [--models 'bert s128' ...]: re-measure those
                                                  # rows (same model, budget, fused, threads), keep the others
    python bench/bench_kernels.py --rss-only --src DIR --label before
                                                  # peak RSS of the CLIs of another source tree
                                                  # (e.g. `git archive` of an older commit)

Speed: each model is planned at 100% and 25% of its no-offload peak; then, in
one process and interleaved round by round, onnxruntime and turnip-run run on
the same feeds at the same thread count (1 and 2: onnxruntime's intra-op threads,
NumPy's BLAS threads); the ratio is best-of-N turnip / best-of-N onnxruntime
(a later call of a loaded ``turnip.Session`` against a later call of an
``InferenceSession``: feeds in, outputs out, no loading), and the turnip outputs are
checked against onnxruntime (atol 1e-4, rtol 1e-3). Models: the real-size
exports in $TURNIP_REAL_MODELS (default /work/models/real; GPT-2 small,
16-layer LLaMA, BERT-base at seq 128, GPT-2 at seq 1,024), skipped with a
message when absent, and the small fixtures in tests/models.

Memory: peak RSS (``wait4`` of the child) of ``turnipc plan`` and of
``turnip-run --random-inputs`` on each real model, against the weight bytes
and the plan's memories (arenas + emulated host region).

NumPy and onnxruntime run under the same environment (OPENBLAS_CORETYPE, if
set on this machine, applies to both); the BLAS kernel NumPy uses is
reported (threadpoolctl when installed).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..")
sys.path[:0] = [os.path.join(ROOT, "tests", "models")]

import fixtures  # noqa: E402
import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
from benchlib import best_seconds, markdown_table, ort_session, plans_at  # noqa: E402
from turnip import Session  # noqa: E402
from turnip.check import compare  # noqa: E402
from turnip.plan import read_plan, write_plan  # noqa: E402
from turnip.run import random_feeds  # noqa: E402

from turnipc.importer import import_model  # noqa: E402

REAL_DIR = os.environ.get("TURNIP_REAL_MODELS", "/work/models/real")
#: (label, file, seq)
REAL = [
    ("gpt2 s128", "gpt2_dynamo18.onnx", 128),
    ("llama s128", "llama_dynamo18.onnx", 128),
    ("bert s128", "bert_dynamo18.onnx", 128),
    ("gpt2 s1024", "gpt2_dynamo18.onnx", 1024),
]
RSS_MODELS = ["gpt2_dynamo18.onnx", "llama_dynamo18.onnx", "bert_dynamo18.onnx", "bert_legacy17.onnx"]
#: thread counts for onnxruntime (intra-op) and NumPy's BLAS (threadpoolctl) alike, side by side: one, then
#: two. On an oversubscribed machine a multi-threaded BLAS call can stall for a scheduler slice waiting for
#: its second thread.
THREADS = [1, 2]
FIXTURES = ["gpt2_dynamo18", "llama_dynamo18", "bert_dynamo18", "demo_mlp"]


def blas_info() -> str:
    try:
        import threadpoolctl

        infos = [f"{i['internal_api']} {i.get('version')} ({i.get('architecture')}, {i['num_threads']} threads)" for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
        return "; ".join(infos) or "no BLAS found"
    except ImportError:
        return "threadpoolctl not installed (pip install threadpoolctl to report the kernel)"


def _has_threadpoolctl() -> bool:
    try:
        import threadpoolctl  # noqa: F401

        return True
    except ImportError:
        return False


def blas_threads(n: int):
    """A context limiting NumPy's BLAS to n threads (threadpoolctl), or a no-op without it."""
    try:
        from threadpoolctl import threadpool_limits

        return threadpool_limits(n, user_api="blas")
    except ImportError:
        import contextlib

        return contextlib.nullcontext()


def bench_speed(label: str, path: str, dims: dict, rounds: int, tmp: str, feeds: dict | None = None, threads: int = 0,
                fuses: tuple[bool, ...] = (False,)) -> list[dict]:
    """Rows for 100% and 25% budgets, unfused and/or fused; ``threads`` (0: all CPUs) for both onnxruntime and NumPy's BLAS."""
    graph = import_model(path, dims, None)
    nth = threads or os.cpu_count() or 1
    sess = ort_session(path, nth)
    rows = []
    for fuse, (blabel, plan) in [(f, bp) for f in fuses for bp in plans_at(graph, path, f)]:
        plan_path = os.path.join(os.path.dirname(path), f".bench-kernels-{os.getpid()}.plan")
        write_plan(plan, plan_path)
        try:
            fd = feeds if feeds is not None else random_feeds(read_plan(plan_path), 0)
            ref = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, fd)))
            t_ort, t_tur = float("inf"), float("inf")
            out = None
            with blas_threads(nth), Session(plan_path, model=path, backend="numpy") as tsess:
                out = tsess.run(fd)  # the first call; the timed ones are the later calls, as for onnxruntime
                for _ in range(rounds):  # interleaved: load drifts hit both alike
                    t_ort = min(t_ort, best_seconds(lambda fd=fd: sess.run(None, fd), 2))
                    t_tur = min(t_tur, best_seconds(lambda fd=fd: tsess.run(fd), 2))
                out = tsess.run(fd)
        finally:
            os.unlink(plan_path)
        ok = all(c.ok for c in compare(out, ref, atol=1e-4, rtol=1e-3))
        rows.append({
            "model": label, "budget": blabel, "fused": "yes" if fuse else "no", "threads": nth, "check": "PASSED" if ok else "FAILED",
            "ort_ms": round(t_ort * 1e3, 2), "turnip_ms": round(t_tur * 1e3, 2), "ratio": round(t_tur / t_ort, 2),
            "nodes": len(plan.nodes), "reload_MiB": round(plan.stats.reload_bytes / 2**20, 1),
            "load1": round(os.getloadavg()[0], 1), "utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        })
        print(rows[-1], flush=True)
    return rows


GNU_TIME = "/usr/bin/time"


def _peak_rss(cmd: list[str], env: dict, cwd: str | None = None) -> tuple[int, float, int]:
    """(peak RSS bytes, seconds, exit code) of one child process.

    Through GNU time when present: a child forked straight from this (large) process
    would inherit its RSS high-water mark in ``ru_maxrss``.
    """
    t0 = time.perf_counter()
    use_time = os.path.exists(GNU_TIME)
    with tempfile.TemporaryFile() as errf:
        full = [GNU_TIME, "-f", "maxrss_kb=%M", *cmd] if use_time else cmd
        p = subprocess.Popen(full, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=errf)
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        errf.seek(0)
        err = errf.read().decode(errors="replace")
    rss = ru.ru_maxrss * 1024
    if use_time:
        kb = [ln for ln in err.splitlines() if ln.startswith("maxrss_kb=")]
        if kb:
            rss = int(kb[-1].split("=", 1)[1]) * 1024
    if p.returncode:
        print(f"  {' '.join(cmd[:4])}...: exit {p.returncode}: {err.strip()[-300:]}", flush=True)
    return rss, time.perf_counter() - t0, p.returncode


def weight_bytes(path: str) -> int:
    """Bytes of the model's initializers (inline or external), read from the structure only."""
    import onnx

    m = onnx.load(path, load_external_data=False) if os.path.getsize(path) < (64 << 20) else None
    if m is None:  # inline weights: the file is the weights (+ a small graph)
        return os.path.getsize(path)
    total = 0
    for t in m.graph.initializer:
        n = int(np.prod(t.dims, dtype=np.int64)) if t.dims else 1
        total += n * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
    return total


def bench_rss(src: str | None, tmp: str) -> list[dict]:
    env = dict(os.environ)
    py = [sys.executable]
    cwd = None
    if src:  # that tree's packages, not this checkout's editable install: no site hooks, run from the tree
        import sysconfig

        env["PYTHONPATH"] = os.pathsep.join([src, os.path.join(src, "runtime"), sysconfig.get_paths()["purelib"]])
        py = [sys.executable, "-S"]
        cwd = src
    rows = []
    # the interpreter / library baseline: python + numpy + onnx + the modules turnip-run imports, no plan
    base_rss, _, _ = _peak_rss([*py, "-c", "import numpy, onnx, turnip.cli, turnip.run, turnip.weights"], env, cwd)
    print(f"baseline (imports, no plan): {base_rss / 2**20:.1f} MiB", flush=True)
    for f in RSS_MODELS:
        path = os.path.join(REAL_DIR, f)
        if not os.path.exists(path):
            print(f"skip RSS {f}: {path} not found (make it with bench/make_models.py)", flush=True)
            continue
        wb = weight_bytes(path)
        for frac in ("100%", "25%"):
            plan_path = os.path.join(tmp, f"{f}.{frac.rstrip('%')}.plan")
            cmd = [*py, "-m", "turnipc.cli", "plan", path, "--gpu-mem", frac, "--dim", "batch=1", "--dim", "seq=128", "-o", plan_path]
            plan_rss, plan_s, rc = _peak_rss(cmd, env, cwd)
            if rc == 2 and frac == "25%":  # below the smallest feasible budget: take that one
                frac = "min"
                cmd[cmd.index("25%")] = "min"
                plan_rss, plan_s, rc = _peak_rss(cmd, env, cwd)
            if rc:
                continue
            plan = read_plan(plan_path)
            mem_bytes = sum(int(m.size) for m in plan.memories)
            run_rss, run_s, rc = _peak_rss([*py, "-m", "turnip.cli", plan_path, "--random-inputs"], env, cwd)
            rows.append({
                "model": f, "budget": frac, "weights_MiB": round(wb / 2**20, 1), "memories_MiB": round(mem_bytes / 2**20, 1),
                "plan_rss_MiB": round(plan_rss / 2**20, 1), "run_rss_MiB": round(run_rss / 2**20, 1),
                "run_rss_over_weights": round(run_rss / wb, 2),
                "run_rss_over_memories": round(run_rss / max(mem_bytes, 1), 2), "run_ok": rc == 0,
                "baseline_MiB": round(base_rss / 2**20, 1),
                # what the run holds beyond its memories and the baseline (target: <= 0; the weights once, in the memories)
                "run_over_mem_plus_base_MiB": round((run_rss - mem_bytes - base_rss) / 2**20, 1),
                "load1": round(os.getloadavg()[0], 1), "utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
            })
            print(rows[-1], flush=True)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fixtures + GPT-2 s128 only, 2 rounds")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--rss-only", action="store_true")
    ap.add_argument("--src", help="run the RSS measurement with the CLIs of this source tree")
    ap.add_argument("--label", default="after")
    ap.add_argument("--fixtures-only", action="store_true", help="re-measure the fixtures only; keep the other rows of kernels.json")
    ap.add_argument("--real-only", action="store_true", help="re-measure the real-size models only (no RSS); keep the fixture rows")
    ap.add_argument("--models", nargs="*", default=None, help="real-size rows to measure, by label (e.g. 'bert s128')")
    ap.add_argument("--threads", type=int, nargs="*", default=None, help="thread counts to measure (default: 1 and 2)")
    ap.add_argument("--fixture-rounds", type=int, default=20, help="rounds for the fixtures (a run is ~1 ms: a preempted run is common)")
    ap.add_argument("--fuse", choices=("off", "on", "both"), default="both", help="plans without / with fusion (attention: turnipc/fuse_attention.py; elementwise chains: turnipc/fuse.py)")
    ap.add_argument("--real-fuse", choices=("off", "on", "both"), default=None, help="the same for the real-size models (default: --fuse)")
    args = ap.parse_args()
    out_dir = os.path.join(HERE, "results")
    os.makedirs(out_dir, exist_ok=True)
    json_path = os.path.join(out_dir, "kernels.json")
    prev = {}
    if os.path.exists(json_path):
        with open(json_path) as f:
            prev = json.load(f)
    res = dict(prev)
    res["env"] = {
        "blas": blas_info(), "numpy": np.__version__, "onnxruntime": ort.__version__, "cpus": os.cpu_count(),
        "loadavg_at_start": [round(v, 1) for v in os.getloadavg()],
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"), "OPENBLAS_L2_SIZE": os.environ.get("OPENBLAS_L2_SIZE"),
    }
    print(res["env"], flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        if args.rss_only:
            res[f"rss_{args.label}"] = bench_rss(args.src, tmp)
        else:
            rounds = 2 if args.quick else args.rounds
            pick = {"off": (False,), "on": (True,), "both": (False, True)}
            fuses, real_fuses = pick[args.fuse], pick[args.real_fuse or args.fuse]
            speed = []
            for name in [] if args.real_only else FIXTURES:
                fx = fixtures.get(name)
                if not fx.exists():
                    print(f"skip fixture {name}: not found", flush=True)
                    continue
                for th in args.threads or THREADS:
                    speed += bench_speed(f"{name} (fixture)", fx.path, fx.dims or {}, args.fixture_rounds, tmp, fixtures.make_inputs(fx, 0), threads=th,
                                         fuses=fuses)
            res.pop("fixtures_only_note", None)
            reals = [] if args.fixtures_only else REAL[:1] if args.quick else [r for r in REAL if not args.models or r[0] in args.models]
            for label, f, seq in reals:
                path = os.path.join(REAL_DIR, f)
                if not os.path.exists(path):
                    print(f"skip {label}: {path} not found (make it with bench/make_models.py)", flush=True)
                    continue
                for th in args.threads or THREADS:
                    if th and not _has_threadpoolctl():
                        print(f"skip {label} at {th} thread(s): pip install threadpoolctl to limit NumPy's BLAS", flush=True)
                        continue
                    speed += bench_speed(label, path, {"batch": 1, "seq": seq}, rounds, tmp, threads=th, fuses=real_fuses)
            # rows of this run replace the rows of the same (model, budget, fused, threads); the others are kept
            key = lambda r: (r["model"], r["budget"], r.get("fused", "no"), r["threads"])  # noqa: E731
            done = {key(r) for r in speed}
            # rows without ``utc`` are from before rows carried their time (and timed differently): dropped
            res["speed"] = sorted([r for r in prev.get("speed", []) if key(r) not in done and "utc" in r] + speed,
                                  key=lambda r: ("(fixture)" not in r["model"], r["model"], r["threads"], r.get("fused", "no"), r["budget"]))
            if not args.fixtures_only and not args.real_only:
                res[f"rss_{args.label}"] = bench_rss(None, tmp)
    res["loadavg_at_end"] = [round(v, 1) for v in os.getloadavg()]
    if os.path.exists(json_path):  # merge with what another run (e.g. --rss-only --label before) wrote meanwhile
        with open(json_path) as f:
            merged = json.load(f)
        merged.update({k: v for k, v in res.items() if k not in prev or res[k] is not prev.get(k)})
        merged.pop("fixtures_only_note", None)  # rows now say when each was measured (``utc``)
        res = merged
    with open(json_path, "w") as f:
        json.dump(res, f, indent=1)
    env = res["env"]
    md = [
        "Issue 16. turnip-run (NumPy backend) vs onnxruntime CPU, best of N interleaved rounds in one process; "
        "ratio = turnip / onnxruntime (a later `Session.run` vs `InferenceSession.run`, same threads). Targets: real models <= 1.5x at 100%, <= 2x at 25%; fixtures <= 3x.",
        "",
        f"BLAS: {env['blas']}; numpy {env['numpy']}, onnxruntime {env['onnxruntime']}, {env['cpus']} CPUs, "
        f"OPENBLAS_CORETYPE={env['OPENBLAS_CORETYPE']} (same environment for both); load average at the start of this script's last run "
        f"{env.get('loadavg_at_start')}, at end {res.get('loadavg_at_end')}; `load1` is the 1-minute load average after each row "
        "and `utc` when it was measured (rows are re-measured by model, budget, fused and threads; the machine is shared: "
        "absolute times are noisy, read the ratios).",
        "",
    ]
    if res.get("fixtures_only_note"):
        md += [res["fixtures_only_note"], ""]
    if res.get("speed"):
        md += markdown_table(res["speed"], ["model", "budget", "fused", "threads", "check", "ort_ms", "turnip_ms", "ratio", "nodes", "reload_MiB", "load1", "utc"]) + [""]
    cols = ["model", "budget", "weights_MiB", "memories_MiB", "plan_rss_MiB", "run_rss_MiB", "run_rss_over_weights", "run_rss_over_memories",
            "baseline_MiB", "run_over_mem_plus_base_MiB", "load1", "utc"]
    for key in sorted(k for k in res if k.startswith("rss_")):
        how = " Measured with `--rss-only --src DIR --label before`, DIR a `git archive` of the tree before the change." if key != "rss_after" else ""
        md += [f"Peak RSS ({key[4:]}): `turnipc plan` and `turnip-run --random-inputs` (memories = arenas + emulated host region; "
               "baseline = peak RSS of python importing numpy, onnx and turnip-run's modules, no plan; run_over_mem_plus_base = "
               f"run - memories - baseline, target <= 0: the weights held once, in the memories).{how}", ""]
        md += markdown_table(res[key], cols) + [""]
    with open(os.path.join(out_dir, "kernels.md"), "w") as f:
        f.write("\n".join(md))
    print("\n".join(md))
    bad = [r for r in res.get("speed", []) if r["check"] != "PASSED"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
