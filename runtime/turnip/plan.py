"""The MEMGRAPH plan file: schema, reader and writer.

This module is the single definition of the plan format. The compiler
(`turnipc`) builds a :class:`Plan` and calls :func:`write_plan`; the runtime
calls :func:`read_plan`. Nothing else in either package encodes or decodes
plan bytes, so the format is described once (and in docs/plan-format.md).

Design choices, and why:

* msgpack, with every mapping written with sorted keys and every list in a
  defined order, so planning the same model twice gives byte-identical files.
* Tensors are described once in a table (``Plan.tensors``); every memory
  location refers to a tensor by index, which gives the view (dtype, shape)
  the bytes at that location are to be read as. Zero-copy aliases
  (Reshape, Squeeze, ...) are separate tensors that share a ``storage``.
* Nodes carry their dependencies explicitly. Dependencies cover data flow and
  every hazard created by memory reuse, so any dependency-respecting order of
  execution is safe; the runtime may pick any of them.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from typing import Any

import msgpack

FORMAT_NAME = "turnip-plan"
FORMAT_VERSION = 1

#: Node kinds, and the queue each runs on.
COMPUTE = "compute"
RELOAD = "reload"  # host -> GPU
OFFLOAD = "offload"  # GPU -> host
MOVE = "move"  # GPU -> GPU
NODE_KINDS = (COMPUTE, RELOAD, OFFLOAD, MOVE)

#: Tensor kinds.
TENSOR_KINDS = ("input", "weight", "constant", "activation", "output")

#: Memory kinds.
GPU = "gpu"
HOST = "host"


class PlanFormatError(ValueError):
    """The bytes are not a plan this runtime can read."""


@dataclass(frozen=True)
class TensorInfo:
    """One ONNX value, as the runtime sees it.

    ``storage`` is the index of the tensor that owns the bytes (itself for
    ordinary tensors; the base tensor for zero-copy aliases).
    """

    name: str
    dtype: str  # NumPy dtype name ("float32", "int64", "bool", "bfloat16", ...)
    shape: tuple[int, ...]
    nbytes: int
    kind: str
    storage: int
    #: A block of initial data (kind ``weight`` or ``input``) cut by the
    #: runtime when it loads the data: ``(tensor it is cut from, axis, start,
    #: stop)``. None for every other tensor (and then absent from the file,
    #: so plans without blocks are unchanged).
    block: tuple[int, int, int, int] | None = None

    def to_obj(self) -> dict[str, Any]:
        o: dict[str, Any] = {
            "name": self.name,
            "dtype": self.dtype,
            "shape": list(self.shape),
            "nbytes": self.nbytes,
            "kind": self.kind,
            "storage": self.storage,
        }
        if self.block is not None:
            o["block"] = list(self.block)
        return o

    @staticmethod
    def from_obj(o: dict[str, Any]) -> "TensorInfo":
        blk = o.get("block")
        return TensorInfo(o["name"], o["dtype"], tuple(o["shape"]), o["nbytes"], o["kind"], o["storage"],
                          None if blk is None else tuple(int(x) for x in blk))


@dataclass(frozen=True)
class Memory:
    """A preallocated memory: one arena per GPU, and one (pinned) host region."""

    id: int
    kind: str  # GPU or HOST
    device: int  # GPU index; -1 for host memory
    size: int  # bytes to allocate
    budget: int  # bytes the plan was allowed (size <= budget for GPUs)

    def to_obj(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "device": self.device, "size": self.size, "budget": self.budget}

    @staticmethod
    def from_obj(o: dict[str, Any]) -> "Memory":
        return Memory(o["id"], o["kind"], o["device"], o["size"], o["budget"])


@dataclass(frozen=True)
class Loc:
    """Where a tensor's bytes are: memory id, byte offset, and the tensor whose view they hold."""

    mem: int
    offset: int
    tensor: int

    def to_obj(self) -> list[int]:
        return [self.mem, self.offset, self.tensor]

    @staticmethod
    def from_obj(o: list[int]) -> "Loc":
        return Loc(int(o[0]), int(o[1]), int(o[2]))


@dataclass(frozen=True)
class Placement:
    """A tensor whose bytes the runtime writes before the first node runs.

    ``source`` says where the bytes come from: ``"weight"`` (an initializer of
    the model, by tensor name), ``"constant"`` (``Plan.constants``, folded at
    plan time) or ``"input"`` (fed by the user).
    """

    tensor: int
    loc: Loc
    source: str

    def to_obj(self) -> dict[str, Any]:
        return {"tensor": self.tensor, "loc": self.loc.to_obj(), "source": self.source}

    @staticmethod
    def from_obj(o: dict[str, Any]) -> "Placement":
        return Placement(o["tensor"], Loc.from_obj(o["loc"]), o["source"])


@dataclass(frozen=True)
class Node:
    """One MEMGRAPH node.

    compute: runs ONNX op ``op`` reading ``inputs`` (None for an omitted
    optional input) and writing ``outputs``.
    reload / offload / move: copy ``src`` to ``dst`` (``inputs == [src]``,
    ``outputs == [dst]``); same tensor, different memory.
    ``device`` is the GPU whose queue runs the node (for a move, the
    destination GPU). ``pos`` is the node's position in the planned serial
    order, which the runtime uses as its default priority.
    """

    id: int
    kind: str
    device: int
    deps: tuple[int, ...]
    inputs: tuple[Loc | None, ...]
    outputs: tuple[Loc | None, ...]  # None: an omitted optional output (compute only)
    op: str = ""
    domain: str = ""
    name: str = ""
    attrs: dict[str, Any] = field(default_factory=dict)
    flops: int = 0
    bytes: int = 0
    pos: int = 0

    @property
    def src(self) -> Loc:
        loc = self.inputs[0]
        assert loc is not None
        return loc

    @property
    def dst(self) -> Loc:
        loc = self.outputs[0]
        assert loc is not None
        return loc

    def to_obj(self) -> dict[str, Any]:
        o: dict[str, Any] = {
            "id": self.id,
            "kind": self.kind,
            "device": self.device,
            "deps": list(self.deps),
            "inputs": [None if x is None else x.to_obj() for x in self.inputs],
            "outputs": [None if x is None else x.to_obj() for x in self.outputs],
            "pos": self.pos,
        }
        if self.kind == COMPUTE:
            o.update(op=self.op, domain=self.domain, name=self.name, attrs=_encode_attrs(self.attrs), flops=self.flops, bytes=self.bytes)
        else:
            o.update(name=self.name, bytes=self.bytes)
        return o

    @staticmethod
    def from_obj(o: dict[str, Any]) -> "Node":
        return Node(
            id=o["id"],
            kind=o["kind"],
            device=o["device"],
            deps=tuple(o["deps"]),
            inputs=tuple(None if x is None else Loc.from_obj(x) for x in o["inputs"]),
            outputs=tuple(None if x is None else Loc.from_obj(x) for x in o["outputs"]),
            op=o.get("op", ""),
            domain=o.get("domain", ""),
            name=o.get("name", ""),
            attrs=_decode_attrs(o.get("attrs", {})),
            flops=o.get("flops", 0),
            bytes=o.get("bytes", 0),
            pos=o.get("pos", 0),
        )


@dataclass
class Plan:
    """A whole MEMGRAPH plan: everything the runtime needs besides the weights."""

    model_path: str  # relative to the plan file's folder when written
    model_sha256: str
    opset: dict[str, int]
    options: dict[str, Any]
    tensors: list[TensorInfo]
    memories: list[Memory]
    placements: list[Placement]
    nodes: list[Node]
    inputs: list[int]  # graph inputs (tensor indices), in ONNX order
    outputs: list[Loc]  # where each graph output is when the run ends, in ONNX order
    constants: dict[int, bytes] = field(default_factory=dict)  # tensor index -> raw little-endian bytes
    stats: dict[str, Any] = field(default_factory=dict)
    version: int = FORMAT_VERSION

    # -- convenience -----------------------------------------------------
    def tensor_index(self) -> dict[str, int]:
        return {t.name: i for i, t in enumerate(self.tensors)}

    def gpu_memories(self) -> list[Memory]:
        return [m for m in self.memories if m.kind == GPU]

    def host_memory(self) -> Memory | None:
        for m in self.memories:
            if m.kind == HOST:
                return m
        return None

    @property
    def num_devices(self) -> int:
        return len(self.gpu_memories())

    # -- encoding --------------------------------------------------------
    def to_obj(self) -> dict[str, Any]:
        return {
            "format": FORMAT_NAME,
            "version": self.version,
            "model": {"path": self.model_path, "sha256": self.model_sha256, "opset": dict(sorted(self.opset.items()))},
            "options": _sorted(self.options),
            "tensors": [t.to_obj() for t in self.tensors],
            "memories": [m.to_obj() for m in self.memories],
            "placements": [p.to_obj() for p in self.placements],
            "nodes": [n.to_obj() for n in self.nodes],
            "inputs": list(self.inputs),
            "outputs": [x.to_obj() for x in self.outputs],
            "constants": [[k, self.constants[k]] for k in sorted(self.constants)],
            "stats": _sorted(self.stats),
        }

    @staticmethod
    def from_obj(o: dict[str, Any]) -> "Plan":
        if not isinstance(o, dict) or o.get("format") != FORMAT_NAME:
            raise PlanFormatError("not a Turnip plan (no 'format: turnip-plan' header); make one with `turnipc plan`")
        version = o.get("version")
        if version != FORMAT_VERSION:
            raise PlanFormatError(
                f"plan format version {version} is not supported by this runtime (it reads version {FORMAT_VERSION}); "
                "re-plan the model with the matching `turnipc`"
            )
        try:
            return Plan(
                model_path=o["model"]["path"],
                model_sha256=o["model"]["sha256"],
                opset=dict(o["model"].get("opset", {})),
                options=o.get("options", {}),
                tensors=[TensorInfo.from_obj(t) for t in o["tensors"]],
                memories=[Memory.from_obj(m) for m in o["memories"]],
                placements=[Placement.from_obj(p) for p in o["placements"]],
                nodes=[Node.from_obj(n) for n in o["nodes"]],
                inputs=list(o["inputs"]),
                outputs=[Loc.from_obj(x) for x in o["outputs"]],
                constants={int(k): bytes(v) for k, v in o.get("constants", [])},
                stats=o.get("stats", {}),
                version=version,
            )
        except (KeyError, TypeError, IndexError) as e:
            raise PlanFormatError(f"plan file is malformed ({type(e).__name__}: {e}); re-plan the model with `turnipc plan`") from e


def _sorted(d: Any) -> Any:
    """Recursively sort mapping keys so encoding is deterministic."""
    if isinstance(d, dict):
        return {k: _sorted(d[k]) for k in sorted(d)}
    if isinstance(d, (list, tuple)):
        return [_sorted(x) for x in d]
    return d


# Attribute values: ints, floats, strings, lists of those, and tensors
# (ConstantOfShape's value, for example), encoded as a tagged mapping.
_TENSOR_TAG = "__tensor__"


def _encode_attr(v: Any) -> Any:
    import numpy as np

    if isinstance(v, np.ndarray):
        return {_TENSOR_TAG: True, "dtype": str(v.dtype), "shape": list(v.shape), "data": np.ascontiguousarray(v).tobytes()}
    if isinstance(v, (list, tuple)):
        return [_encode_attr(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    return v


def _decode_attr(v: Any) -> Any:
    if isinstance(v, dict) and v.get(_TENSOR_TAG):
        import numpy as np

        from .dtypes import np_dtype

        return np.frombuffer(v["data"], dtype=np_dtype(v["dtype"])).reshape(v["shape"]).copy()
    if isinstance(v, list):
        return [_decode_attr(x) for x in v]
    return v


def _encode_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    return {k: _encode_attr(attrs[k]) for k in sorted(attrs)}


def _decode_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    return {k: _decode_attr(v) for k, v in attrs.items()}


def encode_plan(plan: Plan) -> bytes:
    """Plan -> bytes. Deterministic: equal plans give equal bytes."""
    return msgpack.packb(plan.to_obj(), use_bin_type=True)


def decode_plan(data: bytes) -> Plan:
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception as e:  # msgpack raises several unrelated types
        raise PlanFormatError(f"plan file is not valid msgpack ({type(e).__name__}); is it truncated? re-plan with `turnipc plan`") from e
    return Plan.from_obj(obj)


def write_plan(plan: Plan, path: str | os.PathLike[str]) -> None:
    """Write atomically: a reader sees the old file or the whole new one, never half."""
    data = encode_plan(plan)
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".plan-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a plan is an ordinary file
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_plan(path: str | os.PathLike[str]) -> Plan:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise PlanFormatError(f"cannot read plan file {os.fspath(path)!r}: {e.strerror}") from e
    return decode_plan(data)


def resolve_model_path(plan: Plan, plan_path: str | os.PathLike[str]) -> str:
    """The model's path on this machine: ``model_path`` is relative to the plan's folder."""
    if os.path.isabs(plan.model_path):
        return plan.model_path
    return os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(plan_path)), plan.model_path))
