"""Memories: every plan memory allocated once, and zero-copy views into them.

The plan gives each tensor location as ``Loc(mem, offset, tensor)``. The
runtime allocates each :class:`~turnip.plan.Memory` once, as one flat byte
buffer (a NumPy ``uint8`` array on the CPU backend, a CuPy one on the GPU
backend), and every tensor the plan touches is a view of it: no allocation
ever happens per node. Views are cached per ``Loc``.
"""

from __future__ import annotations

import mmap
from typing import Any, Iterable, Protocol

from .dtypes import np_dtype
from .errors import PlanError
from .plan import Loc, Memory, Plan


def private_map(nbytes: int) -> mmap.mmap:
    """``nbytes`` of private anonymous memory: zeros, resident only once touched, unmapped when the object dies.

    Private, not ``mmap.mmap(-1, n)``'s default shared map: shared anonymous pages live in shmem,
    where MADV_DONTNEED only unmaps them (the memory stays used) instead of freeing them.
    """
    flags = getattr(mmap, "MAP_PRIVATE", 0) | getattr(mmap, "MAP_ANONYMOUS", getattr(mmap, "MAP_ANON", 0))
    return mmap.mmap(-1, nbytes, flags=flags) if flags else mmap.mmap(-1, nbytes)


class Allocator(Protocol):
    """What Memories needs from a backend: one flat byte buffer per plan memory, and its release.

    A buffer must support ``len()``, slicing to a flat ``uint8`` view and
    ``.view(dtype).reshape(shape)`` (NumPy and CuPy arrays do).
    """

    def allocate(self, mem: Memory) -> Any: ...

    def release(self, buf: Any) -> None: ...


class Memories:
    """The allocated memories of one plan, through one allocator (a backend)."""

    def __init__(self, plan: Plan, allocator: Allocator) -> None:
        self.plan = plan
        self.allocator = allocator
        self.buffers: dict[int, Any] = {}
        self._views: dict[Loc, Any] = {}
        self._raw: dict[Loc, Any] = {}
        self._dtypes: dict[str, Any] = {}  # dtype name -> NumPy dtype
        # locations backed by a buffer outside the plan's memories: (memory id, offset, nbytes) -> bytes
        # (a session's host weight store, turnip/session_memory.py); an allocator may name them
        self._external: dict[int, list[tuple[int, int, Any]]] = {}
        for (mem, off, n), buf in dict(getattr(allocator, "external", None) or {}).items():
            self._external.setdefault(mem, []).append((off, off + n, buf))
        ids = set()
        for m in plan.memories:
            if m.id in ids:
                raise PlanError(f"plan lists memory {m.id} twice; re-plan the model with `turnipc plan`")
            ids.add(m.id)
        try:
            for m in plan.memories:
                self.buffers[m.id] = allocator.allocate(m)
        except BaseException:
            self.free()
            raise

    # -- views -------------------------------------------------------------
    def _check(self, loc: Loc) -> int:
        plan = self.plan
        if loc.mem not in self.buffers:
            raise PlanError(f"location {loc} names memory {loc.mem}, which the plan does not have; re-plan the model")
        if not 0 <= loc.tensor < len(plan.tensors):
            raise PlanError(f"location {loc} names tensor {loc.tensor}, which the plan does not have; re-plan the model")
        t = plan.tensors[loc.tensor]
        size = len(self.buffers[loc.mem])
        if loc.offset < 0 or loc.offset + t.nbytes > size:
            raise PlanError(
                f"tensor {t.name!r} at offset {loc.offset} ({t.nbytes} bytes) does not fit memory {loc.mem} "
                f"({size} bytes); re-plan the model"
            )
        return t.nbytes

    def raw(self, loc: Loc) -> Any:
        """The bytes at ``loc`` as a flat ``uint8`` view (what copies use)."""
        v = self._raw.get(loc)
        if v is None:
            n = self._check(loc)
            v = self._external_bytes(loc, n)
            if v is None:
                v = self.buffers[loc.mem][loc.offset : loc.offset + n]
            self._raw[loc] = v
        return v

    def _external_bytes(self, loc: Loc, n: int) -> Any:
        """The bytes of ``loc`` when an external buffer backs them (wholly inside one), else None."""
        for lo, hi, buf in self._external.get(loc.mem, ()):
            if lo <= loc.offset and loc.offset + n <= hi:
                return buf[loc.offset - lo : loc.offset - lo + n]
        return None

    def view(self, loc: Loc) -> Any:
        """The tensor at ``loc``: dtype and shape of ``plan.tensors[loc.tensor]``, zero-copy."""
        v = self._views.get(loc)
        if v is None:
            t = self.plan.tensors[loc.tensor] if 0 <= loc.tensor < len(self.plan.tensors) else None
            raw = self.raw(loc)
            assert t is not None
            dt = self._dtypes.get(t.dtype)
            if dt is None:
                try:
                    dt = self._dtypes[t.dtype] = np_dtype(t.dtype)
                except TypeError as e:
                    raise PlanError(f"tensor {t.name!r} has unknown dtype {t.dtype!r}; re-plan the model") from e
            count = 1
            for d in t.shape:
                count *= d
            if count * dt.itemsize != t.nbytes:
                raise PlanError(
                    f"tensor {t.name!r}: shape {list(t.shape)} of {t.dtype} is {count * dt.itemsize} bytes, "
                    f"but the plan says {t.nbytes}; re-plan the model"
                )
            v = raw.view(dt).reshape(t.shape)
            self._views[loc] = v
        return v

    def discard_except(self, keep: Iterable[Loc]) -> int:
        """Give every memory's pages back to the OS except those under ``keep``; bytes given back.

        WHY: at the end of a one-shot run the outputs are copied out of the
        memories, which are freed right after; giving the rest back first keeps
        those copies inside the memories' footprint instead of on top of it.
        The memories must not be run again (discarded bytes read as zeros). An
        allocator without ``discard(buf, start, stop)`` (device memory) gives
        nothing back.
        """
        discard = getattr(self.allocator, "discard", None)
        if discard is None:
            return 0
        spans: dict[int, list[tuple[int, int]]] = {}
        for loc in keep:
            spans.setdefault(loc.mem, []).append((loc.offset, loc.offset + self._check(loc)))
        given = 0
        for mem_id, buf in self.buffers.items():
            pos, size = 0, len(buf)
            for lo, hi in [*sorted(spans.get(mem_id, [])), (size, size)]:
                if lo > pos:
                    given += discard(buf, pos, lo)
                pos = max(pos, hi)
        return given

    def free(self) -> None:
        """Drop every buffer and view (the backend frees the memory)."""
        self._views.clear()
        self._raw.clear()
        for buf in self.buffers.values():
            self.allocator.release(buf)
        self.buffers.clear()
