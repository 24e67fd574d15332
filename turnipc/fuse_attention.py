"""Fusion of exported attention: MatMul(Q, K^T) [* scales] [+ mask] -> Softmax -> [NaN guard] -> MatMul(., V).

Why: the exporters write scaled dot-product attention as six to eight ONNX
nodes (torch's SDPA decomposition: Q and K^T each times sqrt(scale), their
product, the additive mask, the softmax, ``Where(IsNaN(p), 0, p)`` for fully
masked rows, the product with V). Unfused, the planner places three or four
score-sized buffers (B x H x Sq x Skv) per layer and the kernels make more
outside the arena. Fused, it is ONE task (op :data:`FUSED_ATTENTION_OP`,
domain :data:`FUSED_DOMAIN`) with two outputs: the attention result and the
*scores*, a planned buffer nobody reads that holds the logits and then, in
place, their softmax. The task's working set (inputs, result, scores) is
therefore exactly what the planner budgets, and the kernel
(``turnip/kernels/fused_attention.py``) makes only row-sized temporaries
(each row's maximum and sum).

The pattern, on the TaskGraph (every intermediate an activation read only by
the next step, not a graph output, not aliased, one float dtype throughout):

* ``s = MatMul(q, k)``; ``q`` may be ``Mul(Q, c)`` (and ``k`` ``Mul(K, c)``)
  with ``c`` a one-element tensor read by that Mul only once: the scale is then
  applied to the scores instead (``(Q c_q)(K c_k) = (Q K) c_q c_k``);
* optionally ``s = Add(s, mask)`` (either operand order), the mask
  broadcasting to the scores' shape;
* ``p = Softmax(s)`` over the last axis;
* optionally ``p = Where(IsNaN(p), fill, p)``, ``fill`` one element;
* ``y = MatMul(p, V)``.

The fused task takes the place of the final MatMul; its second output is the
first MatMul's value (the scores have its shape and dtype). Attributes:
``mask``, ``scale_q``, ``scale_k``, ``fill``: each the index of that optional
input, or :data:`NONE` when the pattern has no such step. It splits
(turnipc/partition.py, :func:`attention_split_rule`) along batch axes and
query rows, like the chain it replaces: a query-row block of the softmax is
the exact row softmax, so blocks are bit-identical to the whole.
"""

from __future__ import annotations

import dataclasses

from turnip.plan import FUSED_ATTENTION_OP, FUSED_DOMAIN
from turnip.plan import FUSED_NONE as NONE

from .taskgraph import Task, TaskGraph

__all__ = ["FUSED_ATTENTION_OP", "NONE", "attention_split_rule", "fuse_attention", "is_fused_attention"]

_FLOATS = ("float32", "float64")
_ONNX = ("", "ai.onnx")


def is_fused_attention(task: Task) -> bool:
    return task.domain == FUSED_DOMAIN and task.op_type == FUSED_ATTENTION_OP


@dataclasses.dataclass(frozen=True)
class _Match:
    """One attention pattern: the tasks it replaces and the fused task's operands."""

    tasks: tuple[int, ...]  # ids of every task replaced, the final MatMul last
    q: str
    k: str
    v: str
    scores: str  # the first MatMul's output: the fused task's workspace output
    out: str
    mask: str | None = None
    scale_q: str | None = None
    scale_k: str | None = None
    fill: str | None = None


class _Graph:
    """Readers and producers of a TaskGraph, and the tests every intermediate must pass."""

    def __init__(self, graph: TaskGraph) -> None:
        self.g = graph
        self.aliased = {v.storage for v in graph.values.values() if v.is_alias}
        self.outputs = set(graph.outputs) | set(graph.output_storages())
        self.readers: dict[str, list[int]] = {}
        self.producer: dict[str, int] = {}
        for t in graph.tasks:
            for v in t.inputs:
                if v is not None:
                    self.readers.setdefault(v, []).append(t.id)
            for v in t.outputs:
                if v is not None:
                    self.producer[v] = t.id

    def op(self, v: str | None, op_type: str, n_inputs: int) -> Task | None:
        """The ONNX task producing ``v`` if it is ``op_type`` with ``n_inputs`` present inputs and one output."""
        if v is None or v not in self.producer:
            return None
        t = self.g.tasks[self.producer[v]]
        if t.op_type != op_type or t.domain not in _ONNX or len(t.outputs) != 1:
            return None
        if len(t.inputs) != n_inputs or any(i is None for i in t.inputs):
            return None
        return t

    def private(self, v: str, readers: int = 1) -> bool:
        """Whether ``v`` is an activation only the pattern reads (``readers`` reads), with no other view."""
        val = self.g.values[v]
        return (val.kind == "activation" and not val.is_alias and v not in self.aliased and v not in self.outputs
                and len(self.readers.get(v, [])) == readers)

    def dtype(self, v: str) -> str:
        return self.g.values[v].dtype

    def one_element(self, v: str) -> bool:
        return all(d == 1 for d in self.g.values[v].shape)


def _broadcasts_to(shape: tuple[int, ...], out: tuple[int, ...]) -> bool:
    if len(shape) > len(out):
        return False
    return all(d == 1 or d == o for d, o in zip(reversed(shape), reversed(out), strict=False))


def _softmax_last_axis(g: TaskGraph, t: Task, rank: int) -> bool:
    opset = g.opset.get("", 13)
    axis = int(t.attrs.get("axis", -1 if opset >= 13 else 1))
    return axis % rank == rank - 1 and set(t.attrs) <= {"axis"}


def _scaled(G: _Graph, v: str, dtype: str) -> tuple[str, str | None, int | None]:
    """(unscaled operand, scale, Mul task id) when ``v`` is ``Mul(x, c)`` the pattern may absorb, else (v, None, None)."""
    t = G.op(v, "Mul", 2)
    if t is None or t.attrs or not G.private(v):
        return v, None, None
    x, c = t.inputs
    assert x is not None and c is not None
    if G.one_element(x) and not G.one_element(c):
        x, c = c, x
    if not G.one_element(c) or G.g.values[x].shape != G.g.values[v].shape or G.dtype(x) != dtype or G.dtype(c) != dtype:
        return v, None, None
    return x, c, t.id


def _match(G: _Graph, mm2: Task) -> _Match | None:
    g = G.g
    if mm2.op_type != "MatMul" or mm2.domain not in _ONNX or len(mm2.inputs) != 2 or len(mm2.outputs) != 1:
        return None
    p, v = mm2.inputs
    out = mm2.outputs[0]
    if p is None or v is None or out is None:
        return None
    dtype = G.dtype(out)
    if dtype not in _FLOATS or G.dtype(v) != dtype:
        return None
    tasks: list[int] = []
    fill = None
    where = G.op(p, "Where", 3)
    if where is not None:  # Where(IsNaN(p), fill, p)
        cond, fill, p2 = where.inputs
        isnan = G.op(cond, "IsNaN", 1)
        assert p2 is not None and fill is not None and cond is not None
        if (isnan is None or isnan.inputs[0] != p2 or not G.private(p) or not G.private(cond)
                or not G.private(p2, readers=2) or not G.one_element(fill) or G.dtype(fill) != dtype
                or fill == p2):
            return None
        tasks += [where.id, isnan.id]
        p = p2
    elif not G.private(p):
        return None
    sm = G.op(p, "Softmax", 1)
    if sm is None or G.dtype(p) != dtype:
        return None
    s = sm.inputs[0]
    assert s is not None
    shape = g.values[s].shape
    if len(shape) < 2 or not _softmax_last_axis(g, sm, len(shape)) or not G.private(s) or G.dtype(s) != dtype:
        return None
    tasks.append(sm.id)
    mask = None
    add = G.op(s, "Add", 2)
    if add is not None and not add.attrs:
        a, b = add.inputs
        assert a is not None and b is not None
        for logits, m in ((a, b), (b, a)):
            mm1 = G.op(logits, "MatMul", 2)
            if (mm1 is not None and g.values[logits].shape == shape and G.private(logits) and G.dtype(m) == dtype
                    and _broadcasts_to(g.values[m].shape, shape) and m != logits):
                tasks.append(add.id)
                mask, s = m, logits
                break
    mm1 = G.op(s, "MatMul", 2)
    if mm1 is None or mm1.attrs or not G.private(s):
        return None
    tasks.append(mm1.id)
    q, k = mm1.inputs
    assert q is not None and k is not None
    if G.dtype(q) != dtype or G.dtype(k) != dtype or len(g.values[q].shape) < 2 or len(g.values[k].shape) < 2:
        return None
    q, scale_q, tq = _scaled(G, q, dtype)
    k, scale_k, tk = _scaled(G, k, dtype)
    if tq is not None and tq == tk:  # Q and K^T the same scaled value: keep the Mul
        q, scale_q, tq, k, scale_k, tk = mm1.inputs[0], None, None, mm1.inputs[1], None, None
    tasks += [t for t in (tq, tk) if t is not None]
    o_shape = g.values[out].shape
    v_shape = g.values[v].shape
    if len(o_shape) != len(shape) or len(v_shape) < 2 or o_shape[:-1] != shape[:-1]:
        return None
    if out in (q, k, v) or s in (q, k, v, mask):
        return None
    assert q is not None and k is not None
    return _Match(tuple(sorted(tasks)) + (mm2.id,), q, k, v, s, out, mask, scale_q, scale_k, fill)


def _fused_task(graph: TaskGraph, m: _Match, last: Task) -> Task:
    inputs = [m.q, m.k, m.v]
    attrs: dict[str, int] = {}
    for key, val in (("mask", m.mask), ("scale_q", m.scale_q), ("scale_k", m.scale_k), ("fill", m.fill)):
        if val is None:
            attrs[key] = NONE
        else:
            attrs[key] = len(inputs)
            inputs.append(val)
    tasks = [graph.tasks[i] for i in m.tasks]
    nbytes = sum(graph.values[v].nbytes for v in dict.fromkeys(inputs)) + graph.values[m.out].nbytes + graph.values[m.scores].nbytes
    return Task(
        id=last.id, name="+".join(t.name for t in tasks), op_type=FUSED_ATTENTION_OP, domain=FUSED_DOMAIN,
        attrs=attrs, inputs=tuple(inputs), outputs=(m.out, m.scores),
        flops=sum(t.flops for t in tasks), bytes_touched=nbytes,
    )


def fuse_attention(graph: TaskGraph) -> TaskGraph:
    """A new TaskGraph with every attention pattern (module docstring) one task; ``graph`` is unchanged.

    The fused task takes the place of the pattern's final MatMul (every
    operand is produced before the first step that reads it, so before it);
    the other tasks keep their order and are renumbered 0..n-1; the
    pattern's intermediate values other than the scores are removed.
    """
    G = _Graph(graph)
    matches: dict[int, _Match] = {}
    taken: set[int] = set()
    for t in graph.tasks:
        m = _match(G, t)
        if m is None or taken & set(m.tasks):
            continue
        matches[t.id] = m
        taken |= set(m.tasks)
    if not matches:
        return graph
    dropped: set[str] = set()
    for m in matches.values():
        for i in m.tasks[:-1]:
            o = graph.tasks[i].outputs[0]
            if o is not None and o != m.scores:
                dropped.add(o)
    tasks: list[Task] = []
    for t in graph.tasks:
        if t.id in taken and t.id not in matches:
            continue
        nt = _fused_task(graph, matches[t.id], t) if t.id in matches else t
        tasks.append(dataclasses.replace(nt, id=len(tasks)))
    values = {k: v for k, v in graph.values.items() if k not in dropped}
    return dataclasses.replace(graph, tasks=tasks, values=values)


def _bcast_axis(k: int, rank: int, shape: tuple[int, ...]) -> int | None:
    j = k - (rank - len(shape))
    if j < 0 or shape[j] == 1:
        return None
    return j


def attention_split_rule(graph: TaskGraph, task: Task, k: int) -> tuple[list[int | None], list[int | None]] | None:
    """Input and output axes for a block of a fused attention's result along its axis ``k``, or None.

    Batch axes cut Q, K^T, V and the mask where they have the axis (whole where
    they broadcast it); the query-row axis cuts Q and the mask's row axis, with
    K^T and V whole. The scores (output 1) are cut like the result. The last
    axis (V's columns) is not offered: every block would compute all the scores.
    """
    vals = graph.values
    out = vals[task.outputs[0]]  # type: ignore[index]
    r = len(out.shape)
    if not 0 <= k < r - 1:
        return None
    q, kt, v = (vals[i] for i in task.inputs[:3])  # type: ignore[index]
    in_axes: list[int | None] = [None] * len(task.inputs)
    if k == r - 2:
        in_axes[0] = len(q.shape) - 2
    else:
        in_axes[0] = _bcast_axis(k, r, q.shape)
        in_axes[1] = _bcast_axis(k, r, kt.shape)
        in_axes[2] = _bcast_axis(k, r, v.shape)
    mi = int(task.attrs.get("mask", NONE))
    if mi != NONE:
        in_axes[mi] = _bcast_axis(k, r, vals[task.inputs[mi]].shape)  # type: ignore[index]
    return in_axes, [k, k]
