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
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable, TypeVar

import msgpack

FORMAT_NAME = "turnip-plan"
FORMAT_VERSION = 1

#: Byte alignment of every location's offset in a plan that records none
#: (plans written before the ``alignment`` field existed all used it): what
#: cudaMalloc gives, and what CUDA kernels and vectorised copies assume.
DEFAULT_ALIGNMENT = 256


def aligned_size(nbytes: int, alignment: int = DEFAULT_ALIGNMENT) -> int:
    """``nbytes`` rounded up to a multiple of ``alignment``: the room one buffer takes in an arena."""
    return -(-nbytes // alignment) * alignment


class _Vocabulary(str, Enum):
    """A closed set of names that the plan file stores as plain strings.

    A ``str`` subclass, so members compare, hash and msgpack-encode exactly as
    their values do: plans written with the enums are byte-identical to plans
    written with the bare strings, and ``kind == "compute"`` still holds.
    ``str()`` and f-strings give the value (as ``enum.StrEnum`` does on 3.11+).
    """

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


class NodeKind(_Vocabulary):
    """What a MEMGRAPH node does; each kind runs on its own kind of queue (:data:`QUEUE_OF_KIND`)."""

    COMPUTE = "compute"
    RELOAD = "reload"  # host -> GPU
    OFFLOAD = "offload"  # GPU -> host
    MOVE = "move"  # GPU -> GPU


class TensorKind(_Vocabulary):
    """Where a tensor's first bytes come from (and whether the user gets it back)."""

    INPUT = "input"  # fed by the user
    WEIGHT = "weight"  # an initializer, read from the model file
    CONSTANT = "constant"  # folded at plan time, stored in ``Plan.constants``
    ACTIVATION = "activation"  # written by a compute node, dropped when dead
    OUTPUT = "output"  # written by a compute node, returned to the user


class MemoryKind(_Vocabulary):
    """A preallocated memory: one arena per GPU, one (pinned) host region."""

    GPU = "gpu"
    HOST = "host"


class QueueKind(_Vocabulary):
    """The kind of queue (stream / copy engine) a node runs on; a queue is ``(device, QueueKind)``."""

    COMPUTE = "compute"
    H2D = "h2d"
    D2H = "d2h"
    PEER = "peer"


#: Node kind -> the kind of queue that runs it.
QUEUE_OF_KIND: dict[NodeKind, QueueKind] = {
    NodeKind.COMPUTE: QueueKind.COMPUTE,
    NodeKind.RELOAD: QueueKind.H2D,
    NodeKind.OFFLOAD: QueueKind.D2H,
    NodeKind.MOVE: QueueKind.PEER,
}

# Short names kept for readers that import them (``from turnip.plan import COMPUTE``).
COMPUTE = NodeKind.COMPUTE
RELOAD = NodeKind.RELOAD
OFFLOAD = NodeKind.OFFLOAD
MOVE = NodeKind.MOVE
NODE_KINDS = tuple(NodeKind)
TRANSFER_KINDS = (NodeKind.OFFLOAD, NodeKind.RELOAD, NodeKind.MOVE)
TENSOR_KINDS = tuple(TensorKind)
QUEUE_KINDS = tuple(QueueKind)
GPU = MemoryKind.GPU
HOST = MemoryKind.HOST

#: A fused elementwise chain (turnipc/fuse.py; docs/plan-format.md, "Fused elementwise"): a compute node with
#: this op and domain, its program in attrs ``ops``, ``a``, ``b``; an operand is an input index or one of these codes.
FUSED_OP = "FusedElementwise"
FUSED_DOMAIN = "ai.turnip"
FUSED_CHAIN = -1  # the value of the steps so far
FUSED_NONE = -2  # no operand (a unary step's ``b``)
#: Fused attention (turnipc/fuse_attention.py; docs/plan-format.md, "Fused attention"): a compute node in
#: :data:`FUSED_DOMAIN` with inputs (Q, K^T, V, optional mask, Q scale, K scale, NaN fill) and outputs (the
#: result, the scores: planned workspace the softmax runs in); attrs name each optional input's index or FUSED_NONE.
FUSED_ATTENTION_OP = "FusedAttention"


from .errors import PlanFormatError as PlanFormatError  # noqa: E402  (defined with every runtime error; re-exported)

_V = TypeVar("_V", bound=_Vocabulary)


def _vocab(cls: type[_V], value: Any, what: str) -> _V:
    """``cls(value)``, or a PlanFormatError naming the field and the names it may hold."""
    try:
        return cls(value)
    except ValueError:
        allowed = ", ".join(m.value for m in cls)
        raise PlanFormatError(f"{what} is {value!r}, not one of {allowed}; re-plan the model with `turnipc plan`") from None


class DeriveOp(_Vocabulary):
    """One step of a :class:`WeightRecipe`: what the runtime does to a weight's bytes at load."""

    TRANSPOSE = "transpose"  # ``arg``: the permutation (list of int)
    CAST = "cast"  # ``arg``: the dtype name to convert to
    RESHAPE = "reshape"  # ``arg``: the new static shape (list of int); the bytes do not move


@dataclass(frozen=True)
class DeriveStep:
    op: DeriveOp
    arg: tuple[int, ...] | str  # permutation, shape, or dtype name (see DeriveOp)

    def __post_init__(self) -> None:
        if type(self.op) is not DeriveOp:
            object.__setattr__(self, "op", _vocab(DeriveOp, self.op, "derived weight step op"))

    def to_obj(self) -> dict[str, Any]:
        return {"op": self.op, "arg": self.arg if isinstance(self.arg, str) else list(self.arg)}

    @staticmethod
    def from_obj(o: dict[str, Any]) -> "DeriveStep":
        arg = o["arg"]
        return DeriveStep(_vocab(DeriveOp, o["op"], "derived weight step op"), arg if isinstance(arg, str) else tuple(arg))


@dataclass(frozen=True)
class WeightRecipe:
    """How a *derived weight* is made from an initializer of the model, once, when the runtime loads it.

    Why: a Transpose / Cast chain whose inputs are all weights would run in
    every run, holding input and output on the GPU at once (GPT-2's tied LM
    head: 2 x 147 MiB); computed once in host memory at load, its result is
    just another weight. The compiler writes the recipe without reading the
    weight's bytes (planning stays weight-free).
    """

    source: str  # the model's initializer, by name
    dtype: str  # its dtype ...
    shape: tuple[int, ...]  # ... and shape, as the plan expects them
    steps: tuple[DeriveStep, ...]

    def to_obj(self) -> dict[str, Any]:
        return {"source": self.source, "dtype": self.dtype, "shape": list(self.shape), "steps": [s.to_obj() for s in self.steps]}

    @staticmethod
    def from_obj(o: dict[str, Any]) -> "WeightRecipe":
        return WeightRecipe(o["source"], o["dtype"], tuple(o["shape"]), tuple(DeriveStep.from_obj(s) for s in o["steps"]))


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
    kind: TensorKind
    storage: int
    #: A block of initial data (kind ``weight`` or ``input``) cut by the
    #: runtime when it loads the data: ``(tensor it is cut from, axis, start,
    #: stop)``. None for every other tensor (and then absent from the file,
    #: so plans without blocks are unchanged).
    block: tuple[int, int, int, int] | None = None
    #: A derived weight (kind ``weight``): made at load from another
    #: initializer by :class:`WeightRecipe`; ``name`` is then the ONNX value
    #: it replaces, not an initializer. None otherwise (and absent from the file).
    derive: WeightRecipe | None = None

    def __post_init__(self) -> None:
        if type(self.kind) is not TensorKind:  # accept the bare string (tests, older callers)
            object.__setattr__(self, "kind", _vocab(TensorKind, self.kind, f"tensor {self.name!r} kind"))

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
        if self.derive is not None:
            o["derive"] = self.derive.to_obj()
        return o

    @staticmethod
    def from_obj(o: dict[str, Any]) -> "TensorInfo":
        blk = o.get("block")
        der = o.get("derive")
        return TensorInfo(o["name"], o["dtype"], tuple(o["shape"]), o["nbytes"], _vocab(TensorKind, o["kind"], f"tensor {o['name']!r} kind"),
                          o["storage"], None if blk is None else (int(blk[0]), int(blk[1]), int(blk[2]), int(blk[3])),
                          None if der is None else WeightRecipe.from_obj(der))


@dataclass(frozen=True)
class Memory:
    """A preallocated memory: one arena per GPU, and one (pinned) host region."""

    id: int
    kind: MemoryKind
    device: int  # GPU index; -1 for host memory
    size: int  # bytes to allocate
    budget: int  # bytes the plan was allowed (size <= budget for GPUs)

    def __post_init__(self) -> None:
        if type(self.kind) is not MemoryKind:
            object.__setattr__(self, "kind", _vocab(MemoryKind, self.kind, f"memory {self.id} kind"))

    def to_obj(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "device": self.device, "size": self.size, "budget": self.budget}

    @staticmethod
    def from_obj(o: dict[str, Any]) -> "Memory":
        return Memory(o["id"], _vocab(MemoryKind, o["kind"], f"memory {o['id']} kind"), o["device"], o["size"], o["budget"])


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

    ``source`` says where the bytes come from: ``WEIGHT`` (an initializer of
    the model, by tensor name), ``CONSTANT`` (``Plan.constants``, folded at
    plan time) or ``INPUT`` (fed by the user).
    """

    tensor: int
    loc: Loc
    source: TensorKind

    def __post_init__(self) -> None:
        if type(self.source) is not TensorKind:
            object.__setattr__(self, "source", _vocab(TensorKind, self.source, f"placement of tensor {self.tensor} source"))

    def to_obj(self) -> dict[str, Any]:
        return {"tensor": self.tensor, "loc": self.loc.to_obj(), "source": self.source}

    @staticmethod
    def from_obj(o: dict[str, Any]) -> "Placement":
        return Placement(o["tensor"], Loc.from_obj(o["loc"]), _vocab(TensorKind, o["source"], f"placement of tensor {o['tensor']} source"))


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
    kind: NodeKind
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

    def __post_init__(self) -> None:
        if type(self.kind) is not NodeKind:
            object.__setattr__(self, "kind", _vocab(NodeKind, self.kind, f"node {self.id} kind"))

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
            kind=_vocab(NodeKind, o["kind"], f"node {o['id']} kind"),
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


@dataclass(frozen=True)
class StateTensor:
    """A graph input whose bytes outlive a run (a KV cache): the plan's ``state``.

    WHY a home in host memory: between runs the state must be somewhere no
    node of the next run writes before reading it. Its home is a host-region
    placement that lives the whole run (never reused), so it holds the state
    between runs at any budget; within a run residency treats the input like
    any other (preloaded, dropped, reloaded from the home per layer when the
    budget is small). A GPU placement of the input that no node overwrites
    (at large budgets the compiler keeps the state resident to the end of the
    run) is a second, kept copy; one that is overwritten is refilled from the
    home before each run.

    ``update``: the graph output holding the state's next value (a static
    cache's ``present``, or a past/present pair's ``present``), or None. Only
    the part of it the run wrote is copied back into the home (and the kept
    copy), by :meth:`turnip.run.LoadedPlan.write_back_state`: never the whole
    state per run. ``home``: its bytes in host memory (``Loc.tensor`` is the
    input). ``how``: how ``update`` relates to the input: ``"scatter"`` (same
    shape, written at some positions: a static cache) or ``"append"``
    (``update`` is the input plus new positions along axis 2: past/present)
    or ``"named"`` (marked by the user, relation unknown).
    """

    input: int
    update: int | None
    home: Loc
    how: str = "named"

    def to_obj(self) -> dict[str, Any]:
        return {"input": self.input, "update": self.update, "home": self.home.to_obj(), "how": self.how}

    @staticmethod
    def from_obj(o: dict[str, Any]) -> "StateTensor":
        return StateTensor(int(o["input"]), None if o["update"] is None else int(o["update"]), Loc.from_obj(o["home"]), str(o.get("how", "named")))


#: Relations a :class:`StateTensor`'s update output may have to its input.
STATE_HOWS = ("scatter", "append", "named")


#: The summary numbers the compiler records, in the order docs/plan-format.md lists them.
_STAT_FIELDS = (
    "budget_bytes", "peak_bytes", "peak_bytes_per_device", "max_live_bytes_per_device", "no_offload_peak_bytes",
    "lower_bound_bytes", "effective_budget_bytes", "offload_bytes", "reload_bytes", "move_bytes", "host_bytes",
    "nodes", "total_flops", "reserve_bytes", "tiling",
)


@dataclass
class PlanStats:
    """Summary numbers of a plan (``stats`` in the file): informative, never needed to execute.

    Every field is optional because a plan need not carry them (a hand-built
    plan, a plan of another format version): ``None`` means "not recorded",
    and is not written. Values are kept exactly as read, so a plan re-encodes
    to the same bytes; keys this version does not know are kept in ``extra``.
    """

    budget_bytes: int | None = None  # the resolved budget per GPU
    peak_bytes: int | None = None  # the largest GPU arena
    peak_bytes_per_device: list[int] | None = None  # arena size of each GPU
    max_live_bytes_per_device: list[int] | None = None  # most bytes live at once on each GPU
    no_offload_peak_bytes: int | None = None  # arena with unlimited memory (what 100% means)
    lower_bound_bytes: int | None = None  # the largest working set of one task
    effective_budget_bytes: int | None = None  # resident-bytes limit the residency stage used
    offload_bytes: int | None = None
    reload_bytes: int | None = None
    move_bytes: int | None = None
    host_bytes: int | None = None  # size of the host region
    nodes: dict[str, int] | None = None  # count of nodes by kind (keys: NodeKind values)
    total_flops: int | None = None
    reserve_bytes: int | None = None  # per GPU, beside the arena: kernel temporaries and library workspaces
    tiling: dict[str, Any] | None = None  # only in tiled plans: what the partition pass split (docs/plan-format.md)
    extra: dict[str, Any] = field(default_factory=dict)

    def transfer_bytes(self, kind: NodeKind) -> int | None:
        """Bytes copied by transfer nodes of ``kind`` (offload, reload or move)."""
        value: int | None = getattr(self, f"{NodeKind(kind).value}_bytes")
        return value

    def to_obj(self) -> dict[str, Any]:
        o = dict(self.extra)
        for name in _STAT_FIELDS:
            v = getattr(self, name)
            if v is not None:
                o[name] = v
        return o

    @staticmethod
    def from_obj(o: Any) -> "PlanStats":
        if not isinstance(o, dict):
            raise PlanFormatError(f"plan stats are a {type(o).__name__}, not a map; re-plan the model with `turnipc plan`")
        known = {k: o[k] for k in _STAT_FIELDS if k in o}
        return PlanStats(**known, extra={k: v for k, v in o.items() if k not in known})


@dataclass(frozen=True)
class WeightFile:
    """An external weight file of the model: its path relative to the model's folder, size and sha256.

    Recorded at plan time so the runtime refuses weights that changed since
    (the model's sha256 covers only the ``.onnx`` file, not its ``.onnx.data``).
    """

    path: str
    size: int
    sha256: str

    def to_obj(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "sha256": self.sha256}

    @staticmethod
    def from_obj(o: dict[str, Any]) -> "WeightFile":
        return WeightFile(o["path"], o["size"], o["sha256"])


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
    stats: PlanStats = field(default_factory=PlanStats)
    version: int = FORMAT_VERSION
    weight_files: list[WeightFile] = field(default_factory=list)  # external weight files (model.weight_files)
    #: Every location's offset is a multiple of this (bytes, a power of two); chosen by the compiler.
    alignment: int = DEFAULT_ALIGNMENT
    #: Persistent inputs (KV caches) and their homes in host memory; written only when non-empty.
    state: list[StateTensor] = field(default_factory=list)
    #: Sections a lenient read (:func:`read_plan_lenient`) could not parse and left empty; never written.
    unread: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.stats, dict):  # a plain mapping (older callers): the same numbers, typed
            self.stats = PlanStats.from_obj(self.stats)


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

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the plan to ``path`` (atomically), naming its model relative to that file's folder.

        A plan made in memory (``turnipc.plan``) names its model by absolute
        path; the file names it relative to itself, as ``turnipc plan -o``
        does, so plan and model can move together.
        """
        plan = self
        if os.path.isabs(self.model_path):
            import dataclasses

            rel = os.path.relpath(self.model_path, os.path.dirname(os.path.abspath(path)))
            plan = dataclasses.replace(self, model_path=rel.replace(os.sep, "/"))
        write_plan(plan, path)

    def state_by_name(self) -> dict[str, StateTensor]:
        """Input name -> its state entry (empty for a plan without state)."""
        return {self.tensors[s.input].name: s for s in self.state}

    # -- encoding --------------------------------------------------------
    def to_obj(self) -> dict[str, Any]:
        o = self._to_obj()
        if self.state:  # absent when empty: plans without state keep their bytes
            o["state"] = [s.to_obj() for s in self.state]
        return o

    def _to_obj(self) -> dict[str, Any]:
        return {
            "format": FORMAT_NAME,
            "version": self.version,
            "alignment": self.alignment,
            "model": {"path": self.model_path, "sha256": self.model_sha256, "opset": dict(sorted(self.opset.items())),
                      **({"weight_files": [w.to_obj() for w in self.weight_files]} if self.weight_files else {})},
            "options": _sorted(self.options),
            "tensors": [t.to_obj() for t in self.tensors],
            "memories": [m.to_obj() for m in self.memories],
            "placements": [p.to_obj() for p in self.placements],
            "nodes": [n.to_obj() for n in self.nodes],
            "inputs": list(self.inputs),
            "outputs": [x.to_obj() for x in self.outputs],
            "constants": [[k, self.constants[k]] for k in sorted(self.constants)],
            "stats": _sorted(self.stats.to_obj()),
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
            plan = Plan(
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
                stats=PlanStats.from_obj(o.get("stats", {})),
                version=version,
                weight_files=[WeightFile.from_obj(w) for w in o["model"].get("weight_files", [])],
                alignment=o.get("alignment", DEFAULT_ALIGNMENT),
                state=[StateTensor.from_obj(x) for x in o.get("state", [])],
            )
        except (KeyError, TypeError, IndexError, ValueError, AttributeError, OverflowError) as e:
            raise PlanFormatError(f"plan file is malformed ({type(e).__name__}: {e}); re-plan the model with `turnipc plan`") from e
        from .planschema import check_plan_form

        check_plan_form(plan)  # every field of its declared type and range, or PlanFormatError
        return plan


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


def _unpack(data: bytes, prefix: str, fix: str) -> Any:
    """msgpack bytes -> plain objects; anything msgpack refuses is a :class:`PlanFormatError` saying ``fix``."""
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception as e:  # msgpack raises several unrelated types
        raise PlanFormatError(f"{prefix} not valid msgpack ({type(e).__name__}); {fix}") from e


def _read_bytes(path: str | os.PathLike[str], what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise PlanFormatError(f"cannot read {what}{os.fspath(path)!r}: {e.strerror}") from e


def decode_plan(data: bytes) -> Plan:
    return Plan.from_obj(_unpack(data, "plan file is", "is it truncated? re-plan with `turnipc plan`"))


def write_plan(plan: Plan, path: str | os.PathLike[str]) -> None:
    """Write atomically: a reader sees the old file or the whole new one, never half (see turnip.atomic)."""
    from .atomic import write_bytes

    write_bytes(path, encode_plan(plan), "plan")


def read_plan(path: str | os.PathLike[str]) -> Plan:
    data = _read_bytes(path, "plan file ")
    try:
        return decode_plan(data)
    except PlanFormatError:
        if data[:1] == b"\x08" or os.fspath(path).lower().endswith(".onnx"):  # a ModelProto starts with ir_version
            p = os.fspath(path)
            raise PlanFormatError(
                f"{p!r} is an ONNX model, not a plan: plan it with `turnipc plan {p} --gpu-mem 25% -o model.plan`, "
                f"or plan and run it in one go with `turnip-run {p} --gpu-mem 25%`"
            ) from None
        raise


def read_plan_lenient(path: str | os.PathLike[str]) -> Plan:
    """Read a plan for comparison (``turnipc diff``), accepting format versions the runtime cannot execute.

    A plan of the current version is read exactly as :func:`read_plan` reads
    it. Another version is read section by section: a section that does not
    parse is left empty and named in ``Plan.unread``, so a comparison can say
    what it could not compare instead of failing. Raises
    :class:`PlanFormatError` (message starting with the path) for a file that
    is not a plan at all.
    """
    where = os.fspath(path)
    obj = _unpack(_read_bytes(path, ""), f"{where}:", "is it truncated or not a plan?")
    if not isinstance(obj, dict) or obj.get("format") != FORMAT_NAME:
        raise PlanFormatError(f"{where}: not a Turnip plan (no 'format: turnip-plan' header)")
    version = obj.get("version")
    if version == FORMAT_VERSION:
        try:
            return Plan.from_obj(obj)
        except PlanFormatError as e:
            raise PlanFormatError(f"{where}: {e}") from e
    if not isinstance(version, int):
        raise PlanFormatError(f"{where}: plan has no integer format version ({version!r})")
    return _plan_from_obj_partial(obj, version)


_T = TypeVar("_T")


def _plan_from_obj_partial(o: dict[str, Any], version: int) -> Plan:
    """A plan of another format version, each section parsed on its own (see :func:`read_plan_lenient`)."""
    unread: list[str] = []

    def section(name: str, parse: Callable[[Any], _T], default: _T) -> _T:
        try:
            return parse(o[name])
        except Exception:  # any shape of foreign data: the section is simply not compared
            unread.append(name)
            return default

    raw_model = o.get("model")
    model: dict[str, Any] = raw_model if isinstance(raw_model, dict) else {}
    if not model:
        unread.append("model")
    plan = Plan(
        model_path=str(model.get("path", "")),
        model_sha256=str(model.get("sha256", "")),
        opset=dict(model.get("opset", {}) or {}),
        options=section("options", dict, {}),
        tensors=section("tensors", lambda v: [TensorInfo.from_obj(t) for t in v], []),
        memories=section("memories", lambda v: [Memory.from_obj(m) for m in v], []),
        placements=section("placements", lambda v: [Placement.from_obj(p) for p in v], []),
        nodes=section("nodes", lambda v: [Node.from_obj(n) for n in v], []),
        inputs=section("inputs", list, []),
        outputs=section("outputs", lambda v: [Loc.from_obj(x) for x in v], []),
        constants=section("constants", lambda v: {int(k): bytes(b) for k, b in v}, {}),
        stats=section("stats", PlanStats.from_obj, PlanStats()),
        version=version,
        alignment=section("alignment", int, DEFAULT_ALIGNMENT) if "alignment" in o else DEFAULT_ALIGNMENT,
    )
    plan.unread = tuple(unread)
    return plan


def resolve_model_path(plan: Plan, plan_path: str | os.PathLike[str]) -> str:
    """The model's path on this machine: ``model_path`` is relative to the plan's folder."""
    if os.path.isabs(plan.model_path):
        return plan.model_path
    return os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(plan_path)), plan.model_path))
