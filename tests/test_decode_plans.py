"""``turnipc plan MODEL --decode PROMPT_LEN`` (issue 13): the decode plan and the prompt plan of a KV-cache decoder."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import turnip
from click.testing import CliRunner
from turnip.plan import read_plan

from turnipc.cli import main as plan_main
from turnipc.decode_plans import DecodePlanError, decode_plans

DEC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "models", "decoders")


def _m(name: str) -> str:
    return os.path.join(DEC, f"{name}.onnx")


def test_dims_of_both_plans():
    p = decode_plans(_m("llama_static"), 8, {"batch": 2}, "out/x.plan")
    assert p.decode == (_m("llama_static"), {"batch": 2, "seq": 1}) and p.prefill == (_m("llama_static"), {"batch": 2, "seq": 8})
    assert (p.decode_output, p.prefill_output) == ("out/x.plan", "out/x.prefill.plan")
    q = decode_plans(_m("gpt2_past"), 5, {}, "y.plan", _m("gpt2_prefill"))
    assert q.decode == (_m("gpt2_past"), {"batch": 1, "seq": 1, "past": 5}) and q.prefill == (_m("gpt2_prefill"), {"batch": 1, "seq": 5})
    with pytest.raises(DecodePlanError, match="--prefill-model"):
        decode_plans(_m("gpt2_past"), 5, {}, "y.plan")
    with pytest.raises(DecodePlanError, match="static-cache decoder is its own prompt graph"):
        decode_plans(_m("gpt2_static"), 5, {}, "y.plan", _m("gpt2_prefill"))
    with pytest.raises(DecodePlanError, match="no prompt graph"):
        decode_plans(_m("gpt2_past"), 5, {}, "y.plan", _m("gpt2_past"))
    with pytest.raises(DecodePlanError, match="needs a decoder"):
        decode_plans(_m("gpt2_prefill"), 5, {}, "y.plan")


def test_cli_writes_both_and_they_generate(tmp_path):
    out = str(tmp_path / "llama.plan")
    r = CliRunner().invoke(plan_main, ["plan", _m("llama_static"), "--gpu-mem", "25%", "--decode", "8", "--dim", "batch=2", "-o", out, "-q"])
    assert r.exit_code == 0, r.output
    dec, pre = read_plan(out), read_plan(str(tmp_path / "llama.prefill.plan"))
    assert dec.options["dims"] == {"batch": 2, "seq": 1} and pre.options["dims"] == {"batch": 2, "seq": 8}
    assert len(dec.state) == len(pre.state) == 4
    with open(os.path.join(DEC, "llama_expected.json")) as f:
        exp = json.load(f)
    with turnip.Session(out, backend="numpy") as s, turnip.Session(str(tmp_path / "llama.prefill.plan"), backend="numpy") as p:
        got = s.generate(np.array(exp["prompt"]), 32, prefill=p)
    assert got.new_token_ids.tolist() == exp["new_token_ids"] and got.stats.plan_runs == 32
    r = CliRunner().invoke(plan_main, ["plan", _m("gpt2_past"), "--gpu-mem", "25%", "--decode", "8", "-o", out])
    assert r.exit_code == 2 and "--prefill-model" in r.stderr
    r = CliRunner().invoke(plan_main, ["plan", _m("gpt2_static"), "--gpu-mem", "25%", "-o", out, "--prefill-model", _m("gpt2_prefill")])
    assert r.exit_code == 2 and "goes with --decode" in r.stderr
