"""End to end on the nine light CNNs of the onnx wheel (onnx/backend/test/data/light).

Static shapes (nothing bound), opset 9, IR 3. Each model is imported, planned
at 25% of its no-offload peak (``Budget(fraction=0.25)``; where that raises
BudgetError, because one task alone needs more than 25% (alexnet's, vgg19's
and zfnet512's fully connected weights) or the layout cannot fit it, at the
smallest feasible budget, ``Budget(minimum=True)``, which must then plan below
the no-offload peak), verified, written to ``tmp_path`` (the plan names the
model relative to its own folder; the model stays where it is), read back and
run with the NumPy backend.

* ``test_light_expected_output`` (all 9): the output against the
  ``light_*_output_0.pb`` shipped beside the model, input
  ``np.arange(n).reshape(shape) / n``. The weights are all 0.02
  (ConstantOfShape), so a softmax output is 0.001 everywhere whatever the
  network computed: ``atol`` is 1e-4 *relative to the output's largest
  magnitude* (1e-7 for those), ``rtol`` 1e-3, so the check is at least not
  vacuous; densenet121's output is the logits themselves.
* ``test_light_random_weights`` (all 9): every ConstantOfShape weight
  replaced by a seeded random one (tests/lightweights.py; He-normal, O(1)
  activations), the logits (softmax input) added as a graph output, the
  model saved with external data in ``tmp_path``, run in ``random`` order,
  and every output compared with onnxruntime: ``|a-b| <= atol + rtol*|b|``
  with rtol 1e-3 and atol 1e-4 * max(1, max |ref|) (fp32 accumulation order
  differs between NumPy and onnxruntime; the logits are O(0.3 .. 15), the
  observed errors about 1e-6 relative).

Timing (2 cores, ``-n 2``): about 2.5 minutes for the file; densenet121's
minimum-budget bisection (~25 s per plan) and writing vgg19's 550 MB of
random weights dominate.
"""

from __future__ import annotations

import os

import lightweights
import numpy as np
import pytest
from models import fixtures as F
from turnip.check import compare, reference_outputs
from turnip.plan import read_plan, write_plan
from turnip.run import run_plan

from turnipc.errors import BudgetError
from turnipc.importer import import_model
from turnipc.planner import PlanOptions, build_plan
from turnipc.units import Budget
from turnipc.verify import verify_plan

LIGHT = [f.name for f in F.available("light")]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not LIGHT, reason="onnx wheel ships no backend/test/data/light models"),
]


def _plan_and_write(model_path: str, folder: str) -> tuple[str, str]:
    """Import + plan at 25% (else at the minimum budget) + verify + write; returns (plan path, "25%" | "min")."""
    graph = import_model(model_path, None, None)
    try:
        plan = build_plan(graph, PlanOptions(Budget(fraction=0.25), tiling=False), plan_dir=folder)
        how = "25%"
    except BudgetError:
        plan = build_plan(graph, PlanOptions(Budget(minimum=True), tiling=False), plan_dir=folder)
        how = "min"
        assert plan.stats.budget_bytes < plan.stats.no_offload_peak_bytes, "the minimum budget is the no-offload peak"
    verify_plan(plan)
    st = plan.stats
    assert st.peak_bytes <= st.budget_bytes, (st.peak_bytes, st.budget_bytes)
    if how == "25%":
        assert st.budget_bytes == max(1, int(st.no_offload_peak_bytes * 0.25))
    path = os.path.join(folder, "model.plan")
    write_plan(plan, path)
    assert read_plan(path).model_sha256 == plan.model_sha256
    return path, how


def _check(outputs: dict, ref: dict, rtol: float, atol_of) -> None:
    """Every output of ``ref`` within ``atol_of(ref_array) + rtol*|ref|``."""
    assert set(ref) <= set(outputs), (sorted(ref), sorted(outputs))
    for name, b in ref.items():
        atol = atol_of(b)
        (c,) = compare({name: outputs[name]}, {name: b}, atol=atol, rtol=rtol)
        assert c.ok, f"{name}: max |diff| {c.max_abs:.3g} (atol {atol:.3g}), max rel {c.max_rel:.3g}"


@pytest.mark.parametrize("name", LIGHT)
def test_light_expected_output(name: str, tmp_path) -> None:
    fx = F.get(name)
    plan_path, _how = _plan_and_write(fx.path, str(tmp_path))
    feeds = F.make_inputs(fx)
    res = run_plan(plan_path, feeds, backend="numpy", order="dynamic")
    expected = F.expected_outputs(fx)
    (out_name,) = expected
    assert res.outputs[out_name].shape == expected[out_name].shape
    assert res.outputs[out_name].dtype == expected[out_name].dtype
    _check(res.outputs, expected, rtol=1e-3, atol_of=lambda b: 1e-4 * float(np.abs(b).max()))


@pytest.mark.parametrize("name", LIGHT)
def test_light_random_weights(name: str, tmp_path) -> None:
    fx = F.get(name)
    model_dir = tmp_path / "model"
    model = lightweights.randomize_weights(fx.path, str(model_dir / f"{name}.onnx"), seed=0)
    plan_path, _how = _plan_and_write(model, str(tmp_path))
    feeds = F.make_inputs(fx)
    res = run_plan(plan_path, feeds, backend="numpy", order="random", seed=1)
    ref = reference_outputs(model, feeds)
    assert len(ref) == (1 if name == "light_densenet121" else 2)  # output (+ logits)
    for b in ref.values():
        assert float(np.abs(b).std()) > 0 and np.isfinite(b).all()
    _check(res.outputs, ref, rtol=1e-3, atol_of=lambda b: 1e-4 * max(1.0, float(np.abs(b).max())))
