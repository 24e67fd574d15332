"""The CPU backend: NumPy arrays stand in for every memory of the plan.

It emulates the plan's devices faithfully: each GPU of the plan has its own
arena (a separate host buffer) and its own queues (compute, h2d, d2h, peer),
and the host memory is one more buffer; reloads, offloads and moves are
byte copies between arena views, so a plan that is wrong about hazards gives
wrong answers here too.
"""

from __future__ import annotations

import mmap
from typing import Any

import numpy as np

from ..memory import private_map
from ..plan import Memory
from .base import Backend


class NumpyBackend(Backend):
    name = "numpy"
    xp = np
    synchronous = True  # copies are np.copyto, kernels return when done: one thread can run every queue

    def allocate_all(self, plan: Any) -> Any:
        """Refuse, before allocating anything, a plan whose memories exceed this machine's RAM.

        np.zeros is lazy (calloc), so a 73 TiB plan would otherwise start and fail
        somewhere in the middle of the run, or be killed by the OOM killer.
        """
        total = sum(int(m.size) for m in plan.memories)
        ram = _physical_ram()
        if ram and total > ram:
            from ..errors import OutOfMemoryError

            raise OutOfMemoryError(
                f"the plan's memories total {total} bytes ({total / 2**30:.1f} GiB) but this machine has {ram / 2**30:.1f} GiB of RAM "
                "for the NumPy backend; re-plan with a smaller --gpu-mem or --dim, or run on a bigger machine"
            )
        return super().allocate_all(plan)

    def allocate(self, mem: Memory) -> Any:
        # zeros: deterministic contents (a read of never-written bytes is a plan bug, and
        # it then reads the same zeros in every order). A private anonymous map is zeros, lazy
        # (a page is resident once touched) and page-aligned, so :meth:`discard` can give pages back.
        size = int(mem.size)
        try:
            return np.frombuffer(private_map(size), dtype=np.uint8) if size else np.zeros(0, dtype=np.uint8)
        except (MemoryError, OSError):
            from ..errors import OutOfMemoryError

            where = "host memory" if mem.device < 0 else f"the arena of GPU {mem.device}"
            raise OutOfMemoryError(
                f"cannot allocate {int(mem.size)} bytes ({int(mem.size) / 2**30:.1f} GiB) for {where} (memory {mem.id}) on this machine; "
                "re-plan with a smaller --gpu-mem or --dim, or run on a machine with more RAM"
            ) from None

    def discard(self, buf: np.ndarray, start: int, stop: int) -> int:
        """Give the whole pages of ``buf[start:stop]`` back to the OS (they read as zeros after); bytes given back."""
        base = buf.base.obj if isinstance(buf.base, memoryview) else None
        if not isinstance(base, mmap.mmap) or not hasattr(mmap, "MADV_DONTNEED"):
            return 0
        lo = -(-start // mmap.PAGESIZE) * mmap.PAGESIZE
        hi = stop // mmap.PAGESIZE * mmap.PAGESIZE
        if hi <= lo:
            return 0
        base.madvise(mmap.MADV_DONTNEED, lo, hi - lo)
        return hi - lo

    def run_scope(self) -> Any:
        """BLAS at one thread for the whole run: MatMul uses the runtime's threads (kernels/threads.py), and
        changing BLAS's thread count around each small MatMul cost ~13 us a call."""
        from ..kernels.threads import single_blas

        return single_blas()

    def copy(self, src: Any, dst: Any) -> None:
        np.copyto(dst, src)

    def write(self, dst: Any, host: np.ndarray) -> None:
        np.copyto(dst, host.reshape(dst.shape), casting="no")

    def read(self, src: Any) -> np.ndarray:
        return np.array(src, copy=True)


def _physical_ram() -> int:
    """Bytes of physical memory (0 where unknown)."""
    try:
        import os

        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 0
