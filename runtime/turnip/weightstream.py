"""Derived weights and weight blocks written from their file straight into place, a bounded chunk at a time.

WHY: a derived weight (``TensorInfo.derive``: Transpose / Cast / Reshape
steps) or a block of a weight (``TensorInfo.block``, cut by a tiled plan) used
to be made whole in host memory when the plan was opened and kept there for
every repeat: the weight then sat in RAM twice (its bytes in the arena or the
host region, and the host copy). Here such a weight is only a recipe: its
source (a byte range of the model's weight file, or small host bytes), the
steps and the cut. :meth:`StreamedWeight.write_into` reads the source along
its first axis, ``CHUNK_BYTES`` at a time, applies the steps to the chunk and
copies the part of it that falls inside the destination: the host memory it
needs is one chunk (twice with a Cast), whatever the weight's size, and
nothing stays behind. The bytes are those :func:`turnip.weights.derive_weight`
makes (transposes and reshapes move bytes exactly; a Cast converts element by
element, so converting a chunk gives the chunk of the converted whole).

A Reshape step can merge the first axis with others, so a recipe with one is
made in a single chunk (the whole source, transiently, then dropped).
"""

from __future__ import annotations

import math
import os
from typing import Any, Sequence

import numpy as np

from .dtypes import np_dtype
from .errors import ModelError, PlanError
from .memory import private_map
from .plan import DeriveOp, DeriveStep

#: Host bytes of source rows read per chunk (a chunk is at least one row).
CHUNK_BYTES = 4 << 20


def read_file_range(fd: int, path: str, offset: int, out: memoryview) -> None:
    """Fill ``out`` with the file's bytes from ``offset`` (pread: no shared file position, no mapping)."""
    got, n = 0, len(out)
    while got < n:
        k = os.preadv(fd, [out[got:]], offset + got)
        if not k:
            raise ModelError(f"weight file {path!r} ended early; the file is truncated")
        got += k


def scratch(nbytes: int) -> np.ndarray:
    """A host buffer (uint8) that goes back to the OS when its last view dies.

    WHY a private anonymous map and not ``np.empty``: glibc raises its mmap threshold
    to the size of the last big block freed, so a second chunk-sized buffer comes from
    the heap and stays resident after it is freed (RSS that no array holds).
    """
    if nbytes <= 0:
        return np.empty(0, dtype=np.uint8)
    return np.frombuffer(private_map(nbytes), dtype=np.uint8)


def copy_box(dst: np.ndarray, src: np.ndarray) -> None:
    """``dst[...] = src`` for host arrays; a 2-D transposed source is copied in cache-sized tiles (a big strided copy thrashes the cache)."""
    if dst.ndim == 2 and src.ndim == 2 and src.dtype == dst.dtype and src.T.flags.c_contiguous and src.size > 4096:
        from .kernels.shape_ops import _transpose_2d_tiled

        _transpose_2d_tiled(src.T, dst)
        return
    np.copyto(dst, src, casting="no")


class StreamedWeight:
    """One placed weight made from its source on demand: recipe steps applied, optionally cut to a block.

    ``source``: an object with ``size`` and ``read_rows(fd, byte_offset, out)``
    (a :class:`turnip.weights._FileRange`) or host bytes (``np.ndarray`` of
    uint8). ``src_dtype`` / ``src_shape``: how the source's bytes are laid
    out; ``steps``: the derive recipe's steps (empty for a plain weight);
    ``dtype`` / ``shape``: the whole result's; ``cut``: ``(axis, start,
    stop)`` of the block placed, or None for the whole result.
    """

    __slots__ = ("name", "source", "src_dtype", "src_shape", "steps", "dtype", "shape", "cut", "size", "_ax0", "_rows_per")

    def __init__(
        self,
        name: str,
        source: Any,
        src_dtype: str,
        src_shape: Sequence[int],
        steps: Sequence[DeriveStep],
        dtype: str,
        shape: Sequence[int],
        cut: tuple[int, int, int] | None = None,
    ) -> None:
        self.name, self.source, self.steps, self.cut = name, source, tuple(steps), cut
        self.src_dtype, self.src_shape = np_dtype(src_dtype), tuple(int(d) for d in src_shape)
        self.dtype, self.shape = np_dtype(dtype), tuple(int(d) for d in shape)
        if source.size != math.prod(self.src_shape) * self.src_dtype.itemsize:
            raise PlanError(
                f"weight {name!r}: its source has {source.size} bytes, not {list(self.src_shape)} of {self.src_dtype.name}; re-plan the model"
            )
        out_shape = list(self.shape)
        if cut is not None:
            axis, start, stop = cut
            if not 0 <= axis < len(self.shape) or not 0 <= start <= stop <= self.shape[axis]:
                raise PlanError(f"block {name!r} lies outside the weight it is cut from; re-plan the model")
            out_shape[axis] = stop - start
        self.size = math.prod(out_shape) * self.dtype.itemsize
        self._ax0 = self._first_axis_after_steps()
        row = math.prod(self.src_shape[1:]) * self.src_dtype.itemsize
        self._rows_per = max(1, CHUNK_BYTES // max(row, 1)) if self._ax0 is not None else max(1, self.src_shape[0] if self.src_shape else 1)

    def _first_axis_after_steps(self) -> int | None:
        """Where the source's axis 0 ends up in the result (None: not trackable, the recipe is made in one chunk).

        A Transpose / Cast chain is checked here, before anything is read: it must permute the axes and come
        out in the planned dtype and shape (a chain with a Reshape is checked when made, whole).
        """
        if not self.src_shape:
            return None
        ax0, shape, dtype = 0, list(self.src_shape), self.src_dtype
        for step in self.steps:
            if step.op == DeriveOp.TRANSPOSE:
                perm = [int(p) for p in step.arg]
                if sorted(perm) != list(range(len(shape))):
                    raise PlanError(
                        f"derived weight {self.name!r}: step transpose {step.arg!r} cannot apply (it does not permute "
                        f"{len(shape)} axes); re-plan the model"
                    )
                ax0, shape = perm.index(ax0), [shape[p] for p in perm]
            elif step.op == DeriveOp.CAST:
                dtype = np_dtype(str(step.arg))
            else:  # a Reshape may merge axis 0 with others
                return None
        if dtype != self.dtype or tuple(shape) != self.shape:
            raise PlanError(
                f"derived weight {self.name!r} comes out {dtype.name}{shape}, the plan expects "
                f"{self.dtype.name}{list(self.shape)}; re-plan the model"
            )
        return ax0

    # -- making the bytes -------------------------------------------------------
    def _apply(self, arr: np.ndarray, whole: bool) -> np.ndarray:
        """The recipe's steps on a chunk of source rows (views where possible: the copy into place moves the bytes)."""
        for step in self.steps:
            op, arg = step.op, step.arg
            try:
                if op == DeriveOp.TRANSPOSE:
                    arr = np.transpose(arr, [int(p) for p in arg])
                elif op == DeriveOp.CAST:
                    arr = arr.astype(np_dtype(str(arg)))  # as the Cast kernel converts
                elif op == DeriveOp.RESHAPE:
                    assert whole
                    arr = np.ascontiguousarray(arr).reshape(tuple(int(d) for d in arg))
                else:  # pragma: no cover - the reader accepts only DeriveOp members
                    raise ValueError(f"unknown step {op!r}")
            except (ValueError, TypeError, KeyError) as e:
                raise PlanError(f"derived weight {self.name!r}: step {op} {arg!r} cannot apply ({e}); re-plan the model") from None
        if whole and (arr.dtype != self.dtype or tuple(arr.shape) != self.shape):
            raise PlanError(
                f"derived weight {self.name!r} comes out {arr.dtype.name}{list(arr.shape)}, the plan expects "
                f"{self.dtype.name}{list(self.shape)}; re-plan the model"
            )
        return arr

    def write_into(self, backend: Any, dst_raw: Any) -> None:
        """Write the bytes into ``dst_raw`` (a flat uint8 view of their location: host or device memory)."""
        if int(dst_raw.size) != self.size:
            raise PlanError(f"weight {self.name!r} has {self.size} bytes but its location holds {int(dst_raw.size)}; re-plan the model")
        shape = list(self.shape)
        if self.cut is not None:
            shape[self.cut[0]] = self.cut[2] - self.cut[1]
        dst = dst_raw.view(self.dtype).reshape(shape)
        host = isinstance(dst, np.ndarray)
        nrows = self.src_shape[0] if self.src_shape else 1
        row = math.prod(self.src_shape[1:]) * self.src_dtype.itemsize
        buf = scratch(min(nrows, self._rows_per) * row)
        with _Reader(self.source) as read:
            for r0 in range(0, nrows, self._rows_per):
                r1 = min(nrows, r0 + self._rows_per)
                whole = r0 == 0 and r1 == nrows
                boxes = self._boxes(r0, r1, whole)
                if boxes is None:
                    continue  # these rows fall outside the block
                src_idx, dst_idx = boxes
                chunk = buf[: (r1 - r0) * row]
                read(r0 * row, chunk)
                arr = chunk.view(self.src_dtype).reshape((r1 - r0, *self.src_shape[1:]) if self.src_shape else ())
                part = self._apply(arr, whole)[src_idx]
                if part.dtype != self.dtype:
                    raise PlanError(f"derived weight {self.name!r} comes out {part.dtype.name}, the plan expects {self.dtype.name}; re-plan the model")
                if host:
                    copy_box(dst[dst_idx], part)
                else:
                    backend.write_part(dst[dst_idx], np.ascontiguousarray(part))

    def _boxes(self, r0: int, r1: int, whole: bool) -> tuple[tuple[Any, ...], tuple[Any, ...]] | None:
        """(index into the chunk's result, index into the destination) for source rows r0:r1, or None if none of it is placed."""
        n = len(self.shape)
        src = [slice(None)] * n
        dst = [slice(None)] * n
        ax0 = self._ax0
        if ax0 is not None and not whole:
            dst[ax0] = slice(r0, r1)
        if self.cut is not None:
            axis, start, stop = self.cut
            if ax0 is not None and axis == ax0 and not whole:
                lo, hi = max(r0, start), min(r1, stop)
                if lo >= hi:
                    return None
                src[axis], dst[axis] = slice(lo - r0, hi - r0), slice(lo - start, hi - start)
            else:
                src[axis] = slice(start, stop)
        return (*src, Ellipsis), (*dst, Ellipsis)  # Ellipsis: a 0-d result stays an array (a view), not a scalar

    def materialize(self) -> np.ndarray:
        """The bytes in a new host array (flat uint8): for a home in host memory, or a copy handed to another plan."""
        out = np.empty(self.size, dtype=np.uint8)
        self.write_into(None, out)
        return out


class _Reader:
    """Reads byte ranges of a source: a file range through one descriptor held for the whole write, or host bytes."""

    def __init__(self, source: Any) -> None:
        self.source = source
        self.fd: int | None = None

    def __enter__(self) -> Any:
        src = self.source
        if isinstance(src, np.ndarray):
            flat = src.reshape(-1).view(np.uint8)

            def read_host(off: int, out: np.ndarray) -> None:
                out[...] = flat[off : off + out.size]

            return read_host
        self.fd = src.open_fd()

        def read_file(off: int, out: np.ndarray) -> None:
            read_file_range(self.fd, src.path, src.offset + off, memoryview(out))  # type: ignore[arg-type]

        return read_file

    def __exit__(self, *exc: Any) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
