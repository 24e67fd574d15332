"""One device arena and one host weight store for all the plans of one session.

A past/present decoder's session runs several plans: its own (the prompt
step), and one per past-length bucket (:mod:`turnip.generate_bucket`). Each
plan lays its tensors out at fixed offsets in ONE arena per GPU; loaded side
by side, the plans would hold their arenas at once (up to twice the user's
budget while moving to the next bucket), and each would hold the model's
weights again. Here they share:

* **Buffers** (:class:`SessionMemory`, an :class:`turnip.memory.Allocator`
  per plan): one buffer per plan memory slot -- one arena per GPU, one host
  region -- sized to the largest plan that used it; every plan's memories
  are views of it. So the plans run ONE AT A TIME: a plan is *activated*
  before it is used (:meth:`SessionMemory.activate`, called by the loaded
  plan itself), which rewrites the bytes it placed once at load (weights,
  constants) if another plan ran in between. A larger plan grows the buffer:
  the old one is dropped first (the plans viewing it unbind, and bind again
  to the new one when next activated), so the bytes held at once never
  exceed the largest plan's. State a plan keeps between runs (the KV cache)
  is the caller's to carry across a move (:class:`turnip.generate_bucket.BucketRunner`
  copies the past out before loading the next bucket).
* **Weights** (:class:`WeightStore`): one host buffer per model file
  (keyed by its sha256), each initializer at its own offset, filled from the
  file the first time any plan needs it and never again. Plans write their
  arena copies from there; a weight a plan keeps in host memory (reloaded per
  run) is not copied into its host region at all: that location is the
  store's bytes (:attr:`PlanAllocator.external`, honoured by
  :class:`turnip.memory.Memories`).

WHY only past/present decoders by default (:func:`session_memory_for`): a
session of one plan gains nothing, and on the NumPy backend the store is one
more host copy of the weights beside the emulated arena.

The counters (:class:`MemoryCounters`) are what tests/test_generate_memory.py
asserts on: arena allocations and bytes, the most device bytes held at once,
weight bytes read from the files, host copies of weights outside the store.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import TurnipError
from .plan import GPU, HOST, Memory, Plan

if TYPE_CHECKING:
    from .run import LoadedPlan

ALIGN = 256  # bytes: each weight's offset in the store (a GPU copy engine's preferred alignment)


@dataclass
class MemoryCounters:
    """What one session's memory cost, over its whole life (``to_dict`` for ``--json``)."""

    arena_allocations: int = 0  # device (GPU-kind) buffers allocated: 1 per GPU, +1 each time a larger plan grows one
    device_bytes_allocated: int = 0  # their bytes, summed over the session
    device_bytes_live_peak: int = 0  # most device bytes held at once (never two arenas of one GPU)
    largest_plan_arena_bytes: int = 0  # the largest arena (all GPUs) of the plans that ran: what the peak may reach
    host_region_allocations: int = 0  # host regions (offloaded tensors, state homes) allocated
    host_region_bytes_live_peak: int = 0
    weight_store_bytes: int = 0  # the host weight stores' size (one buffer per model file)
    weight_bytes_read: int = 0  # weight bytes read into the store (from the model / weight files), each weight once
    weight_file_bytes_read: int = 0  # ... of which read through file ranges (weights of 4 KiB or more, external data)
    host_weight_copy_bytes: int = 0  # weight bytes a loaded plan holds on the host outside the store (derived weights, cut blocks)
    weight_bytes_to_device: int = 0  # weight / constant bytes written into shared buffers from host (loads and re-activations)
    plan_binds: int = 0  # times a plan's views were made on the shared buffers (load, and again after a buffer grew)
    plan_switches: int = 0  # activations of a plan other than the last one used

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class WeightStore:
    """The weights of one model file on the host, once: one buffer, each initializer at its offset, filled on first need.

    ``sizes``: initializer name -> bytes (the whole model's, so every plan of
    it finds its weights here). ``alloc(nbytes)`` makes the buffer (the
    backend's host allocator: pinned on a GPU).
    """

    def __init__(self, sha256: str, sizes: dict[str, int], alloc: Any, counters: MemoryCounters) -> None:
        self.sha256 = sha256
        self.offsets: dict[str, tuple[int, int]] = {}
        pos = 0
        for name, n in sizes.items():
            self.offsets[name] = (pos, int(n))
            pos += -(-int(n) // ALIGN) * ALIGN
        self.nbytes = pos
        self.buffer = alloc(pos) if pos else np.zeros(0, dtype=np.uint8)
        self.filled: set[str] = set()  # weights read in (never again)
        self.c = counters
        counters.weight_store_bytes += pos

    def get(self, name: str, source: Any) -> np.ndarray | None:
        """The weight's bytes in the store (flat uint8), read from ``source`` (a file range or host bytes) the first time; None if unknown."""
        from .weights import _FileRange

        got = self.offsets.get(name)
        if got is None:
            return None
        off, n = got
        size = source.size if isinstance(source, _FileRange) else int(np.asarray(source).nbytes)
        if size != n:
            return None  # not the initializer as stored (a plan expecting other bytes keeps its own source)
        view = self.buffer[off : off + n]
        if name not in self.filled:
            if isinstance(source, _FileRange):
                source.read_into(None, view)
                self.c.weight_file_bytes_read += n
            else:
                np.copyto(view, np.ascontiguousarray(source).reshape(-1).view(np.uint8))
            self.c.weight_bytes_read += n
            self.filled.add(name)
        return view


def initializer_sizes(model: Any, model_dir: str = "") -> dict[str, int]:
    """Initializer name -> its bytes in the model (external length, raw bytes, or typed fields' array)."""
    import os

    import onnx
    from onnx import numpy_helper

    out: dict[str, int] = {}
    for init in model.graph.initializer:
        if init.data_location == onnx.TensorProto.EXTERNAL:
            info = {e.key: e.value for e in init.external_data}
            if "length" in info:
                out[init.name] = int(info["length"])
            elif info.get("location"):  # no length: to the end of its file
                try:
                    out[init.name] = os.path.getsize(os.path.join(model_dir, info["location"])) - int(info.get("offset", 0))
                except (OSError, ValueError):
                    pass  # unreadable here: the plan's own loading says so
            continue
        if init.HasField("raw_data"):
            out[init.name] = len(init.raw_data)
        elif init.data_location != onnx.TensorProto.EXTERNAL:
            out[init.name] = int(numpy_helper.to_array(init).nbytes)
    return out


def slot_keys(plan: Plan) -> dict[int, tuple[str, int, int]]:
    """Memory id -> the shared buffer it is a view of: (kind, device, k-th memory of that kind on that device)."""
    seen: dict[tuple[str, int], int] = {}
    out = {}
    for m in plan.memories:
        kind, dev = str(m.kind), int(m.device)
        k = seen.get((kind, dev), 0)
        seen[(kind, dev)] = k + 1
        out[m.id] = (kind, dev, k)
    return out


class PlanAllocator:
    """The :class:`turnip.memory.Allocator` one loaded plan gets: views of the session's buffers.

    ``external``: ``(memory id, offset, nbytes) -> bytes`` for placements whose
    location is backed by a buffer outside the plan's memories (weights the
    plan keeps in host memory: the store's bytes).
    """

    def __init__(self, session: "SessionMemory", lp: "LoadedPlan") -> None:
        self.session = session
        self.lp = lp
        self.external: dict[tuple[int, int, int], Any] = {}
        self.slots = slot_keys(lp.plan)

    def allocate(self, mem: Memory) -> Any:
        return self.session.buffer(self.slots[mem.id], int(mem.size), self.lp)

    def release(self, buf: Any) -> None:
        return None  # the session owns its buffers (SessionMemory.close)


class SessionMemory:
    """The buffers, weight stores and counters shared by the plans of one session (module docstring)."""

    def __init__(self) -> None:
        self.c = MemoryCounters()
        self.buffers: dict[tuple[str, int, int], Any] = {}
        self.reserved: dict[tuple[str, int, int], int] = {}
        self.stores: dict[str, WeightStore] = {}
        self.plans: list["LoadedPlan"] = []  # plans bound to the buffers now
        self.active: "LoadedPlan | None" = None
        self.plans_used: list[Plan] = []  # every plan that ran on these buffers (once each): what they were sized for
        self._backend: Any = None  # the backend that allocates the buffers (the first plan's)
        self._live = 0
        self._host_live = 0

    # -- buffers ---------------------------------------------------------------
    def reserve(self, plans: list[Plan]) -> None:
        """Size the buffers for every plan in ``plans`` before they are loaded: one allocation, not one per growth."""
        for plan in plans:
            slots = slot_keys(plan)
            for m in plan.memories:
                key = slots[m.id]
                self.reserved[key] = max(self.reserved.get(key, 0), int(m.size))

    def buffer(self, key: tuple[str, int, int], size: int, requester: "LoadedPlan") -> Any:
        """At least ``size`` bytes of slot ``key`` (a view of its length ``size``); grows the slot (dropping the old buffer first)."""
        if self._backend is None:
            self._backend = requester.backend
        buf = self.buffers.get(key)
        if buf is None or len(buf) < size:
            if buf is not None:
                for lp in list(self.plans):
                    if lp is not requester:
                        lp._unbind()  # noqa: SLF001 - they view the old buffer: drop every view before it goes
                self._drop(key)
            want = max(size, self.reserved.get(key, 0))
            kind, dev = key[0], key[1]
            buf = self._backend.allocate(Memory(-1, GPU if kind == str(GPU) else HOST, dev, want, want))
            self.buffers[key] = buf
            if kind == str(GPU):
                self.c.arena_allocations += 1
                self.c.device_bytes_allocated += want
                self._live += want
                self.c.device_bytes_live_peak = max(self.c.device_bytes_live_peak, self._live)
            else:
                self.c.host_region_allocations += 1
                self._host_live += want
                self.c.host_region_bytes_live_peak = max(self.c.host_region_bytes_live_peak, self._host_live)
        return buf[:size]

    def _drop(self, key: tuple[str, int, int]) -> None:
        buf = self.buffers.pop(key)
        if key[0] == str(GPU):
            self._live -= len(buf)
        else:
            self._host_live -= len(buf)
        self._backend.release(buf)

    def device_bytes(self) -> int:
        """Device bytes held now."""
        return self._live

    # -- plans -----------------------------------------------------------------
    def allocator_for(self, lp: "LoadedPlan") -> PlanAllocator:
        return PlanAllocator(self, lp)

    def bound(self, lp: "LoadedPlan") -> None:
        """``lp`` made its views on the buffers (and wrote what it places once): it is the active plan."""
        if lp not in self.plans:
            self.plans.append(lp)
        if not any(p is lp.plan for p in self.plans_used):
            self.plans_used.append(lp.plan)
            arena = sum(int(m.size) for m in lp.plan.memories if m.kind == GPU)
            self.c.largest_plan_arena_bytes = max(self.c.largest_plan_arena_bytes, arena)
        self.c.plan_binds += 1
        self.active = lp

    def unbound(self, lp: "LoadedPlan") -> None:
        if lp in self.plans:
            self.plans.remove(lp)
        if self.active is lp:
            self.active = None

    def activate(self, lp: "LoadedPlan") -> None:
        """Make ``lp`` the plan the buffers hold: bind it again if a buffer grew, else rewrite what it placed once if another plan ran."""
        if self.active is lp:
            return
        self.c.plan_switches += 1
        if lp not in self.plans:  # a buffer grew since it was loaded: views, kernels and executor on the new ones
            lp._bind()  # noqa: SLF001
            lp._write_resident()  # noqa: SLF001
            self.bound(lp)
            return
        lp._write_resident()  # noqa: SLF001
        self.active = lp

    def store_for(self, sha256: str, model: Any, backend: Any, model_dir: str = "") -> WeightStore:
        """The weight store of the model file ``sha256`` (made from ``model``'s initializers the first time)."""
        st = self.stores.get(sha256)
        if st is None:
            if self._backend is None:
                self._backend = backend
            be = self._backend

            def alloc(n: int) -> Any:
                return be.allocate(Memory(-1, HOST, -1, n, n))

            st = self.stores[sha256] = WeightStore(sha256, initializer_sizes(model, model_dir), alloc, self.c)
        return st

    def close(self) -> None:
        """Drop the buffers and stores (the plans must be closed first)."""
        if self.plans:
            raise TurnipError("close the session's plans before its memory")
        for key in list(self.buffers):
            self._drop(key)
        self.stores.clear()
        self.active = None


def session_memory_for(plan: Plan) -> SessionMemory | None:
    """A :class:`SessionMemory` for a session whose plan is a past/present decoder (it will run bucket plans), else None."""
    from .generate import CacheConvention, DecoderSignature, GenerateError
    from .outblocks import graph_outputs

    ts = plan.tensors
    try:
        sig = DecoderSignature.from_io({ts[i].name: (list(ts[i].shape), np.dtype(ts[i].dtype)) for i in plan.inputs},
                                       [ts[o.tensor].name for o in graph_outputs(plan)])  # a tiled plan's outputs: whole
    except (GenerateError, TypeError, ValueError):
        return None
    return SessionMemory() if sig.convention is CacheConvention.PAST_PRESENT else None
