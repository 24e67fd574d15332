"""The Python API: turnip.Session / load_plan / LoadedPlan, turnipc.plan and Plan.save.

Real plans (hand-built, and planned from the bundled GPT-2 fixture), the real
NumPy backend, onnxruntime as the reference. Allocations are counted through
a backend subclass that counts its real ``allocate`` calls.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

import numpy as np
import pytest
import turnip
from test_executor import SHAPE, SLOT, feeds_for, make_chain_plan
from turnip.backends.numpy_backend import NumpyBackend
from turnip.check import reference_outputs
from turnip.plan import Loc, Placement, read_plan
from turnip.run import LoadedPlan, _overwritten, random_feeds, run_plan

import turnipc

HERE = os.path.dirname(os.path.abspath(__file__))
GPT2 = os.path.join(HERE, "models", "gpt2_dynamo18.onnx")


class CountingBackend(NumpyBackend):
    """The NumPy backend, counting the memories it allocates and frees."""

    def __init__(self) -> None:
        super().__init__()
        self.allocations = 0
        self.frees = 0

    def allocate(self, mem: Any) -> Any:
        self.allocations += 1
        return super().allocate(mem)

    def free(self) -> None:
        if self.memories is not None:
            self.frees += 1
        super().free()


@pytest.fixture(scope="module")
def gpt2_plan(tmp_path_factory):
    """GPT-2 fixture planned at 25% of its no-offload peak (offloads, reloads, reused weight memory)."""
    folder = tmp_path_factory.mktemp("gpt2")
    for f in ("gpt2_dynamo18.onnx", "gpt2_dynamo18.onnx.data"):
        shutil.copy(os.path.join(HERE, "models", f), folder / f)
    plan = turnipc.plan(str(folder / "gpt2_dynamo18.onnx"), gpu_mem="25%", dims={"batch": 2, "seq": 16})
    path = str(folder / "gpt2.plan")
    plan.save(path)
    return path


def test_public_names_are_listed_and_typed():
    assert set(turnip.__all__) >= {"Session", "load_plan", "Plan", "TurnipError", "run_plan", "__version__"}
    assert set(turnipc.__all__) >= {"plan", "Plan", "TurnipError", "__version__"}
    for mod in (turnip, turnipc):
        for name in mod.__all__:
            assert getattr(mod, name) is not None
        assert dir(mod) == sorted(mod.__all__)
    assert turnipc.Plan is turnip.Plan
    with pytest.raises(AttributeError):
        turnip.Executor  # noqa: B018 - internal names stay internal


def test_session_runs_100_times_with_memories_allocated_once(gpt2_plan):
    plan = turnip.load_plan(gpt2_plan)
    feeds = random_feeds(plan, seed=3)
    be = CountingBackend()
    with turnip.Session(gpt2_plan, backend=be) as session:
        assert be.allocations == len(plan.memories)
        first = session.run(feeds)
        for _ in range(99):
            out = session.run(feeds)
            assert out.keys() == first.keys()
            for k in out:
                assert np.array_equal(out[k], first[k]), k
        assert session.runs == 100
        assert be.allocations == len(plan.memories)  # not one more
        assert session.last_stats is not None and session.last_stats.nodes_run == len(plan.nodes)
    assert be.frees == 1 and session.closed
    # and the answer is right (onnxruntime on the same feeds)
    ref = reference_outputs(os.path.join(os.path.dirname(gpt2_plan), "gpt2_dynamo18.onnx"), feeds)
    for k in first:
        np.testing.assert_allclose(first[k], ref[k], atol=1e-4, rtol=1e-3)


def test_session_outputs_follow_the_feeds(gpt2_plan):
    plan = turnip.load_plan(gpt2_plan)
    a, b = random_feeds(plan, seed=1), random_feeds(plan, seed=2)
    with turnip.Session(gpt2_plan, backend="numpy", order="random", seed=5) as s:
        ra, rb, ra2 = s.run(a), s.run(b), s.run(a)
    once_b = run_plan(gpt2_plan, b, backend="numpy").outputs
    for k in ra:
        assert np.array_equal(ra[k], ra2[k])
        assert np.array_equal(rb[k], once_b[k])
        assert not np.array_equal(ra[k], rb[k])


def test_weights_nobody_overwrites_are_written_once(tmp_path):
    plan_path, _ = make_chain_plan(tmp_path)
    plan = read_plan(plan_path)
    # x (input, host H0) and w (weight, host H2): no node writes there
    assert _overwritten(plan) == [False, False]
    # w placed where the Relu writes r (GPU region 1) would be overwritten by every run
    moved = [plan.placements[0], Placement(1, Loc(0, SLOT, 1), "weight")]
    plan.placements = moved
    assert _overwritten(plan) == [False, True]


def test_device_outputs_are_views_of_the_plan_memory(tmp_path):
    plan_path, w = make_chain_plan(tmp_path)
    feeds = feeds_for(0)
    with turnip.Session(plan_path, backend="numpy") as s:
        host = s.run(feeds)["y"]
        dev = s.run(feeds, device_outputs=True)["y"]
        arena = s.loaded.backend.memories.buffers[0]
        assert np.shares_memory(dev, arena)
        assert not np.shares_memory(host, arena)
        np.testing.assert_array_equal(dev, host)
        np.testing.assert_allclose(host, np.maximum(feeds["x"], 0) + w, rtol=1e-6)


class _DLPackOnly:
    """An array that only speaks DLPack (as a torch CPU tensor would)."""

    def __init__(self, a: np.ndarray) -> None:
        self._a = a

    def __dlpack__(self, **kw: Any) -> Any:
        return self._a.__dlpack__(**kw)

    def __dlpack_device__(self) -> Any:
        return self._a.__dlpack_device__()


def test_feeds_may_be_dlpack_arrays(tmp_path):
    plan_path, _ = make_chain_plan(tmp_path)
    x = feeds_for(1)["x"]
    with turnip.Session(plan_path, backend="numpy") as s:
        np.testing.assert_array_equal(s.run({"x": _DLPackOnly(x)})["y"], s.run({"x": x})["y"])


def test_bad_feeds_and_closed_session_are_one_line_errors(tmp_path):
    plan_path, _ = make_chain_plan(tmp_path)
    s = turnip.Session(plan_path, backend="numpy")
    with pytest.raises(turnip.TurnipError, match=r"input 'x' has dtype float64, the plan expects float32") as e:
        s.run({"x": np.zeros(SHAPE)})
    assert "\n" not in str(e.value)
    with pytest.raises(turnip.TurnipError, match="missing input 'x'"):
        s.run({})
    s.close()
    s.close()  # idempotent
    with pytest.raises(turnip.TurnipError, match="closed"):
        s.run(feeds_for(0))


def test_session_takes_a_plan_object_and_a_model_override(tmp_path, gpt2_plan):
    plan = turnip.load_plan(gpt2_plan)
    feeds = random_feeds(plan, seed=0)
    want = run_plan(gpt2_plan, feeds, backend="numpy").outputs
    # a Plan object whose model path is relative cannot find its model ...
    with pytest.raises(turnip.TurnipError, match="relative path"):
        turnip.Session(plan, backend="numpy")
    # ... unless told where it is; so can a plan file moved away from its model
    moved = tmp_path / "elsewhere" / "gpt2.plan"
    moved.parent.mkdir()
    shutil.copy(gpt2_plan, moved)
    model = os.path.join(os.path.dirname(gpt2_plan), "gpt2_dynamo18.onnx")
    for source in (plan, str(moved)):
        with turnip.Session(source, model=model, backend="numpy") as s:
            got = s.run(feeds)
        for k in want:
            assert np.array_equal(got[k], want[k])


def test_turnipc_plan_save_is_the_cli_plan(tmp_path):
    from click.testing import CliRunner

    from turnipc.cli import main

    out_cli = tmp_path / "cli.plan"
    r = CliRunner().invoke(main, ["plan", GPT2, "--gpu-mem", "25%", "--dim", "batch=2", "--dim", "seq=16", "-o", str(out_cli), "-q"])
    assert r.exit_code == 0, r.output
    plan = turnipc.plan(GPT2, gpu_mem=0.25, dims={"batch": 2, "seq": 16})
    assert os.path.isabs(plan.model_path)
    out_api = tmp_path / "api.plan"
    plan.save(out_api)
    assert out_api.read_bytes() == out_cli.read_bytes()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"gpu_mem": "lots"}, "gpu_mem: cannot read size 'lots'"),
        ({"gpu_mem": -5}, "must be a positive number of bytes"),
        ({"solver": "magic"}, "solver='magic': use one of greedy, search, cpsat"),
        ({"gpus": 0}, "gpus=0: plan for 1 to 64 GPUs"),
    ],
)
def test_turnipc_plan_argument_errors(kwargs, message):
    with pytest.raises(turnipc.TurnipError, match=message) as e:
        turnipc.plan(GPT2, **{"dims": {"batch": 1, "seq": 4}, **kwargs})
    assert "\n" not in str(e.value)


def test_loaded_plan_is_what_run_plan_uses(tmp_path):
    plan_path, _ = make_chain_plan(tmp_path, devices=2)
    feeds = feeds_for(2)
    with LoadedPlan(plan_path, backend="numpy") as lp:
        a = lp.run(feeds)
        b = lp.run(feeds)
        assert lp.runs == 2
    res = run_plan(plan_path, feeds, backend="numpy", repeat=3)
    assert np.array_equal(a["y"], res.outputs["y"]) and np.array_equal(b["y"], res.outputs["y"])
    timed_runs = res.stats.wall_s  # one sample per repeat (a count, not a speed target)
    assert len(timed_runs) == 3


@pytest.mark.parametrize(
    "text, want",
    [("24G", 24 * 10**9), ("24GB", 24 * 10**9), ("24GiB", 24 * 2**30), ("24gib", 24 * 2**30), ("512M", 512 * 10**6),
     ("512MiB", 512 * 2**20), ("300K", 300_000), ("300KiB", 307_200), ("1.5GiB", 3 * 2**29), ("1T", 10**12), ("4096", 4096), ("7B", 7)],
)
def test_sizes_decimal_and_binary(text, want):
    from turnip.units import parse_size

    assert parse_size(text) == want


def test_budget_forms_and_errors():
    from turnip.units import Budget, format_bytes, parse_budgets

    assert parse_budgets("20GiB,24GiB") == [Budget(bytes=20 * 2**30), Budget(bytes=24 * 2**30)]
    assert parse_budgets("auto") == [Budget(auto=True)]
    assert parse_budgets("25%") == [Budget(fraction=0.25)]
    for bad, msg in [("20GiB,", "empty item"), ("20GiB,25%", "must be sizes or auto"), ("24Gb/s", "cannot read size"), ("0", "positive")]:
        with pytest.raises(ValueError, match=msg):
            parse_budgets(bad)
    with pytest.raises(ValueError, match="2 per-GPU budgets"):
        parse_budgets("1GiB,2GiB", gpus=3)
    assert format_bytes(1536) == "1.5 KiB" and format_bytes(512) == "512 B" and format_bytes(24 * 2**30) == "24 GiB"


def _fake_cupy_backend(devices=1):
    from test_backend_select import _fake_backend

    return _fake_backend(devices)


def test_session_on_the_cupy_stand_in_allocates_once_and_takes_device_feeds(tmp_path):
    """CuPy backend on the NumPy stand-in for cupy (tests/test_backend_select.py): one cudaMalloc per GPU for 100 runs."""
    plan_path, w = make_chain_plan(tmp_path, devices=2)
    feeds = feeds_for(4)
    want = run_plan(plan_path, feeds, backend="numpy").outputs["y"]
    be, fake = _fake_cupy_backend(2)
    with turnip.Session(plan_path, backend=be) as s:
        for _ in range(100):
            assert np.array_equal(s.run(feeds)["y"], want)
        dev = s.run({"x": fake.ndarray(feeds["x"].shape, dtype=feeds["x"].dtype)}, device_outputs=True)["y"]
        assert isinstance(dev, fake.ndarray)
        assert fake._state.calls["cudaMalloc"] == 2 and fake._state.calls["cudaHostAlloc"] == 1


def test_cupy_backend_refuses_a_gpu_with_less_free_memory_than_the_plan_needs(tmp_path):
    plan_path, _ = make_chain_plan(tmp_path)
    plan = read_plan(plan_path)
    be, fake = _fake_cupy_backend(1)  # the stand-in reports 64 GiB free
    plan.stats.reserve_bytes = 64 << 30
    with pytest.raises(turnip.TurnipError) as e:
        turnip.Session(plan, model=str(tmp_path / "model.onnx"), backend=be)
    msg = str(e.value)
    assert "\n" not in msg and "GPU 0 has 64 GiB (68719476736 bytes) free but the plan needs" in msg
    arena = plan.memories[0].size
    assert f"({(64 << 30) + arena} bytes: {arena} B arena + 64 GiB reserve" in msg
    assert "cudaMalloc" not in fake._state.calls  # nothing allocated
    plan.stats.reserve_bytes = (64 << 30) - arena  # exactly what is free: runs
    with turnip.Session(plan, model=str(tmp_path / "model.onnx"), backend=be) as s:
        s.run(feeds_for(0))


def test_plans_record_a_reserve_sized_from_their_ops():
    from turnipc.importer import import_model
    from turnipc.reserve import LIBRARY_WORKSPACE_BYTES, workspace_reserve

    g = import_model(GPT2, {"batch": 2, "seq": 16})
    r = workspace_reserve(g)
    # GPT-2 has MatMuls (cuBLAS workspace) and a Softmax over [2, heads, 16, 16] float32 (2 temporaries) among its ops
    assert r > LIBRARY_WORKSPACE_BYTES
    biggest = max(sum(g.values[o].nbytes for o in t.outputs if o) for t in g.tasks)
    assert r <= LIBRARY_WORKSPACE_BYTES + 4 * biggest
    assert turnipc.plan(GPT2, gpu_mem="25%", dims={"batch": 2, "seq": 16}).stats.reserve_bytes == r


def test_auto_budget_on_a_machine_without_a_gpu_is_one_line(tmp_path):
    pytest.importorskip("numpy")
    try:
        import cupy  # noqa: F401

        pytest.skip("a CUDA-capable cupy is installed")
    except ImportError:
        pass
    with pytest.raises(turnipc.TurnipError, match=r"--gpu-mem auto reads each GPU's free memory, but no CUDA GPU is visible") as e:
        turnipc.plan(GPT2, gpu_mem="auto", dims={"batch": 2, "seq": 16})
    assert "\n" not in str(e.value)


def test_per_gpu_budgets(tmp_path):
    plan = turnipc.plan(os.path.join(HERE, "models", "bert_dynamo23.onnx"), gpu_mem=[300_000, 2 << 20], dims={"batch": 2, "seq": 16}, gpus=2)
    budgets = [m.budget for m in plan.gpu_memories()]
    assert budgets == [300_000, 2 << 20]
    assert all(m.size <= m.budget for m in plan.gpu_memories())
    same = turnipc.plan(os.path.join(HERE, "models", "bert_dynamo23.onnx"), gpu_mem="300KB,2MiB", dims={"batch": 2, "seq": 16}, gpus=2)
    assert [m.budget for m in same.gpu_memories()] == budgets and same.options["gpu_mem"] == "293 KiB,2 MiB"


def test_cpsat_search_reports_progress():
    lines: list[str] = []
    turnipc.plan(GPT2, gpu_mem="25%", dims={"batch": 2, "seq": 16}, solver="cpsat", effort=1.0, progress=lines.append)
    found = [ln for ln in lines if ln.startswith("cpsat layout GPU 0: best arena")]
    assert found and all("bound" in ln for ln in found)


def test_inputs_kept_between_runs(tmp_path):
    """State carried from run to run: an input the plan never overwrites may be written in place and kept."""
    plan_path, w = make_chain_plan(tmp_path)
    a, b = feeds_for(0)["x"], feeds_for(1)["x"]
    with turnip.Session(plan_path, backend="numpy") as s:
        assert s.keepable_inputs == ["x"]
        ya = s.run({"x": a})["y"]
        assert np.array_equal(s.run({}, keep=["x"])["y"], ya)  # x stays as the last run wrote it
        s.input_views()["x"][...] = b  # write the state in place
        np.testing.assert_allclose(s.run(keep=["x"])["y"], np.maximum(b, 0) + w, rtol=1e-6)
        with pytest.raises(turnip.TurnipError, match="input 'nope' cannot be kept between runs: the plan has no such input"):
            s.run({"x": a}, keep=["nope"])


def test_inputs_the_plan_overwrites_cannot_be_kept(tmp_path):
    plan_path, _ = make_chain_plan(tmp_path)
    plan = read_plan(plan_path)
    # x also placed where the Relu writes r (the host copy the reload reads stays)
    plan.placements = [plan.placements[0], Placement(0, Loc(0, SLOT, 0), "input"), plan.placements[1]]
    with LoadedPlan(plan, backend="numpy", model_path=str(tmp_path / "model.onnx")) as lp:
        assert lp.keepable_inputs() == []
        with pytest.raises(turnip.TurnipError, match="input 'x' cannot be kept between runs: the plan reuses its memory during a run"):
            lp.write_inputs({}, keep=["x"])
