"""The backend interface: where memories live and how nodes touch them.

What a new backend must provide is small, in the spirit of tinygrad's
``Allocator``: :meth:`Backend.allocate` / :meth:`Backend.release` one flat
buffer per plan memory, :meth:`Backend.copy` between two views (on the
calling queue), :meth:`Backend.write` / :meth:`Backend.read` host data, and
optionally :meth:`Backend.synchronize` and :meth:`Backend.thread_init` (bind
the worker thread to its queue: a device and a stream). Everything else is
decided once, here, for every backend: the zero-copy views
(:class:`turnip.memory.Memories`, which only needs the allocator half),
which kernel a compute node runs (native, else the onnxruntime fallback,
recorded in ``fallback_nodes``), and which inputs reach a kernel as host
parameters (declared with ``@register(..., host_inputs=...)``).

For each node the backend prepares, once at load time, a zero-argument
callable the executor runs: no lookups, no allocation and no view building
happen per node at run time.

Kernels are written once against the array API (``ctx.xp``); an op without a
native kernel runs through the onnxruntime fallback, and the backend records
which nodes did (``fallback_nodes``) for ``turnip-run --report``.
"""

from __future__ import annotations

import contextlib
import functools
from abc import ABC, abstractmethod
from enum import Enum
from types import ModuleType
from typing import Any, Callable

import numpy as np

from ..errors import TurnipError
from ..graph import describe_node
from ..memory import Memories
from ..plan import COMPUTE, Loc, Memory, Node, Plan

#: Largest plan-time constant (bytes) handed to a kernel as a host parameter array.
HOST_PARAM_MAX_BYTES = 4096


class KernelRoute(str, Enum):
    """How a compute node runs: decided once per node by :meth:`Backend.select_kernel`."""

    NATIVE = "native"  # a kernel of turnip.kernels (or the backend's own better one)
    DEVICE_FALLBACK = "ort-device"  # onnxruntime on the backend's device, on the planned views
    HOST_FALLBACK = "ort-host"  # onnxruntime on the CPU (a host round trip on a GPU backend)


class BackendError(TurnipError):
    """A backend cannot be used here (missing library, no GPU, ...)."""


class KernelError(TurnipError):
    """A compute node has no usable kernel (no native kernel and no fallback)."""


def opset_for(plan: Plan, domain: str) -> int:
    """The opset version of ``domain`` the model imports ("" and "ai.onnx" are the same domain)."""
    d = "" if domain in ("", "ai.onnx") else domain
    if d in plan.opset:
        return int(plan.opset[d])
    if d == "" and "ai.onnx" in plan.opset:
        return int(plan.opset["ai.onnx"])
    return 1


class Backend(ABC):
    """One execution backend (NumPy on the CPU, CuPy on GPUs)."""

    name: str = "?"
    xp: ModuleType = np
    #: Whether views live outside host memory, so that host parameters (see :meth:`host_param`) save a device sync.
    device_arrays: bool = False
    #: Whether a node's work is done when its callable returns (copies are memcpy, no streams): the executor may then
    #: run every queue on the calling thread (executor.py, "One thread").
    synchronous: bool = False

    def __init__(self) -> None:
        self.plan: Plan | None = None
        self.memories: Memories | None = None
        #: Where :meth:`allocate_all` gets the plan's memories: None for this backend's own allocations, or an
        #: allocator handing out views of buffers shared by a session's plans (turnip/session_memory.py).
        self.allocator: Any = None
        #: (node id, op, domain, name) of compute nodes that use the onnxruntime fallback.
        self.fallback_nodes: list[tuple[int, str, str, str]] = []

    # -- memory --------------------------------------------------------------
    @abstractmethod
    def allocate(self, mem: Memory) -> Any:
        """One flat uint8 buffer of ``mem.size`` bytes for a plan memory."""

    def release(self, buf: Any) -> None:
        """Free a buffer made by :meth:`allocate` (default: drop the reference)."""
        return None

    def allocate_all(self, plan: Plan) -> Memories:
        """Allocate every memory of ``plan`` once."""
        self.free()
        self.plan = plan
        self.memories = Memories(plan, self if self.allocator is None else self.allocator)
        return self.memories

    def free(self) -> None:
        if self.memories is not None:
            self.memories.free()
            self.memories = None

    def view(self, loc: Loc) -> Any:
        """The tensor at ``loc`` (zero-copy, cached)."""
        assert self.memories is not None, "allocate_all() first"
        return self.memories.view(loc)

    def raw(self, loc: Loc) -> Any:
        """The bytes at ``loc`` as a flat uint8 view."""
        assert self.memories is not None, "allocate_all() first"
        return self.memories.raw(loc)

    # -- data movement ---------------------------------------------------------
    @abstractmethod
    def copy(self, src: Any, dst: Any) -> None:
        """Copy the bytes of view ``src`` into view ``dst`` (same size)."""

    @abstractmethod
    def write(self, dst: Any, host: np.ndarray) -> None:
        """Write a host array (same dtype and size) into view ``dst``."""

    @abstractmethod
    def read(self, src: Any) -> np.ndarray:
        """A host NumPy copy of view ``src``."""

    def write_part(self, dst: Any, host: np.ndarray) -> None:
        """Write host array ``host`` into ``dst``, a typed view that may be strided (a box of a tensor), now.

        Unlike :meth:`write`, ``host`` may be reused as soon as this returns:
        weights are streamed into place through one bounded host buffer
        (:mod:`turnip.weightstream`), never all of them held at once.
        """
        np.copyto(dst, host, casting="no")

    def synchronize(self) -> None:
        """Wait until every queued operation has finished (no-op on the CPU)."""
        return None

    def thread_init(self, queue: tuple[int, str]) -> None:
        """Called once in each executor worker thread (device, queue kind)."""
        return None

    def run_scope(self) -> Any:
        """A context manager held around each execution of the MEMGRAPH (default: nothing to hold)."""
        return contextlib.nullcontext()

    # -- compute -----------------------------------------------------------
    def kernel_context(self, plan: Plan, node: Node) -> Any:
        from ..kernels import KernelContext

        return KernelContext(xp=self.xp, attrs=node.attrs, opset=opset_for(plan, node.domain), op=node.op, name=node.name)

    def select_kernel(self, plan: Plan, node: Node, inputs: list[Any], outputs: list[Any]) -> tuple[Callable[..., None], KernelRoute]:
        """The kernel of a compute node and its route, in the same order for every backend.

        The backend's own kernel for this node if it has one
        (:meth:`special_kernel`), else the shared native kernel, else the
        backend's onnxruntime on its device (:meth:`device_fallback`), else
        onnxruntime on the host. ``inputs`` / ``outputs`` are the planned views.
        """
        from ..kernels import get_kernel

        special = self.special_kernel(plan, node, inputs, outputs)
        if special is not None:
            return special, KernelRoute.NATIVE
        kernel = get_kernel(node.op, node.domain)
        if kernel is not None:
            return kernel, KernelRoute.NATIVE
        device = self.device_fallback(plan, node, inputs, outputs)
        if device is not None:
            return device, KernelRoute.DEVICE_FALLBACK
        return self.host_fallback_kernel(plan, node), KernelRoute.HOST_FALLBACK

    def special_kernel(self, plan: Plan, node: Node, inputs: list[Any], outputs: list[Any]) -> Callable[..., None] | None:
        """A backend-specific kernel that beats the shared one for this node (default: none)."""
        return None

    def device_fallback(self, plan: Plan, node: Node, inputs: list[Any], outputs: list[Any]) -> Callable[..., None] | None:
        """onnxruntime on the backend's device for an op without a native kernel (default: none; the host fallback runs)."""
        return None

    def prepare_kernel(self, plan: Plan, node: Node) -> tuple[Callable[..., None], bool]:
        """(kernel, uses_fallback) for a compute node, without views (the unprepared path)."""
        from ..kernels import get_kernel

        kernel = get_kernel(node.op, node.domain)
        if kernel is not None:
            return kernel, False
        return self.host_fallback_kernel(plan, node), True

    def host_fallback_kernel(self, plan: Plan, node: Node) -> Callable[..., None]:
        """onnxruntime on the CPU for ``node``, its session built now (fail at load, not mid-run)."""
        try:
            from ..fallback import make_fallback_kernel
        except ImportError as e:
            raise KernelError(
                f"{describe_node(node)}: no native kernel for op {node.op!r} and the onnxruntime fallback is not "
                f"available ({e}); install onnxruntime"
            ) from e

        def info(loc: Loc | None) -> tuple[str, tuple[int, ...]] | None:
            if loc is None:
                return None
            t = plan.tensors[loc.tensor]
            return (t.dtype, tuple(t.shape))

        kernel = make_fallback_kernel(
            node.op, node.domain, dict(plan.opset), [info(x) for x in node.inputs], [info(x) for x in node.outputs], node.attrs
        )
        build = getattr(kernel, "session", None)
        if callable(build):  # build the onnxruntime session now: fail at load, not mid-run
            build(node.attrs)
        return kernel

    def compute_input(self, plan: Plan, loc: Loc) -> Any:
        """What a kernel gets for input ``loc`` (default: the view)."""
        return self.view(loc)

    def host_param(self, plan: Plan, node: Node, i: int, loc: Loc) -> np.ndarray | None:
        """Input ``i`` of ``node`` as a host array, if its kernel reads it only as a parameter and it is a small plan-time constant.

        The kernel declares such inputs at registration (``host_inputs``); the
        bytes come from ``plan.constants`` (of the tensor, or of the storage it
        aliases). None: give the kernel the view.
        """
        from ..kernels import host_inputs

        if i not in host_inputs(node.op, node.domain):
            return None
        t = plan.tensors[loc.tensor]
        data = plan.constants.get(loc.tensor)
        if data is None:
            data = plan.constants.get(t.storage)
        if data is None or t.nbytes > HOST_PARAM_MAX_BYTES or len(data) != t.nbytes:
            return None
        from ..dtypes import np_dtype

        return np.frombuffer(data, dtype=np_dtype(t.dtype)).reshape(t.shape).copy()

    def kernel_inputs(self, plan: Plan, node: Node, views: list[Any]) -> list[Any]:
        """What the kernel of ``node`` gets for each input: the view, or (device backends) a host parameter array."""
        if not self.device_arrays:
            return views
        out = []
        for i, loc in enumerate(node.inputs):
            h = None if loc is None else self.host_param(plan, node, i, loc)
            out.append(h if h is not None else views[i])
        return out

    def prepare_compute(self, plan: Plan, node: Node) -> Callable[[], None]:
        """A callable that runs a compute node on its planned views."""
        views = [None if loc is None else self.compute_input(plan, loc) for loc in node.inputs]
        outputs = [None if loc is None else self.view(loc) for loc in node.outputs]
        kernel, route = self.select_kernel(plan, node, views, outputs)
        if route != KernelRoute.NATIVE:
            self.fallback_nodes.append((node.id, node.op, node.domain, node.name))
        # onnxruntime on the device reads the planned views itself; kernels may get host parameters
        inputs = views if route == KernelRoute.DEVICE_FALLBACK else self.kernel_inputs(plan, node, views)
        ctx = self.kernel_context(plan, node)
        if route == KernelRoute.NATIVE and self.xp is np and type(self).bind_compute is Backend.bind_compute:
            from ..kernels import get_kernel, prepare_call

            if kernel is get_kernel(node.op, node.domain):  # not a backend's own kernel
                consts = [None if loc is None else self.host_param(plan, node, i, loc) for i, loc in enumerate(node.inputs)]
                fast = prepare_call(ctx, node.domain, inputs, outputs, consts)
                if fast is not None:  # the data-independent work done once (turnip.kernels.prepared)
                    return fast
        return self.bind_compute(node, kernel, ctx, inputs, outputs, route)

    def bind_compute(
        self, node: Node, kernel: Callable[..., None], ctx: Any, inputs: list[Any], outputs: list[Any], route: KernelRoute = KernelRoute.NATIVE
    ) -> Callable[[], None]:
        """The prepared callable of a compute node (a GPU backend adds its stream, events and checks)."""

        return functools.partial(kernel, ctx, inputs, outputs)

    def run_compute(self, node: Node, inputs: list, outputs: list) -> None:
        """Run one compute node on the given views now (unprepared path; tests and tools)."""
        assert self.plan is not None
        kernel, _ = self.prepare_kernel(self.plan, node)
        kernel(self.kernel_context(self.plan, node), inputs, outputs)

    def prepare_copy(self, plan: Plan, node: Node) -> Callable[[], None]:
        src = self.raw(node.src)
        dst = self.raw(node.dst)
        if src.shape != dst.shape:
            raise TurnipError(f"{describe_node(node, plan)} copies {src.shape[0]} bytes into {dst.shape[0]} bytes; re-plan the model")
        copy = self.copy

        def run() -> None:
            copy(src, dst)

        return run

    def prepare(self, plan: Plan) -> list[Callable[[], None]]:
        """One prepared callable per plan node (index-aligned with ``plan.nodes``)."""
        assert self.memories is not None and self.plan is plan, "allocate_all(plan) first"
        self.fallback_nodes = []
        tasks = []
        for node in plan.nodes:
            try:
                if node.kind == COMPUTE:
                    tasks.append(self.prepare_compute(plan, node))
                else:
                    if len(node.inputs) != 1 or node.inputs[0] is None or len(node.outputs) != 1:
                        raise TurnipError(f"{describe_node(node, plan)} must have one source and one destination; re-plan")
                    tasks.append(self.prepare_copy(plan, node))
            except TurnipError:
                raise
            except Exception as e:
                raise KernelError(f"{describe_node(node, plan)} cannot be prepared: {type(e).__name__}: {e}") from e
        return tasks
