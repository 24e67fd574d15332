"""Graph outputs of a tiled graph: assembled on the GPU only when that is small, else returned in blocks.

Why: the partition pass used to end with a ``Concat`` of every tiled graph
output, so the whole output plus all its blocks had to be on the GPU at once
(GPT-2 small's 128 x 50,257 fp32 logits: 51 MB, above a 10% budget of
50 MB, whatever the task-size limit). A graph output is only read by the
user, on the host, after the run; so its blocks stay ordinary tensors kept to
the end of the run (on the GPU, or offloaded to host memory block by block
by the residency stage like any other tensor), the plan lists each block's
final location, and the runtime copies the blocks into one host array
(:mod:`turnip.outblocks`). Block tensors of outputs carry
``TensorInfo.block = [output, axis, start, stop]``, the same field as blocks
of initial data, recorded in ``TaskGraph.blocks``.

An output whose assemble task fits the task-size limit is still assembled on
the GPU (plans that did so before keep their bytes, and the user gets a
device view), as is one whose blocks cannot be viewed in the output's own
shape.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from .residency import aligned

if TYPE_CHECKING:
    from .partition import _Builder


def finish_outputs(b: "_Builder") -> list[str]:
    """The graph's outputs after tiling: each output's own name, or its blocks (in order) in its place.

    Records every output block in ``b.blocks`` (block -> (output, axis, start, stop)) and makes
    the block and the storage it views of kind "output".
    """
    names: list[str] = []
    for o in b.g.outputs:
        blocks = _output_in_blocks(b, o)
        if blocks is None:
            b.get_whole(o)
            names.append(o)
        else:
            names.extend(blocks)
    return names


def _output_in_blocks(b: "_Builder", o: str) -> list[str] | None:
    v = b.values[o]
    if v.storage in b.whole:
        return None
    p = b.view_partition(o)
    if p is None:
        return None
    assemble_bytes = aligned(b.values[v.storage].nbytes) + sum(aligned(b.values[x].nbytes) for x in b.parts[(v.storage, b.native[v.storage])])
    if assemble_bytes <= b.limit:
        return None  # the Concat fits a task: assemble on the GPU, as before
    blocks = b.get_blocks(o, p)
    for blk, (start, stop) in zip(blocks, p.bounds, strict=True):
        b.blocks[blk] = (o, p.axis, start, stop)
        for name in (blk, b.values[blk].storage):
            b.values[name] = dataclasses.replace(b.values[name], kind="output")
    return blocks
