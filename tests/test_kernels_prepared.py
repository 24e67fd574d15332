"""Prepared kernel calls (turnip.kernels.prepared) give exactly what the registered kernels give, on fixed views."""

from __future__ import annotations

import numpy as np
import pytest
from turnip.kernels import KernelContext, get_kernel, prepare_call

rng = np.random.default_rng(0)
F = np.float32


def _x(*shape):
    return rng.standard_normal(shape).astype(F)


CASES = {
    "add_broadcast": ("Add", 17, {}, [_x(2, 3, 4), _x(4)], [None], [(2, 3, 4), F]),
    "div": ("Div", 17, {}, [_x(3, 4), _x(3, 4) + 3], [None, None], [(3, 4), F]),
    "less": ("Less", 17, {}, [_x(3, 4), _x(3, 4)], [None, None], [(3, 4), bool]),
    "isnan": ("IsNaN", 17, {}, [_x(5)], [None], [(5,), bool]),
    "reciprocal": ("Reciprocal", 17, {}, [_x(5) + 4], [None], [(5,), F]),
    "relu": ("Relu", 17, {}, [_x(6)], [None], [(6,), F]),
    "transpose": ("Transpose", 17, {"perm": [0, 2, 1]}, [_x(2, 3, 4)], [None], [(2, 4, 3), F]),
    "reshape": ("Reshape", 17, {}, [_x(2, 6), np.array([3, 4])], [None, np.array([3, 4])], [(3, 4), F]),
    "slice": ("Slice", 17, {}, [_x(4, 6), np.array([1]), np.array([-1]), np.array([1]), np.array([2])],
              [None, np.array([1]), np.array([-1]), np.array([1]), np.array([2])], [(4, 2), F]),
    "expand": ("Expand", 17, {}, [_x(1, 4), np.array([3, 4])], [None, np.array([3, 4])], [(3, 4), F]),
    "concat": ("Concat", 17, {"axis": 1}, [_x(2, 3), _x(2, 0), _x(2, 2)], [None, None, None], [(2, 5), F]),
    "matmul_batched": ("MatMul", 17, {}, [_x(2, 3, 4), _x(4, 5)], [None, None], [(2, 3, 5), F]),
    "reducemean_axes_input": ("ReduceMean", 18, {"keepdims": 1}, [_x(2, 3, 8), np.array([-1])], [None, np.array([-1])], [(2, 3, 1), F]),
    "reducesum_attr_nokeep": ("ReduceSum", 11, {"axes": [0, 2], "keepdims": 0}, [_x(2, 3, 8)], [None], [(3,), F]),
    # parameters read from their views at run time (initializers in the arena, not plan constants)
    "slice_runtime_params": ("Slice", 17, {}, [_x(4, 6), np.array([1]), np.array([-1]), np.array([1]), np.array([2])],
                             [None] * 5, [(4, 2), F]),
    "reducemean_runtime_axes": ("ReduceMean", 18, {"keepdims": 1}, [_x(2, 3, 8), np.array([-1])], [None, None], [(2, 3, 1), F]),
    "pow_square": ("Pow", 17, {}, [_x(3, 4), np.array(2, F)], [None, None], [(3, 4), F]),
    "pow_cube": ("Pow", 17, {}, [_x(3, 4), np.array([3], F)], [None, None], [(3, 4), F]),
    "gemm_bias": ("Gemm", 13, {}, [_x(5, 3), _x(3, 4), _x(4)], [None] * 3, [(5, 4), F]),
    "gemm_trans_alpha": ("Gemm", 13, {"transA": 1, "transB": 1, "alpha": 0.5}, [_x(3, 5), _x(4, 3), _x(5, 4)], [None] * 3, [(5, 4), F]),
    "softmax_last": ("Softmax", 13, {}, [_x(2, 3, 8)], [None], [(2, 3, 8), F]),
    "softmax_opset11_flattened": ("Softmax", 11, {"axis": 1}, [_x(2, 3, 8)], [None], [(2, 3, 8), F]),
    "sigmoid_wide_range": ("Sigmoid", 13, {}, [_x(4, 8) * 60], [None], [(4, 8), F]),
    "layer_norm": ("LayerNormalization", 17, {"epsilon": 1e-5}, [_x(2, 3, 8), _x(8), _x(8)], [None] * 3, [(2, 3, 8), F]),
    "layer_norm_two_axes_no_bias": ("LayerNormalization", 17, {"axis": 1}, [_x(2, 3, 8), _x(3, 8)], [None] * 2, [(2, 3, 8), F]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_prepared_call_matches_the_kernel(case):
    op, opset, attrs, inputs, consts, (shape, dtype) = CASES[case]
    ctx = KernelContext(xp=np, attrs=attrs, opset=opset, op=op)
    want = np.zeros(shape, dtype)
    get_kernel(op)(KernelContext(xp=np, attrs=attrs, opset=opset, op=op), inputs, [want])
    got = np.zeros(shape, dtype)
    call = prepare_call(ctx, "", inputs, [got], consts)
    assert call is not None, f"{op} was not prepared"
    call()
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    for a in inputs:  # the call reads its views when it runs, not when it was prepared
        if a.dtype == F:
            a += 1
    get_kernel(op)(KernelContext(xp=np, attrs=attrs, opset=opset, op=op), inputs, [want])
    call()
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_runtime_parameters_are_read_each_run():
    """A Slice whose bounds are views (weights) follows a change of their values between runs."""
    x, out = _x(4, 6), np.zeros((4, 2), F)
    starts, ends = np.array([1]), np.array([-1])
    ctx = KernelContext(xp=np, attrs={}, opset=17, op="Slice")
    call = prepare_call(ctx, "", [x, starts, ends, np.array([1]), np.array([2])], [out], [None] * 5)
    assert call is not None
    call()
    np.testing.assert_array_equal(out, x[:, 1:-1:2])
    starts[0], ends[0] = 0, 4
    call()
    np.testing.assert_array_equal(out, x[:, 0:4:2])


def test_mixed_dtypes_keep_the_general_kernel():
    add = KernelContext(xp=np, attrs={}, opset=17, op="Add")
    assert prepare_call(add, "", [_x(3), np.ones(3, np.float64)], [np.zeros(3, F)], [None, None]) is None
    div = KernelContext(xp=np, attrs={}, opset=17, op="Div")
    ints = np.array([7, -7])
    assert prepare_call(div, "", [ints, np.array([2, 2])], [np.zeros(2, np.int64)], [None, None]) is None
