"""The analytic prefill/decode throughput predictor (turnipc.simulate.decode) and the new device profiles."""

from __future__ import annotations

from dataclasses import replace

import pytest

from turnipc.simulate.decode import SHAPES, DecoderShape, InfeasibleError, best_batch, predict, with_link_efficiency
from turnipc.simulate.profiles import MEMORY_BYTES, PROFILES, DeviceProfile, get_profile

GIB = 2**30


def test_new_profiles_and_aliases():
    assert get_profile("T4") is PROFILES["t4"] and get_profile("rtx-a6000") is PROFILES["a6000"]
    assert get_profile("4090") is PROFILES["rtx4090"]
    assert PROFILES["t4"].h2d_bw == 16e9 and PROFILES["a6000"].h2d_bw == 32e9  # PCIe Gen3 / Gen4 x16, per direction
    assert PROFILES["t4"].peak("float16") == 65e12 and PROFILES["rtx4090"].hbm_bw == 1008e9
    assert MEMORY_BYTES["t4"] == 16 * GIB and MEMORY_BYTES["a6000"] == 48 * GIB and MEMORY_BYTES["rtx4090"] == 24 * GIB


@pytest.mark.parametrize("name,params", [("llama-2-7b", 6_738_415_616), ("llama-2-70b", 68_976_648_192)])
def test_shapes_match_published_parameter_counts(name, params):
    # the HF checkpoints' counts include the norm weights (< 0.01 %), which the shape leaves out
    assert 0 < params - SHAPES[name].params < 1e-4 * params


def test_opt_30b_shape():
    h = 7168
    assert SHAPES["opt-30b"].params == 48 * 12 * h * h + 50272 * h + 2048 * h  # tied head, learned positions
    assert 29.9e9 < SHAPES["opt-30b"].params < 30.1e9


def test_kv_bytes_with_gqa():
    assert SHAPES["llama-2-70b"].kv_bytes_per_token_layer == 2 * 8 * 128 * 2  # 8 KV heads of 128, fp16
    assert SHAPES["opt-30b"].kv_bytes_per_token_layer == 2 * 7168 * 2


# A tiny model on a round-number device, so every time can be computed by hand.
TINY = DecoderShape("tiny", layers=2, hidden=64, heads=4, kv_heads=4, ffn=256, vocab=100, gated_mlp=False)
DEV = DeviceProfile("round", {"float32": 1e12, "float16": 1e12}, hbm_bw=1e11, h2d_bw=1e9, d2h_bw=1e9, peer_bw=1e9,
                    launch_s=0.0, copy_latency_s=0.0)


def test_all_resident_decode_time_by_hand():
    r = predict(TINY, DEV, gpu_mem=GIB, batch=2, prompt_len=4, new_tokens=3, weights_on_gpu=1.0)
    assert r.placement.weights_on_gpu == 1.0 and r.placement.cache_on_gpu == 1.0
    L, params, kvt = 2, TINY.params, TINY.kv_bytes_per_token_layer
    want = 0.0
    for ctx in (5, 6):  # two decode steps after the prefill
        flops = 2 * 2 * params / L + 4 * 2 * ctx * 64
        hbm = TINY.weight_bytes / L + 2 * ctx * kvt
        want += L * max(flops / 1e12, hbm / 1e11)
    assert r.decode_s == pytest.approx(want, rel=1e-12)
    assert r.h2d_bytes_per_decode_step == 0 and r.bound == "memory"
    assert r.decode_tokens_per_s == pytest.approx(2 * 2 / want)


def test_streamed_weights_are_pcie_bound():
    r = predict(TINY, DEV, gpu_mem=GIB, batch=1, prompt_len=4, new_tokens=2, weights_on_gpu=0.0)
    assert r.bound == "pcie"
    assert r.h2d_bytes_per_decode_step == pytest.approx(TINY.weight_bytes)  # every weight once per step
    assert r.decode_s == pytest.approx(TINY.weight_bytes / 1e9)
    assert r.prefill_s == pytest.approx(TINY.weight_bytes / 1e9)  # prefill streams them once too


def test_budget_limits_and_search():
    s, dev = SHAPES["opt-30b"], "t4"
    with pytest.raises(InfeasibleError, match="does not fit 0.5 GiB"):
        predict(s, dev, GIB // 2, 1, 512, 32)
    small = best_batch(s, dev, 16 * GIB, 512, 32, host_mem=208 * GIB)
    big = best_batch(s, dev, 48 * GIB, 512, 32, host_mem=208 * GIB)
    assert big.generation_tokens_per_s >= small.generation_tokens_per_s
    # the offloaded weights and cache fit host memory
    kv_total = s.layers * small.batch * (512 + 32) * s.kv_bytes_per_token_layer
    p = small.placement
    assert (1 - p.weights_on_gpu) * s.weight_bytes + (1 - p.cache_on_gpu) * kv_total <= 208 * GIB
    # keeping the cache on the GPU caps the batch
    on_gpu = best_batch(s, dev, 16 * GIB, 512, 32, host_mem=208 * GIB, offload_cache=False)
    assert on_gpu.placement.cache_on_gpu == 1.0 and on_gpu.batch < small.batch
    with pytest.raises(InfeasibleError):
        predict(s, dev, 16 * GIB, 64, 512, 32, offload_cache=False)


def test_slower_links_predict_less():
    s = SHAPES["llama-2-70b"]
    fast = predict(s, "rtx4090", 24 * GIB, 8, 512, 32, host_mem=256 * GIB)
    slow = predict(s, with_link_efficiency("rtx4090", 0.5), 24 * GIB, 8, 512, 32, host_mem=256 * GIB)
    assert slow.decode_s == pytest.approx(2 * fast.decode_s, rel=0.05)
    assert replace(get_profile("rtx4090")).h2d_bw == 32e9


def test_module_cli(capsys):
    import json

    from turnipc.simulate.decode import main

    assert main(["--model", "llama-2-70b", "--device", "4090", "--batch", "8", "--host-mem", "256G", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["batch"] == 8 and d["gpu_mem"] == 24 * GIB and d["generation_tokens_per_s"] > 0
    assert main(["--device", "t4", "--gpu-mem", "1G"]) == 2
    assert capsys.readouterr().err.startswith("error: opt-30b: no batch")
    assert main(["--model", "gpt5"]) == 2
    assert "unknown model shape 'gpt5'" in capsys.readouterr().err


def test_turnipc_simulate_decode():
    """``turnipc simulate --decode``: the same prediction as the module's command line, and one-line errors."""
    import json

    from click.testing import CliRunner

    from turnipc.cli import main as cli

    r = CliRunner().invoke(cli, ["simulate", "--decode", "llama-2-70b", "--device", "4090", "--batch", "8", "--host-mem", "256G", "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    want = predict("llama-2-70b", "rtx4090", 24 * GIB, 8, 512, 32, 256 * 10**9).to_dict()
    assert d == json.loads(json.dumps(want))
    r = CliRunner().invoke(cli, ["simulate", "--decode", "opt-30b", "--gpu-mem", "16G", "--host-mem", "208G"])  # t4 by default
    assert r.exit_code == 0 and "opt-30b on t4" in r.stdout and "(best)" in r.stdout
    for args, msg in ((["--decode", "gpt5"], "unknown model shape 'gpt5'"),
                      (["plan.msgpack", "--decode", "opt-30b"], "drop 'plan.msgpack'"),
                      ([], "give a PLAN"),
                      (["x.plan", "--batch", "2"], "go with --decode")):
        r = CliRunner().invoke(cli, ["simulate", *args])
        assert r.exit_code == 2 and msg in r.stderr, (args, r.output)
