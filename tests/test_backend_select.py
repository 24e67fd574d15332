"""Backend selection on a machine without CUDA, and the CuPy backend's plumbing on a NumPy stand-in.

The stand-in (``fake_cupy``) implements just the part of CuPy's API the cupy
backend calls (devices, streams, events, ``cudaMalloc`` / ``cudaHostAlloc``
memory, ``memcpyAsync`` / ``memcpyPeerAsync`` as ``memmove``, the
thread-local allocator) with NumPy memory, so the backend's preparation,
pointer arithmetic, queue/stream mapping, event bookkeeping, copy kinds,
fallback routing and memory accounting run here through the real executor
and kernels. It proves nothing about CUDA semantics (asynchrony, stream
ordering): that is tests/gpu/, on a GPU.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
import threading
import types

import numpy as np
import pytest
from test_executor import feeds_for, make_chain_plan
from turnip.backends import BackendError, cupy_available, get_backend
from turnip.run import run_plan

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLANS = os.path.join(ROOT, "plans")


# ---------------------------------------------------------------------------
# Selection (this machine has no CUDA GPU)
# ---------------------------------------------------------------------------
needs_no_cuda = pytest.mark.skipif(cupy_available(), reason="CuPy and a CUDA GPU are available here")


@needs_no_cuda
def test_auto_picks_numpy_without_cuda():
    assert get_backend("auto").name == "numpy"


@needs_no_cuda
def test_cupy_without_cuda_is_a_clear_error():
    with pytest.raises(BackendError) as e:
        get_backend("cupy")
    msg = str(e.value)
    assert "needs CuPy and a CUDA GPU" in msg and "--backend numpy" in msg
    assert ("not installed" in msg) or ("no CUDA GPU" in msg) or ("cannot query CUDA" in msg) or ("failed to import" in msg)


@needs_no_cuda
def test_run_plan_and_cli_with_cupy_fail_cleanly(tmp_path):
    from click.testing import CliRunner
    from turnip.cli import main

    plan_path, _ = make_chain_plan(tmp_path)
    with pytest.raises(BackendError, match="--backend numpy"):
        run_plan(plan_path, feeds_for(0), backend="cupy")
    r = CliRunner().invoke(main, [plan_path, "--random-inputs", "--backend", "cupy"])
    assert r.exit_code == 2
    assert "needs CuPy and a CUDA GPU" in (r.output + (r.stderr if hasattr(r, "stderr") else ""))


# ---------------------------------------------------------------------------
# A NumPy stand-in for the slice of CuPy the backend uses
# ---------------------------------------------------------------------------
class _DevArray(np.ndarray):
    """'Device' memory: a NumPy array that answers .data.ptr / .device / .get() like cupy.ndarray."""

    def __new__(cls, shape, dtype=float, memptr=None):
        dt = np.dtype(dtype)
        n = int(np.prod(shape)) if len(tuple(shape)) else 1
        if memptr is None:
            base = np.zeros(n, dtype=dt)
            dev = _FAKE.current_device()
        else:
            base = np.frombuffer(memptr.mem.buf, dtype=dt, count=n, offset=memptr.offset)
            dev = memptr.mem.device
        obj = base.reshape(shape).view(cls)
        obj._dev = dev
        return obj

    def __array_finalize__(self, obj):
        self._dev = getattr(obj, "_dev", 0)

    @property
    def data(self):  # type: ignore[override]
        return types.SimpleNamespace(ptr=int(self.__array_interface__["data"][0]))

    @property
    def device(self):  # type: ignore[override]
        return types.SimpleNamespace(id=self._dev)

    def get(self, stream=None):
        return np.array(self).view(np.ndarray)


class _FakeCupyState:
    def __init__(self, devices: int):
        self.devices = devices
        self.tls = threading.local()
        self.pool_total = [0] * devices
        self.ptrs = itertools.count(1000)
        self.calls: dict[str, int] = {}

    def current_device(self) -> int:
        return getattr(self.tls, "device", 0)

    def count(self, what: str) -> None:
        self.calls[what] = self.calls.get(what, 0) + 1


_FAKE: _FakeCupyState = _FakeCupyState(1)


def make_fake_cupy(devices: int = 1, pin_fails: bool = False):
    global _FAKE
    st = _FAKE = _FakeCupyState(devices)

    class CUDARuntimeError(RuntimeError):
        def __init__(self, status):
            super().__init__(f"cudaError {status}")
            self.status = status

    class Device:
        def __init__(self, d=None):
            self.id = st.current_device() if d is None else int(d)
            if not 0 <= self.id < st.devices:
                raise CUDARuntimeError(101)
            self._prev = []

        def __enter__(self):
            self._prev.append(st.current_device())
            st.tls.device = self.id
            return self

        def __exit__(self, *a):
            st.tls.device = self._prev.pop()

        def use(self):
            st.tls.device = self.id

        def synchronize(self):
            st.count("device_sync")

    class Stream:
        def __init__(self, null=False, non_blocking=False, ptds=False, priority=None):
            self.ptr = 0 if null else next(st.ptrs)
            self.device_id = st.current_device()

        def use(self):
            assert self.device_id == st.current_device(), "stream used on another device"
            st.tls.stream = self
            return self

        def synchronize(self):
            st.count("stream_sync")

        def wait_event(self, event):
            assert event.recorded, "waiting on an event never recorded"
            st.count("wait_event")

    class Event:
        def __init__(self, block=False, disable_timing=False, interprocess=False):
            self.device = st.current_device()
            self.recorded = False

        def record(self, stream=None):
            assert stream is None or stream.device_id == self.device, "event recorded on another device's stream"
            self.recorded = True
            st.count("record")

        def synchronize(self):
            st.count("event_sync")

    class Memory:
        def __init__(self, size):
            self.buf = np.zeros(int(size), dtype=np.uint8)
            self.ptr = int(self.buf.__array_interface__["data"][0])
            self.device = st.current_device()
            st.count("cudaMalloc")

    class MemoryPointer:
        def __init__(self, mem, offset):
            self.mem, self.offset = mem, int(offset)
            self.ptr = mem.ptr + self.offset

    class PinnedMemory:
        def __init__(self, size, flags=0):
            if pin_fails:
                raise CUDARuntimeError(2)
            self.buf = np.zeros(int(size), dtype=np.uint8)
            self.ptr = int(self.buf.__array_interface__["data"][0])
            st.count("cudaHostAlloc")

    def PinnedMemoryPointer(mem, offset):  # noqa: N802 - CuPy's name
        return memoryview(mem.buf)[offset:]

    class Pool:
        def total_bytes(self):
            return st.pool_total[st.current_device()]

        def used_bytes(self):
            return 0

        def malloc(self, size):
            st.pool_total[st.current_device()] += int(size)
            return MemoryPointer(Memory(size), 0)

    pool = Pool()
    default_stream = Stream(null=True)

    @contextlib.contextmanager
    def using_allocator(allocator=None):
        prev = getattr(st.tls, "allocator", None)
        st.tls.allocator = allocator
        try:
            yield
        finally:
            st.tls.allocator = prev

    def get_allocator():
        return getattr(st.tls, "allocator", None) or pool.malloc

    def memcpyAsync(dst, src, size, kind, stream):  # noqa: N802
        assert kind in (1, 2, 3), kind
        ctypes.memmove(dst, src, size)
        st.count(f"memcpy{kind}")

    def memcpyPeerAsync(dst, dst_dev, src, src_dev, size, stream):  # noqa: N802
        assert dst_dev != src_dev
        ctypes.memmove(dst, src, size)
        st.count("memcpyPeer")

    runtime = types.SimpleNamespace(
        CUDARuntimeError=CUDARuntimeError,
        getDeviceCount=lambda: st.devices,
        memGetInfo=lambda: (64 << 30, 80 << 30),
        memset=lambda ptr, v, n: ctypes.memset(ptr, v, n),
        memcpyAsync=memcpyAsync,
        memcpyPeerAsync=memcpyPeerAsync,
        deviceCanAccessPeer=lambda a, b: 1,
        deviceEnablePeerAccess=lambda peer: st.count("enable_peer"),
        memcpyHostToDevice=1,
        memcpyDeviceToHost=2,
        memcpyDeviceToDevice=3,
        hostAllocPortable=1,
        runtimeGetVersion=lambda: 12080,
    )
    cuda = types.SimpleNamespace(
        Device=Device,
        Stream=Stream,
        Event=Event,
        Memory=Memory,
        MemoryPointer=MemoryPointer,
        PinnedMemory=PinnedMemory,
        PinnedMemoryPointer=PinnedMemoryPointer,
        runtime=runtime,
        using_allocator=using_allocator,
        get_allocator=get_allocator,
        get_current_stream=lambda device_id=-1: getattr(st.tls, "stream", default_stream),
        is_available=lambda: True,
    )
    mod = types.ModuleType("fake_cupy")
    mod.__version__ = "0.0-fake"
    mod.cuda = cuda
    mod.ndarray = _DevArray
    mod.get_default_memory_pool = lambda: pool
    mod.asnumpy = lambda a, stream=None: np.array(a).view(np.ndarray)
    mod.asarray = np.asarray

    def __getattr__(name):  # everything else (matmul, add, where, float32, ...) is NumPy's
        return getattr(np, name)

    mod.__getattr__ = __getattr__
    mod._state = st
    return mod


def _fake_backend(devices=1, **kw):
    from turnip.backends.cupy_backend import CupyBackend

    fake = make_fake_cupy(devices, pin_fails=kw.pop("pin_fails", False))
    return CupyBackend(cupy_module=fake, **kw), fake


# ---------------------------------------------------------------------------
# The backend's plumbing on the stand-in
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("async_release", [False, True])
@pytest.mark.parametrize("devices", [1, 2])
def test_chain_plan_every_copy_kind_matches_numpy(tmp_path, devices, async_release):
    """reload, offload, move and compute on the stand-in give the NumPy backend's exact bytes, in every order."""
    plan_path, _ = make_chain_plan(tmp_path, devices=devices)
    feeds = feeds_for(3)
    ref = run_plan(plan_path, feeds, backend="numpy").outputs
    for order, seed in (("dynamic", 0), ("fixed", 0), ("random", 1), ("random", 2)):
        be, fake = _fake_backend(devices, async_release=async_release)
        out = run_plan(plan_path, feeds, backend=be, order=order, seed=seed).outputs
        for k in ref:
            assert np.array_equal(out[k], ref[k]), (order, seed, k)
        calls = fake._state.calls
        assert calls["cudaMalloc"] == devices and calls["cudaHostAlloc"] == 1  # one arena per GPU, one pinned region
        assert calls["memcpy1"] >= 3 and calls["memcpy2"] >= 1  # reloads (and placement writes), the offload
        if devices == 2:
            assert calls["memcpyPeer"] == 1 and be.report["peer_access"] == {"0->1": True}
        if async_release:
            assert "event_sync" not in calls and calls.get("wait_event", 0) >= 1
        else:
            assert calls["event_sync"] == calls["record"] and "wait_event" not in calls
        assert be.report["host_pinned"] is True and be.report["outside_plan_nodes"] == 0


@pytest.mark.parametrize("name", ["demo_mlp-25", "gpt2_dynamo18-25", "llama_legacy17-25", "bert_dynamo23-50-2gpu"])
def test_golden_plans_on_the_stand_in(name):
    from turnip.check import compare, reference_outputs
    from turnip.plan import read_plan, resolve_model_path

    path = os.path.join(PLANS, f"{name}.plan")
    plan = read_plan(path)
    from turnip.run import random_feeds

    feeds = random_feeds(plan, 0)
    be, _ = _fake_backend(plan.num_devices)
    res = run_plan(path, feeds, backend=be, order="random", seed=5)
    ref = reference_outputs(resolve_model_path(plan, path), feeds)
    for c in compare(res.outputs, ref, atol=1e-4, rtol=1e-3):
        assert c.ok, (name, c)
    assert res.stats.backend == "cupy"


def test_host_params_are_numpy_constants():
    """Plan-time constant parameter inputs (Slice starts, Reduce axes) reach kernels as host arrays."""
    from turnip.kernels import host_inputs
    from turnip.plan import read_plan

    path = os.path.join(PLANS, "llama_legacy17-25.plan")  # legacy export: Slice / Expand with constant parameters
    plan = read_plan(path)
    be, fake = _fake_backend(1)
    be.allocate_all(plan)
    try:
        hosts = 0
        for node in plan.nodes:
            if node.kind != "compute" or not host_inputs(node.op, node.domain):
                continue
            for i, loc in enumerate(node.inputs):
                if loc is not None and be.host_param(plan, node, i, loc) is not None:
                    hosts += 1
        assert hosts >= 100
        # the NumPy backend decides alike but keeps views: its arrays are host memory already
        from turnip.backends.numpy_backend import NumpyBackend

        assert not NumpyBackend.device_arrays and be.device_arrays
    finally:
        be.free()


def test_strict_memory_names_the_allocating_node(tmp_path, monkeypatch):
    from turnip import kernels
    from turnip.executor import ExecutionError

    kernels._load_all()
    relu = kernels.REGISTRY[("", "Relu")]

    def greedy_relu(ctx, inputs, outputs):
        ctx.xp.cuda.get_allocator()(4096)  # a temporary outside the plan
        relu(ctx, inputs, outputs)

    monkeypatch.setitem(kernels.REGISTRY, ("", "Relu"), greedy_relu)
    plan_path, _ = make_chain_plan(tmp_path)
    be, _ = _fake_backend(1, strict_memory=True)
    with pytest.raises(ExecutionError, match=r"node 1 \(compute Relu 'relu'\) allocated 4096 bytes outside the plan"):
        run_plan(plan_path, feeds_for(0), backend=be)
    be, _ = _fake_backend(1)  # default: measured and reported, not fatal
    with pytest.warns(RuntimeWarning, match="outside the plan"):
        run_plan(plan_path, feeds_for(0), backend=be)
    assert be.report["outside_plan_first"]["op"] == "Relu" and be.report["outside_plan_bytes_max_node"] == 4096
    assert be.report["pool_growth_bytes"] == {"0": 4096}


def test_pinning_failure_and_no_pin(tmp_path):
    plan_path, _ = make_chain_plan(tmp_path)
    be, _ = _fake_backend(1, pin_fails=True)
    with pytest.raises(BackendError, match=r"cannot pin \d+ bytes .*ulimit -l.*--no-pin"):
        run_plan(plan_path, feeds_for(0), backend=be)
    be, fake = _fake_backend(1, pin_fails=True, no_pin=True)
    with pytest.warns(RuntimeWarning, match="pageable"):
        res = run_plan(plan_path, feeds_for(0), backend=be)
    assert be.report["host_pinned"] is False
    ref = run_plan(plan_path, feeds_for(0), backend="numpy").outputs
    assert np.array_equal(res.outputs["y"], ref["y"])


def test_fallback_without_ort_cuda_is_a_counted_host_round_trip(tmp_path):
    plan_path, _ = make_chain_plan(tmp_path, op="QuickGelu", domain="com.microsoft")
    from turnip.kernels import get_kernel

    if get_kernel("QuickGelu", "com.microsoft") is not None:
        pytest.skip("QuickGelu has a native kernel now")
    be, _ = _fake_backend(1)
    with pytest.warns(RuntimeWarning, match="host round trip"):
        res = run_plan(plan_path, feeds_for(1), backend=be)
    assert [n["op"] for n in be.report["host_round_trip_nodes"]] == ["QuickGelu"]
    assert res.stats.fallback_nodes == [(1, "QuickGelu", "com.microsoft", "relu")]
    ref = run_plan(plan_path, feeds_for(1), backend="numpy").outputs
    assert np.allclose(res.outputs["y"], ref["y"], atol=1e-6)


def test_plan_with_more_gpus_than_present(tmp_path):
    plan_path, _ = make_chain_plan(tmp_path, devices=2)
    be, _ = _fake_backend(1)
    with pytest.raises(BackendError, match=r"uses 2 GPU\(s\).*sees 1"):
        run_plan(plan_path, feeds_for(0), backend=be)


def test_kernel_routes_are_decided_in_shared_code():
    """Backend.select_kernel: the backend's own kernel, else the shared one, else onnxruntime on its device."""
    from turnip.backends import KernelRoute
    from turnip.backends.numpy_backend import NumpyBackend
    from turnip.kernels import get_kernel
    from turnip.plan import Node, Plan

    def special(ctx, inputs, outputs):
        return None

    def on_device(ctx, inputs, outputs):
        return None

    class Routed(NumpyBackend):
        def special_kernel(self, plan, node, inputs, outputs):
            return special if node.op == "Tanh" else None

        def device_fallback(self, plan, node, inputs, outputs):
            return on_device

    plan = Plan("m.onnx", "0" * 64, {"": 17}, {}, [], [], [], [], [], [])

    def node(op, domain=""):
        return Node(0, "compute", 0, (), (), (), op=op, domain=domain)

    be = Routed()
    assert be.select_kernel(plan, node("Relu"), [], []) == (get_kernel("Relu"), KernelRoute.NATIVE)
    assert be.select_kernel(plan, node("Tanh"), [], []) == (special, KernelRoute.NATIVE)
    assert be.select_kernel(plan, node("QuickGelu", "com.microsoft"), [], []) == (on_device, KernelRoute.DEVICE_FALLBACK)
    assert NumpyBackend().select_kernel(plan, node("Relu"), [], [])[1] == KernelRoute.NATIVE
