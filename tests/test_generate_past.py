"""Past/present decoders (optimum's convention) in ``Session.generate`` and ``turnip-run --generate`` (issue 13).

Decode steps run on past-length bucket plans (turnip/generate_bucket.py),
planned like the session's plan and cached in the test session's plan cache;
one plan per past length (turnip/generate_past.py) is the fallback. The ids
must be exactly transformers' greedy ids stored by
tests/models/make_decoders.py, all 32 of them, at 100% and 25%, in 5 random
orders, with the prompt graph as ``prefill`` (optimum's decoder_model.onnx)
or the prompt through the decoder with an empty past.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import turnip
from click.testing import CliRunner
from turnip.cli import main as run_main

import turnipc

DEC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "models", "decoders")


def _expected(model: str) -> tuple[np.ndarray, np.ndarray]:
    with open(os.path.join(DEC, f"{model}_expected.json")) as f:
        e = json.load(f)
    return np.array(e["prompt"], dtype=np.int64), np.array(e["new_token_ids"], dtype=np.int64)


def _past(model: str) -> str:
    return os.path.join(DEC, f"{model}_past.onnx")


def _prefill(model: str) -> str:
    return os.path.join(DEC, f"{model}_prefill.onnx")


def _weight_bytes(path: str, name: str) -> int:
    import onnx
    from onnx import numpy_helper

    return int(next(numpy_helper.to_array(t).nbytes for t in onnx.load(path).graph.initializer if t.name == name))


@pytest.mark.parametrize("with_prefill", [True, False])
@pytest.mark.parametrize("gpu_mem", ["100%", "25%"])
@pytest.mark.parametrize("model", ["gpt2", "llama"])
def test_past_present_matches_transformers(model, gpu_mem, with_prefill):
    """32 tokens, every case: decode steps on past-length bucket plans (16, 32, 64), the cache kept in them as state."""
    prompt, expected = _expected(model)
    n, new = prompt.shape[1], 32
    if with_prefill:  # the session's plan is the first decode step's; the prompt runs in the prompt graph
        plan = turnipc.plan(_past(model), gpu_mem=gpu_mem, dims={"batch": 2, "seq": 1, "past": n}, solver="greedy")
        pre = turnip.Session(turnipc.plan(_prefill(model), gpu_mem=gpu_mem, dims={"batch": 2, "seq": n}), backend="numpy")
    else:  # the session's plan is the prompt's step: seq = prompt length, empty past
        plan = turnipc.plan(_past(model), gpu_mem=gpu_mem, dims={"batch": 2, "seq": n, "past": 0}, solver="greedy")
        pre = None
    try:
        with turnip.Session(plan, backend="numpy") as s:
            out = s.generate(prompt, new, prefill=pre)
            np.testing.assert_array_equal(out.new_token_ids, expected)
            st = out.stats
            # pasts 8 .. 38 plus the new position: buckets 16, 32, 64, each loaded once, beside the session's (and prefill) plan
            assert st.buckets == (16, 32, 64)
            assert st.plans_loaded == 1 + 3 + (1 if with_prefill else 0) and st.plan_runs == new
            assert st.cache_is_state and st.cache_inputs_kept == 4 and st.cache_inputs_fed == 0
            # weights: read from the files by the session's plan (and the prompt graph, another file); the bucket plans
            # copy them, reading only what the session's plan folded away (GPT-2's position table: its positions were constant)
            own = s.loaded.weight_file_bytes_read + (pre.loaded.weight_file_bytes_read if pre is not None else 0)
            folded = _weight_bytes(_past(model), "m.transformer.wpe.weight") if model == "gpt2" else 0
            assert st.weight_file_bytes_read == own + folded
            # the cache is never copied whole per token: one position per cache tensor (state home and kept arena
            # copy) plus the copies of [0, past) at the two bucket moves, against the whole past the convention feeds
            position = st.cache_bytes / (n + new - 1)
            assert position <= st.cache_bytes_copied_per_token <= 6 * position
            assert st.cache_bytes_copied_per_token < (n + (new - 2) / 2) * position / 3
            assert st.cache_bytes_copied_prompt >= n * position  # the prompt's presents into the first bucket, once
    finally:
        if pre is not None:
            pre.close()


@pytest.mark.parametrize("model", ["gpt2", "llama"])
def test_past_present_random_orders(model):
    prompt, expected = _expected(model)
    n = prompt.shape[1]
    plan = turnipc.plan(_past(model), gpu_mem="25%", dims={"batch": 2, "seq": 1, "past": n}, solver="greedy")
    pre_plan = turnipc.plan(_prefill(model), gpu_mem="25%", dims={"batch": 2, "seq": n})
    for seed in range(5):
        with turnip.Session(plan, backend="numpy", order="random", seed=seed) as s, \
                turnip.Session(pre_plan, backend="numpy", order="random", seed=seed) as pre:
            np.testing.assert_array_equal(s.generate(prompt, 32, prefill=pre).new_token_ids, expected)


def test_bucket_plans_kept_between_calls_or_loaded_per_call():
    prompt, expected = _expected("gpt2")
    n = prompt.shape[1]
    plan = turnipc.plan(_past("gpt2"), gpu_mem="25%", dims={"batch": 2, "seq": n, "past": 0}, solver="greedy")
    wpe = _weight_bytes(_past("gpt2"), "m.transformer.wpe.weight")
    with turnip.Session(plan, backend="numpy") as s:
        own = s.loaded.weight_file_bytes_read
        first = s.generate(prompt, 32)  # the CPU backend keeps the bucket plans (host memory)
        assert first.stats.weight_file_bytes_read == own + wpe and first.stats.weight_loads == 2
        kept = dict(s._generate_plans)
        assert sorted(k[1] for k in kept) == [16, 32, 64] and not any(lp.closed for lp in kept.values())
        again = s.generate(prompt, 32)  # nothing loaded: the kept plans, their state refilled from this prompt
        np.testing.assert_array_equal(again.new_token_ids, expected)
        assert again.stats.weight_file_bytes_read == own and again.stats.weight_loads == 1 and again.stats.plans_loaded == 4
        fresh = s.generate(prompt, 32, keep_plans=False)  # each bucket plan loaded, closed at the next
        np.testing.assert_array_equal(fresh.new_token_ids, expected)
        # their weights from the session's host weight store (turnip/session_memory.py): the files are not read again
        assert fresh.stats.weight_loads == 1 and fresh.stats.weight_file_bytes_read == own
    assert all(lp.closed for lp in kept.values())  # closed with the session


def test_past_present_buckets_given_and_one_plan_per_length():
    prompt, expected = _expected("gpt2")
    n = prompt.shape[1]
    plan = turnipc.plan(_past("gpt2"), gpu_mem="100%", dims={"batch": 2, "seq": n, "past": 0}, solver="greedy")
    with turnip.Session(plan, backend="numpy") as s:
        out = s.generate(prompt, 12, past_buckets=[12, 40])
        np.testing.assert_array_equal(out.new_token_ids, expected[:, :12])
        assert out.stats.buckets == (12, 40) and out.stats.plans_loaded == 3
        with pytest.raises(turnip.generate.GenerateError, match="beyond the largest bucket 12"):
            s.generate(prompt, 12, past_buckets=[12])
        # one plan per past length (the fallback for graphs the rewrite cannot mask): the whole past fed each token
        out = s.generate(prompt, 6, past_buckets=None)
        np.testing.assert_array_equal(out.new_token_ids, expected[:, :6])
        st = out.stats
        assert st.plans_loaded == 6 and st.buckets == () and not st.cache_is_state and st.cache_inputs_fed == 4
        per_position = st.cache_bytes / (n + 6 - 1)
        assert st.cache_bytes_copied_per_token == pytest.approx(per_position * (n + (6 - 2) / 2), rel=1e-9)


def _ids(prompt: np.ndarray) -> str:
    return ";".join(",".join(map(str, row)) for row in prompt.tolist())


def test_cli_past_present_with_prefill_model():
    prompt, expected = _expected("gpt2")
    args = [_past("gpt2"), "--gpu-mem", "25%", "--generate", "10", "--input-ids", _ids(prompt), "--backend", "numpy",
            "--prefill-model", _prefill("gpt2")]
    r = CliRunner().invoke(run_main, [*args, "--json"])
    assert r.exit_code == 0, r.output
    obj = json.loads(r.stdout)
    assert obj["new_token_ids"] == expected[:, :10].tolist() and obj["plans_loaded"] == 4  # decode, prompt, buckets 16 and 32
    assert obj["buckets"] == [16, 32]
    # one arena shared by the decode, prompt and bucket plans (grown, never two at once), no host weight copies,
    # no measured h2d bandwidth
    mem = obj["memory"]
    assert mem["device_bytes_live_peak"] == mem["largest_plan_arena_bytes"] and mem["host_weight_copy_bytes"] == 0
    assert 2 <= mem["arena_allocations"] <= 3 and mem["plan_binds"] == 4  # decode plan, prompt plan, buckets 16 and 32
    assert obj["h2d_bandwidth"]["bytes_per_s"] is None and "no GPU" in obj["h2d_bandwidth"]["reason"]
    r = CliRunner().invoke(run_main, args)  # text; without --prefill-model the prompt runs with an empty past
    assert r.exit_code == 0, r.output
    rows = [ln.split(": ", 1)[1].split() for ln in r.stdout.splitlines() if ln.startswith("row ")]
    assert [[int(x) for x in row] for row in rows] == expected[:, :10].tolist()
    r = CliRunner().invoke(run_main, [_past("gpt2"), "--gpu-mem", "25%", "--generate", "4", "--input-ids", _ids(prompt), "--backend", "numpy"])
    assert r.exit_code == 0, r.output
    rows = [ln.split(": ", 1)[1].split() for ln in r.stdout.splitlines() if ln.startswith("row ")]
    assert [[int(x) for x in row] for row in rows] == expected[:, :4].tolist()


def test_cli_past_buckets():
    prompt, expected = _expected("llama")
    base = [_past("llama"), "--gpu-mem", "100%", "--generate", "8", "--input-ids", _ids(prompt), "--backend", "numpy", "--json"]
    r = CliRunner().invoke(run_main, [*base, "--past-buckets", "40,12"])
    assert r.exit_code == 0, r.output
    obj = json.loads(r.stdout)
    assert obj["new_token_ids"] == expected[:, :8].tolist() and obj["buckets"] == [12, 40] and obj["cache_is_state"]  # pasts 8-11, 12-14
    r = CliRunner().invoke(run_main, [*base, "--past-buckets", "none"])
    assert r.exit_code == 0, r.output
    obj = json.loads(r.stdout)
    assert obj["new_token_ids"] == expected[:, :8].tolist() and obj["buckets"] == [] and obj["plans_loaded"] == 8
    assert "not comma-separated integers" in _one_error(CliRunner().invoke(run_main, [*base, "--past-buckets", "16,x"]), 2)
    static = [os.path.join(DEC, "llama_static.onnx"), *base[1:]]
    assert "--past-buckets is for past/present" in _one_error(CliRunner().invoke(run_main, [*static, "--past-buckets", "16"]), 2)


def _one_error(r, code: int) -> str:
    assert r.exit_code == code, (r.exit_code, r.output)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    return lines[0]


def test_cli_prefill_model_errors():
    base = ["--gpu-mem", "25%", "--generate", "4", "--input-ids", "1,2"]
    runner = CliRunner()
    static = os.path.join(DEC, "gpt2_static.onnx")
    assert "static-cache decoder" in _one_error(runner.invoke(run_main, [static, *base, "--prefill-model", _prefill("gpt2")]), 2)
    assert "takes past inputs" in _one_error(runner.invoke(run_main, [_past("gpt2"), *base, "--prefill-model", _past("gpt2")]), 2)
    assert "go together" in _one_error(runner.invoke(run_main, [_past("gpt2"), "--gpu-mem", "25%", "--prefill-model", _prefill("gpt2")]), 2)


def test_cli_tokenizer_text(tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace

    tok = tokenizers.Tokenizer(WordLevel({f"w{i}": i for i in range(256)}, unk_token="w0"))
    tok.pre_tokenizer = Whitespace()
    path = str(tmp_path / "tokenizer.json")
    tok.save(path)
    prompt, expected = _expected("gpt2")
    r = CliRunner().invoke(run_main, [os.path.join(DEC, "gpt2_static.onnx"), "--gpu-mem", "100%", "--generate", "4", "--input-ids",
                                      _ids(prompt), "--backend", "numpy", "--tokenizer", path, "--json"])
    assert r.exit_code == 0, r.output
    obj = json.loads(r.stdout)
    assert obj["new_text"] == [" ".join(f"w{i}" for i in row) for row in expected[:, :4].tolist()]
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    r = CliRunner().invoke(run_main, [os.path.join(DEC, "gpt2_static.onnx"), "--gpu-mem", "100%", "--generate", "4", "--input-ids",
                                      _ids(prompt), "--backend", "numpy", "--tokenizer", str(bad)])
    assert "not a tokenizer.json" in _one_error(r, 2)
