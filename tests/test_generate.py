"""Token generation with a KV cache (issue 13 groundwork): turnip.generate.

The decoders in tests/models/decoders/ were exported from transformers by
tests/models/make_decoders.py, which also stored transformers' own greedy
ids (``*_expected.json``); no torch is needed here. Each cache convention is
run with onnxruntime and with Turnip plans (one per step shape, 100% and 25%
of the no-offload peak, dynamic and random orders) and must give exactly
transformers' ids.
"""

from __future__ import annotations

import json
import os

import numpy as np
import onnx
import pytest
from plan_runner import PlanPerShapeRunner, bind_dims, symbolic_input_dims
from turnip.generate import (
    CacheConvention,
    DecoderSignature,
    GenerateError,
    OrtRunner,
    Sampling,
    filtered_probs,
    generate,
    next_tokens,
)

from turnipc.units import Budget

DEC = os.path.join(os.path.dirname(__file__), "models", "decoders")
MODELS = ["gpt2", "llama"]


def _path(model: str, kind: str) -> str:
    return os.path.join(DEC, f"{model}_{kind}.onnx")


def _expected(model: str):
    with open(os.path.join(DEC, f"{model}_expected.json")) as f:
        e = json.load(f)
    return np.array(e["prompt"], dtype=np.int64), np.array(e["new_token_ids"], dtype=np.int64), e


class CountingRunner:
    """Wraps a runner; records the feeds' cache lengths (to check what the loop sends)."""

    def __init__(self, inner, sig):
        self.inner, self.sig, self.lengths, self.positions = inner, sig, [], []

    def run(self, feeds):
        self.lengths.append({feeds[s.past].shape[2] for s in self.sig.slots})
        if self.sig.cache_position:
            self.positions.append(feeds[self.sig.cache_position].tolist())
        return self.inner.run(feeds)


# ----------------------------------------------------------------- signatures


@pytest.mark.parametrize("model", MODELS)
def test_signature_of_each_convention(model):
    past = DecoderSignature.from_onnx(_path(model, "past"))
    assert past.convention is CacheConvention.PAST_PRESENT
    assert [s.past for s in past.slots] == ["past_key_values.0.key", "past_key_values.0.value", "past_key_values.1.key", "past_key_values.1.value"]
    assert [s.present for s in past.slots] == ["present.0.key", "present.0.value", "present.1.key", "present.1.value"]
    kv_heads = 2 if model == "llama" else 4
    assert {(s.kv_heads, s.head_dim) for s in past.slots} == {(kv_heads, 16)}
    static = DecoderSignature.from_onnx(_path(model, "static"))
    assert static.convention is CacheConvention.STATIC
    assert static.cache_position == "cache_position" and static.capacity == 48
    assert [op.op_type for op in onnx.load(_path(model, "static")).graph.node].count("ScatterND") == 4  # one per cache tensor


def test_signature_rejects_graphs_without_a_cache():
    ins = {"input_ids": (["batch", "seq"], np.int64)}
    with pytest.raises(GenerateError, match="no past_key_values"):
        DecoderSignature.from_io(ins, ["logits"])
    ins["past_key_values.0.key"] = (["batch", 2, "past", 16], np.float32)
    with pytest.raises(GenerateError, match="no matching present.0.key"):
        DecoderSignature.from_io(ins, ["logits"])
    with pytest.raises(GenerateError, match="no 'logits'"):
        DecoderSignature.from_io(ins, ["present.0.key"])
    ins["cache_position"] = (["seq"], np.int64)
    with pytest.raises(GenerateError, match="fixed cache length"):
        DecoderSignature.from_io(ins, ["logits", "present.0.key"])


# ----------------------------------------------------------------- onnxruntime loop == transformers


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("case", ["prefill+past", "past-from-empty", "static"])
def test_ort_greedy_matches_transformers(model, case):
    prompt, want, meta = _expected(model)
    assert want.shape == (2, 32) and meta["min_top2_logit_gap"] > 1e-3
    kind = "static" if case == "static" else "past"
    sig = DecoderSignature.from_onnx(_path(model, kind))
    runner = CountingRunner(OrtRunner(_path(model, kind)), sig)
    prefill = OrtRunner(_path(model, "prefill")) if case == "prefill+past" else None
    res = generate(runner, sig, prompt, 32, prefill_runner=prefill)
    np.testing.assert_array_equal(res.new_token_ids, want)
    assert [s.kind for s in res.steps] == ["prefill"] + ["decode"] * 31
    if case == "static":  # the cache keeps its capacity; positions advance by one per step
        assert runner.lengths == [{48}] * 32
        assert runner.positions[0] == list(range(8)) and runner.positions[1:] == [[8 + i] for i in range(31)]
    elif case == "past-from-empty":
        assert runner.lengths == [{0}] + [{8 + i} for i in range(31)]
    else:  # the prefill graph ran the prompt; the past graph starts at length 8
        assert runner.lengths == [{8 + i} for i in range(31)]


@pytest.mark.parametrize("model", MODELS)
def test_batch_rows_are_independent(model):
    prompt, want, _ = _expected(model)
    sig = DecoderSignature.from_onnx(_path(model, "static"))
    runner = OrtRunner(_path(model, "static"))
    for row in range(2):
        res = generate(runner, sig, prompt[row : row + 1], 32)
        np.testing.assert_array_equal(res.new_token_ids[0], want[row])
    batch3 = np.concatenate([prompt, prompt[:1]])
    res = generate(runner, sig, batch3, 32)
    np.testing.assert_array_equal(res.new_token_ids, np.concatenate([want, want[:1]]))


def test_eos_stops_and_pads():
    prompt, want, _ = _expected("llama")
    eos = int(want[0, 5])  # row 0 emits it at step 5 (maybe earlier too)
    first0 = int(np.argmax(want[0] == eos))
    sig = DecoderSignature.from_onnx(_path("llama", "static"))
    res = generate(OrtRunner(_path("llama", "static")), sig, prompt, 32, eos_token_id=eos, pad_token_id=-1)
    got = res.new_token_ids
    hits1 = np.nonzero(want[1] == eos)[0]
    stop = max(first0, int(hits1[0]) if hits1.size else 31) + 1
    assert got.shape == (2, stop)
    np.testing.assert_array_equal(got[0, : first0 + 1], want[0, : first0 + 1])
    assert (got[0, first0 + 1 :] == -1).all()
    end1 = int(hits1[0]) + 1 if hits1.size else stop
    np.testing.assert_array_equal(got[1, :end1], want[1, :end1])


def test_static_capacity_is_checked():
    prompt, _, _ = _expected("gpt2")
    sig = DecoderSignature.from_onnx(_path("gpt2", "static"))
    with pytest.raises(GenerateError, match="exceeds the static cache capacity 48"):
        generate(OrtRunner(_path("gpt2", "static")), sig, prompt, 42)


# ----------------------------------------------------------------- sampling


def test_top_k_top_p_filters():
    logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05]]))
    np.testing.assert_allclose(filtered_probs(logits, Sampling(True, top_k=2)), [[0.625, 0.375, 0, 0]])
    # top_p=0.75: 0.5 + 0.3 reaches it; the 0.15 token is dropped (0.85 keeps it)
    np.testing.assert_allclose(filtered_probs(logits, Sampling(True, top_p=0.75)), [[0.625, 0.375, 0, 0]])
    np.testing.assert_allclose(filtered_probs(logits, Sampling(True, top_p=0.85)), [[0.5, 0.3, 0.15, 0]] / np.float64(0.95))
    np.testing.assert_allclose(filtered_probs(logits, Sampling(True, top_p=0.1)), [[1, 0, 0, 0]])
    with pytest.raises(GenerateError):
        Sampling(True, top_p=0.0)


def test_sampling_frequencies_and_seed():
    logits = np.tile(np.log(np.array([0.5, 0.3, 0.15, 0.05])), (20000, 1))
    ids = next_tokens(logits, Sampling(True, top_k=3), np.random.default_rng(0))
    freq = np.bincount(ids, minlength=4) / ids.size
    np.testing.assert_allclose(freq, [0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0], atol=0.015)


def test_sampled_generation_is_seeded():
    prompt, want, _ = _expected("gpt2")
    sig = DecoderSignature.from_onnx(_path("gpt2", "static"))
    runner = OrtRunner(_path("gpt2", "static"))
    a = generate(runner, sig, prompt, 16, sampling=Sampling(True, top_k=20, top_p=0.9, seed=3)).new_token_ids
    b = generate(runner, sig, prompt, 16, sampling=Sampling(True, top_k=20, top_p=0.9, seed=3)).new_token_ids
    c = generate(runner, sig, prompt, 16, sampling=Sampling(True, top_k=20, top_p=0.9, seed=4)).new_token_ids
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert not np.array_equal(a, want[:, :16])  # it really sampled
    greedy = generate(runner, sig, prompt, 16, sampling=Sampling(True, top_k=1, seed=3)).new_token_ids
    np.testing.assert_array_equal(greedy, want[:, :16])  # top-k=1 is greedy


# ----------------------------------------------------------------- Turnip plans as the runner


def test_bind_dims_reads_feeds():
    sym = symbolic_input_dims(_path("llama", "past"))
    assert sym["input_ids"] == [(0, "batch"), (1, "seq")] and sym["past_key_values.0.key"] == [(0, "batch"), (2, "past")]
    feeds = {"input_ids": np.zeros((3, 1)), "past_key_values.0.key": np.zeros((3, 2, 9, 16))}
    assert bind_dims(sym, feeds) == {"batch": 3, "seq": 1, "past": 9}
    with pytest.raises(ValueError, match="dim 'batch'"):
        bind_dims(sym, {"input_ids": np.zeros((3, 1)), "past_key_values.0.key": np.zeros((2, 2, 9, 16))})


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("budget", [1.0, 0.25])
def test_turnip_static_cache_matches_transformers(model, budget):
    """32 tokens through two plans (prompt length 8, then 1) at 100% and 25% of each plan's peak."""
    prompt, want, _ = _expected(model)
    runner = PlanPerShapeRunner(_path(model, "static"), Budget(fraction=budget))
    res = generate(runner, DecoderSignature.from_onnx(_path(model, "static")), prompt, 32)
    np.testing.assert_array_equal(res.new_token_ids, want)
    assert len(runner.plans) == 2 and runner.calls == 32
    for plan in runner.plans.values():
        assert plan.stats.peak_bytes <= plan.stats.budget_bytes
    assert (runner.bytes_reloaded > 0) == (budget < 1.0)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("budget", [1.0, 0.25])
def test_turnip_past_present_matches_transformers(model, budget):
    """prefill graph + one past-graph plan per past length (8 tokens here: 7 plans; 32 in the bench)."""
    prompt, want, _ = _expected(model)
    runner = PlanPerShapeRunner(_path(model, "past"), Budget(fraction=budget))
    prefill = PlanPerShapeRunner(_path(model, "prefill"), Budget(fraction=budget))
    res = generate(runner, DecoderSignature.from_onnx(_path(model, "past")), prompt, 8, prefill_runner=prefill)
    np.testing.assert_array_equal(res.new_token_ids, want[:, :8])
    assert len(runner.plans) == 7 and len(prefill.plans) == 1


def test_turnip_random_orders():
    """Five random execution orders of the 25% static-cache plans give the same ids."""
    prompt, want, _ = _expected("llama")
    sig = DecoderSignature.from_onnx(_path("llama", "static"))
    runner = PlanPerShapeRunner(_path("llama", "static"), Budget(fraction=0.25), order="random")
    for seed in range(5):
        runner.seed = 100 * seed  # the plans are kept; only the order changes
        res = generate(runner, sig, prompt, 12)
        np.testing.assert_array_equal(res.new_token_ids, want[:, :12])


# ----------------------------------------------------------------- optimum-style inputs (attention_mask, position_ids)


def _optimum_like_decoder(path, vocab=64):
    """A real ONNX graph with optimum's decoder inputs whose "next token" is
    (position_id + attention_mask.sum()) mod vocab and whose cache appends the
    input ids: the ids it yields prove what the loop fed."""
    from onnx import TensorProto, helper

    f, i64 = TensorProto.FLOAT, TensorProto.INT64
    cache = ["batch", 1, "past", 1]
    nodes = [
        helper.make_node("ReduceSum", ["attention_mask", "ax1"], ["msum"], keepdims=1),
        helper.make_node("Add", ["position_ids", "msum"], ["tok"]),
        helper.make_node("Mod", ["tok", "vocab"], ["idx"]),
        helper.make_node("OneHot", ["idx", "vocab", "onoff"], ["logits"], axis=-1),
        helper.make_node("Cast", ["input_ids"], ["idsf"], to=f),
        helper.make_node("Unsqueeze", ["idsf", "ax13"], ["newkv"]),
        helper.make_node("Concat", ["past_key_values.0.key", "newkv"], ["present.0.key"], axis=2),
        helper.make_node("Concat", ["past_key_values.0.value", "newkv"], ["present.0.value"], axis=2),
    ]
    inits = [
        helper.make_tensor("ax1", i64, [1], [1]),
        helper.make_tensor("ax13", i64, [2], [1, 3]),
        helper.make_tensor("vocab", i64, [], [vocab]),
        helper.make_tensor("onoff", f, [2], [0.0, 1.0]),
    ]
    graph = helper.make_graph(
        nodes, "optimum_like",
        [helper.make_tensor_value_info("input_ids", i64, ["batch", "seq"]),
         helper.make_tensor_value_info("attention_mask", i64, ["batch", "total"]),
         helper.make_tensor_value_info("position_ids", i64, ["batch", "seq"]),
         helper.make_tensor_value_info("past_key_values.0.key", f, cache),
         helper.make_tensor_value_info("past_key_values.0.value", f, cache)],
        [helper.make_tensor_value_info("logits", f, ["batch", "seq", vocab]),
         helper.make_tensor_value_info("present.0.key", f, ["batch", 1, "total", 1]),
         helper.make_tensor_value_info("present.0.value", f, ["batch", 1, "total", 1])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)
    return str(path)


def test_attention_mask_and_position_ids_are_fed(tmp_path):
    path = _optimum_like_decoder(tmp_path / "optimum_like.onnx")
    sig = DecoderSignature.from_onnx(path)
    assert sig.convention is CacheConvention.PAST_PRESENT
    assert (sig.attention_mask, sig.position_ids) == ("attention_mask", "position_ids")
    seen = []

    class Keep:
        def __init__(self, inner):
            self.inner = inner

        def run(self, feeds):
            seen.append({k: v.copy() for k, v in feeds.items()})
            return self.inner.run(feeds)

    prompt = np.array([[3, 4, 5, 6, 7], [1, 1, 2, 3, 5]])
    res = generate(Keep(OrtRunner(path)), sig, prompt, 6)
    # prompt of 5: the last prompt position is 4 with 5 mask ones -> 9; then +2 per step
    np.testing.assert_array_equal(res.new_token_ids, [[9, 11, 13, 15, 17, 19]] * 2)
    assert seen[2]["attention_mask"].shape == (2, 7) and seen[2]["position_ids"].tolist() == [[6], [6]]
    # the cache holds the prompt then the fed-back ids (the last new id is never fed)
    np.testing.assert_array_equal(seen[-1]["past_key_values.0.key"][:, 0, :, 0], np.concatenate([prompt, res.new_token_ids[:, :4]], axis=1))
