"""`turnipc plan / verify / inspect` from the command line: outputs, JSON keys, errors and exit codes."""

from __future__ import annotations

import json
import os
import shutil

import fixtures
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper
from turnip.plan import read_plan

from turnipc.cli import main

GPT2 = fixtures.get("gpt2_dynamo18")
DIMS = ["--dim", "batch=2", "--dim", "seq=16"]


@pytest.fixture()
def runner():
    return CliRunner()


def plan(runner, model, out, *extra):
    return runner.invoke(main, ["plan", str(model), "-o", str(out), "-q", *extra])


def test_plan_verify_inspect_json(runner, tmp_path):
    out = tmp_path / "p.plan"
    r = plan(runner, GPT2.path, out, "--gpu-mem", "25%", *DIMS)
    assert r.exit_code == 0, r.output
    v = runner.invoke(main, ["verify", str(out), "--json"])
    assert v.exit_code == 0 and json.loads(v.output)["ok"] is True
    i = runner.invoke(main, ["inspect", str(out), "--json"])
    obj = json.loads(i.output)
    for k in ("budget_bytes", "peak_bytes", "no_offload_peak_bytes", "lower_bound_bytes", "offload_bytes", "reload_bytes", "nodes"):
        assert k in obj, k
    assert obj["peak_bytes"] <= obj["budget_bytes"] == obj["no_offload_peak_bytes"] // 4
    assert set(obj["nodes"]) == {"compute", "reload", "offload", "move"}
    text = runner.invoke(main, ["inspect", str(out)]).output
    assert "peak" in text and "lower bound" in text and "largest tensors" in text


def test_input_shape_is_the_same_as_dims(runner, tmp_path):
    a, b = tmp_path / "a.plan", tmp_path / "b.plan"
    assert plan(runner, GPT2.path, a, "--gpu-mem", "1M", *DIMS).exit_code == 0
    assert plan(runner, GPT2.path, b, "--gpu-mem", "1M", "--input-shape", "input_ids:2x16").exit_code == 0
    pa, pb = read_plan(a), read_plan(b)
    assert pa.stats == pb.stats and [n.to_obj() for n in pa.nodes] == [n.to_obj() for n in pb.nodes]


@pytest.mark.parametrize("mem", ["300K", "300KiB", "1M", "1MB", "1MiB", "2097152", "50%", "min"])
def test_budget_spellings(runner, tmp_path, mem):
    out = tmp_path / "p.plan"
    r = plan(runner, GPT2.path, out, "--gpu-mem", mem, *DIMS)
    assert r.exit_code == 0, r.output
    s = read_plan(out).stats
    # K/M/G are powers of ten, KiB/MiB/GiB powers of two (accelerate's convention)
    want = {"300K": 300_000, "300KiB": 300 * 1024, "1M": 10**6, "1MB": 10**6, "1MiB": 1 << 20, "2097152": 2097152}.get(mem)
    if want:
        assert s.budget_bytes == want
    assert s.peak_bytes <= s.budget_bytes


def _error(r, code=2):
    assert r.exit_code == code, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.output
    return lines[0]


def test_unbound_dim_is_named_and_nothing_written(runner, tmp_path):
    out = tmp_path / "p.plan"
    msg = _error(plan(runner, GPT2.path, out, "--gpu-mem", "1M", "--dim", "batch=2"))
    assert "seq" in msg and "--dim" in msg
    assert not out.exists() and os.listdir(tmp_path) == []


def test_budget_below_smallest_feasible_says_what_it_is(runner, tmp_path):
    out = tmp_path / "p.plan"
    msg = _error(plan(runner, GPT2.path, out, "--gpu-mem", "10K", *DIMS))
    assert "smallest feasible" in msg and "bytes" in msg and "--gpu-mem min" in msg
    assert not out.exists()


def test_truncated_model(runner, tmp_path):
    bad = tmp_path / "bad.onnx"
    with open(GPT2.path, "rb") as f:
        bad.write_bytes(f.read()[:5000])
    msg = _error(plan(runner, bad, tmp_path / "p.plan", "--gpu-mem", "1M", *DIMS))
    assert "bad.onnx" in msg
    assert not (tmp_path / "p.plan").exists()


def test_missing_model(runner, tmp_path):
    msg = _error(plan(runner, tmp_path / "nope.onnx", tmp_path / "p.plan", "--gpu-mem", "1M"))
    assert "nope.onnx" in msg


def test_bad_budget_text(runner, tmp_path):
    msg = _error(plan(runner, GPT2.path, tmp_path / "p.plan", "--gpu-mem", "lots", *DIMS))
    assert "--gpu-mem" in msg and "24G" in msg


def test_unsupported_control_flow_listed(runner, tmp_path):
    then = helper.make_graph([helper.make_node("Identity", ["x"], ["y1"])], "t", [], [helper.make_tensor_value_info("y1", TensorProto.FLOAT, [2])])
    els = helper.make_graph([helper.make_node("Neg", ["x"], ["y2"])], "e", [], [helper.make_tensor_value_info("y2", TensorProto.FLOAT, [2])])
    nodes = [helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=els)] * 1
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("c", TensorProto.BOOL, []),
                                       helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    path = tmp_path / "if.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    msg = _error(plan(runner, path, tmp_path / "p.plan", "--gpu-mem", "1M"))
    assert "If" in msg


def test_existing_output_is_kept_on_error(runner, tmp_path):
    out = tmp_path / "p.plan"
    assert plan(runner, GPT2.path, out, "--gpu-mem", "1M", *DIMS).exit_code == 0
    before = out.read_bytes()
    _error(plan(runner, GPT2.path, out, "--gpu-mem", "10K", *DIMS))
    assert out.read_bytes() == before  # atomic: never half-written, never clobbered by a failed run


def test_verify_reports_violation_with_exit_1(runner, tmp_path):
    out = tmp_path / "p.plan"
    assert plan(runner, GPT2.path, out, "--gpu-mem", "25%", *DIMS).exit_code == 0
    from dataclasses import replace

    from turnip.plan import write_plan

    p = read_plan(out)
    target = next(n for n in p.nodes if n.kind == "reload" and n.deps)
    p.nodes[target.id] = replace(target, deps=())
    write_plan(p, out)
    r = runner.invoke(main, ["verify", str(out)])
    assert r.exit_code == 1 and "error:" in r.output
    garbage = tmp_path / "g.plan"
    garbage.write_bytes(b"\x00\x01not a plan")
    r = runner.invoke(main, ["verify", str(garbage)])
    assert r.exit_code == 2 and "re-plan" in r.output


def test_plan_relative_model_path_survives_moving_both(runner, tmp_path):
    src = tmp_path / "a"
    src.mkdir()
    for f in (GPT2.path, GPT2.path + ".data"):
        shutil.copy(f, src)
    out = src / "p.plan"
    assert plan(runner, src / os.path.basename(GPT2.path), out, "--gpu-mem", "50%", *DIMS).exit_code == 0
    assert read_plan(out).model_path == os.path.basename(GPT2.path)
    moved = tmp_path / "b"
    shutil.move(str(src), str(moved))
    from turnip.run import random_feeds, run_plan

    p = read_plan(moved / "p.plan")
    res = run_plan(str(moved / "p.plan"), random_feeds(p, 0), backend="numpy")
    assert res.outputs
