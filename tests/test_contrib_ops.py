"""onnxruntime's com.microsoft ops (what its optimizer writes): typed by running them once, run through the fallback.

Real models built here, real onnxruntime (shape probe and reference), the real planner and runtime.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper
from turnip.cli import main as run_main

from turnipc.cli import main as compiler_main

pytest.importorskip("onnxruntime")
MS = "com.microsoft"


def _save(tmp_path, nodes, inits, name="m.onnx", in_shape=("batch", 16)):
    rng = np.random.default_rng(0)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(in_shape))
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    inits = [numpy_helper.from_array(a if a.dtype != np.float32 else (rng.standard_normal(a.shape) * 0.3).astype(np.float32), n)
             for n, a in inits.items()]
    g = helper.make_graph(nodes, "contrib", [x], [y], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(MS, 1)])
    path = str(tmp_path / name)
    onnx.save(m, path)
    return path


def test_fused_ops_plan_run_and_match_onnxruntime(tmp_path):
    nodes = [
        helper.make_node("FusedMatMul", ["x", "w1"], ["a"], domain=MS, alpha=0.5, transB=1),  # [b,16] x [32,16]^T
        helper.make_node("BiasGelu", ["a", "b1"], ["g"], domain=MS),
        helper.make_node("Add", ["g", "g"], ["g2"]),  # a standard op between: types flow both ways
        helper.make_node("SkipLayerNormalization", ["g2", "skip", "gamma", "beta"], ["n"], domain=MS, epsilon=1e-5),
        helper.make_node("MatMulNBits", ["n", "qw", "scales"], ["y"], domain=MS, K=32, N=4, bits=4, block_size=32),
    ]
    qw = np.random.default_rng(1).integers(0, 255, size=(4, 1, 16), dtype=np.uint8)
    inits = {"w1": np.zeros((32, 16), np.float32), "b1": np.zeros(32, np.float32), "skip": np.zeros((2, 32), np.float32),
             "gamma": np.zeros(32, np.float32), "beta": np.zeros(32, np.float32), "qw": qw,
             "scales": np.full(4, 0.05, np.float32)}
    model = _save(tmp_path, nodes, inits)
    plan = tmp_path / "m.plan"
    r = CliRunner().invoke(compiler_main, ["plan", model, "--gpu-mem", "min", "--dim", "batch=2", "-o", str(plan), "-q"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(run_main, [str(plan), "--random-inputs", "--check", "--report"])
    assert r.exit_code == 0, r.output
    assert "PASSED" in r.stdout and "com.microsoft.FusedMatMul: 1" in r.stdout and "com.microsoft.MatMulNBits: 1" in r.stdout
    assert "output y: float32 [2, 4]" in r.stdout


def test_an_op_nobody_knows_is_one_line_naming_op_and_domain(tmp_path):
    model = _save(tmp_path, [helper.make_node("FooBar", ["x", "w"], ["y"], domain=MS)], {"w": np.zeros((16, 4), np.float32)})
    out = tmp_path / "m.plan"
    r = CliRunner().invoke(compiler_main, ["plan", model, "--gpu-mem", "100%", "--dim", "batch=2", "-o", str(out)])
    assert r.exit_code == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: unsupported op FooBar (domain com.microsoft)"), r.stderr
    assert "--dim" not in lines[0]
    assert not out.exists()
