"""Step "rewrite": the model made ready for shape inference and folding (in place).

Why: ONNX shape inference and folding work on a ModelProto, and they need a
model that says exactly what is known before any node runs:

* every node has a unique name (tasks, errors and plans name nodes), and an
  omitted optional output ("") followed by a named one gets a name (tasks
  list outputs by position);
* the user's inputs carry their bound static shapes; big or external weights
  become typed graph inputs (dtype and shape only, their bytes never read);
  only the small inline arrays stay initializers, for folding;
* value_info and output shapes are dropped, so inference derives them from
  the bound inputs (a stale declared shape cannot win).
"""

from __future__ import annotations

from typing import Iterable

import onnx
from onnx import helper

from .bind import Bound
from .weights import Weights

#: Names given to omitted optional outputs followed by used ones.
OMITTED_TAG = "::omitted_output_"


def name_nodes(nodes: Iterable[onnx.NodeProto]) -> None:
    """Give every node a unique name: its own, or OpType_index; duplicates get _1, _2, ..."""
    seen: set[str] = set()
    for i, n in enumerate(nodes):
        base = n.name or f"{n.op_type}_{i}"
        name, k = base, 1
        while name in seen:
            name = f"{base}_{k}"
            k += 1
        seen.add(name)
        n.name = name


def name_omitted_outputs(nodes: Iterable[onnx.NodeProto]) -> None:
    """An omitted optional output ("") followed by a named one gets a name (tasks list outputs by position)."""
    for n in nodes:
        outs = list(n.output)
        last = max((i for i, o in enumerate(outs) if o), default=-1)
        for i in range(last):
            if not outs[i]:
                n.output[i] = f"{n.name}{OMITTED_TAG}{i}"


def make_inference_model(model: onnx.ModelProto, bound: Bound, weights: Weights) -> None:
    """Rewrite ``model`` in place into the inference model :func:`turnipc.folding.fold_to_fixpoint` takes."""
    g = model.graph
    name_nodes(g.node)
    name_omitted_outputs(g.node)
    new_inputs = [helper.make_tensor_value_info(n, bound.input_elem[n], bound.shapes[n]) for n in bound.input_names]
    for name, (et, wd) in weights.meta.items():
        if name not in weights.consts:
            new_inputs.append(helper.make_tensor_value_info(name, et, wd))
    del g.input[:]
    g.input.extend(new_inputs)
    del g.initializer[:]
    g.initializer.extend(weights.protos)
    del g.value_info[:]
    new_outputs = []
    for o in g.output:
        et = o.type.tensor_type.elem_type if o.type.HasField("tensor_type") else 0
        new_outputs.append(helper.make_tensor_value_info(o.name, et, None))
    del g.output[:]
    g.output.extend(new_outputs)
    if model.ir_version < 4:
        model.ir_version = 4  # initializers need not be graph inputs from IR 4 on; same operators
