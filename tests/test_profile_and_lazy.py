"""`turnip-run --profile` (turnip.profile) and reading models without their inline weight bytes (turnip.onnx_lazy)."""

from __future__ import annotations

import json
import os

import fixtures
import onnx
import pytest
from click.testing import CliRunner
from test_executor import make_chain_plan
from turnip.cli import main
from turnip.onnx_lazy import load_model_lazily
from turnip.profile import build_profile
from turnip.run import TimelineEvent


def _ev(node, kind, op, start, end, name=""):
    return TimelineEvent(node, kind, 0, "compute" if kind == "compute" else "h2d", name or f"n{node}", op, 0, start, end)


def test_build_profile_aggregates_exactly():
    tl = [
        _ev(0, "compute", "MatMul", 0.0, 0.5),
        _ev(1, "compute", "Erf", 0.5, 0.6),
        _ev(2, "compute", "MatMul", 0.6, 0.9),
        _ev(3, "reload", "", 0.0, 0.25),
    ]
    p = build_profile(tl, wall_s=1.0, top_nodes=2)
    assert [(o.op, o.count) for o in p.by_op] == [("MatMul", 2), ("Erf", 1)]
    assert p.by_op[0].total_s == pytest.approx(0.8) and p.by_op[0].share == pytest.approx(0.8 / 0.9)
    assert p.compute_s == pytest.approx(0.9) and p.copy_s == pytest.approx(0.25)
    assert [(o.op, o.count) for o in p.by_copy] == [("reload", 1)]
    assert [n.node for n in p.slowest] == [0, 2]
    text = "\n".join(p.lines())
    assert "MatMul" in text and "slowest nodes" in text and "node 0 MatMul 'n0'" in text


@pytest.fixture
def runner():
    try:
        return CliRunner(mix_stderr=False)
    except TypeError:
        return CliRunner()


def test_cli_profile_text_and_json(runner, tmp_path):
    plan, _ = make_chain_plan(tmp_path, devices=2)
    r = runner.invoke(main, [str(plan), "--random-inputs", "--profile", "--backend", "numpy"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "profile (last run" in r.output and "Relu" in r.output and "slowest nodes:" in r.output
    r = runner.invoke(main, [str(plan), "--random-inputs", "--profile", "--json", "--backend", "numpy"], catch_exceptions=False)
    prof = json.loads(r.stdout)["profile"]
    ops = {o["op"]: o for o in prof["by_op"]}
    assert set(ops) == {"Relu", "Add"}
    assert sum(o["total_s"] for o in prof["by_op"]) == pytest.approx(prof["compute_s"])
    assert {c["op"] for c in prof["by_copy"]} >= {"reload", "offload"}
    r = runner.invoke(main, [str(plan), "--random-inputs", "--json", "--backend", "numpy"], catch_exceptions=False)
    assert "profile" not in json.loads(r.stdout)


def test_lazy_load_leaves_inline_weights_in_the_file():
    fx = fixtures.get("bert_legacy17")
    full = onnx.load(fx.path)
    lazy = load_model_lazily(fx.path, min_bytes=1024)
    data = open(fx.path, "rb").read()
    moved = 0
    assert len(full.graph.initializer) == len(lazy.graph.initializer)
    for a, b in zip(full.graph.initializer, lazy.graph.initializer):
        assert a.name == b.name and list(a.dims) == list(b.dims) and a.data_type == b.data_type
        if b.data_location == onnx.TensorProto.EXTERNAL:
            info = {e.key: e.value for e in b.external_data}
            assert info["location"] == os.path.basename(fx.path)
            off, n = int(info["offset"]), int(info["length"])
            assert n >= 1024 and data[off : off + n] == a.raw_data and not b.raw_data
            moved += 1
        else:
            assert a.SerializeToString() == b.SerializeToString()
    assert moved > 0
    assert list(full.graph.node) == list(lazy.graph.node)
    assert full.opset_import == lazy.opset_import and list(full.graph.input) == list(lazy.graph.input)


def test_lazy_load_keeps_external_data_models_unchanged():
    fx = fixtures.get("gpt2_dynamo18")
    full = onnx.load(fx.path, load_external_data=False)
    assert load_model_lazily(fx.path).SerializeToString() == full.SerializeToString()


def test_weight_file_records_never_reads_inline_weights(tmp_path):
    """The compiler records external weight files for the plan; with inline weights it must not read them
    (this read the whole legacy BERT-base, 420 MB, into the planner before it was lazy)."""
    import tracemalloc

    import numpy as np
    from onnx import helper, numpy_helper
    from turnip.weights import weight_file_records

    w = numpy_helper.from_array(np.ones((1024, 2048), np.float32), "w")  # 8 MiB inline
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 1024])],
                          [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 2048])], [w])
    path = str(tmp_path / "inline.onnx")
    onnx.save(helper.make_model(g), path)
    tracemalloc.start()
    try:
        records = weight_file_records(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert records == []  # the model file itself is not a weight file
    assert peak < 1 << 20, peak
