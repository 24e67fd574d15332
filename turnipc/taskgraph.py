"""The TASKGRAPH: an ONNX model reduced to static-shape tensor work.

The importer (``turnipc.importer``) builds it; every later stage of the
compiler reads it and never looks at the ONNX model again.

* A :class:`Value` is an ONNX tensor with a fully static shape.
* Values that share bytes (zero-copy aliases made by Reshape, Squeeze,
  Unsqueeze, Flatten, Identity) name the same ``storage``: the value that owns
  the bytes. Memory planning works on storages; kernels read values.
* A :class:`Task` is one ONNX node that does real tensor work (constant
  subgraphs are folded away and aliases are gone), or, after the partition
  pass (``turnipc.partition``), the same op on one block of its output.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from turnip.plan import TensorKind, WeightRecipe

#: Value kinds. "weight": an initializer of the model, read by the runtime
#: from the model file (or a derived weight, made from one at load: ``TaskGraph.derived``); "constant": computed at plan time (folding) and
#: stored inline in the plan; "input"/"output": graph inputs and outputs.
#: The plan's TensorKind, by value: a value's kind becomes its tensor's kind in the plan.
VALUE_KINDS = tuple(k.value for k in TensorKind)
#: Kinds whose bytes exist before any task runs.
INITIAL_KINDS = (TensorKind.INPUT, TensorKind.WEIGHT, TensorKind.CONSTANT)


@dataclass(frozen=True)
class Value:
    name: str
    dtype: str  # NumPy dtype name
    shape: tuple[int, ...]
    nbytes: int
    kind: str
    storage: str  # name of the value owning the bytes (== name unless an alias)

    @property
    def is_alias(self) -> bool:
        return self.storage != self.name


@dataclass(frozen=True)
class Task:
    id: int  # position in the ONNX graph after import (topologically sorted)
    name: str  # ONNX node name (made unique by the importer)
    op_type: str
    domain: str
    attrs: dict[str, Any]  # plain Python values and NumPy arrays (tensor attributes)
    inputs: tuple[str | None, ...]  # value names; None for an omitted optional input
    outputs: tuple[str | None, ...]  # None for an omitted optional output followed by a written one
    flops: int  # estimated floating point operations
    bytes_touched: int  # bytes read + written

    def storages_read(self, graph: "TaskGraph") -> list[str]:
        seen: dict[str, None] = {}
        for v in self.inputs:
            if v is not None:
                seen.setdefault(graph.values[v].storage)
        return list(seen)

    def storages_written(self, graph: "TaskGraph") -> list[str]:
        return [graph.values[v].storage for v in self.outputs if v is not None]


@dataclass
class TaskGraph:
    model_path: str
    model_sha256: str
    opset: dict[str, int]  # domain -> version ("" is the default domain)
    values: dict[str, Value]  # insertion order = deterministic order of first appearance
    tasks: list[Task]
    inputs: list[str]  # graph inputs fed by the user, ONNX order
    outputs: list[str]  # graph outputs, ONNX order
    constants: dict[str, np.ndarray] = field(default_factory=dict)  # folded values (kind "constant")
    dims: dict[str, int] = field(default_factory=dict)  # dynamic dims bound at import
    #: Blocks of initial data (weights, graph inputs) made by the partition
    #: pass: block value -> (value it is cut from, axis, start, stop). The
    #: runtime cuts them when it loads the data, so a weight is never whole
    #: on the GPU just to be split there.
    blocks: dict[str, tuple[str, int, int, int]] = field(default_factory=dict)
    #: Derived weights (kind "weight", no initializer of their own): value ->
    #: how the runtime makes it from an initializer once at load
    #: (``turnipc.importer.derive``: weight-only Transpose / Cast chains).
    derived: dict[str, WeightRecipe] = field(default_factory=dict)
    #: Values of the small integer initializers (axes, pads, starts: at most
    #: ``SMALL_INT_MAX`` elements, stored inline): dynamo exports feed op
    #: parameters from initializers, not Constant nodes, and the partition
    #: pass must read them to cut a ReduceMean or a Pad. They stay weights.
    small_ints: dict[str, tuple[int, ...]] = field(default_factory=dict)

    # -- derived views (cheap, computed on demand) -----------------------
    def storage_bytes(self, storage: str) -> int:
        return self.values[storage].nbytes

    def storage_kind(self, storage: str) -> str:
        return self.values[storage].kind

    def storages(self) -> list[str]:
        """Every storage, in value order."""
        return [v.name for v in self.values.values() if not v.is_alias]

    def producers(self) -> dict[str, int]:
        """storage -> id of the task writing it (absent for inputs, weights, constants)."""
        out: dict[str, int] = {}
        for t in self.tasks:
            for s in t.storages_written(self):
                out[s] = t.id
        return out

    def consumers(self) -> dict[str, list[int]]:
        """storage -> ids of tasks reading it, in task order."""
        out: dict[str, list[int]] = {s: [] for s in self.storages()}
        for t in self.tasks:
            for s in t.storages_read(self):
                out[s].append(t.id)
        return out

    def output_storages(self) -> list[str]:
        return list(dict.fromkeys(self.values[o].storage for o in self.outputs))

    def initial_storages(self) -> list[str]:
        """Storages that hold data before any task runs (inputs, weights, constants)."""
        return [s for s in self.storages() if self.values[s].kind in INITIAL_KINDS]

    def total_flops(self) -> int:
        return sum(t.flops for t in self.tasks)
