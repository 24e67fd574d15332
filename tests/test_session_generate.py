"""``turnip.Session.generate`` and ``turnip-run --generate`` (issue 13) on the static-cache decoder fixtures.

One decode plan (seq = 1) per model and budget; the session keeps the KV cache
in the plan's memory between runs where the plan allows it. The ids must be
exactly transformers' greedy ids stored by tests/models/make_decoders.py, at
100% and 25% of the decode plan's no-offload peak and in 5 random orders;
the weights are loaded once per session and the cache is never copied whole
per token when the plan keeps it (both counted by the session).
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import turnip
from click.testing import CliRunner
from turnip.cli import main as run_main
from turnip.generate import GenerateError
from turnip.session_generate import plan_signature

import turnipc

DEC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "models", "decoders")
MODELS = ["gpt2", "llama"]
NEW = 32


def _static(model: str) -> str:
    return os.path.join(DEC, f"{model}_static.onnx")


def _expected(model: str) -> tuple[np.ndarray, np.ndarray]:
    with open(os.path.join(DEC, f"{model}_expected.json")) as f:
        e = json.load(f)
    assert e["max_new_tokens"] == NEW
    return np.array(e["prompt"], dtype=np.int64), np.array(e["new_token_ids"], dtype=np.int64)


_PLANS: dict[tuple[str, str, int], object] = {}


def _plan(model: str, gpu_mem: str, batch: int = 2):
    key = (model, gpu_mem, batch)
    if key not in _PLANS:
        _PLANS[key] = turnipc.plan(_static(model), gpu_mem=gpu_mem, dims={"batch": batch, "seq": 1})
    return _PLANS[key]


def _weight_bytes(session: turnip.Session) -> int:
    """Bytes of every placement that has a source (weights, constants): what loading the model writes."""
    lp = session.loaded
    return sum(lp.plan.tensors[p.tensor].nbytes for p, src, _ in lp._placements if src is not None)  # noqa: SLF001


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("gpu_mem", ["100%", "25%"])
def test_greedy_matches_transformers(model, gpu_mem):
    prompt, expected = _expected(model)
    plan = _plan(model, gpu_mem)
    with turnip.Session(plan, model=_static(model), backend="numpy") as s:
        out = s.generate(prompt, NEW)
        np.testing.assert_array_equal(out.new_token_ids, expected)
        st = out.stats
        assert st.plan_runs == prompt.shape[1] + NEW - 1 == s.runs  # the prompt one position at a time, no other runs
        assert st.weight_loads == 1
        # every weight written once at load, or (memory the plan reuses) once per run: never more
        assert st.weight_bytes_at_load + st.weight_bytes_rewritten_per_run == _weight_bytes(s)
        assert s.loaded.source_bytes_rewritten == st.weight_bytes_rewritten_per_run * st.plan_runs
        _assert_cache_counts(s, st, batch=2)
        # a second call starts from an empty cache and gives the same ids, with no new weight load
        again = s.generate(prompt, NEW)
        np.testing.assert_array_equal(again.new_token_ids, expected)
        assert again.stats.weight_loads == 1


def _assert_cache_counts(s: turnip.Session, st, batch: int) -> None:
    """The cache is state: one position per cache tensor written back per token, into its home and its kept arena copy."""
    lp = s.loaded
    sig = plan_signature(lp)
    pos = {x.past: batch * x.kv_heads * x.head_dim * x.dtype.itemsize for x in sig.slots}
    whole = {x.past: batch * x.kv_heads * sig.capacity * x.head_dim * x.dtype.itemsize for x in sig.slots}
    assert st.cache_is_state and st.cache_inputs_kept == len(sig.slots) and st.cache_inputs_fed == 0
    assert set(lp.state) == set(pos) and all(lp.state[p].how == "scatter" for p in pos)
    assert st.cache_bytes == sum(whole.values())
    copies = {p: len(lp.state_views(p)) for p in pos}  # the home, plus the arena copy when the plan keeps it resident
    assert all(1 <= c <= 2 for c in copies.values())
    assert st.cache_bytes_copied_per_token == sum(pos[p] * copies[p] for p in pos)
    assert st.cache_bytes_copied_per_token <= 2 * st.cache_bytes / sig.capacity  # never the whole cache
    # an arena copy the plan reuses is refilled from the home before each run: the plan's reload traffic, at most the cache
    assert st.cache_bytes_refilled_per_token <= st.cache_bytes
    assert st.cache_bytes_refilled_per_token == sum(whole[p] for p in pos if copies[p] == 1 and _refilled(lp, p))
    # weights: read from the files once, at load; a weight whose memory the plan reuses is rewritten from host memory
    file_backed = sum(lp.plan.tensors[p.tensor].nbytes for p, src, again in lp._placements  # noqa: SLF001
                      if src is not None and lp.plan.tensors[p.tensor].kind == "weight")
    assert st.weight_file_bytes_read <= file_backed and lp.weight_file_bytes_read == st.weight_file_bytes_read
    assert all(isinstance(src, np.ndarray) for _p, src, again in lp._placements if src is not None and again)  # noqa: SLF001


def _refilled(lp, name: str) -> bool:
    """Whether some arena placement of state ``name`` is overwritten during a run (so it is refilled from the home)."""
    return any(src is None and again and lp._input_root(p.tensor) == name for p, src, again in lp._placements)  # noqa: SLF001


@pytest.mark.parametrize("gpu_mem", ["100%", "25%"])
def test_batch8_cache_is_state(gpu_mem):
    """Batch 8: the plan marks the cache as state, so no cache tensor is fed whole per token (before state, all were)."""
    prompt, _ = _expected("llama")
    rows = np.concatenate([prompt] * 4)
    with turnip.Session(_plan("llama", gpu_mem, batch=8), model=_static("llama"), backend="numpy") as s, \
            turnip.Session(_plan("llama", "100%", batch=2), model=_static("llama"), backend="numpy") as ref:
        out = s.generate(rows, 12)
        np.testing.assert_array_equal(out.new_token_ids, np.concatenate([ref.generate(prompt, 12).new_token_ids] * 4))
        _assert_cache_counts(s, out.stats, batch=8)


def test_no_state_plan_feeds_what_it_reuses():
    """``auto_state=False``: the old path (no state in the plan): a cache input the plan reuses is fed whole each token."""
    prompt, expected = _expected("llama")
    plan = turnipc.plan(_static("llama"), gpu_mem="25%", dims={"batch": 8, "seq": 1}, auto_state=False)
    assert plan.state == [] and "state" not in plan.options
    rows = np.concatenate([prompt] * 4)
    with turnip.Session(plan, model=_static("llama"), backend="numpy") as s:
        out = s.generate(rows, 6)
        np.testing.assert_array_equal(out.new_token_ids, np.concatenate([expected[:, :6]] * 4))
        st = out.stats
        assert not st.cache_is_state and st.cache_inputs_fed == 4 - len([x for x in s.keepable_inputs if x.startswith("past")])


def test_cache_kept_in_place_is_not_copied_whole():
    """GPT-2 at 100%: the plan never overwrites the cache inputs, so each token copies one position per cache tensor."""
    prompt, expected = _expected("gpt2")
    with turnip.Session(_plan("gpt2", "100%"), model=_static("gpt2"), backend="numpy") as s:
        out = s.generate(prompt, NEW)
    np.testing.assert_array_equal(out.new_token_ids, expected)
    assert out.stats.cache_inputs_fed == 0 and out.stats.cache_inputs_kept == 4
    # capacity 48: 1/48 of the cache per token, into the home and into the arena copy (resident to the end at 100%)
    assert out.stats.cache_bytes_copied_per_token * 48 == 2 * out.stats.cache_bytes
    assert out.stats.cache_bytes_refilled_per_token == 0


@pytest.mark.parametrize("model", MODELS)
def test_random_orders(model):
    prompt, expected = _expected(model)
    plan = _plan(model, "25%")
    for seed in range(5):
        with turnip.Session(plan, model=_static(model), backend="numpy", order="random", seed=seed) as s:
            np.testing.assert_array_equal(s.generate(prompt, NEW).new_token_ids, expected)


@pytest.mark.parametrize("model", MODELS)
def test_prefill_plan(model):
    """A prompt-length plan as ``prefill=``: one prompt run, its cache copied into the decode plan once, the same ids."""
    prompt, expected = _expected(model)
    with turnip.Session(_plan(model, "25%"), model=_static(model), backend="numpy") as s, \
            turnip.Session(turnipc.plan(_static(model), gpu_mem="25%", dims={"batch": 2, "seq": prompt.shape[1]}),
                           model=_static(model), backend="numpy") as pre:
        out = s.generate(prompt, NEW, prefill=pre)
        np.testing.assert_array_equal(out.new_token_ids, expected)
        assert out.stats.plan_runs == 1 + NEW - 1 and pre.runs == 1 and s.runs == NEW - 1
        assert out.stats.weight_loads == 2  # each session loads its own weights
        # once: zeros into every prefill cache input, the prompt's positions out of every present
        sig = plan_signature(s.loaded)
        pos = sum(2 * x.kv_heads * x.head_dim * x.dtype.itemsize for x in sig.slots)
        copies = {x.past: len(s.loaded.state_views(x.past)) for x in sig.slots}
        pos_all = sum(2 * x.kv_heads * x.head_dim * x.dtype.itemsize * copies[x.past] for x in sig.slots)
        assert pos <= pos_all <= 2 * pos
        assert out.stats.cache_bytes_copied_prompt == out.stats.cache_bytes + prompt.shape[1] * pos_all
        with pytest.raises(GenerateError, match="prefill plan was made for 8"):
            s.generate(prompt[:, :5], 4, prefill=pre)
        # the prompt plan made with weights_from= the decode session: the weight files are read once
        with turnip.Session(pre.plan, model=_static(model), backend="numpy", weights_from=s) as shared:
            assert shared.loaded.weight_loads == 0 and shared.loaded.weight_file_bytes_read == 0
            assert shared.loaded.weight_bytes_shared > 0
            out = s.generate(prompt, NEW, prefill=shared)
            np.testing.assert_array_equal(out.new_token_ids, expected)
            assert out.stats.weight_loads == 1


def test_sampling_is_seeded_and_eos_stops():
    prompt, expected = _expected("llama")
    with turnip.Session(_plan("llama", "100%"), model=_static("llama"), backend="numpy") as s:
        a = s.generate(prompt, 8, do_sample=True, top_k=20, top_p=0.9, seed=5).new_token_ids
        b = s.generate(prompt, 8, do_sample=True, top_k=20, top_p=0.9, seed=5).new_token_ids
        np.testing.assert_array_equal(a, b)
        eos = int(expected[0, 3])  # row 0 stops at its 4th token; row 1 runs on unless it meets it
        out = s.generate(prompt, NEW, eos_token_id=eos).new_token_ids
        assert out[0, 3] == eos and (out[0, 4:] == eos).all()
        np.testing.assert_array_equal(out[0, :4], expected[0, :4])


def test_errors():
    prompt, _ = _expected("gpt2")
    with turnip.Session(_plan("gpt2", "100%"), model=_static("gpt2"), backend="numpy") as s:
        with pytest.raises(GenerateError, match="batch 2"):
            s.generate(prompt[:1], 4)
        with pytest.raises(GenerateError, match="capacity 48"):
            s.generate(prompt, 48)
    wide = turnipc.plan(_static("gpt2"), gpu_mem="100%", dims={"batch": 2, "seq": 4})
    with turnip.Session(wide, model=_static("gpt2"), backend="numpy") as s, pytest.raises(GenerateError, match="seq=1"):
        s.generate(prompt, 4)


# ------------------------------------------------------------------ the CLI
def _one_error(r, code: int) -> str:
    assert r.exit_code == code, (r.exit_code, r.output)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    return lines[0]


@pytest.mark.parametrize("model", MODELS)
def test_cli_prints_the_same_ids(model, tmp_path):
    prompt, expected = _expected(model)
    ids = ";".join(",".join(map(str, row)) for row in prompt.tolist())
    args = [_static(model), "--gpu-mem", "25%", "--generate", str(NEW), "--input-ids", ids, "--backend", "numpy", "--cache-dir", str(tmp_path)]
    r = CliRunner().invoke(run_main, args)
    assert r.exit_code == 0, r.output
    rows = [ln.split(": ", 1)[1].split() for ln in r.stdout.splitlines() if ln.startswith("row ")]
    assert [[int(x) for x in row] for row in rows] == expected.tolist()
    assert "tokens/s" in r.stdout
    r = CliRunner().invoke(run_main, [*args, "--json"])
    assert r.exit_code == 0, r.output
    obj = json.loads(r.stdout)
    assert obj["new_token_ids"] == expected.tolist() and obj["weight_loads"] == 1 and obj["decode_tokens_per_s"] > 0


def test_cli_errors(tmp_path):
    static = ["--gpu-mem", "25%", "--cache-dir", str(tmp_path)]
    runner = CliRunner()
    assert "not comma-separated integers" in _one_error(runner.invoke(run_main, [_static("gpt2"), *static, "--generate", "4", "--input-ids", "1,x"]), 2)
    assert "same number of ids" in _one_error(runner.invoke(run_main, [_static("gpt2"), *static, "--generate", "4", "--input-ids", "1,2;3"]), 2)
    assert "go together" in _one_error(runner.invoke(run_main, [_static("gpt2"), *static, "--generate", "4"]), 2)
    prefill = os.path.join(DEC, "gpt2_prefill.onnx")  # a prompt graph has no cache: no decoder
    assert "past_key_values" in _one_error(runner.invoke(run_main, [prefill, *static, "--generate", "4", "--input-ids", "1,2"]), 2)
    bert = os.path.join(os.path.dirname(DEC), "bert_dynamo18.onnx")
    assert "no 'logits' output" in _one_error(runner.invoke(run_main, [bert, *static, "--generate", "4", "--input-ids", "1,2"]), 2)
    mlp = os.path.join(os.path.dirname(DEC), "..", "..", "plans", "demo_mlp-100.plan")
    assert "input_ids" in _one_error(runner.invoke(run_main, [mlp, "--generate", "4", "--input-ids", "1,2"]), 2)
    assert "do not apply" in _one_error(runner.invoke(run_main, [_static("gpt2"), *static, "--generate", "4", "--input-ids", "1,2", "--check"]), 2)
