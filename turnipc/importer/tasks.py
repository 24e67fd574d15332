"""Step "tasks": the nodes that stay become tasks: supported ops checked, inputs and outputs trimmed, attributes decoded, cost estimated.

Why: a task lists exactly the values it reads and writes, by position. Trailing
optional outputs nothing uses are dropped (Dropout's mask,
LayerNormalization's mean), so no memory is planned for them; an omitted
middle one is a gap (None). Attributes become plain Python values and NumPy
arrays, so no later stage (nor the plan) holds protobuf.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any

import numpy as np
import onnx
from onnx import AttributeProto, TensorProto, numpy_helper

from ..cost import estimate
from ..errors import ModelError
from ..taskgraph import Task, Value
from .read import domain
from .rewrite import OMITTED_TAG

#: (domain, op type) of each op with a kernel, as the runtime lists them.
OpKey = tuple[str, str]


def check_supported(nodes: list[onnx.NodeProto], supported_ops: set[OpKey] | None) -> None:
    """ModelError listing every op without a kernel (most frequent first); nothing when ``supported_ops`` is None."""
    if supported_ops is None:
        return
    missing: collections.Counter[OpKey] = collections.Counter()
    for n in nodes:
        key = (domain(n.domain), n.op_type)
        if key not in supported_ops:
            missing[key] += 1
    if missing:
        listed = ", ".join(
            f"{op if not d else d + '.' + op} x{c}" for (d, op), c in sorted(missing.items(), key=lambda kv: (-kv[1], kv[0]))
        )
        raise ModelError(
            f"unsupported ops: {listed}; Turnip has no kernel for them: re-export the model without them "
            "(another opset or exporter) or add kernels"
        )


def task_io(
    nodes: list[onnx.NodeProto], uses: collections.Counter, opsets: dict[str, int]
) -> tuple[list[tuple[str | None, ...]], list[tuple[str | None, ...]]]:
    """(inputs, outputs) of each task: trailing omitted inputs and unused optional outputs dropped, middle gaps None."""
    task_outputs = [kept_outputs(n, uses, opsets) for n in nodes]
    task_inputs: list[tuple[str | None, ...]] = []
    for n in nodes:
        named: list[str | None] = [i if i else None for i in n.input]
        while named and named[-1] is None:
            named.pop()
        task_inputs.append(tuple(named))
    return task_inputs, task_outputs


def kept_outputs(n: onnx.NodeProto, uses: collections.Counter, opsets: dict[str, int]) -> tuple[str | None, ...]:
    """Outputs the task writes: trailing unused optional ones dropped, omitted middle ones as None (a gap)."""
    outs = list(n.output)
    optional = optional_outputs(n, opsets)
    while outs and (not outs[-1] or (uses[outs[-1]] == 0 and (len(outs) - 1) in optional)):
        outs.pop()
    return tuple(None if (OMITTED_TAG in o and uses[o] == 0) else o for o in outs)


_SCHEMA_CACHE: dict[tuple[str, str, int], set[int]] = {}


def optional_outputs(n: onnx.NodeProto, opsets: dict[str, int]) -> set[int]:
    """Positions of the outputs the op's schema marks optional (none for an op without a schema)."""
    d = domain(n.domain)
    key = (d, n.op_type, opsets.get(d, 0))
    got = _SCHEMA_CACHE.get(key)
    if got is None:
        got = set()
        try:
            schema = onnx.defs.get_schema(n.op_type, key[2], d)
            opt = onnx.defs.OpSchema.FormalParameterOption.Optional
            got = {i for i, p in enumerate(schema.outputs) if p.option == opt}
        except Exception:
            pass
        _SCHEMA_CACHE[key] = got
    return got


def build_tasks(
    nodes: list[onnx.NodeProto],
    task_inputs: list[tuple[str | None, ...]],
    task_outputs: list[tuple[str | None, ...]],
    values: dict[str, Value],
) -> list[Task]:
    """One task per node, numbered in graph order, with its estimated flops and bytes touched."""
    tasks: list[Task] = []
    for tid, (n, ins, outs) in enumerate(zip(nodes, task_inputs, task_outputs, strict=True)):
        t = Task(
            id=tid,
            name=n.name,
            op_type=n.op_type,
            domain=domain(n.domain),
            attrs={a.name: attr_value(a, n) for a in n.attribute},
            inputs=ins,
            outputs=outs,
            flops=0,
            bytes_touched=0,
        )
        flops, nbytes = estimate(t, values)
        tasks.append(dataclasses.replace(t, flops=flops, bytes_touched=nbytes))
    return tasks


def attr_value(a: onnx.AttributeProto, n: onnx.NodeProto) -> Any:
    """An attribute as a plain Python value (tensors as NumPy arrays); ModelError for a type Turnip cannot plan."""
    t = a.type
    if t == AttributeProto.TENSOR:
        return _tensor_attr(a.t, a.name, n)
    if t == AttributeProto.TENSORS:
        return [_tensor_attr(x, a.name, n) for x in a.tensors]
    if t == AttributeProto.STRING:
        return a.s.decode("utf-8", errors="replace")
    if t == AttributeProto.STRINGS:
        return [s.decode("utf-8", errors="replace") for s in a.strings]
    if t == AttributeProto.INT:
        return int(a.i)
    if t == AttributeProto.FLOAT:
        return float(a.f)
    if t == AttributeProto.INTS:
        return [int(x) for x in a.ints]
    if t == AttributeProto.FLOATS:
        return [float(x) for x in a.floats]
    if t == AttributeProto.TYPE_PROTO and a.tp.HasField("tensor_type"):
        return int(a.tp.tensor_type.elem_type)
    raise ModelError(
        f"attribute {a.name} of {n.op_type} node {n.name} has type {AttributeProto.AttributeType.Name(t)}, "
        "which Turnip cannot plan; export the model without it"
    )


def _tensor_attr(tp: TensorProto, attr: str, n: onnx.NodeProto) -> np.ndarray:
    if tp.data_location == TensorProto.EXTERNAL:
        raise ModelError(
            f"attribute {attr} of {n.op_type} node {n.name} keeps its tensor in external data; save the model with convert_attribute=False"
        )
    return numpy_helper.to_array(tp)
