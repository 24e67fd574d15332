"""Step "alias": view ops become zero-copy aliases; each value gets the storage that owns its bytes.

Why: Reshape, Squeeze, Unsqueeze, Flatten, Identity, and Dropout in
inference mode (only its first output used) move no bytes, so they make no
task and cost no memory: their output is a new value over its input's
storage (chains resolve to the root). One exception keeps outputs distinct
and never weights: when such an output is a graph output and the root is an
input, weight, constant or already another graph output's storage, the node
stays a task (a copy).
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import onnx

from .. import folding
from .read import domain

#: Ops whose output can share the input's bytes.
ALIAS_OPS = frozenset({"Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity", "Dropout"})


def count_uses(nodes: list[onnx.NodeProto], outputs: list[str]) -> collections.Counter[str]:
    """How many times each value is read among ``nodes``, a graph output counting as one read."""
    uses: collections.Counter[str] = collections.Counter()
    for n in nodes:
        for i in n.input:
            if i:
                uses[i] += 1
    for o in outputs:
        uses[o] += 1
    return uses


def is_alias(n: onnx.NodeProto, uses: collections.Counter, consts: dict, types: dict) -> bool:
    """Whether ``n`` is a view: an alias op, one output of static shape, the input's dtype (Dropout: inference mode)."""
    if n.op_type not in ALIAS_OPS or domain(n.domain) != "" or not n.input or not n.input[0] or not n.output:
        return False
    if not n.output[0]:
        return False
    if n.op_type == "Dropout":
        if any(o and uses[o] for o in n.output[1:]):
            return False
        if len(n.input) >= 3 and n.input[2]:
            mode = consts.get(n.input[2])
            if mode is None or bool(np.asarray(mode).reshape(-1)[0]):
                return False
    elif len([o for o in n.output if o]) != 1:
        return False
    t_in, t_out = types.get(n.input[0]), types.get(n.output[0])
    if folding.static_shape(t_out) is None or t_in is None or t_out is None:
        return False
    if t_in[0] and t_out[0] and t_in[0] != t_out[0]:
        return False
    return True


@dataclass
class Aliases:
    """The result of the alias step."""

    storage: dict[str, str] = field(default_factory=dict)  # alias value -> the root value owning its bytes
    claimed: set[str] = field(default_factory=set)  # storages holding a graph output
    nodes: list[onnx.NodeProto] = field(default_factory=list)  # the nodes that stay tasks, graph order


def resolve_aliases(
    nodes: list[onnx.NodeProto], is_view: Callable[[onnx.NodeProto], bool], outputs: set[str], root_kind: Callable[[str], str]
) -> Aliases:
    """Split ``nodes`` into aliases and tasks; ``root_kind`` gives a root's kind before aliasing (input, weight, ...)."""
    a = Aliases()
    for n in nodes:
        if is_view(n):
            src, out = n.input[0], n.output[0]
            root = a.storage.get(src, src)
            if not (out in outputs and (root_kind(root) != "activation" or root in a.claimed)):
                a.storage[out] = root
                if out in outputs:
                    a.claimed.add(root)
                continue
        a.nodes.append(n)
        for o in n.output:
            if o in outputs:
                a.claimed.add(o)
    return a
