"""`turnip-run` (turnip.cli:main) through click's CliRunner, on hand-built plans."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from test_executor import SHAPE, feeds_for, make_chain_plan, make_model
from turnip.cli import main
from turnip.plan import read_plan, write_plan


@pytest.fixture
def runner():
    try:
        return CliRunner(mix_stderr=False)
    except TypeError:  # click >= 8.2 always keeps stderr apart
        return CliRunner()


def invoke(runner, *args):
    return runner.invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_help_shows_examples(runner):
    r = invoke(runner, "--help")
    assert r.exit_code == 0
    assert "Examples:" in r.output and "turnip-run model.plan --random-inputs --check" in r.output
    for opt in ("--inputs", "--input", "--random-inputs", "--check", "--order", "--backend", "--trace", "--report", "--json"):
        assert opt in r.output


def test_random_inputs_check_passes(runner, tmp_path):
    plan, _ = make_chain_plan(tmp_path, devices=2)
    r = invoke(runner, plan, "--random-inputs", "--check", "--backend", "numpy", "--report")
    assert r.exit_code == 0, r.output + r.stderr
    assert "PASSED" in r.output
    assert "ran 7 nodes" in r.output and "reloaded 384 B" in r.output and "offloaded 128 B" in r.output
    assert "onnxruntime fallback: none" in r.output


@pytest.mark.parametrize("order", ["dynamic", "fixed", "random"])
def test_json_output(runner, tmp_path, order):
    plan, _ = make_chain_plan(tmp_path)
    r = invoke(runner, plan, "--random-inputs", "--seed", 4, "--check", "--json", "--order", order, "--repeat", 2, "--backend", "numpy")
    assert r.exit_code == 0, r.output + r.stderr
    obj = json.loads(r.stdout)
    assert set(obj) >= {"outputs", "check", "stats", "fallback_ops"}
    assert obj["outputs"] == {"y": {"shape": list(SHAPE), "dtype": "float32"}}
    assert obj["check"]["passed"] is True and obj["check"]["outputs"][0]["name"] == "y"
    st = obj["stats"]
    for key in ("wall_s", "nodes_run", "bytes_reloaded", "bytes_offloaded", "bytes_moved", "fallback_nodes", "backend", "order"):
        assert key in st
    timed_runs = st["wall_s"]  # one sample per repeat (a count, not a speed target)
    assert st["nodes_run"] == 6 and len(timed_runs) == 2 and st["order"] == order and st["backend"] == "numpy"


def test_inputs_npz_output_and_trace(runner, tmp_path):
    plan, w = make_chain_plan(tmp_path)
    feeds = feeds_for(2)
    np.savez(tmp_path / "feeds.npz", **feeds)
    out, trace = tmp_path / "out.npz", tmp_path / "run.json"
    r = invoke(runner, plan, "--inputs", tmp_path / "feeds.npz", "--output", out, "--trace", trace, "--backend", "numpy")
    assert r.exit_code == 0, r.output + r.stderr
    with np.load(out) as z:
        np.testing.assert_array_equal(z["y"], np.maximum(feeds["x"], 0) + w)
    events = json.loads(trace.read_text())["traceEvents"]
    assert sum(e["ph"] == "X" for e in events) == 6


def test_single_input_file(runner, tmp_path):
    plan, _ = make_chain_plan(tmp_path)
    np.save(tmp_path / "x.npy", feeds_for()["x"])
    r = invoke(runner, plan, "--input", f"x={tmp_path / 'x.npy'}", "--check", "--backend", "numpy")
    assert r.exit_code == 0 and "PASSED" in r.output


def test_check_failure_exits_1(runner, tmp_path):
    # The plan's folded constant differs from the model's weight: the run is "wrong".
    plan, _ = make_chain_plan(tmp_path, w_source="constant", constant_w=np.full(SHAPE, 5.0, np.float32))
    r = invoke(runner, plan, "--random-inputs", "--check", "--backend", "numpy")
    assert r.exit_code == 1
    assert "FAILED" in r.output and "MISMATCH" in r.output
    r = invoke(runner, plan, "--random-inputs", "--check", "--json", "--backend", "numpy")
    assert r.exit_code == 1 and json.loads(r.stdout)["check"]["passed"] is False


def test_wrong_input_shape_exits_2(runner, tmp_path):
    plan, _ = make_chain_plan(tmp_path)
    np.save(tmp_path / "x.npy", np.zeros((2, 2), np.float32))
    r = invoke(runner, plan, "--input", f"x={tmp_path / 'x.npy'}", "--backend", "numpy")
    assert r.exit_code == 2
    assert r.stderr.startswith("error: ") and "input 'x'" in r.stderr and "[4, 8]" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_bad_plan_files_exit_2(runner, tmp_path):
    r = invoke(runner, tmp_path / "nope.plan", "--random-inputs")
    assert r.exit_code == 2 and "error: plan file" in r.stderr and "turnipc plan" in r.stderr
    junk = tmp_path / "junk.plan"
    junk.write_bytes(b"\x00\x01not a plan")
    r = invoke(runner, junk, "--random-inputs")
    assert r.exit_code == 2 and r.stderr.startswith("error: ")
    r = invoke(runner, junk, "--random-inputs", "--json")
    assert r.exit_code == 2 and "error" in json.loads(r.stdout)


def test_missing_or_changed_model_exits_2(runner, tmp_path):
    plan, _ = make_chain_plan(tmp_path)
    make_model(tmp_path, np.ones(SHAPE, np.float32))
    r = invoke(runner, plan, "--random-inputs", "--backend", "numpy")
    assert r.exit_code == 2 and "model changed since planning: re-plan" in r.stderr
    (tmp_path / "model.onnx").unlink()
    r = invoke(runner, plan, "--random-inputs", "--backend", "numpy")
    assert r.exit_code == 2 and "not found" in r.stderr


def test_no_inputs_given_exits_2(runner, tmp_path):
    plan, _ = make_chain_plan(tmp_path)
    r = invoke(runner, plan, "--backend", "numpy")
    assert r.exit_code == 2 and "--random-inputs" in r.stderr


def test_failing_node_exits_2(runner, tmp_path):
    plan, _ = make_chain_plan(tmp_path, op="NoSuchOpAnywhere")
    r = invoke(runner, plan, "--random-inputs", "--backend", "numpy")
    assert r.exit_code == 2 and "node 1" in r.stderr and "NoSuchOpAnywhere" in r.stderr


def test_report_lists_fallback_ops(runner, tmp_path):
    from turnip.kernels import get_kernel

    if get_kernel("QuickGelu", "com.microsoft") is not None:
        pytest.skip("QuickGelu has a native kernel now")
    plan, _ = make_chain_plan(tmp_path, op="QuickGelu", domain="com.microsoft")
    r = invoke(runner, plan, "--random-inputs", "--report", "--check", "--backend", "numpy")
    assert r.exit_code == 0, r.output + r.stderr
    assert "onnxruntime fallback: 1 nodes" in r.output and "com.microsoft.QuickGelu: 1" in r.output
    r = invoke(runner, plan, "--random-inputs", "--json", "--backend", "numpy")
    assert json.loads(r.stdout)["fallback_ops"] == {"com.microsoft.QuickGelu": 1}


def test_plan_roundtrip_is_what_cli_reads(tmp_path):
    plan_path, _ = make_chain_plan(tmp_path)
    p = read_plan(plan_path)
    write_plan(p, tmp_path / "copy.plan")
    assert (tmp_path / "copy.plan").read_bytes() == open(plan_path, "rb").read()
