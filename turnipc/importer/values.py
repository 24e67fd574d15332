"""Step "values": every value a task touches gets its kind, dtype, static shape, bytes and storage.

Why: later stages plan storages (bytes) and kernels read values (views), so
each value must be fully static and typed, or the import stops with one
error naming them. A value's kind is its storage's kind: ``input``,
``weight`` (an initializer, or a derived weight), ``constant`` (folded),
and for what tasks write ``activation``, or ``output`` when a graph output
lives in that storage. Values are created in a deterministic order (inputs,
then the weights and constants tasks read, then task by task, then the
outputs), which is the order of the plan's tensor table.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper
from turnip.dtypes import dtype_name_from_onnx, itemsize
from turnip.plan import WeightRecipe

from .. import folding
from ..errors import ModelError
from ..taskgraph import Value
from .bind import Bound, shape_text
from .rewrite import OMITTED_TAG


@dataclass
class Kinds:
    """Where each value's bytes come from, by its root (the storage an alias resolves to)."""

    inputs: dict[str, tuple[int, ...]]  # graph input -> shape
    weights: dict[str, tuple[int, tuple[int, ...]]]  # initializer -> (elem type, shape)
    derived: dict[str, WeightRecipe]  # derived weight -> recipe
    folded: set[str]  # values computed by folding
    storage: dict[str, str] = field(default_factory=dict)  # alias -> root
    claimed: set[str] = field(default_factory=set)  # storages holding a graph output

    def root_kind(self, name: str) -> str:
        """The kind of a root value, before outputs are known."""
        if name in self.inputs:
            return "input"
        if name in self.weights or name in self.derived:
            return "weight"
        if name in self.folded:
            return "constant"
        return "activation"

    def kind_of(self, name: str) -> str:
        """The kind of any value: its storage's, ``output`` for a written storage holding a graph output."""
        root = self.storage.get(name, name)
        k = self.root_kind(root)
        if k == "activation" and root in self.claimed:
            return "output"
        return k


def build_values(
    kinds: Kinds,
    bound: Bound,
    res: folding.FoldResult,
    task_inputs: list[tuple[str | None, ...]],
    task_outputs: list[tuple[str | None, ...]],
    outputs: list[str],
) -> tuple[dict[str, Value], dict[str, np.ndarray]]:
    """(values in deterministic order, arrays of the folded constants that are storages)."""
    values: dict[str, Value] = {}
    constants: dict[str, np.ndarray] = {}
    storage = kinds.storage

    def type_of(name: str) -> tuple[int, tuple[int, ...]]:
        if name in bound.shapes:
            return bound.input_elem[name], tuple(bound.shapes[name])
        if name in kinds.weights:
            return kinds.weights[name]
        if name in kinds.folded:
            arr = res.constants[name]
            return elem_of_array(arr, name), tuple(arr.shape)
        t = res.types[name]
        return t[0], tuple(t[1])  # type: ignore[arg-type]

    def add(name: str) -> None:
        if name in values:
            return
        root = storage.get(name, name)
        if root != name:
            add(root)
        et, shape = type_of(name)
        try:
            dt = dtype_name_from_onnx(et)
        except ValueError:
            raise ModelError(
                f"value {name} has element type {elem_name(et)}, which Turnip cannot plan; export the model with float/int/bool tensors"
            ) from None
        k = kinds.kind_of(name)
        values[name] = Value(name, dt, shape, int(np.prod(shape, dtype=np.int64)) * itemsize(dt), k, root)
        if k == "constant" and root == name:
            constants[name] = res.constants[name]

    for n in bound.input_names:
        add(n)
    for ins in task_inputs:
        for i in ins:
            if i is not None and kinds.root_kind(storage.get(i, i)) in ("weight", "constant"):
                add(storage.get(i, i))
    for ins, outs in zip(task_inputs, task_outputs, strict=True):
        for i in ins:
            if i is not None:
                add(i)
        for o in outs:
            if o is not None:
                add(o)
    for o in outputs:
        add(o)
    return values, constants


def check_static(
    task_inputs: list[tuple[str | None, ...]],
    task_outputs: list[tuple[str | None, ...]],
    outputs: list[str],
    types: dict[str, folding.TypeInfo],
    res: folding.FoldResult,
    path: str,
    model: onnx.ModelProto,
) -> None:
    """ModelError naming the values tasks touch that have no static shape (and why, where folding says)."""
    producer: dict[str, onnx.NodeProto] = {}
    for n in res.nodes:
        for o in n.output:
            if o:
                producer[o] = n
    need: list[str] = []
    seen: set[str] = set()
    for ins, outs in zip(task_inputs, task_outputs, strict=True):
        for v in list(ins) + list(outs):
            if v is not None and v not in seen:
                seen.add(v)
                need.append(v)
    for o in outputs:
        if o not in seen:
            seen.add(o)
            need.append(o)
    bad: list[str] = []
    for v in need:
        if v not in producer:
            continue  # inputs, weights, constants: typed elsewhere
        t = types.get(v)
        if t is None or not t[0] or folding.static_shape(t) is None:
            bad.append(v)
    if not bad:
        return
    omitted = [v for v in bad if OMITTED_TAG in v]
    if omitted:
        n = producer[omitted[0]]
        i = omitted[0].rsplit(OMITTED_TAG, 1)[1]
        raise ModelError(
            f"{n.op_type} node {n.name} omits its optional output {i} but writes a later one, and that output has no "
            "static shape without its optional inputs; Turnip cannot plan omitted middle outputs: export the node "
            "without the later outputs"
        )
    parts = []
    for v in bad[:5]:
        n = producer[v]
        why = res.failures.get(v)
        t = types.get(v)
        what = "no type" if t is None or not t[0] else ("unknown rank" if t[1] is None else "shape " + shape_text(list(t[1])))
        parts.append(f"{v} ({what}; from {n.op_type} node {n.name}{'; folding failed: ' + why if why else ''})")
    more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
    hint = ""
    try:
        folding.infer(model, strict=True)
    except Exception as e:
        first = (str(e).strip().splitlines() or [""])[0]
        hint = f" (shape inference: {first[:300]})"
    raise ModelError(
        f"cannot find a static shape for {', '.join(parts)}{more}{hint}; check the --dim/--input-shape values, "
        f"or re-export {path} with static shapes"
    )


def elem_of_array(arr: np.ndarray, name: str) -> int:
    try:
        return int(helper.np_dtype_to_tensor_dtype(arr.dtype))
    except Exception:
        raise ModelError(
            f"value {name} has element type {arr.dtype}, which Turnip cannot plan; export the model with float/int/bool tensors"
        ) from None


def elem_name(et: int) -> str:
    try:
        return TensorProto.DataType.Name(et)
    except ValueError:
        return f"#{et}"
