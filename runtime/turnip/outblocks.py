"""Graph outputs a tiled plan returns in blocks, assembled in host memory by the runtime.

Why: a tiled graph output (GPT-2's seq x vocab logits) need not exist whole
on the GPU. Its blocks are ordinary tensors that the plan keeps until the run
ends, on the GPU or offloaded to host memory block by block like any other
tensor; the plan lists each block's final location in ``outputs`` (a block
tensor carries ``block = [output tensor, axis, start, stop]``), and the
runtime copies every block into its slice of one host array. So the GPU never
holds the assembled output, and no ``Concat`` node needs the whole output
plus its blocks at once.

This module is the one place that reads that convention: the run
(:meth:`turnip.run.LoadedPlan.outputs`) assembles with it, and the plan check
(:mod:`turnip.plancheck`) proves with it that the blocks of each output tile
it exactly (same dtype, same shape off the split axis, bounds that cover the
axis from 0 to its size with no gap or overlap).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .dtypes import np_dtype
from .plan import Loc, Plan, TensorKind


@dataclass(frozen=True)
class OutputPiece:
    """One location the run reads an output from: the whole output, or one block of it."""

    loc: Loc
    axis: int | None  # None: the whole output
    start: int
    stop: int


@dataclass(frozen=True)
class GraphOutput:
    """A graph output as the user sees it: its tensor (name, dtype, shape) and where its bytes are at the end."""

    tensor: int
    pieces: tuple[OutputPiece, ...]

    @property
    def in_blocks(self) -> bool:
        return self.pieces[0].axis is not None


def output_block_of(plan: Plan, tensor: int) -> tuple[int, int, int, int] | None:
    """``(output tensor, axis, start, stop)`` when ``tensor`` is a block of a graph output, else None."""
    t = plan.tensors[tensor]
    if t.block is None or TensorKind(t.kind) != TensorKind.OUTPUT:
        return None
    base, axis, start, stop = t.block
    if not 0 <= base < len(plan.tensors) or TensorKind(plan.tensors[base].kind) != TensorKind.OUTPUT:
        return None
    return base, axis, start, stop


def graph_outputs(plan: Plan) -> list[GraphOutput]:
    """The plan's graph outputs in ONNX order, consecutive block locations grouped under their output.

    Raises ``PlanCheckError`` when the blocks of an output do not tile it exactly.
    """
    from .plancheck import PlanCheckError

    groups: list[tuple[int, list[OutputPiece]]] = []
    for loc in plan.outputs:
        blk = output_block_of(plan, loc.tensor)
        if blk is None:
            groups.append((loc.tensor, [OutputPiece(loc, None, 0, 0)]))
            continue
        base, axis, start, stop = blk
        if groups and groups[-1][0] == base and groups[-1][1][0].axis is not None:
            groups[-1][1].append(OutputPiece(loc, axis, start, stop))
        else:
            groups.append((base, [OutputPiece(loc, axis, start, stop)]))
    seen: set[int] = set()
    out = []
    for base, pieces in groups:
        name = plan.tensors[base].name
        if base in seen:
            raise PlanCheckError(f"graph output '{name}' is listed twice in the plan's outputs (its blocks must be consecutive)")
        seen.add(base)
        if pieces[0].axis is not None:
            _check_tiling(plan, base, pieces, PlanCheckError)
        out.append(GraphOutput(base, tuple(pieces)))
    return out


def _check_tiling(plan: Plan, base: int, pieces: list[OutputPiece], error: type[Exception]) -> None:
    whole = plan.tensors[base]
    axis = pieces[0].axis
    assert axis is not None
    if not 0 <= axis < len(whole.shape):
        raise error(f"graph output '{whole.name}': block axis {axis} is not an axis of its shape {list(whole.shape)}")
    at = 0
    for p in pieces:
        t = plan.tensors[p.loc.tensor]
        want = list(whole.shape)
        want[axis] = p.stop - p.start
        if p.axis != axis or p.start != at or p.stop <= p.start or t.dtype != whole.dtype or list(t.shape) != want:
            raise error(f"graph output '{whole.name}': block '{t.name}' ({t.dtype} {list(t.shape)}, {p.start}:{p.stop} on axis "
                        f"{p.axis}) does not continue its blocks at {at} on axis {axis}; re-plan")
        at = p.stop
    if at != whole.shape[axis]:
        raise error(f"graph output '{whole.name}': its blocks cover {at} of {whole.shape[axis]} on axis {axis}; re-plan")


def output_names(plan: Plan) -> list[str]:
    """Names of the graph outputs, ONNX order (an output returned in blocks once)."""
    return [plan.tensors[o.tensor].name for o in graph_outputs(plan)]


def assemble_output(backend: Any, plan: Plan, out: GraphOutput) -> np.ndarray:
    """A host array holding output ``out``: each block read from where it ends (GPU or host) into its slice."""
    whole = plan.tensors[out.tensor]
    arr = np.empty(tuple(whole.shape), dtype=np_dtype(whole.dtype))
    for p in out.pieces:
        idx: list[slice] = [slice(None)] * arr.ndim
        if p.axis is not None:
            idx[p.axis] = slice(p.start, p.stop)
        arr[tuple(idx)] = backend.read(backend.view(p.loc))
    return arr
