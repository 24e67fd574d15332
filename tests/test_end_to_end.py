"""ONNX model -> turnipc plan -> turnipc verify -> turnip-run, checked against onnxruntime.

Covers the acceptance criteria of the compiler and runtime issues on the
transformer fixtures (GPT-2, LLaMA, BERT; dynamo opsets 18 and 23, legacy
opset 17) and the demo MLP, at 100%, 50%, 25% and the minimum feasible
fraction of each model's no-offload peak.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys

import fixtures
import numpy as np
import pytest
from turnip.check import compare, reference_outputs
from turnip.plan import read_plan, write_plan
from turnip.run import run_plan

from turnipc.importer import import_model
from turnipc.planner import PlanOptions, build_plan
from turnipc.units import Budget
from turnipc.verify import verify_plan

MODEL_FIXTURES = [f.name for f in fixtures.FIXTURES if f.kind in ("hf", "demo") and f.exists()]
BUDGETS = {"100%": Budget(fraction=1.0), "50%": Budget(fraction=0.5), "25%": Budget(fraction=0.25), "min": Budget(minimum=True)}


@functools.lru_cache(maxsize=None)
def _graph(name: str):
    fx = fixtures.get(name)
    return import_model(fx.path, fx.dims, None)


@functools.lru_cache(maxsize=None)
def _reference(name: str):
    fx = fixtures.get(name)
    feeds = fixtures.make_inputs(fx, seed=0)
    return feeds, reference_outputs(fx.path, feeds)


@functools.lru_cache(maxsize=None)
def _plan(name: str, budget: str):
    return build_plan(_graph(name), PlanOptions(BUDGETS[budget]), plan_dir=os.path.dirname(fixtures.get(name).path))


@pytest.mark.parametrize("budget", list(BUDGETS))
@pytest.mark.parametrize("name", MODEL_FIXTURES)
def test_plan_verify_run_check(name, budget, tmp_path):
    plan = _plan(name, budget)
    verify_plan(plan)
    stats = plan.stats
    assert stats.peak_bytes <= stats.budget_bytes
    if budget != "100%":
        assert stats.peak_bytes < stats.no_offload_peak_bytes
        assert stats.reload_bytes > 0
    # the plan names its model relative to its own folder: write it beside the model
    path = os.path.join(os.path.dirname(fixtures.get(name).path), f".test-{name}-{budget.strip('%')}-{os.getpid()}.plan")
    try:
        write_plan(plan, path)
        feeds, ref = _reference(name)
        result = run_plan(path, feeds, backend="numpy", order="dynamic")
    finally:
        if os.path.exists(path):
            os.unlink(path)
    for c in compare(result.outputs, ref, atol=1e-4, rtol=1e-3):
        assert c.ok, f"{name} at {budget}: output {c.name} max abs {c.max_abs:g}, max rel {c.max_rel:g}"


@pytest.mark.parametrize("name", MODEL_FIXTURES)
def test_random_orders_are_bit_identical(name):
    """50 random dependency-respecting orders under the tightest budget give identical bits."""
    plan = _plan(name, "min")
    fx = fixtures.get(name)
    feeds, _ = _reference(name)
    plan_path = os.path.join(os.path.dirname(fx.path), "x.plan")  # where weights are found from
    first = run_plan(plan, feeds, backend="numpy", order="fixed", plan_path=plan_path).outputs
    for seed in range(50):
        out = run_plan(plan, feeds, backend="numpy", order="random", seed=seed, plan_path=plan_path).outputs
        for k in first:
            assert np.array_equal(first[k], out[k], equal_nan=True), f"{name}: random order seed {seed} changed output {k}"


def test_planning_twice_in_two_processes_is_byte_identical(tmp_path):
    fx = fixtures.get("llama_legacy17")
    outs = []
    for i in range(2):
        out = tmp_path / f"p{i}.plan"
        cmd = [sys.executable, "-m", "turnipc.cli", "plan", fx.path, "--gpu-mem", "25%", "-q", "-o", str(out)]
        cmd += [a for k, v in fx.dims.items() for a in ("--dim", f"{k}={v}")]
        env = dict(os.environ, PYTHONHASHSEED=str(i + 1))  # different hash seeds: no set-order dependence
        subprocess.run(cmd, check=True, env=env, capture_output=True)
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]
    assert read_plan(tmp_path / "p0.plan").stats.peak_bytes > 0


def test_gpus_2_plans_moves_and_runs(tmp_path):
    fx = fixtures.get("gpt2_dynamo18")
    plan = build_plan(_graph("gpt2_dynamo18"), PlanOptions(Budget(fraction=0.5), gpus=2), plan_dir=os.path.dirname(fx.path))
    verify_plan(plan)
    assert plan.stats.nodes["move"] > 0
    assert len({n.device for n in plan.nodes if n.kind == "compute"}) == 2
    feeds, ref = _reference("gpt2_dynamo18")
    out = run_plan(plan, feeds, backend="numpy", plan_path=os.path.join(os.path.dirname(fx.path), "x.plan")).outputs
    for c in compare(out, ref, atol=1e-4, rtol=1e-3):
        assert c.ok, c


@pytest.mark.parametrize("name", MODEL_FIXTURES)
def test_cpsat_plans_verify_run_and_never_move_more_than_greedy(name):
    """--solver cpsat: CP-SAT offload schedule + layout (small effort here; `make bench` uses more; at 0.5 it lost to greedy on gpt2_dynamo23 once its lm_head became a derived weight)."""
    fx = fixtures.get(name)
    cp = build_plan(_graph(name), PlanOptions(BUDGETS["25%"], solver="cpsat", effort=1.0), plan_dir=os.path.dirname(fx.path))
    verify_plan(cp)
    # the greedy engine's plan: CP-SAT starts from it and keeps its own only if it moves fewer bytes
    greedy = build_plan(_graph(name), PlanOptions(BUDGETS["25%"], solver="greedy"), plan_dir=os.path.dirname(fx.path))
    moved = lambda p: p.stats.reload_bytes + p.stats.offload_bytes  # noqa: E731
    assert moved(cp) <= moved(greedy)
    assert cp.stats.peak_bytes <= cp.stats.budget_bytes
    feeds, ref = _reference(name)
    out = run_plan(cp, feeds, backend="numpy", plan_path=os.path.join(os.path.dirname(fx.path), "x.plan")).outputs
    for c in compare(out, ref, atol=1e-4, rtol=1e-3):
        assert c.ok, f"{name} (cpsat): output {c.name} max abs {c.max_abs:g}"
