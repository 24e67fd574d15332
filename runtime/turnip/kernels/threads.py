"""Multi-threaded MatMul without BLAS's own threads: the caller works, helpers join when they can.

Why (issue 16, measured on the shared 2-core machine, load ~4): with
OpenBLAS at 2 threads, BERT-base's 96 MatMuls took 3,439 ms against 316 ms at
1 thread (``turnip-run --profile``, same plan). OpenBLAS splits every call
into fixed halves and the calling thread then waits for the other half;
when the second thread is not on a core (the machine is oversubscribed) the
call stalls for a scheduler slice, and between calls that thread spins,
taking the core the calling thread's elementwise work needs. onnxruntime
runs at 2 threads as fast as at 1 on the same machine: its calling thread
takes work items itself and only waits for items a helper has started.

This module does the same for the NumPy backend's MatMul: the runtime's
thread count is BLAS's thread count when the plan is loaded (so
``threadpoolctl.threadpool_limits(n)`` or ``OPENBLAS_NUM_THREADS=n`` set it,
as before); every MatMul then runs with BLAS at ONE thread, split into row
(or column) blocks that the calling thread and ``n - 1`` helper threads take
from a shared counter. A helper that is not scheduled costs nothing: the
caller takes its blocks. Helpers block on a condition variable between
calls (no polling, no spinning). BLAS's own thread count is set to 1 only
around the call and restored after it (reference-counted: several queues
may call at once), so the process's setting is unchanged outside a MatMul; the NumPy backend
holds it at 1 for a whole run (``single_blas``), so a run changes it twice,
not twice per MatMul (~13 us a call).

Without ``threadpoolctl`` (optional: ``pip install threadpoolctl``) nothing
changes: MatMul calls BLAS as it is configured.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from typing import Any, Callable, Iterator, Sequence

import numpy as np

__all__ = ["MIN_PARALLEL_MACS", "blas_threads", "matmul_call", "parallel_for", "single_blas"]

#: multiply-adds below which a MatMul runs as one call: waking a helper costs ~10-50 us, and a helper preempted
#: in the middle of its block makes the caller wait for it (a scheduler slice on a loaded machine), so only
#: MatMuls of a millisecond or more (single-threaded) are split
MIN_PARALLEL_MACS = 1 << 24
#: multiply-adds per block, about: GPT-2's LM head (4.9 G) in ~150 blocks of ~0.5 ms, not 8 of ~60 ms
BLOCK_MACS = 1 << 24
MIN_BLOCK_COLS = 64
MIN_BLOCK_ROWS = 8


class _Blas:
    """BLAS's thread count through threadpoolctl's library controllers (ctypes calls, ~1-2 us each)."""

    def __init__(self) -> None:
        self.libs: list[Any] = []
        try:
            import threadpoolctl

            self.libs = list(threadpoolctl.ThreadpoolController().select(user_api="blas").lib_controllers)
        except Exception:  # noqa: BLE001 - not installed, or a BLAS it does not know: leave BLAS alone
            self.libs = []
        self._lock = threading.Lock()
        self._depth = 0
        self._saved: list[int] = []

    def threads(self) -> int:
        return max((int(lib.get_num_threads() or 1) for lib in self.libs), default=1)

    def enter_single(self) -> None:
        with self._lock:
            if self._depth == 0:
                self._saved = [int(lib.get_num_threads() or 1) for lib in self.libs]
                for lib in self.libs:
                    lib.set_num_threads(1)
            self._depth += 1

    def exit_single(self) -> None:
        with self._lock:
            self._depth -= 1
            if self._depth == 0:
                for lib, n in zip(self.libs, self._saved):
                    lib.set_num_threads(n)


_BLAS: _Blas | None = None


def _blas() -> _Blas:
    global _BLAS
    if _BLAS is None:
        _BLAS = _Blas()
    return _BLAS


@contextlib.contextmanager
def single_blas() -> Iterator[None]:
    """BLAS at one thread inside (reference-counted with the MatMul calls' own hold; restored after)."""
    blas = _blas()
    if not blas.libs:
        yield
        return
    blas.enter_single()
    try:
        yield
    finally:
        blas.exit_single()


def blas_threads() -> int:
    """BLAS's thread count now (1 without threadpoolctl): the runtime's thread count for a plan loaded now."""
    return _blas().threads()


class _Helpers:
    """``n`` daemon threads that take blocks of the current job; they sleep on a condition between jobs."""

    def __init__(self, n: int) -> None:
        self._cv = threading.Condition(threading.Lock())
        self._busy = threading.Lock()  # one job at a time; a second caller runs its blocks alone
        self._gen = 0
        self._blocks: Sequence[Callable[[], Any]] = ()
        self._next = 0
        self._left = 0
        self._error: BaseException | None = None
        self.threads = [threading.Thread(target=self._loop, name=f"turnip-matmul-{k}", daemon=True) for k in range(n)]
        for t in self.threads:
            t.start()

    def _take(self) -> int:
        """Index of the next untaken block, or -1 (lock held)."""
        i = self._next
        if i >= len(self._blocks):
            return -1
        self._next = i + 1
        return i

    def _work(self, blocks: Sequence[Callable[[], Any]]) -> None:
        """Run blocks until none is left untaken."""
        cv = self._cv
        while True:
            with cv:
                i = self._take() if self._blocks is blocks else -1
            if i < 0:
                return
            err = None
            try:
                blocks[i]()
            except BaseException as e:  # noqa: BLE001 - re-raised by the caller
                err = e
            with cv:
                if err is not None and self._error is None:
                    self._error = err
                self._left -= 1
                if self._left == 0:
                    cv.notify_all()

    def _loop(self) -> None:
        seen = 0
        while True:
            with self._cv:
                while self._gen == seen:
                    self._cv.wait()
                seen = self._gen
                blocks = self._blocks
            self._work(blocks)

    def run(self, blocks: Sequence[Callable[[], Any]]) -> None:
        if not self._busy.acquire(blocking=False):  # another queue's MatMul holds the helpers: do it alone
            for b in blocks:
                b()
            return
        try:
            with self._cv:
                self._blocks = blocks
                self._next = 0
                self._left = len(blocks)
                self._error = None
                self._gen += 1
                self._cv.notify_all()
            self._work(blocks)
            with self._cv:
                while self._left > 0:
                    self._cv.wait()
                self._blocks = ()
                err = self._error
            if err is not None:
                raise err
        finally:
            self._busy.release()


_HELPERS: dict[int, _Helpers] = {}
_HELPERS_LOCK = threading.Lock()


def _helpers(n: int) -> _Helpers:
    with _HELPERS_LOCK:
        h = _HELPERS.get(n)
        if h is None:
            h = _HELPERS[n] = _Helpers(n)
        return h


def parallel_for(blocks: Sequence[Callable[[], Any]], width: int) -> None:
    """Run every block once, on the calling thread and up to ``width - 1`` helpers; return when all are done."""
    if width <= 1 or len(blocks) <= 1:
        for b in blocks:
            b()
        return
    _helpers(width - 1).run(blocks)


def _split(n: int, parts: int) -> list[tuple[int, int]]:
    step = -(-n // parts)
    return [(lo, min(n, lo + step)) for lo in range(0, n, step)]


def matmul_call(a: np.ndarray, b: np.ndarray, out: np.ndarray, width: int) -> Callable[[], Any]:
    """``np.matmul(a, b, out=out)`` as a prepared call for ``width`` threads (see the module docstring).

    ``a`` and ``b`` have at least 2 dimensions and ``out`` is their broadcast product. Blocks
    are columns of ``b`` and ``out`` (rows of ``a`` and ``out`` when there are too few columns),
    each one BLAS call per matrix writing its part of ``out`` in place, about :data:`BLOCK_MACS` each.
    """
    plain = functools.partial(np.matmul, a, b, out=out)
    if width <= 1:
        return plain
    blas = _blas()
    if not blas.libs:
        return plain
    m, k = a.shape[-2], a.shape[-1]
    n = b.shape[-1]
    macs = int(np.prod(out.shape[:-2], dtype=np.int64)) * m * n * k
    blocks: list[Callable[[], Any]] = []
    if macs >= MIN_PARALLEL_MACS:
        # many small blocks, not one per thread: the caller never waits for more than the one block a slow
        # (preempted) helper holds; columns first (a block packs only its columns of b, a weight's
        # columns being the usual big operand), rows when there are too few columns
        parts = max(4 * width, -(-macs // BLOCK_MACS))
        if n >= parts * MIN_BLOCK_COLS or n >= m:
            parts = max(2, min(parts, n // MIN_BLOCK_COLS))
            blocks = [functools.partial(np.matmul, a, b[..., lo:hi], out=out[..., lo:hi]) for lo, hi in _split(n, parts)]
        else:
            parts = max(2, min(parts, m // MIN_BLOCK_ROWS))
            blocks = [functools.partial(np.matmul, a[..., lo:hi, :], b, out=out[..., lo:hi, :]) for lo, hi in _split(m, parts)]
    enter, leave = blas.enter_single, blas.exit_single

    if not blocks:  # small: one call, still with BLAS at one thread (its own threads are what stall)
        def single() -> None:
            enter()
            try:
                plain()
            finally:
                leave()

        return single

    def split() -> None:
        enter()
        try:
            parallel_for(blocks, width)
        finally:
            leave()

    return split
