"""Derived weights: Transpose / Cast chains of weights made once at load, not in every run.

An exporter often writes a weight in one layout and uses it in another: the
dynamo export of GPT-2 ties its LM head to the token embedding and feeds
``Transpose(wte)`` to the last MatMul. As a task, that Transpose runs in every
forward pass and holds its input and its output on the GPU at once (GPT-2
small: 2 x 147 MiB, 62% of the model's no-offload peak). Its result never
changes, so :func:`derive_weights` takes such nodes out of the graph and
gives their outputs a :class:`~turnip.plan.WeightRecipe` instead: the
initializer they start from and the steps (transpose, cast, reshape) that
make them. The runtime applies the recipe once, in host memory, when it
loads the plan (:func:`turnip.weights.derive_weight`), and from then on the
result is a weight like any other (placed, reloaded, cut into blocks).

What counts as a chain: starting at an initializer, any run of zero-copy
views (Reshape, Squeeze, Unsqueeze, Flatten, Identity: the importer's
aliases, recorded as a reshape step) and Transpose / Cast nodes. The views
stay nodes (the alias step makes them aliases of the derived weight, or of
the initializer); each Transpose / Cast becomes a derived weight. A node whose
output is a graph output stays a task (a graph output is written by a task,
never a weight). Nothing here reads a weight's bytes: the recipe is built
from dtypes and shapes only (planning stays weight-free).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np
import onnx
from turnip.dtypes import dtype_name_from_onnx
from turnip.plan import DeriveOp, DeriveStep, WeightRecipe

from ..folding import TypeInfo, static_shape

#: Ops computed once at load when their input is a weight (or derived from one).
DERIVED_OPS = frozenset({"Transpose", "Cast"})


@dataclass(frozen=True)
class _Chain:
    """A value computed from one initializer: the recipe so far, and the dtype / shape it gives."""

    source: str
    source_dtype: str
    source_shape: tuple[int, ...]
    steps: tuple[DeriveStep, ...]
    dtype: str
    shape: tuple[int, ...]

    def then(self, step: DeriveStep, dtype: str, shape: tuple[int, ...]) -> "_Chain":
        steps = self.steps
        if step.op == DeriveOp.RESHAPE:
            if shape == self.shape:
                return self
            if steps and steps[-1].op == DeriveOp.RESHAPE:  # two views in a row: one reshape to the last shape
                steps = steps[:-1]
        return _Chain(self.source, self.source_dtype, self.source_shape, (*steps, step), dtype, shape)

    def recipe(self) -> WeightRecipe:
        return WeightRecipe(self.source, self.source_dtype, self.source_shape, self.steps)


def derive_weights(
    nodes: list[onnx.NodeProto],
    weights: Mapping[str, tuple[int, tuple[int, ...]]],
    types: Mapping[str, TypeInfo],
    outputs: set[str],
    is_view: Callable[[onnx.NodeProto], bool],
) -> tuple[list[onnx.NodeProto], dict[str, WeightRecipe]]:
    """Take weight-only Transpose / Cast nodes out of ``nodes``; return the rest and a recipe per derived value.

    ``weights``: initializer name -> (ONNX elem type, shape); ``types``: the
    folded graph's inferred types; ``outputs``: the graph outputs;
    ``is_view``: whether a node is a zero-copy alias (the importer's rule).
    Nodes keep their order; a derived value is named as the node output it
    replaces.
    """
    chains: dict[str, _Chain] = {}
    for name, (et, shape) in weights.items():
        try:
            dt = dtype_name_from_onnx(et)
        except ValueError:
            continue
        chains[name] = _Chain(name, dt, tuple(shape), (), dt, tuple(shape))
    kept: list[onnx.NodeProto] = []
    recipes: dict[str, WeightRecipe] = {}
    for n in nodes:
        got = _extend(n, chains, types, outputs, is_view)
        if got is None:
            kept.append(n)
            continue
        out, chain, derived = got
        chains[out] = chain
        if derived:
            recipes[out] = chain.recipe()
        else:
            kept.append(n)  # a view: stays, the alias step makes it an alias
    return kept, recipes


def _extend(
    n: onnx.NodeProto,
    chains: Mapping[str, _Chain],
    types: Mapping[str, TypeInfo],
    outputs: set[str],
    is_view: Callable[[onnx.NodeProto], bool],
) -> tuple[str, _Chain, bool] | None:
    """(output, its chain, whether the node becomes a derived weight), or None when ``n`` is not on a chain."""
    if n.domain not in ("", "ai.onnx") or not n.input or n.input[0] not in chains:
        return None
    outs = [o for o in n.output if o]
    if len(outs) != 1 or n.output[0] != outs[0]:
        return None
    out = outs[0]
    t = types.get(out)
    shape = static_shape(t)
    if t is None or shape is None or not t[0]:
        return None
    try:
        dtype = dtype_name_from_onnx(t[0])
    except ValueError:
        return None
    chain = chains[n.input[0]]
    if n.op_type in DERIVED_OPS:
        if out in outputs or any(i for i in n.input[1:]):
            return None  # a graph output is a task's; Cast / Transpose take one input
        if n.op_type == "Transpose":
            perm = _perm(n, len(chain.shape))
            if perm is None or dtype != chain.dtype or shape != tuple(chain.shape[p] for p in perm):
                return None
            return out, chain.then(DeriveStep(DeriveOp.TRANSPOSE, perm), dtype, shape), True
        if shape != chain.shape:
            return None
        return out, chain.then(DeriveStep(DeriveOp.CAST, dtype), dtype, shape), True
    if is_view(n) and dtype == chain.dtype and int(np.prod(shape, dtype=np.int64)) == int(np.prod(chain.shape, dtype=np.int64)):
        return out, chain.then(DeriveStep(DeriveOp.RESHAPE, shape), dtype, shape), False
    return None


def _perm(n: onnx.NodeProto, rank: int) -> tuple[int, ...] | None:
    """Transpose's permutation (reversed axes when absent), or None when it is not one."""
    for a in n.attribute:
        if a.name == "perm":
            perm = tuple(int(p) for p in a.ints)
            return perm if sorted(perm) == list(range(rank)) else None
    return tuple(range(rank))[::-1]
