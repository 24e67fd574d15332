#!/usr/bin/env python3
"""Decode throughput: simulated tokens/s beside published figures, and the
decode loop checked end to end on the small exports.

    .venv/bin/python bench/bench_decode.py            # both parts
    .venv/bin/python bench/bench_decode.py --no-verify

Part 1 (simulator, turnipc.simulate.decode): OPT-30B, prompt 512, 32 new
tokens, on the T4 16 GB and RTX A6000 48 GB profiles at the best batch, next
to the figures published for FlexGen / DeepSpeed ZeRO-Inference / HF
accelerate; LLaMA-2-7B and -70B on the 24 GB RTX 4090 profile. Host memory:
208 GiB for the T4 (FlexGen's machine), 256 GiB otherwise (an assumption).

Part 2 (turnip.Session.generate on tests/models/decoders/): 32 greedy
tokens, batch 2, both models, both cache conventions (past/present on
past-length bucket plans, with the prompt graph and with an empty past), at
100 % and 25 % of each plan's no-offload peak, in the dynamic order and 5
random orders; the ids must equal transformers' (stored by
tests/models/make_decoders.py). Beside them: weight bytes read from the files
vs the session plans' own, and cache bytes copied per token.

Part 3: decode tokens/s of ``turnip.Session.generate`` (one seq-1 decode
plan, the cache marked as state in the plan: home in host memory, kept
between runs) vs the onnxruntime CPU loop on the same static-cache decoder,
batch 1 and 8, as ratios; beside it the same plan without state
(``auto_state=False``: what a reused cache input costs when it is fed whole),
and the past/present decoders (past-length bucket plans) with their prompt
graph, against onnxruntime's loop over the same pair.

Writes bench/results/decode.md and decode.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from functools import partial

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..")
sys.path[:0] = [ROOT, os.path.join(ROOT, "runtime")]

from turnipc.simulate.decode import GIB, InfeasibleError, best_batch, predict, with_link_efficiency  # noqa: E402

PROMPT, NEW = 512, 32

# (model, device, GPU memory GiB, host GiB, {system: published generation tokens/s}, batch of the published figure)
SCENARIOS = [
    ("opt-30b", "t4", 16, 208, {"FlexGen": 7.32, "DeepSpeed ZeRO-Inference": 0.60, "HF accelerate": 0.62}, None),
    ("opt-30b", "a6000", 48, 256, {"DeepSpeed ZeRO-Inference": 21.84}, 24),
    ("llama-2-7b", "rtx4090", 24, 256, {}, None),
    ("llama-2-70b", "rtx4090", 24, 256, {}, None),
]
SOURCES = ("Published figures as quoted in issue 13: FlexGen paper (Sheng et al., ICML 2023), OPT-30B on one T4 16 GB "
           "with 208 GB host RAM, prompt 512, 32 new tokens, generation throughput = batch x 32 / total time; "
           "ZeRO-Inference on an A6000 48 GB at batch 24.")


def _row(label, r, published=""):
    p = r.placement
    return (f"| {label} | {r.batch} | {p.weights_on_gpu:.0%} / {p.cache_on_gpu:.1%} | {r.prefill_tokens_per_s:,.0f} | "
            f"{r.decode_tokens_per_s:.2f} | {r.generation_tokens_per_s:.2f} | {r.h2d_bytes_per_decode_step / 1e9:.1f} | "
            f"{r.bound} | {published} |")


def simulate_part(lines, data):
    lines += ["## Simulated decode throughput (turnipc.simulate.decode)", "",
              f"Prompt {PROMPT}, {NEW} new tokens, fp16. \"gen tok/s\" = batch x {NEW} / (prefill + decode), "
              "FlexGen's definition; \"decode tok/s\" counts decode steps only. Weights/cache = fraction resident "
              "on the GPU (the rest streamed from host memory over PCIe per layer). Peak datasheet rates; the "
              "\"PCIe x0.8\" rows scale the links to a typical achieved 80 %.", "", SOURCES, ""]
    for model, dev, gpu, host, published, pub_batch in SCENARIOS:
        lines += [f"### {model} on {dev}, {gpu} GiB GPU, {host} GiB host", "",
                  "| case | batch | weights / cache on GPU | prefill tok/s | decode tok/s | gen tok/s | PCIe GB per decode step | bound | published gen tok/s |",
                  "|---|---|---|---|---|---|---|---|---|"]
        pub = ", ".join(f"{k} {v}" for k, v in published.items())
        cases = [
            ("best batch, cache may be offloaded", dict(), None),
            ("best batch, cache on GPU only", dict(offload_cache=False), None),
            ("best batch, PCIe x0.8", dict(), 0.8),
        ]
        for label, kw, eff in cases:
            device = with_link_efficiency(dev, eff) if eff else dev
            try:
                r = best_batch(model, device, gpu * GIB, PROMPT, NEW, host_mem=host * GIB, **kw)
            except InfeasibleError as e:
                lines.append(f"| {label} | - | infeasible: {e} | | | | | | |")
                continue
            lines.append(_row(label, r, pub if not kw and not eff else ""))
            data.append(dict(r.to_dict(), profile=dev, gpu_gib=gpu, host_gib=host, case=label))
        for b in sorted({1, 8} | ({pub_batch} if pub_batch else set())):
            try:
                r = predict(model, dev, gpu * GIB, b, PROMPT, NEW, host_mem=host * GIB, offload_cache=False)
            except InfeasibleError:
                r = predict(model, dev, gpu * GIB, b, PROMPT, NEW, host_mem=host * GIB)
            label = f"batch {b}" + (" (cache on GPU)" if r.placement.cache_on_gpu == 1.0 else "")
            lines.append(_row(label, r, pub if b == pub_batch else ""))
            data.append(dict(r.to_dict(), profile=dev, gpu_gib=gpu, host_gib=host, case=label))
        lines.append("")
    lines += [
        "What the predictor ignores (see turnipc/simulate/decode.py): achieved vs peak rates (kernels, PCIe), "
        "host-side staging and memory bandwidth, FlexGen's CPU attention, disk offload and 4-bit compression, "
        "and each library's real schedule; it is the throughput of an ideal offloading runtime with the "
        "searched placement, i.e. an optimistic bound. Where it is far above a published figure, the gap is "
        "what that system leaves on the table (or what this model leaves out), not a Turnip measurement.", ""]


ORDERS = [("dynamic", 0)] + [("random", seed) for seed in range(5)]


def verify_part(lines, data):
    """The done-when equality in full: 32 greedy tokens from both models, both conventions, 100% and 25%, 6 orders."""
    import numpy as np
    import turnip
    from turnip.generate import DecoderSignature, OrtRunner, generate

    import turnipc

    dec = os.path.join(ROOT, "tests", "models", "decoders")
    lines += ["## 32 greedy tokens == transformers: every model, convention, budget and order (batch 2)", "",
              "`turnip.Session.generate` on the small exports of tests/models/decoders/ (random weights, made by "
              "tests/models/make_decoders.py with transformers' own greedy ids). Static cache: one seq-1 decode plan, the "
              "cache as state. Past/present: decode steps on past-length bucket plans (turnip/generate_bucket.py: the "
              "past padded to 16/32/64 and masked), the prompt through the prompt graph (`prefill`) or through the decoder "
              "with an empty past. Budget = share of each plan's own no-offload peak; orders: the dynamic one and 5 random "
              "(seeds 0-4). \"weights read\": bytes read from the weight files in the generation's session(s) vs the "
              "bytes of the session's own plans (the bucket plans copy theirs); \"cache copied / token\": cache bytes "
              "written per decode token (one position per cache tensor and its kept arena copy; past/present also "
              "the copies of [0, past) when moving to a larger bucket), as a share of the final cache.", "",
              "| model | convention | prompt | budget | orders with ids == transformers | plans loaded | buckets | "
              "peak / budget (session plan) | weights read / session plans' own | weight loads | cache copied / token | "
              "cache refilled / token | wall s (6 generations) |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    ok_all = True
    for model in ("gpt2", "llama"):
        with open(os.path.join(dec, f"{model}_expected.json")) as f:
            exp = json.load(f)
        prompt, want = np.array(exp["prompt"]), np.array(exp["new_token_ids"])
        n = prompt.shape[1]
        for conv in ("static", "past"):
            path = os.path.join(dec, f"{model}_{conv}.onnx")
            pre_path = os.path.join(dec, f"{model}_prefill.onnx")
            sig = DecoderSignature.from_onnx(path)
            ort_ok = bool(np.array_equal(generate(OrtRunner(path), sig, prompt, NEW,
                                                  prefill_runner=OrtRunner(pre_path) if conv == "past" else None).new_token_ids, want))
            ok_all &= ort_ok
            lines.append(f"| {model} | {sig.convention.value} | onnxruntime loop | - | {'1/1' if ort_ok else '0/1'} | | | | | | | | |")
            modes = [("prefill graph", True), ("empty past", False)] if conv == "past" else [("decode plan", False)]
            for mode, with_prefill in modes:
                for budget in ("100%", "25%"):
                    if conv == "static":
                        dims = {"batch": 2, "seq": 1}
                    else:
                        dims = {"batch": 2, "seq": 1, "past": n} if with_prefill else {"batch": 2, "seq": n, "past": 0}
                    plan = turnipc.plan(path, gpu_mem=budget, dims=dims, solver="greedy")
                    pplan = turnipc.plan(pre_path, gpu_mem=budget, dims={"batch": 2, "seq": n}) if with_prefill else None
                    t0 = time.perf_counter()
                    good, stats = 0, None
                    for order, seed in ORDERS:
                        s = turnip.Session(plan, model=path, backend="numpy", order=order, seed=seed)
                        pre = turnip.Session(pplan, model=pre_path, backend="numpy", order=order, seed=seed) if pplan is not None else None
                        try:
                            out = s.generate(prompt, NEW, prefill=pre)
                            own = s.loaded.weight_file_bytes_read + (pre.loaded.weight_file_bytes_read if pre is not None else 0)
                        finally:
                            s.close()
                            if pre is not None:
                                pre.close()
                        good += bool(np.array_equal(out.new_token_ids, want))
                        stats = stats or (out.stats, own)
                    wall = time.perf_counter() - t0
                    ok_all &= good == len(ORDERS)
                    st, own = stats
                    lines.append(f"| {model} | {sig.convention.value} | {mode} | {budget} | {good}/{len(ORDERS)} | {st.plans_loaded} | "
                                 f"{', '.join(map(str, st.buckets)) or '-'} | {plan.stats.peak_bytes:,} / {plan.stats.budget_bytes:,} | "
                                 f"{st.weight_file_bytes_read:,} / {own:,} | {st.weight_loads} | "
                                 f"{st.cache_bytes_copied_per_token:,.0f} ({st.cache_bytes_copied_per_token / st.cache_bytes:.1%} of {st.cache_bytes:,}) | "
                                 f"{st.cache_bytes_refilled_per_token:,.0f} | {wall:.1f} |")
                    data.append(dict(model=model, convention=sig.convention.value, prompt=mode, budget=budget, orders_identical=good,
                                     orders=len(ORDERS), session_weight_bytes_read=own, peak_bytes=plan.stats.peak_bytes,
                                     budget_bytes=plan.stats.budget_bytes, wall_s=wall, **{f"turnip_{k}": v for k, v in st.to_dict().items()}))
                    print(lines[-1], flush=True)
    lines += ["", "GPT-2's bucket plans read one weight the session's plans do not hold: the position table (32,768 B), which "
              "those plans folded into a constant because their positions were known at plan time; every other weight is "
              "copied from the session's plan.", ""]
    speed_part(lines, data, dec)
    return ok_all


def speed_part(lines, data, dec):
    """Decode tok/s of turnip.Session.generate vs the onnxruntime CPU loop (OrtRunner), same decoder, same prompt."""
    import contextlib

    import numpy as np
    import turnip
    from turnip.generate import DecoderSignature, OrtRunner, generate

    import turnipc

    try:  # one BLAS thread, like onnxruntime's intra_op_num_threads=1 below
        from threadpoolctl import threadpool_limits

        one_thread = threadpool_limits(limits=1)
        threads = "1 thread each (threadpoolctl)"
    except ImportError:
        one_thread, threads = contextlib.nullcontext(), "onnxruntime 1 thread, NumPy BLAS default"
    lines += ["## Decode tokens/s: Session.generate vs the onnxruntime CPU loop (static cache, 32 new tokens, prompt 8)", "",
              "Turnip: one decode plan (seq = 1) per batch and budget, planned and loaded before timing; the prompt runs "
              "through it one position at a time, with state (the default) the KV cache is state: kept "
              "between runs (home in host memory, arena copy refilled from it where the plan reuses it), one position "
              "written back per token; without state (`auto_state=False`) a cache input the plan reuses is held on the host "
              "and fed whole. onnxruntime: `turnip.generate.OrtRunner` on "
              "the same graph, the loop feeding the whole cache every step. Decode tok/s = batch x 31 / time of the 31 "
              f"decode steps (the first new token comes from the prompt pass). NumPy backend; {threads}; side by side in "
              "one process: 5 rounds of (onnxruntime generation, Session generation), rates: best of 5 each; turnip / onnxruntime: the median over the 5 rounds of the two rates measured back to back. Wall-clock rates on a shared 2-core machine: compare within a row (same moment), "
              "not across rows or runs.", "",
              "| model | batch | budget | state | onnxruntime decode tok/s | Session.generate decode tok/s | turnip / onnxruntime | "
              "cache kept / fed | cache bytes copied per token (of the whole cache) | cache bytes refilled per token | "
              "weight file bytes read (once) | weight loads | same ids |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    prefill_rows: list[str] = []
    with one_thread:
        for model in ("gpt2", "llama"):
            path = os.path.join(dec, f"{model}_static.onnx")
            sig = DecoderSignature.from_onnx(path)
            ort_runner = OrtRunner(path, threads=1)
            for batch in (1, 8):
                prompt = np.random.default_rng(batch).integers(1, 256, (batch, 8))
                ref = generate(ort_runner, sig, prompt, NEW)
                for budget in ("100%", "25%"):
                    for state in (True, False):
                        plan = turnipc.plan(path, gpu_mem=budget, dims={"batch": batch, "seq": 1}, auto_state=state)
                        with turnip.Session(plan, model=path, backend="numpy") as s:
                            o, outs, ratio = _side_by_side(partial(_ort_rate, ort_runner, sig, prompt, None), partial(s.generate, prompt, NEW))
                        st, same = _fastest(outs, ref)
                        lines.append(_row_head(model, batch, budget, "yes" if st.cache_is_state else "no", o, st, ratio)
                                     + f"{st.cache_inputs_kept} / {st.cache_inputs_fed} | {_copied(st)} | "
                                     f"{st.cache_bytes_refilled_per_token:,.0f} | {st.weight_file_bytes_read:,} | {st.weight_loads} | {same} |")
                        data.append(_data_row(dict(model=model, batch=batch, budget=budget, state=state), o, ratio, same, st))
                        print(lines[-1], flush=True)
                # the prompt: one position at a time through the decode plan vs one run of a prompt-length plan
                dplan = turnipc.plan(path, gpu_mem="100%", dims={"batch": batch, "seq": 1})
                pplan = turnipc.plan(path, gpu_mem="100%", dims={"batch": batch, "seq": prompt.shape[1]})
                with turnip.Session(dplan, model=path, backend="numpy") as s, turnip.Session(pplan, model=path, backend="numpy") as pre:
                    one = max(s.generate(prompt, 2).stats.prefill_tokens_per_s for _ in range(3))
                    runs = [s.generate(prompt, 2, prefill=pre) for _ in range(3)]
                    whole = max(r.stats.prefill_tokens_per_s for r in runs)
                o_pre = max(batch * prompt.shape[1] / generate(ort_runner, sig, prompt, 2).prefill_s for _ in range(3))
                prefill_rows.append(f"| {model} | {batch} | {o_pre:,.0f} | {one:,.0f} ({one / o_pre:.3f}) | {whole:,.0f} ({whole / o_pre:.3f}) | "
                                    f"{runs[-1].stats.cache_bytes_copied_prompt:,} |")
                data.append(dict(model=model, batch=batch, kind="prefill", ort_prefill_tok_s=o_pre, turnip_one_at_a_time_tok_s=one,
                                 turnip_prefill_plan_tok_s=whole))
                print(prefill_rows[-1], flush=True)
    lines.append("")
    past_speed_part(lines, data, dec, one_thread)
    lines += ["### Prompt (8 tokens) tokens/s, 100 %: through the decode plan one position at a time vs a `prefill=` plan", "",
              "| model | batch | onnxruntime prefill tok/s | Session, one position per run (ratio) | Session, prefill plan (ratio) | "
              "cache bytes copied for the prompt (prefill plan) |", "|---|---|---|---|---|---|", *prefill_rows, ""]


def _ort_rate(runner, sig, prompt, prefill):
    """Decode tokens/s of one onnxruntime generation (the same loop, the cache fed whole each step)."""
    from turnip.generate import generate

    return generate(runner, sig, prompt, NEW, prefill_runner=prefill).decode_tokens_per_s()


def _fastest(outs, ref):
    """The stats of the fastest of ``outs`` (generations), and whether every one gave ``ref``'s ids."""
    import numpy as np

    st = max((r.stats for r in outs), key=lambda x: x.decode_tokens_per_s)
    return st, all(np.array_equal(r.new_token_ids, ref.new_token_ids) for r in outs)


def _row_head(model: str, batch: int, budget: str, how: str, ort_tok_s: float, st, ratio: float) -> str:
    """The first cells of a table row: the case, both decode rates and their ratio."""
    return f"| {model} | {batch} | {budget} | {how} | {ort_tok_s:,.0f} | {st.decode_tokens_per_s:,.0f} | {ratio:.3f} | "


def _copied(st) -> str:
    """Cache bytes copied per token, and that as a share of the whole cache."""
    return f"{st.cache_bytes_copied_per_token:,.0f} ({st.cache_bytes_copied_per_token / st.cache_bytes:.1%} of {st.cache_bytes:,})"


def _data_row(keys: dict, ort_tok_s: float, ratio: float, identical: bool, st) -> dict:
    """One results-file row: what was measured (``keys``), both rates, the ratio, equality, and Turnip's counters."""
    return dict(keys, ort_decode_tok_s=ort_tok_s, turnip_decode_tok_s=st.decode_tokens_per_s, ratio=ratio, identical=identical,
                **{f"turnip_{k}": v for k, v in st.to_dict().items()})


def _side_by_side(ort_rate, turnip_generate, rounds=5):
    """``rounds`` x (onnxruntime decode tok/s, a Session generation), back to back.

    Returns (best onnxruntime rate, the generations, the median over rounds of turnip rate / onnxruntime rate):
    the ratio of two runs made at the same moment, so a burst of load from other processes on a shared
    machine moves both, not one against the other's best.
    """
    import statistics

    rates, outs = [], []
    for _ in range(rounds):
        rates.append(ort_rate())
        outs.append(turnip_generate())
    ratio = statistics.median(r.stats.decode_tokens_per_s / o for r, o in zip(outs, rates))
    return max(rates), outs, ratio


def past_speed_part(lines, data, dec, one_thread):
    """Past/present decoders: Session.generate (past-length bucket plans, prompt graph as prefill) vs onnxruntime's loop."""
    import numpy as np
    import turnip
    from turnip import run as turnip_run
    from turnip.generate import DecoderSignature, OrtRunner, generate

    import turnipc
    from turnipc.errors import BudgetError

    lines += ["### Past/present decoders (past-length bucket plans; prompt graph as `prefill=`)", "",
              "Decode steps run on bucket plans of capacity 16, 32 and 64 (the past padded and masked, "
              "turnip/generate_bucket.py), with the session plan's weights and the cache kept in them as state "
              "(one position written per token; [0, past) copied once per bucket move). The session's plan and its "
              "bucket plans share ONE arena (sized to the largest plan) and one host weight store "
              "(turnip/session_memory.py). \"kept\": the session keeps its bucket plans loaded between generate calls "
              "(the default); \"per generation\": each bucket plan is loaded when first needed and closed when the "
              "next is loaded, its load time inside the decode time (column \"loads\"). Arena columns: over the "
              "whole session (a warm-up generation and 5 timed ones), the most device bytes held at once against the "
              "largest plan's arena, and the arena allocations (the session plan's, then one grown to the largest); "
              "\"weights into store\": weight bytes read from the model file in the whole session (each weight once). "
              "A first generation plans the buckets (plan cache) before timing. The prompt "
              "plan is made at the same budget, or at `min` where that budget is below its minimum. onnxruntime: "
              "the same decoder_with_past + prompt graph pair in `OrtRunner`s, feeding the whole past each step (the "
              "convention). Side by side: 5 rounds of (onnxruntime generation, Session generation) in one process, "
              "1 thread each; rates: best of 5 each; turnip / onnxruntime: the median over the rounds of the two rates "
              "measured back to back. The previous run of this bench (one plan per past length) gave ratios "
              "0.006-0.028.", "",
              "| model | batch | budget | bucket plans | onnxruntime decode tok/s | Session.generate decode tok/s | turnip / onnxruntime | "
              "plans used (buckets) | loads s per generation | cache bytes copied per token (of the whole cache) | "
              "weight file bytes read (session plans' own) | arena held at most / largest plan's | arena allocations | "
              "weights into store | same ids |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    load_s = [0.0]
    original_init = turnip_run.LoadedPlan.__init__

    def timed_init(self, *a, **k):  # the bucket plans' load time, inside the timed generations
        t0 = time.perf_counter()
        original_init(self, *a, **k)
        load_s[0] += time.perf_counter() - t0

    with one_thread:
        for model in ("gpt2", "llama"):
            path, pre_path = os.path.join(dec, f"{model}_past.onnx"), os.path.join(dec, f"{model}_prefill.onnx")
            sig = DecoderSignature.from_onnx(path)
            ort, ort_pre = OrtRunner(path, threads=1), OrtRunner(pre_path, threads=1)
            for batch in (1, 8):
                prompt = np.random.default_rng(batch).integers(1, 256, (batch, 8))
                ref = generate(ort, sig, prompt, NEW, prefill_runner=ort_pre)
                for budget in ("100%", "25%"):
                    plan = turnipc.plan(path, gpu_mem=budget, dims={"batch": batch, "seq": 1, "past": 8}, solver="greedy")
                    try:
                        pplan = turnipc.plan(pre_path, gpu_mem=budget, dims={"batch": batch, "seq": 8})
                    except BudgetError:  # the prompt graph's logits [batch, 8, vocab] need more at batch 8
                        pplan = turnipc.plan(pre_path, gpu_mem="min", dims={"batch": batch, "seq": 8})
                    for keep in (True, False):
                        with turnip.Session(plan, model=path, backend="numpy") as s, \
                                turnip.Session(pplan, model=pre_path, backend="numpy") as pre:
                            s.generate(prompt, NEW, prefill=pre, keep_plans=keep)  # plans the buckets (cached), loads the kept ones
                            load_s[0] = 0.0
                            turnip_run.LoadedPlan.__init__ = timed_init
                            try:
                                o, outs, ratio = _side_by_side(partial(_ort_rate, ort, sig, prompt, ort_pre),
                                                        partial(s.generate, prompt, NEW, prefill=pre, keep_plans=keep))
                            finally:
                                turnip_run.LoadedPlan.__init__ = original_init
                            own = s.loaded.weight_file_bytes_read + pre.loaded.weight_file_bytes_read
                            mem = s.memory.c
                            largest = max(sum(m.size for m in p.memories if str(m.kind) == "gpu") for p in s.memory.plans_used)
                        st, same = _fastest(outs, ref)
                        lines.append(_row_head(model, batch, budget, "kept" if keep else "per generation", o, st, ratio)
                                     + f"{st.plans_loaded} ({', '.join(map(str, st.buckets))}) | {load_s[0] / len(outs):.3f} | "
                                     f"{_copied(st)} | {st.weight_file_bytes_read:,} ({own:,}) | "
                                     f"{mem.device_bytes_live_peak:,} / {largest:,} | {mem.arena_allocations} | {mem.weight_bytes_read:,} | {same} |")
                        data.append(_data_row(dict(model=model, batch=batch, budget=budget, convention="past_present", bucket_plans_kept=keep,
                                                   load_s_per_generation=load_s[0] / len(outs), arena_bytes_held_at_most=mem.device_bytes_live_peak,
                                                   largest_plan_arena_bytes=largest, arena_allocations=mem.arena_allocations,
                                                   weight_bytes_into_store=mem.weight_bytes_read), o, ratio, same, st))
                        print(lines[-1], flush=True)
    lines.append("")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--no-verify", action="store_true", help="only the simulator part")
    args = ap.parse_args(argv)
    if "TURNIP_CACHE_DIR" not in os.environ:  # the past/present plans of part 3 go to a fresh cache, not the user's
        import tempfile

        os.environ["TURNIP_CACHE_DIR"] = tempfile.mkdtemp(prefix="turnip-bench-decode-")
    lines, sim, ver = ["# Decode: tokens per second", ""], [], []
    simulate_part(lines, sim)
    ok = True
    if not args.no_verify:
        ok = verify_part(lines, ver)
    out = os.path.join(HERE, "results")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "decode.md"), "w") as f:
        f.write("\n".join(lines))
    with open(os.path.join(out, "decode.json"), "w") as f:
        json.dump({"simulated": sim, "verified": ver}, f, indent=1)
    print("\n".join(lines))
    print("wrote bench/results/decode.md" + ("" if ok else "; IDS DIFFER"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
