"""Native kernels against the ONNX node conformance cases, and the onnxruntime fallback.

Every single-node case in ``onnx.backend.test.case.node`` whose op has a native
kernel is run through that kernel with NumPy: outputs are preallocated with the
expected shapes and dtypes (as the runtime's plan would), the kernel fills them,
and they are compared with the expected outputs (floats: rtol=1e-3, atol=1e-4;
ints, bools: exact). Cases we deliberately do not run are listed in ``SKIPS``
with the reason.

``IMPLEMENTED`` is the set of natively implemented ops; ``conformance_counts()``
gives pass/skip/fail per op (``python tests/test_kernels.py`` prints them).
"""

from __future__ import annotations

import collections
import fnmatch
import functools
import os
import sys
import warnings

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "runtime"))

from turnip.kernels import REGISTRY, KernelContext, _load_all, attrs_from_onnx  # noqa: E402

_load_all()

#: Ops (default ONNX domain) with a native kernel.
IMPLEMENTED: frozenset[str] = frozenset(op for (dom, op) in REGISTRY if dom == "")

# Conformance cases deliberately not run, by name pattern (fnmatch), with why.
SKIPS: dict[str, str] = {
    # Element types NumPy cannot hold natively, or that the runtime's dtypes do not support.
    "*FLOAT8*": "float8 types are not runtime dtypes",
    "*float8*": "float8 types are not runtime dtypes",
    "*FLOAT4*": "float4 is not a runtime dtype",
    "*float4*": "float4 is not a runtime dtype",
    "*e8m0*": "float8e8m0 is not a runtime dtype",
    "*e4m3*": "float8 types are not runtime dtypes",
    "*e5m2*": "float8 types are not runtime dtypes",
    "*E8M0*": "float8e8m0 is not a runtime dtype",
    "*INT4*": "int4/uint4 are not runtime dtypes",
    "*int4*": "int4/uint4 are not runtime dtypes",
    "*INT2*": "int2/uint2 are not runtime dtypes",
    "*int2*": "int2/uint2 are not runtime dtypes",
    "*STRING*": "string tensors are not runtime dtypes",
    "*string*": "string tensors are not runtime dtypes",
    # Random / training behaviour: the expected outputs come from a seeded NumPy RNG.
    "test_training_dropout": "Dropout in training mode draws a random mask (ratio > 0)",
    "test_training_dropout_mask": "Dropout in training mode draws a random mask (ratio > 0)",
    "test_training_dropout_default": "Dropout in training mode draws a random mask (ratio > 0)",
    "test_training_dropout_default_mask": "Dropout in training mode draws a random mask (ratio > 0)",
    # Non-tensor values.
    "test_identity_sequence": "sequence values have no runtime representation",
    "test_identity_opt": "optional values have no runtime representation",
}

# Cases allowed to fail for a documented reason (run, but marked xfail).
XFAILS: dict[str, str] = {}

_FLOAT_KINDS = "fc"


def _skip_reason(name: str) -> str | None:
    for pat, why in SKIPS.items():
        if fnmatch.fnmatchcase(name, pat):
            return why
    return None


@functools.lru_cache(maxsize=1)
def _cases():
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [c for c in collect_testcases() if len(c.model.graph.node) == 1]


def _native_cases():
    out = []
    for c in _cases():
        node = c.model.graph.node[0]
        dom = "" if node.domain in ("", "ai.onnx") else node.domain
        if (dom, node.op_type) in REGISTRY:
            out.append(c)
    return out


def _opset(model, domain: str) -> int:
    for imp in model.opset_import:
        if (imp.domain or "") in (domain, "ai.onnx" if domain == "" else domain):
            return int(imp.version)
    import onnx

    return onnx.defs.onnx_opset_version()


def _as_array(v):
    """A conformance value as a NumPy array, or None for non-tensors (sequences, optionals, strings)."""
    import onnx
    from onnx import numpy_helper

    if isinstance(v, onnx.TensorProto):
        try:
            v = numpy_helper.to_array(v)
        except Exception:  # noqa: BLE001
            return None
    if isinstance(v, (np.generic, int, float, bool)):
        v = np.asarray(v)
    if isinstance(v, np.ndarray) and v.dtype != object and v.dtype.kind not in "SUO":
        return v
    return None


def run_case(case, xp=np) -> None:
    """Run one conformance case through its native kernel; raise AssertionError on mismatch."""
    model = case.model
    graph = model.graph
    node = graph.node[0]
    dom = "" if node.domain in ("", "ai.onnx") else node.domain
    kernel = REGISTRY[(dom, node.op_type)]
    in_names = [i.name for i in graph.input]
    out_names = [o.name for o in graph.output]
    for inputs, expected in case.data_sets:
        feed = {n: _as_array(v) for n, v in zip(in_names, inputs, strict=False)}
        want = {n: _as_array(v) for n, v in zip(out_names, expected, strict=False)}
        for v in list(feed.values()) + list(want.values()):
            if v is None:
                pytest.skip("non-tensor (sequence/optional/string) value")
        ins = [None if n == "" else xp.asarray(feed[n]) for n in node.input]
        outs = []
        for n in node.output:
            if n == "" or n not in want:
                outs.append(None)
                continue
            e = want[n]
            o = xp.empty(e.shape, dtype=e.dtype)
            if o.dtype.kind == "f":
                o[...] = np.nan  # catch outputs the kernel forgets to write
            outs.append(o)
        while outs and outs[-1] is None:
            outs.pop()
        ctx = KernelContext(xp=xp, attrs=attrs_from_onnx(node), opset=_opset(model, dom), op=node.op_type, name=node.name)
        with np.errstate(all="ignore"):
            kernel(ctx, ins, outs)
        for n, o in zip(node.output, outs, strict=False):
            if o is None:
                continue
            e = want[n]
            got = o.get() if hasattr(o, "get") else np.asarray(o)
            assert got.shape == e.shape, (n, got.shape, e.shape)
            if e.dtype.kind in _FLOAT_KINDS or e.dtype.name == "bfloat16":
                rtol, atol = 1e-3, 1e-4
                if e.dtype.name in ("float16", "bfloat16"):
                    rtol, atol = 1e-2, 1e-2
                np.testing.assert_allclose(
                    got.astype(np.float64), e.astype(np.float64), rtol=rtol, atol=atol, equal_nan=True, err_msg=f"{case.name}:{n}"
                )
            else:
                np.testing.assert_array_equal(got, e, err_msg=f"{case.name}:{n}")


def _params():
    ps = []
    for c in _native_cases():
        marks = []
        why = _skip_reason(c.name)
        if why:
            marks.append(pytest.mark.skip(reason=why))
        elif c.name in XFAILS:
            marks.append(pytest.mark.xfail(reason=XFAILS[c.name], strict=True))
        ps.append(pytest.param(c, id=c.name, marks=marks))
    return ps


@pytest.mark.parametrize("case", _params())
def test_conformance(case):
    run_case(case)


def conformance_counts() -> dict[str, collections.Counter]:
    """op -> Counter(pass=, skip=, fail=) over the single-node conformance cases."""
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for c in _native_cases():
        op = c.model.graph.node[0].op_type
        if _skip_reason(c.name):
            counts[op]["skip"] += 1
            continue
        try:
            run_case(c)
            counts[op]["pass"] += 1
        except pytest.skip.Exception:
            counts[op]["skip"] += 1
        except Exception as e:  # noqa: BLE001
            counts[op]["fail"] += 1
            counts[op].setdefault("errors", [])  # type: ignore[arg-type]
            counts[op]["errors"].append(f"{c.name}: {type(e).__name__}: {str(e)[:300]}")  # type: ignore[index]
    return counts


def test_every_required_op_is_native():
    required = set(
        "Add Mul Sub Div Pow Sqrt Reciprocal Neg Tanh Sigmoid Erf Gelu Cast Where Equal Less LessOrEqual Greater "
        "GreaterOrEqual And IsNaN Cos Sin MatMul Gemm Softmax LayerNormalization RMSNormalization Attention ReduceMean "
        "Transpose Concat Split Slice Gather GatherElements GatherND Expand Range ConstantOfShape Shape Conv MaxPool "
        "AveragePool GlobalAveragePool BatchNormalization LRN Relu Dropout Flatten Reshape Squeeze Unsqueeze Identity Max".split()
    )
    assert required <= IMPLEMENTED, sorted(required - IMPLEMENTED)


if __name__ == "__main__":
    tot = collections.Counter()
    for op, cnt in sorted(conformance_counts().items()):
        errs = cnt.pop("errors", [])
        tot.update(cnt)
        print(f"{op:28s} pass={cnt['pass']:3d} skip={cnt['skip']:3d} fail={cnt['fail']:3d}")
        for e in errs:
            print("    ", e)
    print("TOTAL", dict(tot), "native ops:", len(IMPLEMENTED))


# ---------------------------------------------------------------------------
# Differential tests against onnxruntime (through the fallback kernel): older
# opset variants and float16, which the conformance cases barely cover.

from turnip.fallback import make_fallback_kernel  # noqa: E402

_rng = np.random.default_rng(0)


def _r(*shape, dtype=np.float32):
    return _rng.standard_normal(shape).astype(dtype)


def _i(*vals):
    return np.array(vals, dtype=np.int64)


def _model_with_inferred_outputs(op, domain, opset, attrs, infos, n_out):
    import onnx
    from onnx import helper
    from turnip.fallback import build_model

    m = build_model(op, domain, attrs, {"": opset}, infos, [("float32", None)] * n_out)
    # drop declared output types and let shape inference fill them in
    g = m.graph
    outs = [o.name for o in g.output]
    del g.output[:]
    g.output.extend(helper.make_empty_tensor_value_info(n) for n in outs)
    return onnx.shape_inference.infer_shapes(m, strict_mode=True)


def run_against_ort(op, opset, attrs, inputs, n_out=1, rtol=1e-4, atol=1e-5):
    """Run ``op`` natively and via the onnxruntime fallback; compare every output."""
    import onnxruntime as ort
    from turnip.dtypes import dtype_name_from_onnx

    infos = [None if x is None else (x.dtype.name, list(x.shape)) for x in inputs]
    model = _model_with_inferred_outputs(op, "", opset, attrs, infos, n_out)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    feeds = {f"in{i}": x for i, x in enumerate(inputs) if x is not None}
    want = sess.run(None, feeds)
    out_infos = []
    vi = {v.name: v for v in model.graph.value_info}
    vi.update({v.name: v for v in model.graph.output})
    for k, w in enumerate(want):
        out_infos.append((dtype_name_from_onnx(vi[f"out{k}"].type.tensor_type.elem_type), list(w.shape)))
    # the fallback kernel itself, with real output infos
    fb = make_fallback_kernel(op, "", {"": opset}, infos, out_infos, attrs=attrs)
    ctx = KernelContext(xp=np, attrs=dict(attrs), opset=opset, op=op)
    fb_outs = [np.empty(w.shape, dtype=w.dtype) for w in want]
    fb(ctx, list(inputs), fb_outs)
    for a, b in zip(fb_outs, want, strict=False):
        np.testing.assert_array_equal(a, b)
    # the native kernel
    kernel = REGISTRY[("", op)]
    outs = [np.full(w.shape, np.nan, dtype=w.dtype) if w.dtype.kind == "f" else np.empty(w.shape, w.dtype) for w in want]
    with np.errstate(all="ignore"):
        kernel(ctx, list(inputs), outs)
    for k, (a, b) in enumerate(zip(outs, want, strict=False)):
        if b.dtype.kind == "f":
            tol = (1e-2, 1e-2) if b.dtype == np.float16 else (rtol, atol)
            np.testing.assert_allclose(
                a.astype(np.float64), b.astype(np.float64), rtol=tol[0], atol=tol[1], equal_nan=True, err_msg=f"{op} output {k}"
            )
        else:
            np.testing.assert_array_equal(a, b, err_msg=f"{op} output {k}")


H = np.float16
X3 = _r(2, 3, 5)
IMG = _r(2, 4, 9, 9)

ORT_CASES = {
    # softmax family: opset < 13 flattens to 2-D at axis
    "softmax_op11_axis1": ("Softmax", 11, {"axis": 1}, [X3]),
    "softmax_op11_default": ("Softmax", 11, {}, [X3]),
    "softmax_op13_axis1": ("Softmax", 13, {"axis": 1}, [X3]),
    "softmax_fp16": ("Softmax", 13, {}, [X3.astype(H) * 4]),
    "logsoftmax_op9_axis2": ("LogSoftmax", 9, {"axis": 2}, [X3]),
    "logsoftmax_op11_axis0": ("LogSoftmax", 11, {"axis": 0}, [X3]),
    "hardmax_op11": ("Hardmax", 11, {"axis": 1}, [X3]),
    # Clip: attributes before 11, inputs after
    "clip_op9_attrs": ("Clip", 9, {"min": -0.5, "max": 0.3}, [X3]),
    "clip_op11_min_only": ("Clip", 11, {}, [X3, np.array(-0.2, np.float32)]),
    "clip_op13_max_only": ("Clip", 13, {}, [X3, None, np.array(0.1, np.float32)]),
    "clip_op13_int": ("Clip", 13, {}, [np.arange(-5, 5, dtype=np.int32), np.array(-2, np.int32), np.array(3, np.int32)]),
    # Split: attribute (<13), input (>=13), num_outputs (>=18)
    "split_op11_attr": ("Split", 11, {"axis": 2, "split": [2, 3]}, [X3], 2),
    "split_op13_input": ("Split", 13, {"axis": -1}, [X3, _i(1, 4)], 2),
    "split_op13_equal": ("Split", 13, {"axis": 1}, [X3], 3),
    "split_op18_num_outputs": ("Split", 18, {"axis": 2, "num_outputs": 2}, [X3], 2),
    # Slice: attributes (<10), inputs (>=10), negative steps, clamping
    "slice_op9_attrs": ("Slice", 9, {"starts": [0, 1], "ends": [1, 100], "axes": [0, 2]}, [X3]),
    "slice_op13_negstep": ("Slice", 13, {}, [X3, _i(-1, 10), _i(-100, 0), _i(2, 1), _i(-1, -2)]),
    "slice_op13_noaxes": ("Slice", 13, {}, [X3, _i(1, 0), _i(2, 2)]),
    # Reduce*: axes attribute vs input
    "reducemean_op13_attr": ("ReduceMean", 13, {"axes": [1], "keepdims": 0}, [X3]),
    "reducemean_op18_input": ("ReduceMean", 18, {"keepdims": 1}, [X3, _i(-1)]),
    "reducemean_op18_all": ("ReduceMean", 18, {"keepdims": 0}, [X3]),
    "reducemean_fp16": ("ReduceMean", 18, {}, [_r(4, 300).astype(H), _i(1)]),
    "reducesum_op11_attr": ("ReduceSum", 11, {"axes": [0, 2]}, [X3]),
    "reducesum_op13_input": ("ReduceSum", 13, {"keepdims": 0}, [X3, _i(1)]),
    "reducesum_op13_noop": ("ReduceSum", 13, {"noop_with_empty_axes": 1}, [X3]),
    "reducemax_op13_attr": ("ReduceMax", 13, {"axes": [1]}, [X3]),
    "reducel2_op13": ("ReduceL2", 13, {"axes": [2], "keepdims": 0}, [X3]),
    "reduceprod_op18": ("ReduceProd", 18, {}, [X3, _i(0)]),
    "argmax_op11": ("ArgMax", 11, {"axis": 1, "keepdims": 0}, [X3]),
    "argmin_op13_last": ("ArgMin", 13, {"axis": -1, "select_last_index": 1}, [np.array([[1, 0, 0, 2]], np.float32)]),
    # Squeeze/Unsqueeze attribute (<13) and input (>=13) forms
    "squeeze_op11": ("Squeeze", 11, {"axes": [1]}, [_r(2, 1, 3)]),
    "squeeze_op13": ("Squeeze", 13, {}, [_r(2, 1, 3, 1), _i(-1)]),
    "unsqueeze_op11": ("Unsqueeze", 11, {"axes": [0, 3]}, [_r(2, 3)]),
    "unsqueeze_op13": ("Unsqueeze", 13, {}, [_r(2, 3), _i(1)]),
    "flatten_op9_axis0": ("Flatten", 9, {"axis": 0}, [X3]),
    "flatten_op13_axis2": ("Flatten", 13, {"axis": 2}, [X3]),
    "reshape_op13": ("Reshape", 13, {}, [X3, _i(0, -1)]),
    # Pad: attributes (<11) and inputs (>=11, axes >=18)
    "pad_op9_reflect": ("Pad", 9, {"pads": [0, 1, 2, 0, 1, 1], "mode": "reflect"}, [X3]),
    "pad_op9_constant": ("Pad", 9, {"pads": [0, 0, 1, 0, 0, 2], "value": 1.5}, [X3]),
    "pad_op11_edge": ("Pad", 11, {"mode": "edge"}, [X3, _i(1, 0, 2, 0, 1, 1)]),
    "pad_op13_negative": ("Pad", 13, {}, [X3, _i(0, -1, 1, 0, 0, -2), np.array(0.5, np.float32)]),
    "pad_op18_axes": ("Pad", 18, {}, [X3, _i(1, 2), np.array(0.0, np.float32), _i(2)]),
    "topk_op9_attr": ("TopK", 9, {"k": 2, "axis": 1}, [X3], 2),
    "topk_op11_smallest": ("TopK", 11, {"largest": 0}, [X3, _i(3)], 2),
    "dropout_op9": ("Dropout", 9, {"ratio": 0.3}, [X3]),
    "dropout_op13_mask": ("Dropout", 13, {}, [X3], 2),
    # elementwise in float16 and with broadcasting
    "gelu_fp16": ("Gelu", 20, {}, [_r(3, 7).astype(H)]),
    "gelu_tanh": ("Gelu", 20, {"approximate": "tanh"}, [_r(3, 7)]),
    "erf_wide": ("Erf", 13, {}, [np.linspace(-5, 5, 1001, dtype=np.float32)]),
    "sigmoid_extreme": ("Sigmoid", 13, {}, [np.array([-100, -20, 0, 20, 100], np.float32)]),
    "pow_fp_int": ("Pow", 15, {}, [X3, np.array(2, np.int64)]),
    "div_int": ("Div", 14, {}, [np.array([-7, 7, -7, 7], np.int32), np.array([2, 2, -2, -2], np.int32)]),
    "add_bcast_fp16": ("Add", 14, {}, [_r(2, 1, 5).astype(H), _r(3, 1).astype(H)]),
    "where_bcast": ("Where", 16, {}, [_r(3, 1) > 0, _r(1, 4), _r(3, 4)]),
    "cast_f32_f16": ("Cast", 19, {"to": 10}, [X3 * 1000]),
    "cast_f32_i32": ("Cast", 13, {"to": 6}, [X3 * 10]),
    "leakyrelu_fp16": ("LeakyRelu", 16, {"alpha": 0.1}, [_r(5, 5).astype(H)]),
    "prelu_bcast": ("PRelu", 16, {}, [_r(2, 3, 4), _r(3, 1)]),
    "sum_variadic": ("Sum", 13, {}, [_r(3, 1), _r(1, 4), _r(3, 4)]),
    "mean_variadic": ("Mean", 13, {}, [_r(3, 1), _r(1, 4)]),
    "max_int": ("Max", 13, {}, [np.arange(6, dtype=np.int64), np.array([3], np.int64)]),
    # MatMul / Gemm
    "matmul_batched_bcast": ("MatMul", 13, {}, [_r(2, 1, 4, 5), _r(3, 5, 6)]),
    "matmul_1d": ("MatMul", 13, {}, [_r(5), _r(2, 5, 3)]),
    "matmul_fp16": ("MatMul", 13, {}, [_r(4, 64).astype(H), _r(64, 8).astype(H)]),
    "gemm_op11_noc": ("Gemm", 11, {"transA": 1, "alpha": 0.5}, [_r(5, 3), _r(5, 4)]),
    "gemm_op13_bias": ("Gemm", 13, {"transB": 1, "beta": 2.0}, [_r(3, 5), _r(4, 5), _r(4)]),
    "gemm_op9_cmatrix": ("Gemm", 9, {}, [_r(3, 5), _r(5, 4), _r(3, 4)]),
    # Conv and pooling
    "conv_pads_strides": ("Conv", 11, {"pads": [1, 0, 2, 1], "strides": [2, 1]}, [IMG, _r(6, 4, 3, 3), _r(6)]),
    "conv_group_dilation": ("Conv", 11, {"group": 2, "dilations": [2, 2], "pads": [2, 2, 2, 2]}, [IMG, _r(6, 2, 3, 3)]),
    "conv_depthwise": ("Conv", 11, {"group": 4, "pads": [1, 1, 1, 1]}, [IMG, _r(4, 1, 3, 3), _r(4)]),
    "conv_depthwise_mult2": ("Conv", 11, {"group": 4, "strides": [2, 2]}, [IMG, _r(8, 1, 3, 3)]),
    "conv_same_upper": ("Conv", 11, {"auto_pad": "SAME_UPPER", "strides": [2, 2]}, [IMG, _r(3, 4, 4, 4)]),
    "conv_same_lower": ("Conv", 11, {"auto_pad": "SAME_LOWER", "strides": [2, 2]}, [IMG, _r(3, 4, 4, 4)]),
    "conv_valid": ("Conv", 11, {"auto_pad": "VALID"}, [IMG, _r(3, 4, 2, 3)]),
    "conv_1d": ("Conv", 11, {"pads": [1, 1]}, [_r(2, 3, 10), _r(5, 3, 3)]),
    "conv_3d": ("Conv", 11, {"strides": [1, 2, 1]}, [_r(1, 2, 5, 6, 4), _r(3, 2, 2, 3, 2)]),
    "conv_1x1": ("Conv", 11, {}, [IMG, _r(5, 4, 1, 1)]),
    "conv_fp16": ("Conv", 11, {"pads": [1, 1, 1, 1]}, [IMG.astype(H), _r(3, 4, 3, 3).astype(H)]),
    "convtranspose_strides": ("ConvTranspose", 11, {"strides": [2, 2], "pads": [1, 0, 1, 1]}, [_r(1, 3, 4, 5), _r(3, 2, 3, 3)]),
    "convtranspose_group_outpad": (
        "ConvTranspose",
        11,
        {"group": 3, "strides": [2, 2], "output_padding": [1, 1]},
        [_r(1, 3, 4, 4), _r(3, 1, 3, 3)],
    ),
    "maxpool_ceil_dil": ("MaxPool", 12, {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1, "dilations": [1, 2]}, [IMG]),
    "maxpool_pads_indices": ("MaxPool", 12, {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}, [IMG], 2),
    "maxpool_same_upper": ("MaxPool", 11, {"kernel_shape": [2, 2], "strides": [2, 2], "auto_pad": "SAME_UPPER"}, [IMG]),
    "maxpool_op10_1d": ("MaxPool", 10, {"kernel_shape": [3], "strides": [2]}, [_r(2, 3, 11)]),
    "avgpool_include_pad_ceil": (
        "AveragePool",
        11,
        {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "count_include_pad": 1, "ceil_mode": 1},
        [IMG],
    ),
    "avgpool_exclude_pad_ceil": (
        "AveragePool",
        11,
        {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": 1},
        [IMG],
    ),
    "avgpool_op10": ("AveragePool", 10, {"kernel_shape": [2, 2], "strides": [2, 2]}, [IMG]),
    "avgpool_same_lower": ("AveragePool", 11, {"kernel_shape": [3, 3], "auto_pad": "SAME_LOWER"}, [IMG]),
    "avgpool_op19_dilations": ("AveragePool", 19, {"kernel_shape": [2, 2], "dilations": [2, 2]}, [IMG]),
    "avgpool_fp16": ("AveragePool", 11, {"kernel_shape": [3, 3]}, [IMG.astype(H)]),
    "globalavgpool_fp16": ("GlobalAveragePool", 13, {}, [IMG.astype(H)]),
    "globalmaxpool": ("GlobalMaxPool", 13, {}, [IMG]),
    "batchnorm_op9": ("BatchNormalization", 9, {"epsilon": 1e-3}, [IMG, _r(4), _r(4), _r(4), np.abs(_r(4)) + 0.5]),
    "batchnorm_op15_fp16": (
        "BatchNormalization",
        15,
        {},
        [IMG.astype(H), _r(4).astype(H), _r(4).astype(H), _r(4).astype(H), (np.abs(_r(4)) + 0.5).astype(H)],
    ),
    "lrn": ("LRN", 13, {"size": 5, "alpha": 1e-3, "beta": 0.75, "bias": 2.0}, [IMG]),
    "lrn_size3_fp16": ("LRN", 13, {"size": 3}, [IMG.astype(H)]),
    "instancenorm": ("InstanceNormalization", 13, {}, [IMG, _r(4), _r(4)]),
    # normalizations
    "layernorm_outputs": ("LayerNormalization", 17, {"axis": -1, "epsilon": 1e-5}, [X3, _r(5), _r(5)], 3),
    "layernorm_axis1_nobias": ("LayerNormalization", 17, {"axis": 1}, [X3, _r(3, 5)]),
    "layernorm_fp16": ("LayerNormalization", 17, {}, [(X3 * 10 + 3).astype(H), _r(5).astype(H), _r(5).astype(H)]),
    "rmsnorm_fp16": ("RMSNormalization", 23, {}, [(X3 * 10).astype(H), _r(5).astype(H)]),
    "rmsnorm_axis": ("RMSNormalization", 23, {"axis": 1, "epsilon": 1e-6}, [X3, _r(3, 5)]),
    # data movement
    "gather_negative": ("Gather", 13, {"axis": 1}, [X3, _i(-1, 0, 2)]),
    "gather_scalar": ("Gather", 13, {"axis": 2}, [X3, np.array(-2, np.int64)]),
    "gather_2d_idx": ("Gather", 13, {}, [_r(10, 4), np.array([[1, 2], [-1, 0]], np.int64)]),
    "gatherelements_neg": ("GatherElements", 13, {"axis": 1}, [X3, np.array([[[0, -1, 2, 1, 0]]] * 2, np.int64)]),
    "gathernd_batch": ("GatherND", 13, {"batch_dims": 1}, [X3, np.array([[[1], [0]], [[2], [2]]], np.int64)]),
    "gathernd_full": ("GatherND", 13, {}, [X3, np.array([[1, 2, 3], [0, 0, -1]], np.int64)]),
    "expand_bcast": ("Expand", 13, {}, [_r(3, 1), _i(2, 1, 4)]),
    "tile": ("Tile", 13, {}, [_r(2, 3), _i(2, 2)]),
    "range_float": ("Range", 11, {}, [np.array(0.5, np.float32), np.array(4.0, np.float32), np.array(0.7, np.float32)]),
    "range_int_neg": ("Range", 11, {}, [np.array(10, np.int64), np.array(-3, np.int64), np.array(-4, np.int64)]),
    "constantofshape_int": ("ConstantOfShape", 9, {"value": np.array([7], np.int64)}, [_i(2, 3)]),
    "constantofshape_default": ("ConstantOfShape", 9, {}, [_i(4)]),
    "shape_op15_slice": ("Shape", 15, {"start": 1, "end": -1}, [_r(2, 3, 4, 5)]),
    "shape_op13": ("Shape", 13, {}, [X3]),
    "size": ("Size", 13, {}, [X3]),
    "transpose_default": ("Transpose", 13, {}, [X3]),
    "transpose_perm": ("Transpose", 13, {"perm": [1, 0, 2]}, [X3]),
    "concat_neg_axis": ("Concat", 13, {"axis": -1}, [X3, _r(2, 3, 2)]),
    "trilu_lower_k": ("Trilu", 14, {"upper": 0}, [_r(2, 4, 5), np.array(-1, np.int64)]),
    "cumsum_excl_rev": ("CumSum", 14, {"exclusive": 1, "reverse": 1}, [X3, np.array(1, np.int64)]),
    "scatternd_add": ("ScatterND", 16, {"reduction": "add"}, [X3, np.array([[0, 1], [0, 1], [1, 2]], np.int64), _r(3, 5)]),
    "scatterelements_max": (
        "ScatterElements",
        18,
        {"axis": 1, "reduction": "max"},
        [_r(3, 4), np.array([[1, 1], [0, 3], [2, 2]], np.int64), _r(3, 2)],
    ),
    "onehot_axis0": (
        "OneHot",
        11,
        {"axis": 0},
        [np.array([0, 2, -1, 5], np.int64), np.array(4, np.int64), np.array([0.0, 3.0], np.float32)],
    ),
    "einsum_bmm": ("Einsum", 12, {"equation": "bij,bjk->bik"}, [_r(2, 3, 4), _r(2, 4, 5)]),
    "einsum_trace": ("Einsum", 12, {"equation": "ii->"}, [_r(4, 4)]),
    "depthtospace_crd": ("DepthToSpace", 13, {"blocksize": 2, "mode": "CRD"}, [_r(1, 8, 2, 3)]),
    # Resize / Upsample variants
    "resize_op10_nearest": ("Resize", 10, {"mode": "nearest"}, [_r(1, 2, 4, 5), np.array([1, 1, 3, 2.5], np.float32)]),
    "resize_op10_linear_down": ("Resize", 10, {"mode": "linear"}, [_r(1, 2, 4, 5), np.array([1, 1, 0.5, 0.6], np.float32)]),
    "resize_op11_linear_halfpixel": (
        "Resize",
        11,
        {"mode": "linear"},
        [_r(1, 2, 4, 5), np.zeros(0, np.float32), np.array([1, 1, 2, 2], np.float32)],
    ),
    "resize_op13_nearest_sizes": ("Resize", 13, {"mode": "nearest"}, [_r(1, 2, 4, 5), None, None, _i(1, 2, 9, 3)]),
    "resize_op13_cubic_align": (
        "Resize",
        13,
        {"mode": "cubic", "coordinate_transformation_mode": "align_corners"},
        [_r(1, 2, 4, 5), None, np.array([1, 1, 1.5, 2], np.float32)],
    ),
    "resize_op19_linear_antialias": (
        "Resize",
        19,
        {"mode": "linear", "antialias": 1},
        [_r(1, 2, 8, 9), None, np.array([1, 1, 0.5, 0.4], np.float32)],
    ),
    "resize_fp16_nearest": (
        "Resize",
        13,
        {"mode": "nearest", "nearest_mode": "floor", "coordinate_transformation_mode": "asymmetric"},
        [_r(1, 2, 4, 5).astype(H), None, np.array([1, 1, 2, 2], np.float32)],
    ),
    "upsample_op9_linear": ("Upsample", 9, {"mode": "linear"}, [_r(1, 2, 4, 5), np.array([1, 1, 2, 3], np.float32)]),
    # Attention (opset 23)
    "attention_4d_basic": ("Attention", 23, {}, [_r(2, 3, 4, 8), _r(2, 3, 6, 8), _r(2, 3, 6, 8)]),
    "attention_3d_gqa": ("Attention", 23, {"q_num_heads": 4, "kv_num_heads": 2}, [_r(2, 5, 32), _r(2, 7, 16), _r(2, 7, 16)]),
    "attention_causal": ("Attention", 23, {"is_causal": 1}, [_r(1, 2, 5, 8), _r(1, 2, 5, 8), _r(1, 2, 5, 8)]),
    "attention_bool_mask": ("Attention", 23, {}, [_r(2, 2, 3, 8), _r(2, 2, 4, 8), _r(2, 2, 4, 8), _r(2, 1, 3, 4) > -0.5]),
    "attention_float_mask_scale": ("Attention", 23, {"scale": 0.3}, [_r(2, 2, 3, 8), _r(2, 2, 4, 8), _r(2, 2, 4, 8), _r(3, 4)]),
    "attention_past_causal": (
        "Attention",
        23,
        {"is_causal": 1},
        [_r(1, 2, 3, 8), _r(1, 2, 3, 8), _r(1, 2, 3, 8), None, _r(1, 2, 4, 8), _r(1, 2, 4, 8)],
        3,
    ),
    "attention_past_mask": (
        "Attention",
        23,
        {},
        [_r(1, 2, 1, 8), _r(1, 2, 1, 8), _r(1, 2, 1, 8), _r(1, 1, 1, 5), _r(1, 2, 4, 8), _r(1, 2, 4, 8)],
        3,
    ),
    "attention_softcap": ("Attention", 23, {"softcap": 2.0}, [_r(1, 2, 3, 8) * 3, _r(1, 2, 3, 8) * 3, _r(1, 2, 3, 8)]),
    "attention_fp16": (
        "Attention",
        23,
        {"is_causal": 1},
        [_r(1, 4, 6, 16).astype(H), _r(1, 4, 6, 16).astype(H), _r(1, 4, 6, 16).astype(H)],
    ),
}


@pytest.mark.parametrize("name", sorted(ORT_CASES))
def test_against_onnxruntime(name):
    op, opset, attrs, inputs, *rest = ORT_CASES[name]
    run_against_ort(op, opset, attrs, inputs, n_out=rest[0] if rest else 1)


def test_fallback_runs_op_without_native_kernel():
    from turnip.fallback import OrtFallback

    assert ("", "Det") not in REGISTRY
    x = _r(3, 4, 4)
    fb = make_fallback_kernel("Det", "", {"": 17}, [("float32", [3, 4, 4])], [("float32", [3])])
    assert isinstance(fb, OrtFallback)
    ctx = KernelContext(xp=np, attrs={}, opset=17, op="Det")
    out = np.empty(3, np.float32)
    fb(ctx, [x], [out])
    np.testing.assert_allclose(out, np.linalg.det(x), rtol=1e-4, atol=1e-5)
    sess = fb.session()
    out2 = np.empty(3, np.float32)
    fb(ctx, [x * 2], [out2])
    assert fb.session() is sess  # built once per node, reused across runs
    np.testing.assert_allclose(out2, np.linalg.det(x * 2), rtol=1e-4, atol=1e-4)


def test_fallback_tensor_attribute_and_omitted_inputs():
    # tensor attribute (ConstantOfShape.value), attrs taken from ctx on first call
    fb = make_fallback_kernel("ConstantOfShape", "", {"": 21}, [("int64", [2])], [("int32", [2, 3])])
    ctx = KernelContext(xp=np, attrs={"value": np.array([5], np.int32)}, opset=21, op="ConstantOfShape")
    out = np.zeros((2, 3), np.int32)
    fb(ctx, [_i(2, 3)], [out])
    assert (out == 5).all()
    # an omitted optional input in the middle (Clip with max only)
    fb = make_fallback_kernel("Clip", "", {"": 13}, [("float32", [4]), None, ("float32", [])], [("float32", [4])])
    out = np.empty(4, np.float32)
    fb(KernelContext(xp=np, attrs={}, opset=13), [np.array([-2, 0, 1, 3], np.float32), None, np.array(1.0, np.float32)], [out])
    np.testing.assert_array_equal(out, [-2, 0, 1, 1])
    # an empty-list attribute and an op with no native kernel in an older opset
    fb = make_fallback_kernel("ReduceLogSumExp", "", {"": 13}, [("float32", [2, 3])], [("float32", [1, 1])])
    out = np.empty((1, 1), np.float32)
    x = _r(2, 3)
    fb(KernelContext(xp=np, attrs={"keepdims": 1}, opset=13), [x], [out])
    np.testing.assert_allclose(out, np.log(np.exp(x).sum(keepdims=True)), rtol=1e-5)


def test_optional_outputs_may_be_omitted_or_none():
    from turnip.kernels import get_kernel

    assert get_kernel("Relu", "ai.onnx") is get_kernel("Relu", "")
    ctx = KernelContext(xp=np, attrs={}, opset=17, op="LayerNormalization")
    x, s, b = _r(2, 5), _r(5), _r(5)
    y1 = np.empty((2, 5), np.float32)
    get_kernel("LayerNormalization")(ctx, [x, s, b], [y1])  # Mean/InvStdDev omitted
    y2, inv = np.empty((2, 5), np.float32), np.empty((2, 1), np.float32)
    get_kernel("LayerNormalization")(ctx, [x, s, b], [y2, None, inv])  # Mean skipped in the middle
    np.testing.assert_array_equal(y1, y2)
    np.testing.assert_allclose(inv[:, 0], 1 / np.sqrt(x.var(axis=1) + 1e-5), rtol=1e-5)
    # Attention: present_key/value skipped, qk_matmul_output wanted
    q = _r(1, 2, 3, 4)
    y, qk = np.empty((1, 2, 3, 4), np.float32), np.empty((1, 2, 3, 3), np.float32)
    get_kernel("Attention")(KernelContext(xp=np, attrs={"qk_matmul_output_mode": 3}, opset=23), [q, q, q], [y, None, None, qk])
    np.testing.assert_allclose(qk.sum(-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(y, qk @ q, rtol=1e-5, atol=1e-6)


def test_global_lp_pool():
    from turnip.kernels import get_kernel

    x = _r(2, 3, 4, 5)
    y = np.empty((2, 3, 1, 1), np.float32)
    get_kernel("GlobalLpPool")(KernelContext(xp=np, attrs={"p": 3}, opset=2), [x], [y])
    np.testing.assert_allclose(y, (np.abs(x) ** 3).sum(axis=(2, 3), keepdims=True) ** (1 / 3), rtol=1e-5)
