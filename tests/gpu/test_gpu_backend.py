"""The CuPy backend on a real NVIDIA GPU (skipped without CuPy or CUDA).

    PYTHONPATH=runtime:. python -m pytest tests/gpu -m gpu -q

Runs the pre-made plans of tests/gpu/plans/ (made on a CPU machine by
make_device_plans.py: the GPU host needs no OR-Tools, and nothing here
imports turnipc) and checks them against onnxruntime (CPU), random orders
for bit-identical results, the strict no-allocation rule on a simple MLP,
the pinned host region, every copy kind and the onnxruntime fallback.
"""

from __future__ import annotations

import json
import os
import warnings

import numpy as np
import pytest

cupy = pytest.importorskip("cupy")

from turnip.backends import cupy_available, get_backend  # noqa: E402
from turnip.check import compare, reference_outputs  # noqa: E402
from turnip.plan import read_plan, resolve_model_path  # noqa: E402
from turnip.run import random_feeds, run_plan  # noqa: E402

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not cupy_available(), reason="needs CuPy and a CUDA GPU")]

HERE = os.path.dirname(os.path.abspath(__file__))
PLANS = os.path.join(HERE, "plans")


def _manifest() -> list[dict]:
    path = os.path.join(PLANS, "manifest.json")
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        return json.load(f)["plans"]


def _gpus() -> int:
    try:
        return int(cupy.cuda.runtime.getDeviceCount())
    except Exception:  # noqa: BLE001
        return 0


FIXTURE_PLANS = [e["plan"] for e in _manifest() if e["kind"] == "fixture"]


def _backend(**kw):
    from turnip.backends.cupy_backend import CupyBackend

    return CupyBackend(**kw)


def _run(path: str, feeds=None, **kw):
    plan = read_plan(path)
    if plan.num_devices > _gpus():
        pytest.skip(f"plan needs {plan.num_devices} GPUs, this host has {_gpus()}")
    feeds = random_feeds(plan, 0) if feeds is None else feeds
    opts = {k: kw.pop(k) for k in ("strict_memory", "async_release", "no_pin") if k in kw}
    be = _backend(**opts)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # outside-plan memory is reported, checked where it matters
        res = run_plan(path, feeds, backend=be, **kw)
    return plan, feeds, res, be


def test_auto_picks_cupy():
    assert get_backend("auto").name == "cupy"


@pytest.mark.parametrize("rel", FIXTURE_PLANS)
def test_fixture_plan_matches_onnxruntime(rel):
    path = os.path.join(PLANS, rel)
    plan, feeds, res, be = _run(path)
    ref = reference_outputs(resolve_model_path(plan, path), feeds)
    for c in compare(res.outputs, ref, atol=1e-4, rtol=1e-3):
        assert c.ok, f"{rel}: {c.name} max abs {c.max_abs:g}, max rel {c.max_rel:g}"
    assert res.stats.backend == "cupy"
    assert be.report["host_pinned"] is True or be.report["host_bytes"] == 0


@pytest.mark.parametrize("rel", ["gpt2_dynamo18-25.plan", "llama_dynamo23-25.plan", "bert_dynamo18-25.plan", "llama_legacy17-25.plan"])
def test_random_orders_are_bit_identical(rel):
    path = os.path.join(PLANS, rel)
    if not os.path.isfile(path):
        pytest.skip(f"{rel} not made (run tests/gpu/make_device_plans.py)")
    plan, feeds, first, _ = _run(path, order="fixed")
    for seed in range(5):
        _, _, res, _ = _run(path, feeds, order="random", seed=seed)
        for k, v in first.outputs.items():
            assert np.array_equal(res.outputs[k], v), f"{rel}: random order seed {seed} differs on {k}"
    _, _, res, _ = _run(path, feeds, order="random", seed=99, async_release=True)
    for k, v in first.outputs.items():
        assert np.array_equal(res.outputs[k], v), f"{rel}: async_release differs on {k}"


def test_strict_memory_simple_mlp_does_not_allocate():
    """demo_mlp (MatMul + Add + Relu): every kernel writes into its planned view; the pool must not grow."""
    path = os.path.join(PLANS, "demo_mlp-25.plan")
    plan, feeds, res, be = _run(path, strict_memory=True, repeat=2)
    assert be.report["outside_plan_nodes"] == 0, be.report["outside_plan_first"]
    assert all(v == 0 for v in be.report["pool_growth_bytes"].values()), be.report["pool_growth_bytes"]
    ref = reference_outputs(resolve_model_path(plan, path), feeds)
    assert all(c.ok for c in compare(res.outputs, ref, atol=1e-4, rtol=1e-3))


def test_outside_plan_memory_is_reported_not_fatal():
    path = os.path.join(PLANS, "gpt2_dynamo18-25.plan")
    _, _, _, be = _run(path)
    r = be.report
    assert {"outside_plan_nodes", "outside_plan_first", "pool_growth_bytes", "device_free_drop_bytes"} <= set(r)
    if r["outside_plan_nodes"]:
        assert r["outside_plan_first"]["bytes"] > 0


def test_pinned_host_region():
    path = os.path.join(PLANS, "demo_mlp-25.plan")
    plan = read_plan(path)
    be = _backend()
    be.allocate_all(plan)
    try:
        host = plan.host_memory()
        assert host is not None and host.size > 0
        buf = be.memories.buffers[host.id]
        assert isinstance(buf, np.ndarray) and buf.nbytes == host.size
        attrs = cupy.cuda.runtime.pointerGetAttributes(int(buf.__array_interface__["data"][0]))
        assert attrs.type == cupy.cuda.runtime.memoryTypeHost
        gpu = plan.gpu_memories()[0]
        assert isinstance(be.memories.buffers[gpu.id], cupy.ndarray) and be.memories.buffers[gpu.id].nbytes == gpu.size
    finally:
        be.free()
    _, _, res, be = _run(path)
    assert be.report["host_pinned"] is True and be.report["host_bytes"] == host.size


def test_no_pin_is_pageable_and_correct():
    path = os.path.join(PLANS, "demo_mlp-25.plan")
    plan, feeds, res, be = _run(path, no_pin=True)
    assert be.report["host_pinned"] is False
    ref = reference_outputs(resolve_model_path(plan, path), feeds)
    assert all(c.ok for c in compare(res.outputs, ref, atol=1e-4, rtol=1e-3))


@pytest.mark.parametrize("async_release", [False, True])
def test_every_copy_kind_bit_identical_to_numpy(tmp_path, async_release):
    """reload, offload (and move with 2 GPUs) on a hand-built plan: the NumPy backend's exact bytes, in every order."""
    from test_executor import feeds_for, make_chain_plan

    devices = 2 if _gpus() >= 2 else 1
    plan_path, _ = make_chain_plan(tmp_path, devices=devices)
    feeds = feeds_for(4)
    ref = run_plan(plan_path, feeds, backend="numpy").outputs
    for order, seed in (("fixed", 0), ("dynamic", 0), ("random", 1), ("random", 2), ("random", 3)):
        res = run_plan(plan_path, feeds, backend=_backend(async_release=async_release), order=order, seed=seed)
        assert np.array_equal(res.outputs["y"], ref["y"]), (order, seed)


def test_fallback_op_runs_and_is_reported(tmp_path):
    from test_executor import feeds_for, make_chain_plan
    from turnip.kernels import get_kernel

    if get_kernel("QuickGelu", "com.microsoft") is not None:
        pytest.skip("QuickGelu has a native kernel now")
    plan_path, _ = make_chain_plan(tmp_path, op="QuickGelu", domain="com.microsoft")
    feeds = feeds_for(1)
    be = _backend()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = run_plan(plan_path, feeds, backend=be)
    ref = run_plan(plan_path, feeds, backend="numpy").outputs
    assert np.allclose(res.outputs["y"], ref["y"], atol=1e-5, rtol=1e-5)
    where = [n["op"] for n in be.report["ort_cuda_nodes"]] + [n["op"] for n in be.report["host_round_trip_nodes"]]
    assert where == ["QuickGelu"], be.report
