"""Split rule for the opset-23 ``Attention`` op: blocks of batch, heads or query rows.

Why: the fused op computes a B x H x Sq x Skv score tensor inside its kernel
(``runtime/turnip/kernels/attention.py``), which never appears in the graph,
so without a rule the partition pass could neither see it nor bound it: one
Attention task at seq 32,768 makes tens of GiB of temporaries whatever the
budget. Each block of this rule is again one Attention op on block inputs,
and its softmax is exact: every query row of a block sees every key, so the
row's normalisation is the same one the whole op computes (no online
softmax, no approximation); the outputs are bit-identical.

The axes, in the op's 4-D frame (B, H, Sq, Skv):

* batch (0): Q, K, V, past key / value and a mask with a batch axis are cut
  along their batch axis; ``nonpad_kv_seqlen`` too; present key / value and the
  score output in the same blocks;
* heads (1), 4-D inputs only (3-D inputs carry the head count as an attribute
  every block would share): Q's heads; K and V's heads when they have as many
  (MHA), whole when they have one (MQA: every query head reads KV head 0); a
  grouped split (1 < KV heads < Q heads) is not offered, since even blocks
  need not align with the groups;
* query rows (2): Q's rows and the mask's query axis; K, V whole. Not
  offered when the op returns present key / value (every row block would
  write all of it), nor with ``is_causal`` or a sliding window (both are
  defined relative to the first query row, which a block shifts).

:func:`scratch_bytes` is the score-sized temporaries the kernel makes, counted
in a task's working set so the pass splits the op when its scores, not its
inputs, exceed the task limit.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .taskgraph import Task, TaskGraph, Value

#: Score-sized temporaries the Attention kernel holds at once (the logits and their softmax).
SCORE_TEMPS = 2

_DTYPE_BYTES = {"float64": 8}  # the kernel computes in float32 for every other float type


def _shapes(graph: TaskGraph, task: Task) -> tuple[list[Value | None], list[Value | None]]:
    vals = graph.values
    ins = [vals[i] if i is not None else None for i in task.inputs]
    outs = [vals[o] if o is not None else None for o in task.outputs]
    return ins, outs


def _frame(ins: list[Value | None], task: Task) -> tuple[int, int, int, int, int] | None:
    """(B, Hq, Sq, Hkv, Skv total) of an Attention task, or None when the shapes are not the spec's."""
    q, k = (ins + [None, None])[:2]
    if q is None or k is None:
        return None
    past = ins[4] if len(ins) > 4 else None
    if len(q.shape) == 4 and len(k.shape) == 4:
        b, hq, sq, _ = q.shape
        hkv, skv = k.shape[1], k.shape[2]
    elif len(q.shape) == 3 and len(k.shape) == 3:
        qh, kvh = task.attrs.get("q_num_heads"), task.attrs.get("kv_num_heads")
        if not qh or not kvh:
            return None
        b, sq, skv = q.shape[0], q.shape[1], k.shape[1]
        hq, hkv = int(qh), int(kvh)
    else:
        return None
    if past is not None:
        if len(past.shape) != 4:
            return None
        skv += past.shape[2]
    return int(b), int(hq), int(sq), int(hkv), int(skv)


def scratch_bytes(graph: TaskGraph, task: Task) -> int:
    """Bytes of score-sized temporaries the kernel makes for ``task`` (0 for other ops)."""
    if task.op_type != "Attention" or task.domain not in ("", "ai.onnx"):
        return 0
    ins, _ = _shapes(graph, task)
    fr = _frame(ins, task)
    if fr is None or ins[0] is None:
        return 0
    b, hq, sq, _, skv = fr
    return SCORE_TEMPS * b * hq * sq * skv * _DTYPE_BYTES.get(ins[0].dtype, 4)


def _mask_axis(mask: Value | None, ka: int) -> int | None:
    """The axis of a mask (broadcast to B x H x Sq x Skv from the right) holding frame axis ``ka``; None: read whole."""
    if mask is None:
        return None
    j = ka - (4 - len(mask.shape))
    if j < 0 or mask.shape[j] == 1:
        return None
    return j


def attention_rule(graph: TaskGraph, task: Task, k: int) -> tuple[list[int | None], list[int | None]] | None:
    """Input and output axes for a block of the Attention output along its axis ``k`` (see the module docstring)."""
    ins, outs = _shapes(graph, task)
    fr = _frame(ins, task)
    if fr is None or not outs or outs[0] is None:
        return None
    _, hq, _, hkv, _ = fr
    four_d = len(ins[0].shape) == 4  # type: ignore[union-attr]
    frame_axis = {0: 0, 1: 1, 2: 2} if four_d else {0: 0, 1: 2}
    ka = frame_axis.get(k)
    if ka is None:
        return None

    def at(i: int) -> Value | None:
        return ins[i] if len(ins) > i else None

    def out_at(i: int) -> Value | None:
        return outs[i] if len(outs) > i else None

    presents = out_at(1) is not None or out_at(2) is not None
    mask, past_k, past_v, nonpad = at(3), at(4), at(5), at(6)
    in_axes: list[int | None] = [None] * len(ins)
    out_axes: list[int | None] = [None] * len(outs)
    in_axes[0] = k
    out_axes[0] = k
    if len(ins) > 3:
        in_axes[3] = _mask_axis(mask, ka)
    if out_at(3) is not None:
        out_axes[3] = ka

    def along(axis: int, inputs: tuple[int, ...]) -> tuple[list[int | None], list[int | None]]:
        """The key/value inputs and present outputs that are present, split along ``axis`` with the query."""
        for i in inputs:
            if at(i) is not None:
                in_axes[i] = axis
        for i in (1, 2):
            if out_at(i) is not None:
                out_axes[i] = axis
        return in_axes, out_axes

    if ka == 0:  # batch
        return along(0, (1, 2, 4, 5, 6))
    if ka == 1:  # heads (4-D only)
        if hkv == hq:
            return along(1, (1, 2, 4, 5))
        if hkv == 1 and not presents:
            return in_axes, out_axes  # MQA: every block reads the one KV head whole
        return None
    # query rows
    attrs = task.attrs
    if presents or int(attrs.get("is_causal", 0)) or int(attrs.get("left_window_size", -1)) >= 0 \
            or int(attrs.get("right_window_size", -1)) >= 0:
        return None
    del past_k, past_v, nonpad  # read whole by every row block
    return in_axes, out_axes


def scratch_share(graph: TaskGraph, task: Task, frac: tuple[int, int] | None) -> int:
    """The scratch of one block that holds ``frac = (block, extent)`` of the split axis (the whole when None)."""
    s = scratch_bytes(graph, task)
    if not s or frac is None:
        return s
    return math.ceil(s * frac[0] / frac[1])
