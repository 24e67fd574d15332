"""Shape inference and constant folding, run to a fixpoint.

The importer hands :func:`fold_to_fixpoint` an *inference model*: a ModelProto
whose user inputs carry bound static shapes, whose large or external weights
are declared as graph inputs (dtype and shape only: their bytes are never
read), and whose initializers are only the small inline arrays that folding
may read. Each round runs ``onnx.shape_inference.infer_shapes`` once, then
folds, in graph order, every node whose inputs are all known constants (or a
``Shape``/``Size`` of a tensor whose shape is static); constants found earlier
in the same round feed later nodes, so whole Shape->Gather->Concat chains go in
one round. Rounds repeat until a round folds nothing; the types of the last
inference are returned.

What is folded, and what is not (see :func:`fold_allowed`):

* ``Constant`` nodes always (their bytes are in the model anyway).
* Otherwise a node folds only if its results are small: at most
  ``FOLD_OUTPUT_MAX_BYTES`` in all, and either at most
  ``FOLD_GROWTH_FREE_BYTES`` or no larger than the constant bytes it reads.
  Generators that blow a few bytes up into a big tensor (ConstantOfShape,
  Expand, Tile, Range over a big extent) stay tasks: the runtime makes the
  tensor when it is needed, so it costs GPU memory only while live, and the
  plan does not carry it inline. Shape-carrying values (int64 vectors, small
  masks) are far below the limits.
* Nothing reading a constant bigger than ``FOLD_INPUT_MAX_BYTES`` (or an
  external / large weight, whose bytes are not read) folds.
* Random ops never fold; nodes producing a graph output never fold (a graph
  output must be written by a task).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper, shape_inference

#: Largest constant array folding reads.
FOLD_INPUT_MAX_BYTES = 1 << 20
#: Largest total result a folded node may produce.
FOLD_OUTPUT_MAX_BYTES = 1 << 20
#: Results up to this size fold even when bigger than the constants they read.
FOLD_GROWTH_FREE_BYTES = 64 << 10

NONDETERMINISTIC_OPS = frozenset({"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli"})

#: (elem_type, shape) with shape None when the rank is unknown and a dim None when unknown.
TypeInfo = tuple[int, "tuple[int | None, ...] | None"]


@dataclass
class FoldResult:
    nodes: list[onnx.NodeProto]  # remaining nodes, graph (topological) order
    constants: dict[str, np.ndarray]  # every known constant: small initializers + folded values
    folded: set[str]  # names of values computed by folding (not initializers)
    types: dict[str, TypeInfo]  # from the last shape inference
    rounds: int  # shape inference runs
    failures: dict[str, str] = field(default_factory=dict)  # value name -> why its node did not fold


def static_shape(t: TypeInfo | None) -> tuple[int, ...] | None:
    if t is None or t[1] is None or any(d is None for d in t[1]):
        return None
    return t[1]  # type: ignore[return-value]


def _type_of(vi: onnx.ValueInfoProto) -> TypeInfo | None:
    if not vi.type.HasField("tensor_type"):
        return None
    tt = vi.type.tensor_type
    if not tt.HasField("shape"):
        return (tt.elem_type, None)
    dims: list[int | None] = []
    for d in tt.shape.dim:
        dims.append(d.dim_value if d.WhichOneof("value") == "dim_value" and d.dim_value >= 0 else None)
    return (tt.elem_type, tuple(dims))


def collect_types(model: onnx.ModelProto) -> dict[str, TypeInfo]:
    g = model.graph
    types: dict[str, TypeInfo] = {}
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        t = _type_of(vi)
        if t is not None:
            prev = types.get(vi.name)
            if prev is None or static_shape(prev) is None:
                types[vi.name] = t
    for init in g.initializer:
        types[init.name] = (init.data_type, tuple(init.dims))
    return types


def infer(model: onnx.ModelProto, strict: bool = False) -> onnx.ModelProto:
    from .contrib_shapes import infer_contrib  # com.microsoft ops: onnxruntime's shape inference

    def run(m: onnx.ModelProto) -> onnx.ModelProto:
        return shape_inference.infer_shapes(m, check_type=False, strict_mode=strict, data_prop=True)

    return infer_contrib(run(model), run)


# -- evaluating one node ---------------------------------------------------------------------

_RUN_PARAMS_CACHE: dict[tuple, dict[str, Any]] = {}


def _run_params(opsets: dict[str, int]) -> dict[str, Any]:
    key = tuple(sorted(opsets.items()))
    p = _RUN_PARAMS_CACHE.get(key)
    if p is None:
        p = {"log": lambda *a, **k: None, "opsets": dict(opsets), "verbose": 0, "new_ops": None}
        _RUN_PARAMS_CACHE[key] = p
    return p


def evaluate_node(node: onnx.NodeProto, args: list[np.ndarray | None], opsets: dict[str, int]) -> list[np.ndarray]:
    """Run one node with ONNX's reference implementation; one array per (non-empty) output slot."""
    domain = "" if node.domain == "ai.onnx" else node.domain
    version = opsets.get(domain)
    res: Any
    try:
        from onnx.reference.ops import load_op

        cls = load_op(domain, node.op_type, version)
        op = cls(node, _run_params(opsets))
        res = op.run(*args)
    except Exception:
        res = _evaluate_with_model(node, args, opsets)
    if not isinstance(res, (tuple, list)):
        res = (res,)
    return [np.asarray(r) if r is not None else None for r in res]  # type: ignore[misc]


def _evaluate_with_model(node: onnx.NodeProto, args: list[np.ndarray | None], opsets: dict[str, int]) -> list:
    from onnx.reference import ReferenceEvaluator

    names = [f"in{i}" if a is not None else "" for i, a in enumerate(args)]
    n = onnx.NodeProto()
    n.CopyFrom(node)
    del n.input[:]
    n.input.extend(names)
    outs = [o for o in node.output]
    inputs = [helper.make_tensor_value_info(nm, 0, None) for nm in names if nm]
    outputs = [helper.make_tensor_value_info(o, 0, None) for o in outs if o]
    g = helper.make_graph([n], "fold", inputs, outputs)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()])
    ev = ReferenceEvaluator(m)
    vals = ev.run(None, {nm: a for nm, a in zip(names, args, strict=True) if nm})
    it = iter(vals)
    return [next(it) if o else None for o in outs]


def _nbytes_of_type(t: TypeInfo | None) -> int | None:
    shape = static_shape(t)
    if shape is None or not t or not t[0]:
        return None
    try:
        itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(t[0])).itemsize
    except Exception:
        return None
    return int(np.prod(shape, dtype=np.int64)) * itemsize


def fold_allowed(node: onnx.NodeProto, in_bytes: int, out_bytes: int) -> bool:
    if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
        return True
    if out_bytes > FOLD_OUTPUT_MAX_BYTES:
        return False
    return out_bytes <= FOLD_GROWTH_FREE_BYTES or out_bytes <= in_bytes


def _predicted_out_bytes(node: onnx.NodeProto, args: list, types: dict[str, TypeInfo]) -> int | None:
    """Result size before evaluating, where cheaply known (so huge results are never built)."""
    if node.op_type == "ConstantOfShape" and args and args[0] is not None:
        itemsize = 4
        for a in node.attribute:
            if a.name == "value":
                itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(a.t.data_type)).itemsize
        return int(np.prod(np.asarray(args[0], dtype=np.int64), dtype=np.int64)) * itemsize
    total = 0
    for o in node.output:
        if not o:
            continue
        b = _nbytes_of_type(types.get(o))
        if b is None:
            return None
        total += b
    return total


def _shape_value(node: onnx.NodeProto, shape: tuple[int, ...]) -> np.ndarray:
    if node.op_type == "Size":
        return np.array(int(np.prod(shape, dtype=np.int64)), dtype=np.int64)
    start, end = 0, None
    for a in node.attribute:
        if a.name == "start":
            start = a.i
        elif a.name == "end":
            end = a.i
    return np.array(shape[start:end], dtype=np.int64)


def _is_std(node: onnx.NodeProto) -> bool:
    return node.domain in ("", "ai.onnx")


# -- the fixpoint ------------------------------------------------------------------------------


def fold_to_fixpoint(
    model: onnx.ModelProto,
    constants: dict[str, np.ndarray],
    opsets: dict[str, int],
    keep_outputs: set[str],
) -> FoldResult:
    """Fold ``model`` (an inference model, modified in place) until nothing changes.

    ``constants`` holds the arrays folding may read (small inline initializers,
    also present in ``model.graph.initializer``); ``keep_outputs`` are the graph
    outputs, whose producers never fold.
    """
    g = model.graph
    consts = dict(constants)
    folded: set[str] = set()
    failures: dict[str, str] = {}
    rounds = 0
    while True:
        rounds += 1
        types = collect_types(infer(model))
        new_nodes: list[onnx.NodeProto] = []
        new_inits: list[onnx.TensorProto] = []
        changed = False
        for node in g.node:
            out = _try_fold(node, consts, types, opsets, keep_outputs, failures)
            if out is None:
                new_nodes.append(node)
                continue
            for name, arr in out.items():
                consts[name] = arr
                folded.add(name)
                new_inits.append(numpy_helper.from_array(arr, name))
            changed = True
        if not changed:
            return FoldResult(_live_nodes(list(g.node), keep_outputs), consts, folded, types, rounds, failures)
        live = _live_nodes(new_nodes, keep_outputs)
        used = {i for n in live for i in n.input if i}
        kept_inits = [t for t in list(g.initializer) + new_inits if t.name in used]
        del g.node[:]
        g.node.extend(live)
        del g.initializer[:]
        g.initializer.extend(kept_inits)


def _try_fold(
    node: onnx.NodeProto,
    consts: dict[str, np.ndarray],
    types: dict[str, TypeInfo],
    opsets: dict[str, int],
    keep_outputs: set[str],
    failures: dict[str, str],
) -> dict[str, np.ndarray] | None:
    outs = [o for o in node.output if o]
    if not outs or any(o in keep_outputs for o in outs):
        return None
    if node.op_type in NONDETERMINISTIC_OPS:
        return None
    std = _is_std(node)
    if std and node.op_type in ("Shape", "Size") and len(node.input) >= 1:
        shape = static_shape(types.get(node.input[0]))
        if shape is None:
            return None
        return {node.output[0]: _shape_value(node, shape)}
    if not node.input and not (std and node.op_type == "Constant"):
        return None
    args: list[np.ndarray | None] = []
    in_bytes = 0
    for name in node.input:
        if not name:
            args.append(None)
            continue
        a = consts.get(name)
        if a is None or a.nbytes > FOLD_INPUT_MAX_BYTES:
            return None
        args.append(a)
        in_bytes += a.nbytes
    while args and args[-1] is None:
        args.pop()
    if node.op_type == "Constant":
        in_bytes = 1 << 62
    predicted = _predicted_out_bytes(node, args, types)
    if predicted is not None and not fold_allowed(node, in_bytes, predicted):
        return None
    try:
        res = evaluate_node(node, args, opsets)
    except Exception as e:  # leave it as a task; reported if its outputs lack a static shape
        msg = str(e).strip().splitlines()
        for o in outs:
            failures[o] = f"{type(e).__name__}: {msg[0] if msg else ''}"
        return None
    result: dict[str, np.ndarray] = {}
    for i, o in enumerate(node.output):
        if not o:
            continue
        if i >= len(res) or res[i] is None:
            return None
        arr = np.asarray(res[i])
        t = types.get(o)
        if t is not None and t[0]:
            try:
                want = np.dtype(helper.tensor_dtype_to_np_dtype(t[0]))
                if arr.dtype != want and arr.dtype.kind != "O":
                    arr = arr.astype(want)
            except Exception:
                pass
        result[o] = arr
    total = sum(a.nbytes for a in result.values())
    if not fold_allowed(node, in_bytes, total):
        return None
    return result


def _live_nodes(nodes: list[onnx.NodeProto], keep_outputs: set[str]) -> list[onnx.NodeProto]:
    """Nodes contributing to a graph output (dead code removed), order kept."""
    needed = set(keep_outputs)
    live_rev: list[onnx.NodeProto] = []
    for node in reversed(nodes):
        if any(o in needed for o in node.output if o):
            live_rev.append(node)
            needed.update(i for i in node.input if i)
    live_rev.reverse()
    return live_rev
