"""ONNX conformance: onnx's own node test cases, planned by turnipc and run by turnip.

onnx >= 1.17 wheels ship no ``backend/test/data/node`` folders, so
``onnx.backend.test.BackendTest`` finds no node tests; the cases are built in
memory by ``onnx.backend.test.case.node.collect_testcases()`` instead, and this
module parametrizes over them directly with the adapter in
``tests/onnx_backend_adapter.py`` (``TurnipBackend``, an
``onnx.backend.base.Backend``).

Which cases: those testing an op type we claim, i.e. one with a native kernel
in ``turnip.kernels.REGISTRY`` (single-node cases, plus the ``*_expanded``
cases where onnx spells a function op out in other ops, counted under the
function op). Each data set is planned with static shapes bound from its
arrays (25% of the no-offload peak, or the minimum feasible budget when 25% is
infeasible, as it is for most one-node graphs), the plan is verified, run with
the NumPy backend (dynamic order), and compared with onnx's expected outputs:
floats ``|a-b| <= atol + rtol*|b|`` with rtol = max(1e-3, case rtol), atol =
max(1e-4, case atol) (bfloat16 outputs: rtol 1.6e-2, two bf16 ulps); other
dtypes exactly.

Inputs in shape-parameter slots (Reshape's shape, Slice's starts, Reduce*'s
axes, TopK's k, Resize's scales, ...; ``SHAPE_PARAM_INPUTS``) are frozen into
initializers holding the case's values: a static plan needs them at plan time.

Skipped by design (``skip_reason``): control flow, sequence/optional/string
values, element types Turnip cannot hold (float8, float4, int4/uint4,
int2/uint2), training-mode Dropout / BatchNormalization.
Besides, ``onnx.backend.test.BackendTest(TurnipBackend)`` runs the model
folders the wheel ships (simple/, pytorch-converted/, pytorch-operator/), with
``BACKEND_TEST_BY_DESIGN`` excluded and ``BACKEND_TEST_KNOWN_FAILURES``
marked as expected failures.

``KNOWN_FAILURES`` (in the adapter module) lists real failures (xfail, non-strict, so a fix shows up
as XPASS). ``python tests/conformance_report.py`` prints the per-op summary and
writes bench/results/conformance.json.
"""

from __future__ import annotations

import onnx_backend_adapter as A
import pytest

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the cases feed inf/nan/log(0)/sqrt(-1) on purpose

KNOWN_FAILURES = A.KNOWN_FAILURES  # real failures: see tests/onnx_backend_adapter.py

_CASES = A.collect_node_cases()
_BY_NAME = {c.name: c for c in _CASES}
_CLAIMED = A.claimed_ops()


def _params() -> list:
    out = []
    for c in _CASES:
        op = A.case_op(c, _BY_NAME)
        if op not in _CLAIMED:
            continue
        marks = []
        why = A.skip_reason(c)
        if why:
            marks.append(pytest.mark.skip(reason=f"by design: {why}"))
        elif c.name in KNOWN_FAILURES:
            marks.append(pytest.mark.xfail(reason=KNOWN_FAILURES[c.name], strict=False))
        out.append(pytest.param(c.name, id=c.name, marks=marks))
    return out


@pytest.mark.parametrize("name", _params())
def test_node_case(name: str) -> None:
    case = _BY_NAME[name]
    problems, info = A.run_node_case(case)
    assert not problems, f"{name} ({A.case_op(case, _BY_NAME)}, frozen {info['frozen']}): " + "; ".join(problems)


# -- onnx.backend.test.BackendTest over the model folders the wheel does ship ---------------------
#
# simple/, pytorch-converted/ and pytorch-operator/ (model.onnx + test_data_set_*; about 140 CPU
# tests, ~1 s). light/ is covered, with planning budgets and random weights, by test_light_models.py;
# real/ needs a download.

#: BackendTest cases Turnip cannot take by design (regex -> reason).
BACKEND_TEST_BY_DESIGN = {
    r"^test_strnorm_model_": "StringNormalizer: string tensors",
    r"^test_sequence_model\d": "sequence values (SequenceConstruct, SplitToSequence, ...)",
    r"^test_gradient_of_": "Gradient (training) op",
    r"^test_expand_shape_model\d": "Expand's shape is a runtime graph input: data-dependent output shape",
}
#: Real failures among them (unittest.expectedFailure, so pytest reports xfail / xpass).
BACKEND_TEST_KNOWN_FAILURES: dict[str, str] = {}


def _backend_test_classes() -> dict:
    import unittest

    import onnx.backend.test

    bt = onnx.backend.test.BackendTest(A.TurnipBackend, __name__)
    bt.exclude(r"_cuda$")
    for pattern in BACKEND_TEST_BY_DESIGN:
        bt.exclude(pattern)
    keep = {}
    for name, cls in bt.test_cases.items():
        if name in ("OnnxBackendSimpleModelTest", "OnnxBackendPyTorchConvertedModelTest", "OnnxBackendPyTorchOperatorModelTest"):
            for meth in BACKEND_TEST_KNOWN_FAILURES:
                if hasattr(cls, meth):
                    setattr(cls, meth, unittest.expectedFailure(getattr(cls, meth)))
            keep[name] = cls
    return keep


globals().update(_backend_test_classes())


def test_claimed_ops_are_covered() -> None:
    """Every claimed op but a few has onnx node cases (a sanity check on the case selection)."""
    ops = {A.case_op(c, _BY_NAME) for c in _CASES} & _CLAIMED
    missing = sorted(_CLAIMED - ops)
    assert len(missing) <= 5, missing  # onnx 1.23: only GlobalLpPool has no node case


def test_backend_api_roundtrip() -> None:
    """TurnipBackend as an onnx.backend.base.Backend: prepare -> run, outputs in ONNX order."""
    import numpy as np
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])
    s = helper.make_tensor_value_info("s", TensorProto.FLOAT, [2, 3])
    d = helper.make_tensor_value_info("d", TensorProto.FLOAT, [2, 3])
    g = helper.make_graph(
        [helper.make_node("Sub", ["x", "y"], ["d"]), helper.make_node("Add", ["x", "y"], ["s"])], "g", [x, y], [s, d]
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    assert A.TurnipBackend.supports_device("CPU")
    rep = A.TurnipBackend.prepare(m, "CPU")
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.ones((2, 3), np.float32)
    out = rep.run([a, b])
    np.testing.assert_array_equal(out[0], a + b)
    np.testing.assert_array_equal(out[1], a - b)
    assert out._fields == ("s", "d")
    rep.close()
