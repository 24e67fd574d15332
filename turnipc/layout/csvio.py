"""Read and write the MiniMalloc CSV format.

Input: header ``id,lower,upper,size`` (any column order) with optional
``alignment``, ``hint`` and ``gaps`` columns. ``alignment`` is honoured
(offsets become multiples of it); ``hint`` is ignored; ``gaps`` (lifetimes with
holes) is accepted only when empty, since the layout engine treats every
lifetime as one interval.

Output: the same columns plus ``offset``.
"""

from __future__ import annotations

import csv
import io
import os
from typing import Mapping, Sequence

from .model import Buffer, validate_buffers

REQUIRED = ("id", "lower", "upper", "size")


class LayoutInputError(ValueError):
    """The CSV cannot be read; the message names the problem and the fix."""


def _int(text: str, col: str, lineno: int, path: str) -> int:
    try:
        return int(text.strip())
    except (ValueError, AttributeError):
        raise LayoutInputError(
            f"{path}:{lineno}: column {col!r} holds {text!r}, not an integer: fix the row"
        ) from None


def parse_csv(text: str, path: str = "<csv>") -> list[Buffer]:
    reader = csv.reader(io.StringIO(text))
    try:
        header = [h.strip().lower() for h in next(reader)]
    except StopIteration:
        raise LayoutInputError(f"{path}: file is empty: expected a header id,lower,upper,size") from None
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise LayoutInputError(
            f"{path}: header lacks column(s) {', '.join(missing)}: the first line must be id,lower,upper,size"
        )
    col = {name: header.index(name) for name in header}
    buffers: list[Buffer] = []
    for lineno, row in enumerate(reader, start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) < len(header):
            row = row + [""] * (len(header) - len(row))
        bid = row[col["id"]].strip()
        lower = _int(row[col["lower"]], "lower", lineno, path)
        upper = _int(row[col["upper"]], "upper", lineno, path)
        size = _int(row[col["size"]], "size", lineno, path)
        align = 1
        if "alignment" in col and row[col["alignment"]].strip():
            align = _int(row[col["alignment"]], "alignment", lineno, path)
            if align < 1:
                raise LayoutInputError(f"{path}:{lineno}: alignment {align} must be >= 1")
        if "gaps" in col and row[col["gaps"]].strip():
            raise LayoutInputError(
                f"{path}:{lineno}: buffer {bid!r} has lifetime gaps, which are not supported: "
                "remove the gaps column (the buffer is then live over its whole [lower, upper))"
            )
        buffers.append(Buffer(bid, lower, upper, size, align))
    try:
        validate_buffers(buffers)
    except ValueError as e:
        raise LayoutInputError(f"{path}: {e}") from None
    return buffers


def read_csv(path: str | os.PathLike) -> list[Buffer]:
    """Read buffers from a CSV file; raises LayoutInputError (a ValueError) on bad input."""
    p = os.fspath(path)
    try:
        with open(p, newline="", encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise LayoutInputError(f"{p}: cannot read ({e.__class__.__name__}: {e}): check the path") from None
    return parse_csv(text, p)


def write_csv(path: str | os.PathLike | io.TextIOBase, buffers: Sequence[Buffer], offsets: Mapping[str, int]) -> None:
    """Write ``id,lower,upper,size[,alignment],offset`` rows in input order."""
    with_align = any(b.alignment != 1 for b in buffers)

    def emit(f) -> None:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(list(REQUIRED) + (["alignment"] if with_align else []) + ["offset"])
        for b in buffers:
            row = [b.id, b.lower, b.upper, b.size]
            if with_align:
                row.append(b.alignment)
            row.append(offsets[b.id])
            w.writerow(row)

    if hasattr(path, "write"):
        emit(path)
    else:
        with open(os.fspath(path), "w", newline="", encoding="utf-8") as f:
            emit(f)
