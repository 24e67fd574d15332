"""State: graph inputs whose bytes outlive a run (a decoder's KV cache), found or named.

A decoder run many times carries its cache from one run to the next. The
plan marks such inputs as *state* (:class:`turnip.plan.StateTensor`): the
residency stage gives each a home in host memory that lives the whole run and
keeps it resident to the end of the run when the budget allows, and the
runtime then keeps it between runs instead of having it fed whole every token.

Found automatically (WHY structural, not by names: exporters name things
differently, but the data path is what makes a cache):

* **static cache** (transformers' ``StaticCache`` export): a graph output
  reached from a graph input through layout ops and a ``ScatterND`` /
  ``ScatterElements`` (the in-place ``index_copy_``), same shape: ``scatter``.
* **past / present** (optimum, torch.onnx): a graph output that is a
  ``Concat`` of a graph input and new positions: ``append``.

Named by the user (``turnipc plan --state NAME``): any graph input, with its
update output found as above when there is one.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import TurnipError
from .taskgraph import TaskGraph

#: Ops a cache passes through unchanged in meaning between its input and its output.
_LAYOUT_OPS = frozenset({"Transpose", "Reshape", "Identity", "Cast", "Squeeze", "Unsqueeze", "Flatten"})
_SCATTER_OPS = frozenset({"ScatterND", "ScatterElements"})


class StateError(TurnipError, ValueError):
    """A ``--state`` name that is no graph input of the model."""


@dataclass(frozen=True)
class StatePair:
    """One state input, the graph output holding its next value (or None), and how they relate."""

    input: str
    update: str | None
    how: str  # "scatter" | "append" | "named"


def _source_of(graph: TaskGraph, output: str) -> tuple[str, str] | None:
    """The graph input ``output`` is an updated copy of, and how (``scatter``/``append``); None if it is none."""
    producer = {v: t for t in graph.tasks for v in t.outputs if v is not None}
    how = ""
    v = output
    for _ in range(64):  # a cache path is a few ops long; bound the walk
        val = graph.values[v]
        if v not in producer and val.is_alias:
            v = val.storage
            continue
        if v not in producer:
            break
        t = producer[v]
        if t.op_type in _SCATTER_OPS:
            how = how or "scatter"
        elif t.op_type == "Concat":
            how = how or "append"
        elif t.op_type not in _LAYOUT_OPS:
            return None
        first = t.inputs[0]
        if first is None:
            return None
        v = first
    if v in graph.inputs and how:
        return v, how
    return None


def find_state(graph: TaskGraph, named: tuple[str, ...] = (), auto: bool = True) -> list[StatePair]:
    """The state inputs of ``graph``: those found (``auto``) plus those ``named``, in graph-input order."""
    bad = [n for n in named if n not in graph.inputs]
    if bad:
        raise StateError(f"--state {bad[0]!r} is not a graph input of the model (inputs: {', '.join(graph.inputs)}); name an input")
    updates: dict[str, tuple[str, str]] = {}
    for out in graph.outputs:
        src = _source_of(graph, out)
        if src is None or src[0] in updates:
            continue
        inp, how = src
        if how == "scatter" and graph.values[inp].shape != graph.values[out].shape:
            continue
        updates[inp] = (out, how)
    pairs = []
    for name in graph.inputs:
        if name in updates and (auto or name in named):
            pairs.append(StatePair(name, updates[name][0], updates[name][1]))
        elif name in named:
            pairs.append(StatePair(name, None, "named"))
    return pairs


def state_storages(graph: TaskGraph, inputs: tuple[str, ...]) -> frozenset[str]:
    """Storages holding the state ``inputs`` in ``graph`` (in a tiled graph: the blocks cut from them)."""
    want = set(inputs)
    out = {graph.values[n].storage for n in inputs if n in graph.values}
    out |= {graph.values[b].storage for b, (src, *_rest) in graph.blocks.items() if src in want}
    return frozenset(out)
