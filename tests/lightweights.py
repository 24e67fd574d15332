"""Variants of the ``light_*`` CNNs (onnx/backend/test/data/light) for end-to-end checks.

The light models make every big weight at run time with ``ConstantOfShape``
(value 0.02), so their outputs are nearly constant: the softmax of 1000 equal
logits is 0.001 whatever the convolutions compute. Two variants make the
checks meaningful:

* :func:`with_logits_output`: the same model with the softmax's input (the
  logits) added as a graph output, so the numbers the whole network computed
  are compared, not just the softmax of equal values.
* :func:`randomize_weights`: every ``ConstantOfShape`` weight replaced by a
  seeded random initializer of the same shape (stored as external data in one
  ``<model>.onnx.data`` file), scaled so activations stay O(1):

  - Conv / Gemm weights: He-normal, std sqrt(2 / fan_in);
  - Conv / Gemm biases and BatchNormalization B and mean: N(0, 0.05^2);
  - BatchNormalization scale U(0.4, 0.8) and var U(1, 2) (var > 0): a gain
    of about 0.5 per batch norm, which keeps the residual nets (resnet50,
    shufflenet) from growing their activations exponentially with depth (the
    stats are not the activations' real ones); the logits of every model stay
    within about 0.3 .. 15 in magnitude for seed 0;
  - weights read through Unsqueeze by a Mul (densenet's and inception_v2's
    unfolded batch norms): U(0.5, 1.5); by an Add: N(0, 0.05^2);
  - anything else: N(0, 0.05^2).

  Weights already stored as initializers are kept. The model stays IR 3
  (each new initializer is also listed as a graph input, as the others are).
"""

from __future__ import annotations

import os
from collections import defaultdict

import numpy as np
import onnx
from onnx import helper, numpy_helper

_PASS_THROUGH = ("Reshape", "Unsqueeze", "Flatten", "Squeeze", "Identity")


def _consumers(graph: onnx.GraphProto) -> dict[str, list[tuple[onnx.NodeProto, int]]]:
    out: dict[str, list[tuple[onnx.NodeProto, int]]] = defaultdict(list)
    for n in graph.node:
        for i, x in enumerate(n.input):
            if x:
                out[x].append((n, i))
    return out


def _final_use(name: str, cons: dict) -> tuple[onnx.NodeProto | None, int]:
    """The first real consumer of a value, following view ops (Reshape, Unsqueeze, ...) on input 0."""
    seen = 0
    while seen < 8:
        uses = cons.get(name, [])
        if not uses:
            return None, -1
        n, i = uses[0]
        if n.op_type in _PASS_THROUGH and i == 0:
            name = n.output[0]
            seen += 1
            continue
        return n, i
    return None, -1


def _attr(n: onnx.NodeProto, name: str, default: int = 0) -> int:
    for a in n.attribute:
        if a.name == name:
            return int(helper.get_attribute_value(a))
    return default


def _random_weight(shape: tuple[int, ...], use: onnx.NodeProto | None, idx: int, rng: np.random.Generator) -> np.ndarray:
    op = use.op_type if use is not None else ""
    squeezed = [d for d in shape if d != 1] or [1]

    def normal(std: float) -> np.ndarray:
        return (rng.standard_normal(size=shape, dtype=np.float32) * np.float32(std)).astype(np.float32)

    def uniform(lo: float, hi: float) -> np.ndarray:
        return rng.uniform(lo, hi, size=shape).astype(np.float32)

    if op == "Conv" and idx == 1:
        fan_in = int(np.prod(shape[1:]))
        return normal(np.sqrt(2.0 / max(fan_in, 1)))
    if op == "Gemm" and idx == 1:
        fan_in = squeezed[-1] if _attr(use, "transB") else squeezed[0]
        return normal(np.sqrt(2.0 / max(fan_in, 1)))
    if op == "MatMul" and idx == 1:
        return normal(np.sqrt(2.0 / max(shape[-2] if len(shape) >= 2 else shape[0], 1)))
    if op == "BatchNormalization" and idx == 1:
        return uniform(0.4, 0.8)
    if op == "BatchNormalization" and idx == 4:
        return uniform(1.0, 2.0)
    if op == "Mul":
        return uniform(0.5, 1.5)
    return normal(0.05)


def randomize_weights(src: str, dst: str, seed: int = 0, logits: bool = True) -> str:
    """Write ``dst`` (+ ``dst``.data): ``src`` with random weights instead of ConstantOfShape(0.02) ones.

    ``logits``: also add the softmax input as a graph output (see :func:`add_logits_output`).
    Returns ``dst``.
    """
    m = onnx.load(src)
    g = m.graph
    rng = np.random.default_rng(seed)
    inits = {t.name: t for t in g.initializer}
    cons = _consumers(g)
    new_nodes = []
    new_inits: list[onnx.TensorProto] = []
    new_inputs: list[onnx.ValueInfoProto] = []
    dropped: set[str] = set()
    for n in g.node:
        if n.op_type == "ConstantOfShape" and n.input and n.input[0] in inits:
            value = next((a.t for a in n.attribute if a.name == "value"), None)
            et = value.data_type if value is not None else onnx.TensorProto.FLOAT
            if et == onnx.TensorProto.FLOAT:
                shape = tuple(int(d) for d in numpy_helper.to_array(inits[n.input[0]]))
                use, idx = _final_use(n.output[0], cons)
                arr = _random_weight(shape, use, idx, rng)
                new_inits.append(numpy_helper.from_array(arr, n.output[0]))
                new_inputs.append(helper.make_tensor_value_info(n.output[0], onnx.TensorProto.FLOAT, list(shape)))
                dropped.add(n.input[0])
                continue
        new_nodes.append(n)
    still_used = {x for n in new_nodes for x in n.input}
    dropped -= still_used
    del g.node[:]
    g.node.extend(new_nodes)
    keep_inits = [t for t in g.initializer if t.name not in dropped]
    del g.initializer[:]
    g.initializer.extend(keep_inits + new_inits)
    keep_inputs = [vi for vi in g.input if vi.name not in dropped]
    del g.input[:]
    g.input.extend(keep_inputs + new_inputs)
    if logits:
        add_logits_output(m)
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    data = os.path.basename(dst) + ".data"
    if os.path.exists(os.path.join(os.path.dirname(os.path.abspath(dst)), data)):
        os.remove(os.path.join(os.path.dirname(os.path.abspath(dst)), data))
    onnx.save_model(m, dst, save_as_external_data=True, all_tensors_to_one_file=True, location=data, size_threshold=1024)
    return dst


def logits_name(model: onnx.ModelProto) -> str | None:
    """The input of the Softmax that computes a graph output, if any."""
    outs = {o.name for o in model.graph.output}
    for n in model.graph.node:
        if n.op_type == "Softmax" and n.output[0] in outs:
            return n.input[0]
    return None


def add_logits_output(model: onnx.ModelProto) -> str | None:
    """Add the softmax's input as a graph output (in place); returns its name (None: no softmax output)."""
    name = logits_name(model)
    if name is not None and name not in {o.name for o in model.graph.output}:
        model.graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    return name


def with_logits_output(src: str, dst: str) -> str | None:
    """Write ``dst``: ``src`` plus its logits as a graph output; returns the logits' name (None: no softmax)."""
    m = onnx.load(src)
    name = add_logits_output(m)
    onnx.save(m, dst)
    return name
