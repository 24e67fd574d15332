"""Fusion of elementwise chains: one task per single-consumer chain, evaluated in place into its output.

Why: a chain such as BERT's GELU (Div, Erf, Add, Mul, Mul) is five tasks,
five arena buffers the planner must place and five kernel calls, although
only its last value is read by anyone else. Fused, the chain is ONE task
(op :data:`FUSED_OP` in domain :data:`FUSED_DOMAIN`) whose working set is
its external inputs plus its output, which is exactly what the planner
budgets: the runtime evaluates every step in place into the output buffer
(``turnip/kernels/fused.py``), so the intermediates never occupy the arena
and never exist outside it.

A chain is a path t0 -> t1 -> ... -> tn of elementwise tasks (:data:`BINARY`,
:data:`UNARY`) where each intermediate value

* is an activation read by exactly one task (the next one, once), is not a
  graph output and has no aliases (no view shares its bytes);
* has the dtype (a float) and the shape of the chain's output, so each step
  can write the whole output buffer in place.

The fused task records its program in its attributes (documented in
docs/plan-format.md, "Fused elementwise"): ``ops`` (one ONNX op per step)
and per step the operands ``a`` and ``b``, each an index into the task's
inputs, :data:`CHAIN` (the value of the steps so far) or :data:`NONE` (a
unary step has no ``b``).

The planner runs it (after :mod:`turnipc.fuse_attention`) when
``PlanOptions.fuse`` is on, which ``turnipc plan`` makes the default
(``--no-fuse`` turns it off). It runs before the partition pass, which splits a
fused task like any elementwise op (turnipc/partition.py), so a tiled plan
holds one fused task per block.
"""

from __future__ import annotations

import dataclasses

from turnip.plan import FUSED_CHAIN as CHAIN
from turnip.plan import FUSED_DOMAIN, FUSED_OP
from turnip.plan import FUSED_NONE as NONE

from .taskgraph import Task, TaskGraph

__all__ = ["BINARY", "CHAIN", "FUSED_DOMAIN", "FUSED_OP", "NONE", "UNARY", "fuse_elementwise"]

#: ops fused: NumPy ufuncs (or the runtime's Erf) that write their result in place, same dtype in and out
BINARY = ("Add", "Sub", "Mul", "Div")
UNARY = ("Erf", "Tanh", "Sqrt", "Exp", "Neg", "Abs", "Relu", "Reciprocal", "Sigmoid")
_FLOATS = ("float32", "float64", "float16")


def _eligible(graph: TaskGraph, t: Task) -> bool:
    if t.domain not in ("", "ai.onnx") or t.op_type not in BINARY + UNARY or t.attrs:
        return False
    if len(t.outputs) != 1 or t.outputs[0] is None or any(v is None for v in t.inputs):
        return False
    if len(t.inputs) != (2 if t.op_type in BINARY else 1):
        return False
    out = graph.values[t.outputs[0]]
    return out.dtype in _FLOATS and all(graph.values[v].dtype == out.dtype for v in t.inputs if v is not None)


def _chains(graph: TaskGraph) -> list[list[int]]:
    """Maximal chains (task ids, in order) of two tasks or more."""
    aliased = {v.storage for v in graph.values.values() if v.is_alias}
    outputs = set(graph.outputs) | set(graph.output_storages())
    readers: dict[str, list[int]] = {}
    for t in graph.tasks:
        for v in t.inputs:
            if v is not None:
                readers.setdefault(v, []).append(t.id)
    ok = [_eligible(graph, t) for t in graph.tasks]
    prev_of: dict[int, int] = {}  # task -> the chain task before it
    for t in graph.tasks:
        if not ok[t.id]:
            continue
        v = t.outputs[0]
        assert v is not None
        val = graph.values[v]
        r = readers.get(v, [])
        if val.kind != "activation" or v in outputs or v in aliased or val.is_alias or len(r) != 1 or not ok[r[0]]:
            continue
        u = graph.tasks[r[0]]
        uv = u.outputs[0]
        assert uv is not None
        if graph.values[uv].shape != val.shape:
            continue
        # a task reading two single-reader values continues ONE chain: the later producer's (the longer
        # run of steps just before it, e.g. GELU's tanh branch rather than its x * 0.5)
        prev_of[u.id] = t.id
    nxt = {p: u for u, p in prev_of.items()}
    has_prev = set(prev_of)
    chains = []
    for t in graph.tasks:
        if t.id in nxt and t.id not in has_prev:
            c = [t.id]
            while c[-1] in nxt:
                c.append(nxt[c[-1]])
            chains.append(c)
    return chains


def _fused_task(graph: TaskGraph, chain: list[int]) -> Task:
    tasks = [graph.tasks[i] for i in chain]
    inputs: list[str] = []

    def operand(v: str | None, prev: str | None) -> int:
        if v is None:
            return NONE
        if v == prev:
            return CHAIN
        if v not in inputs:
            inputs.append(v)
        return inputs.index(v)

    ops, a, b = [], [], []
    prev: str | None = None
    for t in tasks:
        ins = list(t.inputs) + [None] * (2 - len(t.inputs))
        ops.append(t.op_type)
        a.append(operand(ins[0], prev))
        b.append(operand(ins[1], prev))
        prev = t.outputs[0]
    out = tasks[-1].outputs[0]
    assert out is not None
    nbytes = sum(graph.values[v].nbytes for v in inputs) + graph.values[out].nbytes
    return Task(
        id=tasks[0].id, name="+".join(t.name for t in tasks), op_type=FUSED_OP, domain=FUSED_DOMAIN,
        attrs={"ops": ops, "a": a, "b": b}, inputs=tuple(inputs), outputs=(out,),
        flops=sum(t.flops for t in tasks), bytes_touched=nbytes,
    )


def fuse_elementwise(graph: TaskGraph) -> TaskGraph:
    """A new TaskGraph with every elementwise chain (module docstring) one task; ``graph`` is unchanged.

    The fused task takes the place of the chain's LAST task (every operand of
    every step is produced before that step, so before it), the other tasks
    keep their relative order, and tasks are renumbered 0..n-1; the chain's
    intermediate values are removed.
    """
    chains = _chains(graph)
    if not chains:
        return graph
    by_last = {c[-1]: c for c in chains}
    inner = {i for c in chains for i in c[:-1]}
    dropped = {graph.tasks[i].outputs[0] for i in inner}
    tasks: list[Task] = []
    for t in graph.tasks:
        if t.id in inner:
            continue
        nt = _fused_task(graph, by_last[t.id]) if t.id in by_last else t
        tasks.append(dataclasses.replace(nt, id=len(tasks)))
    values = {k: v for k, v in graph.values.items() if k not in dropped}
    return dataclasses.replace(graph, tasks=tasks, values=values)
