"""``turnipc plan MODEL --decode PROMPT_LEN`` (issue 13): the decode plan and the prompt plan of a KV-cache decoder."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import turnip
from click.testing import CliRunner
from turnip.cli import main as run_main
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


def _ids(prompt) -> str:
    return ";".join(",".join(map(str, row)) for row in prompt)


def test_past_present_decode_writes_bucket_plans_that_turnip_run_uses(tmp_path):
    """--decode on a past/present decoder also writes NAME.bucketB.plan; turnip-run NAME.plan --generate uses them (and the prompt plan)."""
    with open(os.path.join(DEC, "gpt2_expected.json")) as f:
        exp = json.load(f)
    outs = []
    for sub in ("a", "b"):  # two folders: the same bytes (no folder, clock or temporary path in a plan)
        os.makedirs(tmp_path / sub)
        out = str(tmp_path / sub / "g.plan")
        r = CliRunner().invoke(plan_main, ["plan", _m("gpt2_past"), "--gpu-mem", "25%", "--decode", "8", "--dim", "batch=2",
                                           "--prefill-model", _m("gpt2_prefill"), "-o", out, "--json"])
        assert r.exit_code == 0, r.output
        outs.append(out)
    obj = json.loads(r.stdout)
    caps = [b["capacity"] for b in obj["decode"]["bucket_plans"]]
    assert caps == [16, 32, 64]  # pasts 8 .. 38 (32 new tokens) plus the new position
    assert obj["decode"]["prefill_plan"] == str(tmp_path / "b" / "g.prefill.plan")
    for b in obj["decode"]["bucket_plans"]:
        assert b["path"] == str(tmp_path / "b" / f"g.bucket{b['capacity']}.plan")
        with open(b["path"], "rb") as f1, open(str(tmp_path / "a" / f"g.bucket{b['capacity']}.plan"), "rb") as f2:
            assert f1.read() == f2.read()
        bp = read_plan(b["path"])
        assert bp.options["rewrite"] == "masked_past/1" and len(bp.state) == 4
        assert bp.model_sha256 == read_plan(outs[1]).model_sha256  # the ORIGINAL model: weights read from it by name
    args = [outs[1], "--generate", "32", "--input-ids", _ids(exp["prompt"]), "--backend", "numpy", "--json"]
    r = CliRunner().invoke(run_main, args)
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout)
    assert got["new_token_ids"] == exp["new_token_ids"] and got["buckets"] == [16, 32, 64]
    assert "note:" not in r.stderr  # nothing planned at generation time
    assert got["plans_loaded"] == 5  # the decode plan, the prompt plan written beside it, three bucket plans
    os.remove(str(tmp_path / "b" / "g.bucket64.plan"))  # 16 and 32 do not cover the generation: 64 is planned now, and said
    r = CliRunner().invoke(run_main, args)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["new_token_ids"] == exp["new_token_ids"] and json.loads(r.stdout)["buckets"] == [16, 32, 64]
    assert r.stderr.count("note:") == 1 and "bucket plan 64 not written" in r.stderr
    # given capacities
    out = str(tmp_path / "c.plan")
    r = CliRunner().invoke(plan_main, ["plan", _m("gpt2_past"), "--gpu-mem", "100%", "--decode", "8", "--prefill-model", _m("gpt2_prefill"),
                                       "--past-buckets", "40,12", "-o", out, "-q"])
    assert r.exit_code == 0, r.output
    assert sorted(os.listdir(tmp_path)) == ["a", "b", "c.bucket12.plan", "c.bucket40.plan", "c.plan", "c.prefill.plan"]
    r = CliRunner().invoke(plan_main, ["plan", _m("gpt2_past"), "--gpu-mem", "100%", "--past-buckets", "16", "-o", out])
    assert r.exit_code == 2 and "goes with --decode" in r.stderr
