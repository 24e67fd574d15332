"""The GPU backend: CuPy arrays at planned offsets, one CUDA stream per executor queue.

Status: written against CuPy's documented API and exercised on the CPU with a
NumPy stand-in for ``cupy`` (tests/test_backend_select.py); the real-GPU
checks live in tests/gpu/ (see docs/gpu.md). Nothing here pins a CUDA
version: it works with whichever of ``cupy-cuda12x`` / ``cupy-cuda13x`` is
installed.

Memory (the plan's promise: no allocation while a plan runs):

* per GPU one arena, ONE device allocation of ``Memory.size`` bytes made with
  ``cupy.cuda.Memory`` (straight ``cudaMalloc``, not the memory pool), zeroed
  once; every tensor is a ``cupy.ndarray`` view at ``memptr + offset``;
* the host memory is ONE pinned region (``cupy.cuda.PinnedMemory``, i.e.
  ``cudaHostAlloc``) seen as a NumPy array (``np.frombuffer``), so reloads and
  offloads are true asynchronous DMA. ``no_pin=True`` (or ``TURNIP_NO_PIN=1``)
  uses pageable NumPy memory instead, with a warning;
* every compute node runs under a thread-local counting allocator
  (``cupy.cuda.using_allocator``) that forwards to the allocator that was
  current (normally the default memory pool): bytes a kernel asks for are
  memory OUTSIDE the plan. Kernels written against the array API make
  temporaries (``a * b + c`` makes one per operator; cuBLAS batched matmul
  makes pointer arrays), and the plan does not yet reserve workspace for
  them, so by default this is measured and reported (:attr:`CupyBackend.report`,
  a warning at the end of the run) rather than fatal. ``strict_memory=True``
  (or ``TURNIP_CUPY_STRICT_MEMORY=1``) makes the first node that allocates
  fail with "node N (...) allocated B bytes outside the plan". Memory that
  CuPy's pool never sees (cuBLAS/cuDNN workspaces and handles, onnxruntime's
  CUDA arena, loaded kernels) is only visible as the drop of
  ``cudaMemGetInfo``'s free bytes, which the report also gives.

Queues and streams: the executor runs one worker thread per queue
``(device, kind)``; this backend gives every queue its own non-blocking
stream (per GPU: compute, h2d, d2h, peer). ``thread_init`` makes the worker's
device and stream current; both are per-thread in CUDA / CuPy
(``cudaSetDevice`` is per host thread, CuPy keeps the current stream in a
``threading.local``), so kernels launched by a worker go to its stream
without naming it.

Completion: after its work is enqueued, a node records its own event on its
stream and (default) waits for that event before returning to the executor
(``Event.synchronize`` releases the GIL, so only that worker blocks). The
executor therefore releases successors only when the GPU work is really
finished, and no cross-stream wait is ever needed. The cost is one
launch-to-completion round trip per node (roughly 10-50 us): the GPU idles
between dependent kernels on the same queue. ``async_release=True`` (or
``TURNIP_CUPY_ASYNC_RELEASE=1``) returns at enqueue time instead; a node
then first makes its stream wait on the events of its dependencies that ran
on other streams (``Stream.wait_event``), so ordering is kept by the GPU. In
that mode the executor's timeline shows enqueue times, not GPU times.

Copies: reload = ``cudaMemcpyAsync`` host (pinned) -> device on the h2d
stream; offload = device -> host on the d2h stream; move =
``cudaMemcpyPeerAsync`` on the destination GPU's peer stream. Peer access is
enabled where ``cudaDeviceCanAccessPeer`` allows; where it does not, the CUDA
driver stages the same call through host memory (CUDA C Programming Guide,
"Peer-to-Peer Memory Copy"), which is correct but slower; the report says
which pairs had peer access.

Compute: the shared kernels with ``ctx.xp = cupy``. Small plan-time constant
inputs that kernels only read as parameters (Slice starts, Reduce axes, Pad
pads, ...: the kernels declare them, ``Backend.host_param`` decides) are
given as host NumPy arrays, so reading them never syncs the device. MatMul with matching dtypes writes straight into its planned output
(``cupy.matmul(..., out=)``) instead of through a temporary. Ops without a
native kernel go through onnxruntime: with onnxruntime-gpu whose CUDA
execution provider really loads, on the planned device pointers through
IOBinding (no copy); otherwise inputs are copied to the host, the CPU
onnxruntime runs, and the result is copied back: a *host round trip*, which
is warned about and listed in the report.
"""

from __future__ import annotations

import os
import threading
import warnings
from typing import Any, Callable

import numpy as np

from ..errors import TurnipError
from ..graph import describe_node
from ..memory import Memories
from ..plan import GPU, HOST, MOVE, OFFLOAD, RELOAD, Loc, Memory, Node, Plan
from ..queues import QUEUE_KINDS, QUEUE_OF_KIND, QueueKind
from ..units import format_bytes as _human
from .base import Backend, BackendError, KernelRoute

_CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED = 704

_ORT_CUDA_STATE: dict[str, Any] = {}  # process-wide: is onnxruntime's CUDA EP usable?
_ORT_CUDA_LOCK = threading.Lock()


class MemoryPlanError(TurnipError):
    """A kernel allocated device memory outside the plan (strict_memory mode)."""


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


class H2DTimer:
    """Timing events around reload copies: bytes and the summed time the copies took on their streams.

    WHY summed event intervals, not the wall time of a run: the copies overlap
    compute (that is the point of the plan), so bandwidth is bytes over the
    time the copy engine spent on them.
    """

    def __init__(self, cp: Any) -> None:
        self.cp = cp
        self.pairs: list[tuple[Any, Any, int]] = []

    def pair(self) -> tuple[Any, Any]:
        return self.cp.cuda.Event(), self.cp.cuda.Event()  # timing enabled (the default)

    def add(self, start: Any, end: Any, nbytes: int) -> None:
        self.pairs.append((start, end, int(nbytes)))

    def total(self) -> tuple[int, float]:
        """(bytes, seconds) of every copy timed so far (waits for the last one)."""
        if not self.pairs:
            return 0, 0.0
        self.pairs[-1][1].synchronize()
        seconds = 0.0
        for start, end, _ in self.pairs:
            end.synchronize()
            seconds += self.cp.cuda.get_elapsed_time(start, end) / 1e3
        return sum(n for _, _, n in self.pairs), seconds


def _check_free_memory(plan: Plan, free: dict[int, int]) -> None:
    """Refuse to start when a GPU has less free memory than the plan needs there: its arena plus the plan's reserve."""
    reserve = int(plan.stats.reserve_bytes or 0)
    for d, f in sorted(free.items()):
        arena = sum(int(m.size) for m in plan.memories if m.kind == GPU and m.device == d)
        need = arena + reserve
        if f < need:
            raise BackendError(
                f"GPU {d} has {_human(f)} ({f} bytes) free but the plan needs {_human(need)} ({need} bytes: "
                f"{_human(arena)} arena + {_human(reserve)} reserve for kernel temporaries and workspaces); "
                "free the GPU, or re-plan with a smaller --gpu-mem (or --gpu-mem auto)"
            )


def ort_cuda_status(device: int = 0) -> tuple[bool, str]:
    """(usable, why) for onnxruntime's CUDA execution provider, checked once per process.

    Usable only if onnxruntime lists CUDAExecutionProvider AND a one-node test
    session really keeps it (``session.get_providers()``): onnxruntime-gpu
    silently falls back to the CPU when its CUDA/cuDNN libraries do not load.
    """
    with _ORT_CUDA_LOCK:
        key = f"dev{device}"
        if key in _ORT_CUDA_STATE:
            return _ORT_CUDA_STATE[key]
        if _env_flag("TURNIP_CUPY_NO_ORT_CUDA"):
            res = (False, "disabled by TURNIP_CUPY_NO_ORT_CUDA")
        else:
            res = _probe_ort_cuda(device)
        _ORT_CUDA_STATE[key] = res
        return res


def _probe_ort_cuda(device: int) -> tuple[bool, str]:
    try:
        import onnxruntime as ort
    except ImportError as e:
        return False, f"onnxruntime not installed ({e})"
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return False, "onnxruntime has no CUDAExecutionProvider (the CPU build is installed; pip install onnxruntime-gpu)"
    try:
        from onnx import TensorProto, helper

        node = helper.make_node("Relu", ["x"], ["y"])
        g = helper.make_graph(
            [node], "probe", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])]
        )
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
        m.ir_version = 7
        so = ort.SessionOptions()
        so.log_severity_level = 3
        sess = ort.InferenceSession(
            m.SerializeToString(), sess_options=so, providers=[("CUDAExecutionProvider", {"device_id": str(device)}), "CPUExecutionProvider"]
        )
        if "CUDAExecutionProvider" not in sess.get_providers():
            return False, "onnxruntime-gpu is installed but its CUDA provider did not load (CUDA/cuDNN libraries missing or mismatched)"
    except Exception as e:  # noqa: BLE001
        return False, f"onnxruntime CUDA provider failed to start ({type(e).__name__}: {e})"
    return True, "onnxruntime CUDAExecutionProvider"


class _OrtCudaKernel:
    """One op through onnxruntime's CUDA provider, reading and writing the planned device views (IOBinding)."""

    def __init__(self, plan: Plan, node: Node, ins: list, outs: list, device: int, stream_ptr: int) -> None:
        import onnxruntime as ort

        from ..fallback import build_model

        def info(loc: Loc | None) -> tuple[str, tuple[int, ...]] | None:
            if loc is None:
                return None
            t = plan.tensors[loc.tensor]
            return (t.dtype, tuple(t.shape))

        model = build_model(node.op, node.domain, node.attrs, dict(plan.opset), [info(x) for x in node.inputs], [info(x) for x in node.outputs])
        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        cuda_opts = {
            "device_id": str(device),
            "arena_extend_strategy": "kSameAsRequested",
            # run on the compute stream of this GPU, so stream order covers the op
            "has_user_compute_stream": "1",
            "user_compute_stream": str(int(stream_ptr)),
        }
        self.session = ort.InferenceSession(
            model.SerializeToString(), sess_options=so, providers=[("CUDAExecutionProvider", cuda_opts), "CPUExecutionProvider"]
        )
        if "CUDAExecutionProvider" not in self.session.get_providers():
            raise BackendError("onnxruntime dropped its CUDA provider for a fallback node")
        io = self.session.io_binding()
        for i, v in enumerate(ins):
            if i < len(node.inputs) and node.inputs[i] is not None:
                io.bind_input(f"in{i}", "cuda", device, v.dtype.type, list(v.shape), int(v.data.ptr))
        for i, v in enumerate(outs):
            if v is not None:
                io.bind_output(f"out{i}", "cuda", device, v.dtype.type, list(v.shape), int(v.data.ptr))
        self.io = io

    def __call__(self, ctx: Any, inputs: list, outputs: list) -> None:
        self.session.run_with_iobinding(self.io)


def _matmul_out(cp: Any) -> Callable[..., None]:
    def kernel(ctx: Any, inputs: list, outputs: list) -> None:
        cp.matmul(inputs[0], inputs[1], out=outputs[0])

    return kernel


class CupyBackend(Backend):
    """The plan on NVIDIA GPUs through CuPy (see the module docstring)."""

    name = "cupy"
    device_arrays = True

    def __init__(
        self,
        *,
        strict_memory: bool | None = None,
        async_release: bool | None = None,
        no_pin: bool | None = None,
        blocking_sync: bool = False,
        ort_cuda: bool | None = None,
        cupy_module: Any = None,
    ) -> None:
        super().__init__()
        if cupy_module is None:
            try:
                import cupy as cupy_module  # type: ignore[no-redef]  # the optional argument, bound here
            except ImportError as e:
                raise BackendError(f"backend 'cupy' needs CuPy ({e}); pip install -e '.[gpu]', or use --backend numpy") from e
        self.cp = cupy_module
        self.xp = cupy_module
        self.strict_memory = _env_flag("TURNIP_CUPY_STRICT_MEMORY") if strict_memory is None else bool(strict_memory)
        self.async_release = _env_flag("TURNIP_CUPY_ASYNC_RELEASE") if async_release is None else bool(async_release)
        self.no_pin = _env_flag("TURNIP_NO_PIN") if no_pin is None else bool(no_pin)
        self.blocking_sync = bool(blocking_sync)  # True: waiting threads sleep instead of spinning
        self.use_ort_cuda = (not _env_flag("TURNIP_CUPY_NO_ORT_CUDA")) if ort_cuda is None else bool(ort_cuda)
        try:
            self.device_count = int(self.cp.cuda.runtime.getDeviceCount())
        except Exception as e:  # noqa: BLE001 - CUDARuntimeError without a driver
            raise BackendError(f"backend 'cupy' cannot see a CUDA GPU ({type(e).__name__}: {e}); use --backend numpy") from e
        if self.device_count < 1:
            raise BackendError("backend 'cupy' found no CUDA GPU; use --backend numpy")
        self._reset_run_state()
        #: What the last run did beyond RunStats (memory outside the plan, fallbacks, pinning, peers).
        self.report: dict[str, Any] = {}
        self._h2d_timer: H2DTimer | None = None  # reload copies timed with events while set (start_h2d_timing)

    # -- bookkeeping ----------------------------------------------------------
    def _reset_run_state(self) -> None:
        self._devices: list[int] = []
        self._streams: dict[tuple[int, str], Any] = {}
        self._events: list[Any] = []
        self._alloc: list[list[int]] = []  # per node index: [bytes requested, requests] (max over repeats)
        self._pool_base: dict[int, int] = {}
        self._pinned_base: int | None = None
        self._free_base: dict[int, int] = {}
        self._pinned = False
        self._host_bytes = 0
        self._peer: dict[str, bool] = {}
        self._ort_cuda_nodes: list[tuple[int, str, str, str]] = []
        self._host_trip_nodes: list[tuple[int, str, str, str]] = []
        self._ort_cuda_reason = ""
        self._pending: list[Any] = []  # host sources of in-flight writes
        self._mem_device: dict[int, int] = {}
        self._queue_of: dict[int, tuple[int, str]] = {}
        self._event_of: dict[int, Any] = {}
        self._index: dict[int, int] = {}

    # -- memory ---------------------------------------------------------------
    def allocate_all(self, plan: Plan) -> Memories:
        self.free()
        self._reset_run_state()
        self.report = {}
        for t in plan.tensors:
            if t.dtype == "bfloat16" or t.dtype.startswith("float8"):
                raise BackendError(f"tensor {t.name!r} is {t.dtype}, which CuPy cannot hold; run this plan with --backend numpy")
        gpus = sorted({m.device for m in plan.memories if m.kind == GPU})
        need = (max(gpus) + 1) if gpus else 0
        if need > self.device_count:
            raise BackendError(
                f"the plan uses {need} GPU(s) (devices 0..{need - 1}) but CuPy sees {self.device_count}; "
                f"re-plan with --gpus {self.device_count}, or set CUDA_VISIBLE_DEVICES"
            )
        self._devices = gpus
        self._mem_device = {m.id: (m.device if m.kind == GPU else -1) for m in plan.memories}
        cp = self.cp
        for d in gpus:
            with cp.cuda.Device(d):
                free, _total = cp.cuda.runtime.memGetInfo()
                self._free_base[d] = int(free)
        if self.allocator is None:  # a shared allocator's buffers may already be there (turnip/session_memory.py)
            _check_free_memory(plan, self._free_base)
        return super().allocate_all(plan)

    def allocate(self, mem: Memory) -> Any:
        cp = self.cp
        size = int(mem.size)
        if mem.kind == HOST:
            return self._allocate_host(size)
        d = int(mem.device)
        with cp.cuda.Device(d):
            if size == 0:
                return cp.ndarray((0,), dtype=np.uint8)
            try:
                raw = cp.cuda.Memory(size)  # cudaMalloc, not the pool: the pool then only sees kernel temporaries
            except Exception as e:  # noqa: BLE001 - cupy.cuda.memory.OutOfMemoryError / CUDARuntimeError
                free, total = cp.cuda.runtime.memGetInfo()
                raise BackendError(
                    f"cannot allocate the plan's {size} byte ({_human(size)}) arena on GPU {d}: {type(e).__name__} "
                    f"({_human(free)} free of {_human(total)}); re-plan with a smaller --gpu-mem"
                ) from e
            buf = cp.ndarray((size,), dtype=np.uint8, memptr=cp.cuda.MemoryPointer(raw, 0))
            # zeros, as on the NumPy backend: a plan bug reading unwritten bytes reads the same in every order
            cp.cuda.runtime.memset(int(buf.data.ptr), 0, size)
        return buf

    def _allocate_host(self, size: int) -> np.ndarray:
        self._host_bytes = size
        if size == 0:
            return np.zeros(0, dtype=np.uint8)
        if self.no_pin:
            warnings.warn(
                f"turnip cupy backend: host memory ({_human(size)}) is pageable (no_pin); reloads and offloads "
                "are staged by the driver and do not overlap with compute as well",
                RuntimeWarning,
                stacklevel=2,
            )
            self._pinned = False
            return np.zeros(size, dtype=np.uint8)
        cp = self.cp
        try:
            # cudaHostAlloc(portable: pinned for every GPU's context), outside CuPy's pinned pool
            pinned = cp.cuda.PinnedMemory(size, cp.cuda.runtime.hostAllocPortable)
        except Exception as e:  # noqa: BLE001 - CUDARuntimeError (cudaErrorMemoryAllocation)
            raise BackendError(
                f"cannot pin {size} bytes ({_human(size)}) of host memory for the plan's host region "
                f"({type(e).__name__}: {e}); check `ulimit -l` (locked memory) and free RAM, or run without "
                "pinning (--no-pin; CupyBackend(no_pin=True) or TURNIP_NO_PIN=1), which is slower"
            ) from e
        arr = np.frombuffer(cp.cuda.PinnedMemoryPointer(pinned, 0), dtype=np.uint8, count=size)
        arr[...] = 0
        self._pinned = True
        return arr

    def release(self, buf: Any) -> None:
        return None  # RAII: the Memory / PinnedMemory goes when the last view does

    def free(self) -> None:
        if self.memories is not None and self._devices:
            try:
                self.synchronize()  # nothing may still write into memory that is about to be freed
            except Exception:  # noqa: BLE001 - already failing; freeing must not mask it
                pass
            self._finish_report()
        super().free()
        self._streams = {}
        self._events = []
        self._pending = []

    # -- host-to-device bandwidth (token generation's report) ---------------------
    def new_h2d_timer(self) -> "H2DTimer":
        return H2DTimer(self.cp)

    def start_h2d_timing(self, timer: "H2DTimer") -> None:
        """Bracket every later reload copy with timing events recorded into ``timer`` (until :meth:`stop_h2d_timing`)."""
        self._h2d_timer = timer

    def stop_h2d_timing(self) -> None:
        self._h2d_timer = None

    # -- helpers ------------------------------------------------------------
    def _is_dev(self, a: Any) -> bool:
        return isinstance(a, self.cp.ndarray)

    @staticmethod
    def _host_ptr(a: np.ndarray) -> int:
        return int(a.__array_interface__["data"][0])

    def _ptr(self, a: Any) -> int:
        return int(a.data.ptr) if self._is_dev(a) else self._host_ptr(a)

    def _dev_of(self, a: Any) -> int:
        return int(a.device.id)

    def _stream(self, device: int, kind: str) -> Any:
        s = self._streams.get((device, kind))
        if s is None:
            raise TurnipError(f"no {kind} stream for GPU {device}: the plan names a device it has no arena on; re-plan the model")
        return s

    # -- data movement -------------------------------------------------------
    def copy(self, src: Any, dst: Any) -> None:
        """Copy now, synchronously (unprepared path: tests and tools)."""
        n = int(src.nbytes)
        if n != int(dst.nbytes):
            raise TurnipError(f"copy of {n} bytes into {int(dst.nbytes)} bytes")
        if n == 0:
            return
        rt = self.cp.cuda.runtime
        sd, dd = self._is_dev(src), self._is_dev(dst)
        if not sd and not dd:
            np.copyto(dst, src)
            return
        dev = self._dev_of(dst) if dd else self._dev_of(src)
        with self.cp.cuda.Device(dev):
            s = self.cp.cuda.get_current_stream()
            if sd and dd and self._dev_of(src) != self._dev_of(dst):
                rt.memcpyPeerAsync(self._ptr(dst), self._dev_of(dst), self._ptr(src), self._dev_of(src), n, s.ptr)
            else:
                kind = rt.memcpyDeviceToDevice if (sd and dd) else (rt.memcpyHostToDevice if dd else rt.memcpyDeviceToHost)
                rt.memcpyAsync(self._ptr(dst), self._ptr(src), n, kind, s.ptr)
            s.synchronize()

    def write(self, dst: Any, host: np.ndarray) -> None:
        src = np.ascontiguousarray(host).reshape(-1).view(np.uint8)
        if src.size != int(dst.nbytes):
            raise TurnipError(f"write of {src.size} bytes into {int(dst.nbytes)} bytes")
        if not self._is_dev(dst):
            np.copyto(dst.reshape(-1).view(np.uint8), src, casting="no")
            return
        if src.size == 0:
            return
        d = self._dev_of(dst)
        s = self._streams.get((d, QueueKind.H2D))
        with self.cp.cuda.Device(d):
            sp = s.ptr if s is not None else self.cp.cuda.get_current_stream().ptr
            rt = self.cp.cuda.runtime
            rt.memcpyAsync(int(dst.data.ptr), self._host_ptr(src), src.size, rt.memcpyHostToDevice, sp)
        self._pending.append(src)  # keep the source alive until synchronize()

    def write_part(self, dst: Any, host: np.ndarray) -> None:
        """Host bytes into a (possibly strided) box of device memory, done when this returns (the host buffer is reused).

        A contiguous box is one synchronous copy; a strided one goes through a device temporary and an
        element-wise copy. Host destinations (the pinned host region) are a plain NumPy copy.
        """
        if not self._is_dev(dst):
            np.copyto(dst, host, casting="no")
            return
        if host.size == 0:
            return
        cp = self.cp
        with cp.cuda.Device(self._dev_of(dst)):
            s = cp.cuda.get_current_stream()
            if dst.flags.c_contiguous:
                src = np.ascontiguousarray(host)
                rt = cp.cuda.runtime
                rt.memcpyAsync(int(dst.data.ptr), self._host_ptr(src), src.nbytes, rt.memcpyHostToDevice, s.ptr)
            else:
                tmp = cp.empty(host.shape, dtype=host.dtype)
                tmp.set(np.ascontiguousarray(host), stream=s)
                cp.copyto(dst, tmp)
            s.synchronize()

    def read(self, src: Any) -> np.ndarray:
        if not self._is_dev(src):
            return np.array(src, copy=True)
        d = self._dev_of(src)
        out = np.empty(src.shape, dtype=src.dtype)
        if out.nbytes:
            with self.cp.cuda.Device(d):
                self.cp.cuda.Device(d).synchronize()
                rt = self.cp.cuda.runtime
                s = self.cp.cuda.get_current_stream()
                rt.memcpyAsync(self._host_ptr(out), int(src.data.ptr), out.nbytes, rt.memcpyDeviceToHost, s.ptr)
                s.synchronize()
        return out

    def synchronize(self) -> None:
        cp = self.cp
        for d in self._devices:
            with cp.cuda.Device(d):
                cp.cuda.Device(d).synchronize()
        self._pending.clear()
        if self._pool_base:
            self._measure_pool()

    def thread_init(self, queue: tuple[int, str]) -> None:
        device, kind = queue
        self.cp.cuda.Device(device).use()  # per host thread
        self._stream(device, kind).use()  # CuPy's current stream is thread-local

    # -- preparation ----------------------------------------------------------
    def prepare(self, plan: Plan) -> list[Callable[[], None]]:
        assert self.memories is not None and self.plan is plan, "allocate_all(plan) first"
        cp = self.cp
        for d in self._devices:
            with cp.cuda.Device(d):
                for kind in QUEUE_KINDS:
                    self._streams[(d, kind)] = cp.cuda.Stream(non_blocking=True)
        for node in plan.nodes:
            if node.device not in self._devices:
                raise TurnipError(f"{describe_node(node, plan)} runs on GPU {node.device}, which has no arena in the plan; re-plan the model")
            self._queue_of[node.id] = (node.device, QUEUE_OF_KIND[node.kind])
        self._events = []
        for node in plan.nodes:
            with cp.cuda.Device(node.device):
                self._events.append(cp.cuda.Event(block=self.blocking_sync, disable_timing=True))
        self._event_of = {node.id: self._events[i] for i, node in enumerate(plan.nodes)}
        self._alloc = [[0, 0] for _ in plan.nodes]
        self._index = {node.id: i for i, node in enumerate(plan.nodes)}
        self._ort_cuda_nodes = []
        self._host_trip_nodes = []
        tasks = super().prepare(plan)
        self.synchronize()
        self._pool_base = {d: self._pool_total(d) for d in self._devices}
        self._pinned_base = self._pinned_pool_blocks()
        if self._host_trip_nodes:
            ops = sorted({op for _, op, _, _ in self._host_trip_nodes})
            warnings.warn(
                f"turnip cupy backend: {len(self._host_trip_nodes)} node(s) (ops {', '.join(ops)}) have no GPU kernel and run "
                f"through onnxruntime on the CPU, a host round trip each ({self._ort_cuda_reason})",
                RuntimeWarning,
                stacklevel=2,
            )
        return tasks

    def _pinned_pool_blocks(self) -> int | None:
        """Free blocks in CuPy's pinned pool (it keeps no byte counts): grows when kernels stage host copies."""
        pool = getattr(self.cp, "get_default_pinned_memory_pool", None)
        try:
            return int(pool().n_free_blocks()) if pool is not None else None
        except Exception:  # noqa: BLE001
            return None

    def _pool_total(self, d: int) -> int:
        cp = self.cp
        with cp.cuda.Device(d):
            return int(cp.get_default_memory_pool().total_bytes())

    def _measure_pool(self) -> None:
        growth = {d: max(0, self._pool_total(d) - self._pool_base.get(d, 0)) for d in self._devices}
        self.report.setdefault("pool_growth_bytes", {})
        for d, g in growth.items():
            key = str(d)
            self.report["pool_growth_bytes"][key] = max(g, self.report["pool_growth_bytes"].get(key, 0))

    def compute_input(self, plan: Plan, loc: Loc) -> Any:
        return self.view(loc)

    def prepare_compute(self, plan: Plan, node: Node) -> Callable[[], None]:
        with self.cp.cuda.Device(node.device):  # views, kernels and onnxruntime sessions of this node's GPU
            return super().prepare_compute(plan, node)

    def special_kernel(self, plan: Plan, node: Node, inputs: list[Any], outputs: list[Any]) -> Callable[..., None] | None:
        """MatMul of matching float dtypes writes straight into its planned output (``cupy.matmul(..., out=)``)."""
        if node.op != "MatMul" or node.domain not in ("", "ai.onnx") or len(inputs) != 2 or len(outputs) != 1:
            return None
        a, b, o = inputs[0], inputs[1], outputs[0]
        if a is None or b is None or o is None or a.ndim < 2 or b.ndim < 2 or not (a.dtype == b.dtype == o.dtype) or o.dtype.kind != "f":
            return None
        try:
            batch = np.broadcast_shapes(tuple(a.shape[:-2]), tuple(b.shape[:-2]))
        except ValueError:
            return None
        if tuple(o.shape) == tuple(batch) + (a.shape[-2], b.shape[-1]) and a.shape[-1] == b.shape[-2]:
            return _matmul_out(self.cp)
        return None

    def device_fallback(self, plan: Plan, node: Node, inputs: list[Any], outputs: list[Any]) -> Callable[..., None] | None:
        """onnxruntime's CUDA provider on the planned device pointers, when it really loads; else None (host round trip)."""
        if not self.use_ort_cuda:
            self._ort_cuda_reason = "onnxruntime CUDA fallback disabled"
            return None
        ok, why = ort_cuda_status(node.device)
        self._ort_cuda_reason = why
        if not ok or not all(v is None or v.size > 0 for v in list(inputs) + list(outputs)):
            return None
        try:
            stream = self._stream(node.device, QueueKind.COMPUTE)
            return _OrtCudaKernel(plan, node, inputs, outputs, node.device, stream.ptr)
        except Exception as e:  # noqa: BLE001 - fall back to the host round trip, but say why
            self._ort_cuda_reason = f"onnxruntime CUDA session for {node.op} failed: {type(e).__name__}: {e}"
            return None

    def bind_compute(
        self, node: Node, kernel: Callable[..., None], ctx: Any, inputs: list[Any], outputs: list[Any], route: KernelRoute = KernelRoute.NATIVE
    ) -> Callable[[], None]:
        entry = (node.id, node.op, node.domain, node.name)
        if route == KernelRoute.DEVICE_FALLBACK:
            self._ort_cuda_nodes.append(entry)
        elif route == KernelRoute.HOST_FALLBACK:
            self._host_trip_nodes.append(entry)
        return self._bind(node, kernel, ctx, inputs, outputs, route == KernelRoute.DEVICE_FALLBACK)

    def _bind(self, node: Node, kernel: Callable[..., None], ctx: Any, inputs: list, outputs: list, external: bool) -> Callable[[], None]:
        cp = self.cp
        idx = self._index[node.id]
        ev = self._events[idx]
        stream = self._stream(node.device, QueueKind.COMPUTE)
        waits = self._cross_waits(node)
        cell = self._alloc[idx]
        strict = self.strict_memory
        async_release = self.async_release
        using_allocator = cp.cuda.using_allocator
        inner = cp.cuda.get_allocator()
        count = [0, 0]

        def counting_alloc(size: int) -> Any:
            count[0] += int(size)
            count[1] += 1
            return inner(size)

        label = describe_node(node, self.plan)

        def run() -> None:
            if async_release:
                for e in waits:
                    stream.wait_event(e)
                if external:  # onnxruntime does not see our events: let its inputs land first
                    stream.synchronize()
            count[0] = count[1] = 0
            with using_allocator(counting_alloc):
                kernel(ctx, inputs, outputs)
            ev.record(stream)
            if not async_release:
                ev.synchronize()
            if count[0]:
                if count[0] > cell[0]:
                    cell[0], cell[1] = count[0], count[1]
                if strict:
                    raise MemoryPlanError(
                        f"{label} allocated {count[0]} bytes outside the plan ({count[1]} allocation(s): kernel "
                        "temporaries or library workspace the plan does not reserve); run without strict_memory to measure all nodes"
                    )

        return run

    def _cross_waits(self, node: Node) -> list[Any]:
        q = self._queue_of[node.id]
        out = []
        for d in sorted(set(node.deps)):
            if d in self._event_of and self._queue_of.get(d) != q:
                out.append(self._event_of[d])
        return out

    def prepare_copy(self, plan: Plan, node: Node) -> Callable[[], None]:
        src = self.raw(node.src)
        dst = self.raw(node.dst)
        n = int(src.nbytes)
        if n != int(dst.nbytes):
            raise TurnipError(f"{describe_node(node, plan)} copies {n} bytes into {int(dst.nbytes)} bytes; re-plan the model")
        rt = self.cp.cuda.runtime
        sdev = self._mem_device.get(node.src.mem, -1)
        ddev = self._mem_device.get(node.dst.mem, -1)
        kind_name = QUEUE_OF_KIND[node.kind]
        stream = self._stream(node.device, kind_name)
        sp = int(stream.ptr)
        ev = self._events[self._index[node.id]]
        waits = self._cross_waits(node)
        async_release = self.async_release
        src_ptr, dst_ptr = self._ptr(src), self._ptr(dst)

        if node.kind == RELOAD:
            if sdev != -1 or ddev == -1:
                raise TurnipError(f"{describe_node(node, plan)} must copy host memory to a GPU; re-plan the model")
            kind = rt.memcpyHostToDevice

            def enqueue() -> None:
                timer = self._h2d_timer
                if timer is None:
                    rt.memcpyAsync(dst_ptr, src_ptr, n, kind, sp)
                else:  # timed (start_h2d_timing): events on the copy's own stream bracket exactly this copy
                    start, end = timer.pair()
                    start.record(stream)
                    rt.memcpyAsync(dst_ptr, src_ptr, n, kind, sp)
                    end.record(stream)
                    timer.add(start, end, n)

        elif node.kind == OFFLOAD:
            if sdev == -1 or ddev != -1:
                raise TurnipError(f"{describe_node(node, plan)} must copy a GPU's memory to the host; re-plan the model")
            kind = rt.memcpyDeviceToHost

            def enqueue() -> None:
                rt.memcpyAsync(dst_ptr, src_ptr, n, kind, sp)

        elif node.kind == MOVE:
            if sdev == -1 or ddev == -1:
                raise TurnipError(f"{describe_node(node, plan)} must copy between two GPUs; re-plan the model")
            if sdev == ddev:
                kind = rt.memcpyDeviceToDevice

                def enqueue() -> None:
                    rt.memcpyAsync(dst_ptr, src_ptr, n, kind, sp)

            else:
                self._enable_peer(sdev, ddev)

                def enqueue() -> None:
                    rt.memcpyPeerAsync(dst_ptr, ddev, src_ptr, sdev, n, sp)

        else:  # pragma: no cover - the executor rejects unknown kinds first
            raise TurnipError(f"{describe_node(node, plan)} has unknown kind {node.kind!r}")

        if n == 0:

            def enqueue() -> None:
                return None

        def run() -> None:
            if async_release:
                for e in waits:
                    stream.wait_event(e)
            enqueue()
            ev.record(stream)
            if not async_release:
                ev.synchronize()

        return run

    def _enable_peer(self, src: int, dst: int) -> None:
        key = f"{src}->{dst}"
        if key in self._peer:
            return
        cp = self.cp
        rt = cp.cuda.runtime
        ok = False
        try:
            if rt.deviceCanAccessPeer(dst, src):
                with cp.cuda.Device(dst):
                    try:
                        rt.deviceEnablePeerAccess(src)
                    except rt.CUDARuntimeError as e:
                        if getattr(e, "status", None) != _CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED:
                            raise
                ok = True
        except Exception as e:  # noqa: BLE001 - no peer access: the driver stages the copy through host memory
            warnings.warn(f"turnip cupy backend: no peer access GPU {src} -> GPU {dst} ({e}); moves are staged through host memory", RuntimeWarning, stacklevel=2)
        self._peer[key] = ok

    # -- report ---------------------------------------------------------------
    def _finish_report(self) -> None:
        plan = self.plan
        if plan is None:
            return
        cp = self.cp
        nodes: list[dict[str, Any]] = []
        total = 0
        for i, (nb, cnt) in enumerate(self._alloc):
            if nb:
                nd = plan.nodes[i]
                total += nb
                nodes.append({"node": nd.id, "op": nd.op, "name": nd.name, "bytes": nb, "allocations": cnt, "pos": nd.pos})
        nodes.sort(key=lambda r: r["pos"])
        first = nodes[0] if nodes else None
        nodes_by_size = sorted(nodes, key=lambda r: -r["bytes"])[:20]
        free_drop = {}
        for d in self._devices:
            try:
                with cp.cuda.Device(d):
                    free, _ = cp.cuda.runtime.memGetInfo()
                free_drop[str(d)] = max(0, self._free_base.get(d, int(free)) - int(free))
            except Exception:  # noqa: BLE001
                pass
        arenas = {str(m.device): int(m.size) for m in plan.memories if m.kind == GPU}
        try:
            rt_ver = int(cp.cuda.runtime.runtimeGetVersion())
        except Exception:  # noqa: BLE001
            rt_ver = None
        r = self.report
        r.update(
            backend="cupy",
            cupy_version=getattr(cp, "__version__", "?"),
            cuda_runtime_version=rt_ver,
            async_release=self.async_release,
            strict_memory=self.strict_memory,
            host_pinned=self._pinned,
            host_bytes=self._host_bytes,
            arena_bytes=arenas,
            peer_access=dict(self._peer),
            outside_plan_bytes_max_node=max((n["bytes"] for n in nodes), default=0),
            outside_plan_bytes_sum=total,
            outside_plan_nodes=len(nodes),
            outside_plan_first=first,
            outside_plan_top=nodes_by_size,
            device_free_drop_bytes=free_drop,  # includes the arena itself
            ort_cuda_nodes=[{"node": i, "op": op, "name": nm} for i, op, _, nm in self._ort_cuda_nodes],
            host_round_trip_nodes=[{"node": i, "op": op, "name": nm} for i, op, _, nm in self._host_trip_nodes],
            ort_cuda=self._ort_cuda_reason,
        )
        r.setdefault("pool_growth_bytes", {})
        pinned_now = self._pinned_pool_blocks()
        base = getattr(self, "_pinned_base", None)
        r["pinned_pool_free_blocks_growth"] = None if pinned_now is None or base is None else pinned_now - base
        if first is not None and not self.strict_memory:
            warnings.warn(
                f"turnip cupy backend: {len(nodes)} compute node(s) allocated device memory outside the plan "
                f"(largest {_human(r['outside_plan_bytes_max_node'])}, first {first['op']} {first['name']!r}; "
                f"pool grew {_human(max(r['pool_growth_bytes'].values(), default=0))}); the plan does not reserve kernel workspace yet",
                RuntimeWarning,
                stacklevel=2,
            )

    def run_report(self) -> dict[str, Any]:
        """The report of the last run (also in :attr:`report`), for ``--report`` / ``--json``."""
        return dict(self.report)


__all__ = ["CupyBackend", "MemoryPlanError", "ort_cuda_status"]
