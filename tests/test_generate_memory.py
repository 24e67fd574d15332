"""One arena and one host weight store per session (turnip/session_memory.py, issue 13).

A past/present decoder's session runs its own plan and a plan per past-length
bucket. They must share ONE device arena per GPU (never two held at once, not
even while moving to the next bucket) and ONE host copy of the weights, read
from the model file once per session, with the ids still exactly
transformers' greedy ids (stored by tests/models/make_decoders.py).
"""

from __future__ import annotations

import json
import os

import numpy as np
import onnx
import pytest
import turnip
from onnx import numpy_helper
from turnip.plan import GPU, HOST, Loc, Memory, TensorKind
from turnip.session_memory import SessionMemory, session_memory_for

import turnipc

DEC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "models", "decoders")


def _expected(model: str) -> tuple[np.ndarray, np.ndarray]:
    with open(os.path.join(DEC, f"{model}_expected.json")) as f:
        e = json.load(f)
    return np.array(e["prompt"], dtype=np.int64), np.array(e["new_token_ids"], dtype=np.int64)


def _arena(plan) -> int:
    return sum(int(m.size) for m in plan.memories if m.kind == GPU)


def _weights(plan) -> dict[str, int]:
    """Weight name -> bytes, for the whole (unblocked, underived) weights a plan places."""
    out = {}
    for p in plan.placements:
        t = plan.tensors[p.tensor]
        if p.source == TensorKind.WEIGHT and t.block is None and t.derive is None:
            out[t.name] = t.nbytes
    return out


@pytest.mark.parametrize("keep_plans", [True, False])
@pytest.mark.parametrize("gpu_mem", ["100%", "25%"])
@pytest.mark.parametrize("model", ["gpt2", "llama"])
def test_bucketed_generation_holds_one_arena_and_reads_weights_once(model, gpu_mem, keep_plans):
    prompt, expected = _expected(model)
    n = prompt.shape[1]
    path = os.path.join(DEC, f"{model}_past.onnx")
    plan = turnipc.plan(path, gpu_mem=gpu_mem, dims={"batch": 2, "seq": n, "past": 0}, solver="greedy")
    with turnip.Session(plan, backend="numpy") as s:
        mem = s.memory
        assert mem is not None  # a past/present decoder: the session shares its memory with its bucket plans
        out = s.generate(prompt, 32, keep_plans=keep_plans)
        # (c) the ids: exactly transformers' greedy ids, across buckets 16, 32, 64 (two moves)
        np.testing.assert_array_equal(out.new_token_ids, expected)
        assert out.stats.buckets == (16, 32, 64)
        c = mem.c
        plans = mem.plans_used  # the session's plan and the three bucket plans
        assert plans[0] is s.plan and [p.options.get("rewrite") for p in plans[1:]] == ["masked_past/1"] * 3
        assert [t.shape[2] for p in plans[1:] for t in p.tensors if t.name == "past_key_values.0.key"] == [16, 32, 64]
        largest = max(_arena(p) for p in plans)
        assert largest > _arena(s.plan)
        # (a) device memory: never more than the largest plan's arena at once (the host region is its own buffer,
        # host memory: not counted here); the session's plan's arena, then one grown to the largest before any bucket
        assert c.device_bytes_live_peak == largest == c.largest_plan_arena_bytes
        assert c.arena_allocations == 2 and c.device_bytes_allocated == _arena(s.plan) + largest
        assert [k for k in mem.buffers if k[0] == str(GPU)] == [(str(GPU), 0, 0)]
        assert c.host_region_bytes_live_peak == max(sum(int(m.size) for m in p.memories if m.kind == HOST) for p in plans)
        # (b) weights: every weight any plan places read from the file into the store once, no host copy beside it
        used: dict[str, int] = {}
        for p in plans:
            used.update(_weights(p))
        assert c.weight_bytes_read == sum(used.values()) and c.host_weight_copy_bytes == 0
        store = mem.stores[plan.model_sha256]
        assert sorted(store.filled) == sorted(used)
        inits = {t.name: numpy_helper.to_array(t).nbytes for t in onnx.load(path).graph.initializer}
        assert sum(used.values()) <= sum(inits.values()) < sum(used.values()) + 256  # the rest: tiny plan constants
        assert c.weight_file_bytes_read == sum(v for k, v in used.items() if inits[k] >= 4096)  # inline >= 4 KiB: file ranges
        assert out.stats.weight_file_bytes_read == c.weight_file_bytes_read
        assert out.stats.memory == c.to_dict()  # the counters, in the stats (and turnip-run --generate --json)
        # no GPU here: the host-to-device bandwidth is not measured, and the report says why instead of a number
        h2d = out.stats.h2d_bandwidth
        assert h2d is not None and h2d["bytes_per_s"] is None and "no GPU" in h2d["reason"]
        # a second generation reads nothing, allocates nothing, and switches plans by rewriting their resident bytes
        again = s.generate(prompt, 32, keep_plans=keep_plans)
        np.testing.assert_array_equal(again.new_token_ids, expected)
        assert (c.weight_bytes_read, c.arena_allocations, c.device_bytes_live_peak) == (sum(used.values()), 2, largest)
        assert c.plan_switches >= 4 if keep_plans else c.plan_binds >= 8  # kept plans switch; others load again
        # the session's own plan still runs (bound again to the grown arena)
        feeds = turnip.run.random_feeds(s.plan, seed=1)
        want = turnip.run_plan(plan, feeds, backend="numpy").outputs
        got = s.run(feeds)
        for k, v in want.items():
            np.testing.assert_array_equal(got[k], v)
    assert not mem.buffers and not mem.plans  # closed with the session


def test_only_past_present_sessions_share_memory():
    static = turnipc.plan(os.path.join(DEC, "gpt2_static.onnx"), gpu_mem="100%", dims={"batch": 1, "seq": 1})
    assert session_memory_for(static) is None
    with turnip.Session(static, backend="numpy") as s:
        assert s.memory is None and s.loaded.shared is None


def test_shared_buffer_grows_by_dropping_the_old_one_first():
    """Two plans of different arena sizes, loaded one after the other on one SessionMemory: one buffer, never two."""
    path = os.path.join(DEC, "gpt2_past.onnx")
    small = turnipc.plan(path, gpu_mem="100%", dims={"batch": 1, "seq": 1, "past": 4}, solver="greedy")
    big = turnipc.plan(path, gpu_mem="100%", dims={"batch": 2, "seq": 4, "past": 20}, solver="greedy")
    assert _arena(big) > _arena(small)
    mem = SessionMemory()
    feeds_s, feeds_b = turnip.run.random_feeds(small, seed=2), turnip.run.random_feeds(big, seed=3)
    want_s = turnip.run_plan(small, feeds_s, backend="numpy").outputs
    want_b = turnip.run_plan(big, feeds_b, backend="numpy").outputs
    a = turnip.run.LoadedPlan(small, backend="numpy", shared=mem)
    b = turnip.run.LoadedPlan(big, backend="numpy", shared=mem)  # grows: `a` unbinds before the old buffer goes
    try:
        assert mem.plans == [b] and a.executor is None
        assert mem.c.arena_allocations == 2 and mem.c.device_bytes_live_peak == _arena(big)
        for _ in range(2):  # alternate: each activation rebinds or rewrites what the plan placed once
            np.testing.assert_array_equal(a.run(feeds_s)["logits"], want_s["logits"])
            np.testing.assert_array_equal(b.run(feeds_b)["logits"], want_b["logits"])
        assert mem.c.arena_allocations == 2 and mem.c.plan_binds == 3  # `a` bound again once, to the grown buffer
        assert mem.c.weight_bytes_read == sum({**_weights(small), **_weights(big)}.values())  # same model: each weight once
        assert a.weight_loads == 1 and b.weight_loads == 0  # `b` found every weight in the store
    finally:
        a.close()
        b.close()
    mem.close()


def test_memories_view_external_bytes():
    """A location backed by an external buffer (the weight store) is that buffer, zero-copy."""
    from turnip.memory import Memories

    plan = turnipc.plan(os.path.join(DEC, "gpt2_past.onnx"), gpu_mem="25%", dims={"batch": 1, "seq": 1, "past": 4}, solver="greedy")
    host = [p for p in plan.placements if p.source == TensorKind.WEIGHT and plan.memories[p.loc.mem].kind == HOST]
    assert host  # 25%: some weights live in host memory, reloaded per run
    p = host[0]
    t = plan.tensors[p.tensor]
    ext = np.arange(t.nbytes, dtype=np.uint8)

    class Alloc:
        external = {(p.loc.mem, p.loc.offset, t.nbytes): ext}

        def allocate(self, mem: Memory):
            return np.zeros(int(mem.size), dtype=np.uint8)

        def release(self, buf):
            return None

    m = Memories(plan, Alloc())
    assert np.shares_memory(m.raw(p.loc), ext)
    other = Loc(p.loc.mem, p.loc.offset + t.nbytes, p.tensor)
    if other.offset + t.nbytes <= int(plan.memories[p.loc.mem].size):
        assert not np.shares_memory(m.raw(other), ext)


def test_tiled_plans_share_the_arena_and_keep_their_cache_blocks():
    """LLaMA fixture, batch 8 at 25%: the session's plan and bucket 64 are tiled (the cache kept in batch blocks); ids = onnxruntime's loop."""
    from turnip.generate import DecoderSignature, OrtRunner, generate

    path, pre_path = os.path.join(DEC, "llama_past.onnx"), os.path.join(DEC, "llama_prefill.onnx")
    prompt = np.random.default_rng(8).integers(1, 256, (8, 8))
    want = generate(OrtRunner(path), DecoderSignature.from_onnx(path), prompt, 32, prefill_runner=OrtRunner(pre_path)).new_token_ids
    plan = turnipc.plan(path, gpu_mem="25%", dims={"batch": 8, "seq": 8, "past": 0}, solver="greedy")
    assert plan.stats.tiling is not None
    with turnip.Session(plan, backend="numpy") as s:
        mem = s.memory
        assert mem is not None  # found a decoder although the tiled plan returns its outputs in blocks
        out = s.generate(prompt, 32)
        np.testing.assert_array_equal(out.new_token_ids, want)
        tiled = [p.stats.tiling is not None for p in mem.plans_used]
        assert tiled[0] and any(tiled[1:])
        assert mem.c.device_bytes_live_peak == max(_arena(p) for p in mem.plans_used)


def test_prompt_graph_session_shares_the_arena():
    """A ``prefill=`` session on the prompt graph made with ``memory=`` the decode session's: one arena for all five plans."""
    prompt, expected = _expected("gpt2")
    n = prompt.shape[1]
    past, pre_path = os.path.join(DEC, "gpt2_past.onnx"), os.path.join(DEC, "gpt2_prefill.onnx")
    plan = turnipc.plan(past, gpu_mem="25%", dims={"batch": 2, "seq": 1, "past": n}, solver="greedy")
    pre_plan = turnipc.plan(pre_path, gpu_mem="25%", dims={"batch": 2, "seq": n})
    with turnip.Session(plan, backend="numpy") as s, turnip.Session(pre_plan, backend="numpy", memory=s.memory) as pre:
        mem = s.memory
        assert pre.memory is mem and pre.loaded.shared is mem
        out = s.generate(prompt, 32, prefill=pre)
        np.testing.assert_array_equal(out.new_token_ids, expected)
        c = mem.c
        assert len(mem.plans_used) == 5 and mem.plans_used[1] is pre.plan  # decode, prompt, buckets 16 / 32 / 64
        assert c.device_bytes_live_peak == max(_arena(p) for p in mem.plans_used) == c.largest_plan_arena_bytes
        assert [k for k in mem.buffers if k[0] == str(GPU)] == [(str(GPU), 0, 0)]
        # two model files, two stores, each weight of each read once
        assert sorted(mem.stores) == sorted({plan.model_sha256, pre_plan.model_sha256})
        assert c.weight_bytes_read == sum(_weights(pre_plan).values()) + sum(
            {k: v for p in mem.plans_used if p is not pre_plan for k, v in _weights(p).items()}.values())
        again = s.generate(prompt, 32, prefill=pre)  # the prompt plan and the kept buckets take turns on the arena
        np.testing.assert_array_equal(again.new_token_ids, expected)


def _bytes_read_by_process() -> int | None:
    """``rchar`` of /proc/self/io: bytes this process read through read() calls (files, page cache included); None off Linux."""
    try:
        with open("/proc/self/io") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("rchar"))
    except (OSError, StopIteration, ValueError):
        return None


def test_the_operating_system_sees_the_weights_read_once():
    """Independent of the counters: what the process reads in a session and two generations is the weight file ranges once."""
    if _bytes_read_by_process() is None:
        pytest.skip("no /proc/self/io here")
    prompt, expected = _expected("gpt2")
    plan = turnipc.plan(os.path.join(DEC, "gpt2_past.onnx"), gpu_mem="25%", dims={"batch": 2, "seq": 8, "past": 0}, solver="greedy")
    with turnip.Session(plan, backend="numpy") as warm:  # imports, plan caches: what a first session reads besides weights
        warm.generate(prompt, 32)
    r0 = _bytes_read_by_process()
    with turnip.Session(plan, backend="numpy") as s:
        first = s.generate(prompt, 32, keep_plans=False)
        r1 = _bytes_read_by_process()
        second = s.generate(prompt, 32, keep_plans=False)  # every bucket plan loaded again: no weight read again
        r2 = _bytes_read_by_process()
        np.testing.assert_array_equal(first.new_token_ids, expected)
        np.testing.assert_array_equal(second.new_token_ids, expected)
        file_ranges = s.memory.c.weight_file_bytes_read
    assert file_ranges > 500_000
    assert file_ranges <= r1 - r0 < file_ranges + 4096  # the session's and the first generation's reads: the weights, once
    assert r2 - r1 < 4096
