"""The rewritten hot kernels (Erf, Gelu, Softmax, LogSoftmax, LayerNorm, RMSNorm) against the ONNX reference evaluator.

Shapes are larger than one block (``_fast.CHUNK`` elements), so the blocked
loops, their tails and the widening of float16/bfloat16 blocks are all
exercised; every case runs in float32, float16 and bfloat16.
"""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator
from turnip.kernels import KernelContext, get_kernel
from turnip.kernels._fast import CHUNK, ERF_MAX_REL_ERROR, erf_into

_ERF64 = np.frompyfunc(math.erf, 1, 1)


def erf64(x):
    return _ERF64(x.astype(np.float64)).astype(np.float64)


BF16 = np.dtype(ml_dtypes.bfloat16)
DTYPES = {"fp32": np.dtype(np.float32), "fp16": np.dtype(np.float16), "bf16": BF16}
ONNX_T = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.float16): TensorProto.FLOAT16, BF16: TensorProto.BFLOAT16}


def test_erf_float32_relative_error_below_documented_bound():
    x = np.concatenate(
        [np.linspace(-6, 6, 400_001, dtype=np.float32), np.float32(10.0) ** np.linspace(-30, 0.7, 20_000).astype(np.float32)]
    )
    out = np.empty_like(x)
    erf_into(np, x, out)
    ref = erf64(x)
    rel = np.abs(out.astype(np.float64) - ref) / np.maximum(np.abs(ref), 1e-300)
    assert rel.max() < ERF_MAX_REL_ERROR
    assert out[0] == -1.0 and out[400_000] == 1.0  # saturates exactly
    special = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0], dtype=np.float32)
    got = np.empty_like(special)
    erf_into(np, special, got)
    assert np.isnan(got[0]) and got[1] == 1.0 and got[2] == -1.0 and got[3] == 0.0


def _reference(op, attrs, inputs, n_out=1, opset=20):
    """The reference evaluator on the inputs widened to float32: what float32 accumulation should give."""
    inputs = [a.astype(np.float32) for a in inputs]
    dt = inputs[0].dtype
    ins = [helper.make_tensor_value_info(f"x{i}", ONNX_T[a.dtype], a.shape) for i, a in enumerate(inputs)]
    outs = [helper.make_tensor_value_info(f"y{i}", ONNX_T[dt] if i == 0 else TensorProto.FLOAT, None) for i in range(n_out)]
    node = helper.make_node(op, [f"x{i}" for i in range(len(inputs))], [f"y{i}" for i in range(n_out)], **attrs)
    model = helper.make_model(helper.make_graph([node], "g", ins, outs), opset_imports=[helper.make_opsetid("", opset)])
    res = ReferenceEvaluator(model).run(None, {f"x{i}": a for i, a in enumerate(inputs)})
    return [np.asarray(r) for r in res], None


def _run(op, attrs, inputs, out_shapes, opset):
    kernel = get_kernel(op)
    outs = [np.full(s, np.nan, dtype=d) for s, d in out_shapes]
    kernel(KernelContext(xp=np, attrs=attrs, opset=opset, op=op), inputs, outs)
    return outs


def _close(got, want, dt):
    # float32: a few ulps; float16 / bfloat16: one rounding of the float32 result (2^-11, 2^-8 relative)
    rtol, atol = (1e-4, 1e-5) if dt == np.float32 else ((1e-3, 1e-4) if dt == np.float16 else (8e-3, 1e-3))
    np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), rtol=rtol, atol=atol)


ROWS, COLS = 300, 768  # 230,400 elements: more than 3 blocks, with a tail


@pytest.mark.parametrize("dname", DTYPES)
@pytest.mark.parametrize("op,attrs,opset", [("Erf", {}, 13), ("Gelu", {}, 20), ("Gelu", {"approximate": "tanh"}, 20)])
def test_elementwise_chain(dname, op, attrs, opset):
    dt = DTYPES[dname]
    assert ROWS * COLS > 3 * CHUNK
    x = (np.random.default_rng(1).standard_normal((ROWS, COLS)) * 3).astype(dt)
    (want,), _ = _reference(op, attrs, [x], opset=opset)
    (got,) = _run(op, attrs, [x], [(x.shape, dt)], opset)
    assert got.dtype == dt
    _close(got, want, dt)


@pytest.mark.parametrize("dname", DTYPES)
@pytest.mark.parametrize("op,opset,axis", [("Softmax", 13, -1), ("LogSoftmax", 13, -1), ("Softmax", 11, 1)])
def test_softmax(dname, op, opset, axis):
    dt = DTYPES[dname]
    x = (np.random.default_rng(2).standard_normal((4, 75, 768)) * 5).astype(dt)
    if opset < 13:  # opset 11 flattens to 2-D at axis (the reference evaluator applies opset-13 rules; use them on the 2-D view)
        (want,), _ = _reference(op, {"axis": -1}, [x.reshape(4, -1)], opset=13)
        want = want.reshape(x.shape)
    else:
        (want,), _ = _reference(op, {"axis": axis}, [x], opset=opset)
    (got,) = _run(op, {"axis": axis}, [x], [(x.shape, dt)], opset)
    _close(got, want, dt)


@pytest.mark.parametrize("dname", DTYPES)
@pytest.mark.parametrize("axis", [-1, 1])
def test_layer_norm_with_statistics(dname, axis):
    dt = DTYPES[dname]
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((3, 100, 768)) * 4 + 2).astype(dt)
    tail = x.shape[axis % 3 :]
    s, b = rng.standard_normal(tail).astype(dt), rng.standard_normal(tail).astype(dt)
    attrs = {"axis": axis, "epsilon": 1e-5}
    want, _ = _reference("LayerNormalization", attrs, [x, s, b], n_out=3, opset=17)
    stat_shape = want[1].shape
    got = _run("LayerNormalization", attrs, [x, s, b], [(x.shape, dt), (stat_shape, np.float32), (stat_shape, np.float32)], 17)
    _close(got[0], want[0], dt)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got[2], want[2], rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("dname", DTYPES)
def test_rms_norm(dname):
    dt = DTYPES[dname]
    rng = np.random.default_rng(4)
    x = (rng.standard_normal((2, 130, 1024)) * 3).astype(dt)
    s = rng.standard_normal(1024).astype(dt)
    want, _ = _reference("RMSNormalization", {"epsilon": 1e-6}, [x, s], opset=23)
    (got,) = _run("RMSNormalization", {"epsilon": 1e-6}, [x, s], [(x.shape, dt)], 23)
    _close(got, want[0], dt)


def test_gelu_matches_closed_form_in_float32():
    x = np.linspace(-8, 8, 100_003, dtype=np.float32)
    (got,) = _run("Gelu", {}, [x], [(x.shape, np.float32)], 20)
    ref = 0.5 * x.astype(np.float64) * (1 + erf64(x.astype(np.float64) / math.sqrt(2)))
    np.testing.assert_allclose(got, ref, rtol=2e-6, atol=1e-6)


def test_large_transpose_is_tiled_and_exact():
    x = np.arange(1100 * 1000, dtype=np.float32).reshape(1100, 1000)  # >= 1 Mi elements, ragged tiles
    (got,) = _run("Transpose", {"perm": [1, 0]}, [x], [((1000, 1100), np.float32)], 13)
    np.testing.assert_array_equal(got, x.T)
