"""ONNX model -> TASKGRAPH.

:func:`import_model` reads the model *structure only* (external weight data
is never opened; inline weights are parsed with the protobuf but their values
are not used), binds the dynamic dims, folds constant subgraphs to a fixpoint
(:mod:`turnipc.folding`), turns view ops into zero-copy aliases, and returns
a :class:`~turnipc.taskgraph.TaskGraph` in which every value has a static
shape and a known dtype.

Decisions worth knowing:

* Graph inputs that are also initializers (IR 3 models) are weights.
* Weight-only Transpose / Cast chains make no task: their outputs are derived
  weights, made once at load by the runtime (:mod:`turnipc.derive`).
* Aliases: Reshape, Squeeze, Unsqueeze, Flatten, Identity, and Dropout with
  only its first output used (inference mode), make no task; their output
  shares the input's storage (chains resolve to the root). When such an
  output is a graph output and the root is an input, weight, constant or
  already another graph output's storage, the node stays a task (a copy), so
  output storages are distinct and never weights.
* A value's kind is its storage's kind; a storage is "output" if any graph
  output lives in it.
* Trailing optional outputs that nothing uses are dropped from a task (e.g.
  Dropout's mask, LayerNormalization's mean), so no memory is planned for them.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
from typing import Any, Iterable

import numpy as np
import onnx
from onnx import AttributeProto, TensorProto, helper, numpy_helper
from turnip.dtypes import dtype_name_from_onnx, itemsize
from turnip.onnx_lazy import load_model_lazily

from . import folding
from .cost import estimate
from .derive import derive_weights
from .dims import format_shape
from .errors import ModelError, UnboundDimError
from .taskgraph import Task, TaskGraph, Value

#: Ops whose output can share the input's bytes.
ALIAS_OPS = frozenset({"Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity", "Dropout"})
_OMITTED_TAG = "::omitted_output_"  # names given to omitted optional outputs followed by used ones
_CONTROL_FLOW_HINT = "Turnip plans static task graphs only: export the model without control flow"


def import_model(
    path: str,
    dims: dict[str, int] | None = None,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    supported_ops: set[tuple[str, str]] | None = None,
) -> TaskGraph:
    """Read ``path`` and return its TASKGRAPH. Raises ModelError / UnboundDimError."""
    model, sha = _read_model(path)
    if model.functions:
        model = _inline_functions(model, path)
    opsets = _opsets(model)
    _reject_structure(model, path)
    g = model.graph

    # -- weights: metadata only; small inline arrays are kept for folding
    weights: dict[str, tuple[int, tuple[int, ...]]] = {}
    consts: dict[str, np.ndarray] = {}
    const_protos: list[TensorProto] = []
    for t in g.initializer:
        weights[t.name] = (t.data_type, tuple(int(d) for d in t.dims))
        if t.data_location != TensorProto.EXTERNAL and t.data_type != TensorProto.STRING:
            nbytes = _nbytes_or_none(t.data_type, weights[t.name][1])
            if nbytes is not None and nbytes <= folding.FOLD_INPUT_MAX_BYTES:
                try:
                    consts[t.name] = numpy_helper.to_array(t)
                    const_protos.append(t)
                except Exception:
                    pass
    user_inputs = [vi for vi in g.input if vi.name not in weights]
    input_names = [vi.name for vi in user_inputs]
    input_elem: dict[str, int] = {}
    for vi in user_inputs:
        if not vi.type.HasField("tensor_type"):
            raise ModelError(
                f"input {vi.name} is not a tensor ({vi.type.WhichOneof('value')}); Turnip plans tensor inputs only: "
                "export the model with tensor inputs"
            )
        input_elem[vi.name] = vi.type.tensor_type.elem_type
    bound, shapes = _bind_dims(user_inputs, dict(dims or {}), dict(input_shapes or {}))

    outputs = [o.name for o in g.output]
    if not outputs:
        raise ModelError(f"model {path} has no graph outputs; is the file complete? re-export it")
    for o in outputs:
        if o in weights or o in shapes:
            what = "a weight" if o in weights else "a graph input"
            raise ModelError(f"graph output {o} is {what} itself, with no node computing it; remove it from the model's outputs")
    output_set = set(outputs)

    _name_nodes(g.node)
    _name_omitted_outputs(g.node)

    # -- the inference model: bound inputs, big/external weights as typed inputs, small arrays as initializers
    new_inputs = [helper.make_tensor_value_info(n, input_elem[n], shapes[n]) for n in input_names]
    for name, (et, wd) in weights.items():
        if name not in consts:
            new_inputs.append(helper.make_tensor_value_info(name, et, wd))
    del g.input[:]
    g.input.extend(new_inputs)
    del g.initializer[:]
    g.initializer.extend(const_protos)
    del g.value_info[:]
    new_outputs = []
    for o in g.output:
        et = o.type.tensor_type.elem_type if o.type.HasField("tensor_type") else 0
        new_outputs.append(helper.make_tensor_value_info(o.name, et, None))
    del g.output[:]
    g.output.extend(new_outputs)
    if model.ir_version < 4:
        model.ir_version = 4  # initializers need not be graph inputs from IR 4 on; same operators

    res = folding.fold_to_fixpoint(model, consts, opsets, output_set)
    types = res.types

    # -- weights transformed once: weight-only Transpose / Cast chains become derived weights (turnipc.derive)
    fold_uses: collections.Counter[str] = collections.Counter(i for n in res.nodes for i in n.input if i)
    fold_uses.update(outputs)
    nodes, derived = derive_weights(
        res.nodes, weights, types, output_set, lambda n: _is_alias(n, fold_uses, res.constants, types)
    )

    # -- kinds of roots
    folded = res.folded

    def root_kind(name: str) -> str:
        if name in shapes:
            return "input"
        if name in weights or name in derived:
            return "weight"
        if name in folded:
            return "constant"
        return "activation"

    # -- uses of each value among the remaining nodes
    uses: collections.Counter[str] = collections.Counter()
    for n in nodes:
        for i in n.input:
            if i:
                uses[i] += 1
    for o in outputs:
        uses[o] += 1

    # -- aliases
    storage: dict[str, str] = {}
    claimed: set[str] = set()  # storages holding a graph output
    real_nodes: list[onnx.NodeProto] = []
    for n in nodes:
        if _is_alias(n, uses, res.constants, types):
            src, out = n.input[0], n.output[0]
            root = storage.get(src, src)
            if not (out in output_set and (root_kind(root) != "activation" or root in claimed)):
                storage[out] = root
                if out in output_set:
                    claimed.add(root)
                continue
        real_nodes.append(n)
        for o in n.output:
            if o in output_set:
                claimed.add(o)

    def kind_of(name: str) -> str:
        root = storage.get(name, name)
        k = root_kind(root)
        if k == "activation" and root in claimed:
            return "output"
        return k

    # -- supported ops
    if supported_ops is not None:
        missing: collections.Counter[tuple[str, str]] = collections.Counter()
        for n in real_nodes:
            key = (_domain(n.domain), n.op_type)
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

    # -- outputs of each task (trailing unused optional outputs dropped)
    task_outputs: list[tuple[str | None, ...]] = [_kept_outputs(n, uses, opsets) for n in real_nodes]
    task_inputs: list[tuple[str | None, ...]] = []
    for n in real_nodes:
        named: list[str | None] = [i if i else None for i in n.input]
        while named and named[-1] is None:
            named.pop()
        task_inputs.append(tuple(named))

    # -- values, in a deterministic order
    _check_static(task_inputs, task_outputs, outputs, types, res, path, model)
    values: dict[str, Value] = {}
    constants: dict[str, np.ndarray] = {}

    def type_of(name: str) -> tuple[int, tuple[int, ...]]:
        if name in shapes:
            return input_elem[name], tuple(shapes[name])
        if name in weights:
            return weights[name]
        if name in folded:
            arr = res.constants[name]
            return _elem_of_array(arr, name), tuple(arr.shape)
        t = types[name]
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
                f"value {name} has element type {_elem_name(et)}, which Turnip cannot plan; export the model with float/int/bool tensors"
            ) from None
        k = kind_of(name)
        values[name] = Value(name, dt, shape, int(np.prod(shape, dtype=np.int64)) * itemsize(dt), k, root)
        if k == "constant" and root == name:
            arr = res.constants[name]
            constants[name] = arr

    for n in input_names:
        add(n)
    for ins in task_inputs:
        for i in ins:
            if i is not None and root_kind(storage.get(i, i)) in ("weight", "constant"):
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

    # -- tasks
    tasks: list[Task] = []
    for tid, (n, ins, outs) in enumerate(zip(real_nodes, task_inputs, task_outputs, strict=True)):
        t = Task(
            id=tid,
            name=n.name,
            op_type=n.op_type,
            domain=_domain(n.domain),
            attrs={a.name: _attr_value(a, n) for a in n.attribute},
            inputs=ins,
            outputs=outs,
            flops=0,
            bytes_touched=0,
        )
        flops, nbytes = estimate(t, values)
        tasks.append(dataclasses.replace(t, flops=flops, bytes_touched=nbytes))

    return TaskGraph(
        model_path=path,
        model_sha256=sha,
        opset=opsets,
        values=values,
        tasks=tasks,
        inputs=input_names,
        outputs=outputs,
        constants=constants,
        dims=bound,
        derived={k: r for k, r in derived.items() if k in values},
    )


# -- reading ------------------------------------------------------------------------------------


def _read_model(path: str) -> tuple[onnx.ModelProto, str]:
    # Planning never needs weight bytes (issue 16): hash the file in blocks, and parse it with every
    # inline initializer too big to fold (> FOLD_INPUT_MAX_BYTES) left in the file, described as external
    # data in the model file itself (turnip.onnx_lazy). Small initializers stay inline for folding.
    try:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                digest.update(block)
    except OSError as e:
        raise ModelError(f"cannot read model {path}: {e.strerror or e}; check the path") from None
    sha = digest.hexdigest()
    try:
        model = load_model_lazily(path, min_bytes=folding.FOLD_INPUT_MAX_BYTES + 1)
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ModelError(f"cannot read model {path}: not a valid ONNX protobuf ({first}); is the file complete? re-export it") from None
    if not model.HasField("graph") or not model.opset_import or not len(model.graph.node):
        missing = "graph" if not model.HasField("graph") else ("opset_import" if not model.opset_import else "nodes")
        raise ModelError(
            f"cannot read model {path}: it has no {missing} (truncated or not an ONNX model); is the file complete? re-export it"
        )
    return model, sha


def _inline_functions(model: onnx.ModelProto, path: str) -> onnx.ModelProto:
    try:
        import onnx.inliner

        return onnx.inliner.inline_local_functions(model)
    except Exception as e:
        raise ModelError(f"cannot inline the local functions of {path} ({e}); re-export the model without them") from None


def _opsets(model: onnx.ModelProto) -> dict[str, int]:
    out: dict[str, int] = {}
    for o in model.opset_import:
        out[_domain(o.domain)] = int(o.version)
    return out


def _domain(d: str) -> str:
    return "" if d in ("", "ai.onnx") else d


def _reject_structure(model: onnx.ModelProto, path: str) -> None:
    g = model.graph
    cf: collections.Counter[str] = collections.Counter()
    for n in g.node:
        for a in n.attribute:
            if a.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS):
                cf[n.op_type] += 1
                break
    if cf:
        listed = ", ".join(f"{op} x{c}" for op, c in sorted(cf.items(), key=lambda kv: (-kv[1], kv[0])))
        raise ModelError(f"model {path} uses subgraphs ({listed}); {_CONTROL_FLOW_HINT} (no If/Loop/Scan)")
    if len(g.sparse_initializer):
        raise ModelError(
            f"model {path} has sparse initializers ({g.sparse_initializer[0].values.name}, ...); "
            "Turnip needs dense weights: convert them to dense initializers"
        )


# -- binding dims -------------------------------------------------------------------------------


def _declared_dims(vi: onnx.ValueInfoProto) -> list[int | str | None] | None:
    tt = vi.type.tensor_type
    if not tt.HasField("shape"):
        return None
    out: list[int | str | None] = []
    for d in tt.shape.dim:
        w = d.WhichOneof("value")
        if w == "dim_value" and d.dim_value >= 0:
            out.append(int(d.dim_value))
        elif w == "dim_param" and d.dim_param:
            out.append(d.dim_param)
        else:
            out.append(None)
    return out


def _shape_text(decl: list[int | str | None]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in decl) + "]"


def _bind_dims(
    user_inputs: list[onnx.ValueInfoProto], dims: dict[str, int], input_shapes: dict[str, tuple[int, ...]]
) -> tuple[dict[str, int], dict[str, tuple[int, ...]]]:
    decl = {vi.name: _declared_dims(vi) for vi in user_inputs}
    params: dict[str, list[str]] = {}
    for name, ds in decl.items():
        for d in ds or []:
            if isinstance(d, str):
                users = params.setdefault(d, [])
                if name not in users:
                    users.append(name)

    unknown = [k for k in dims if k not in params]
    if unknown:
        have = ", ".join(params) if params else "none (bind unnamed dims with --input-shape)"
        raise ModelError(
            f"unknown dim{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}: no model input uses "
            f"{'them' if len(unknown) > 1 else 'it'}; the model's named dims are: {have}"
        )
    for k, v in dims.items():
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise ModelError(f"dim {k}={v!r} is not a non-negative integer; bind it like --dim {k}=2")
    bad = [k for k in input_shapes if k not in decl]
    if bad:
        raise ModelError(f"no model input named {', '.join(bad)}; the model's inputs are: {', '.join(decl) or 'none'}")

    bound: dict[str, int] = {k: int(v) for k, v in dims.items()}
    from_shape: dict[str, str] = {}
    for name, shp in input_shapes.items():
        shp = tuple(shp)
        if any(isinstance(x, bool) or not isinstance(x, (int, np.integer)) or x < 0 for x in shp):
            raise ModelError(f"input shape {name}:{shp!r} must be non-negative integers, like --input-shape {name}:2x16")
        ds = decl[name]
        if ds is not None and len(ds) != len(shp):
            raise ModelError(
                f"--input-shape {name}:{format_shape(shp)} has rank {len(shp)} but input {name} is {_shape_text(ds)} "
                f"(rank {len(ds)}); give {len(ds)} dims"
            )
        declared = ds or []
        for i, (d, v) in enumerate(zip(declared, shp, strict=False)):
            if isinstance(d, int) and d != v:
                raise ModelError(
                    f"--input-shape {name}:{format_shape(shp)} sets dim {i} to {v} but the model fixes it at {d} "
                    f"(input {name} is {_shape_text(declared)}); use {d} there"
                )
            if isinstance(d, str):
                if d in bound and bound[d] != v:
                    src = f"--input-shape {from_shape[d]}" if d in from_shape else f"--dim {d}={bound[d]}"
                    raise ModelError(
                        f"dim {d} is {bound[d]} by {src} but {v} by --input-shape {name}:{format_shape(shp)}; give it one value"
                    )
                bound[d] = int(v)
                from_shape.setdefault(d, name)

    shapes: dict[str, tuple[int, ...]] = {}
    unbound: dict[str, list[str]] = {}
    unnamed: list[str] = []
    example_input: str | None = None
    example_shape: list[str] = []
    for name, ds in decl.items():
        if name in input_shapes:
            shapes[name] = tuple(int(x) for x in input_shapes[name])
            continue
        if ds is None:
            unnamed.append(f"the shape of {name} (rank unknown)")
            if example_input is None:
                example_input, example_shape = name, ["N"]
            continue
        known: list[int] = []
        missing = False
        for i, d in enumerate(ds):
            if isinstance(d, int):
                known.append(d)
            elif isinstance(d, str) and d in bound:
                known.append(bound[d])
            else:
                missing = True
                if isinstance(d, str):
                    users = unbound.setdefault(d, [])
                    if name not in users:
                        users.append(name)
                else:
                    unnamed.append(f"dim {i} of {name} (no name)")
        if missing:
            if example_input is None:
                example_input = name
                example_shape = [str(d) if isinstance(d, int) else "N" for d in ds]
            continue
        shapes[name] = tuple(known)
    if unbound or unnamed:
        items = [f"{p} (in {', '.join(users)})" for p, users in unbound.items()] + unnamed
        fixes = []
        if unbound:
            fixes.append(f"--dim {next(iter(unbound))}=N")
        fixes.append(f"--input-shape {example_input}:{'x'.join(example_shape) or '[]'}")
        raise UnboundDimError(
            f"unbound dynamic dim{'s' if len(items) > 1 else ''}: {', '.join(items)}; bind "
            f"{'them' if len(items) > 1 else 'it'} with {' or '.join(fixes)}"
        )
    # bound dims in order of first appearance among the inputs
    ordered = {p: bound[p] for p in params if p in bound}
    return ordered, shapes


# -- graph rewriting helpers ----------------------------------------------------------------------


def _name_nodes(nodes: Iterable[onnx.NodeProto]) -> None:
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


def _name_omitted_outputs(nodes: Iterable[onnx.NodeProto]) -> None:
    """An omitted optional output ("") followed by a named one gets a name (tasks list outputs by position)."""
    for n in nodes:
        outs = list(n.output)
        last = max((i for i, o in enumerate(outs) if o), default=-1)
        for i in range(last):
            if not outs[i]:
                n.output[i] = f"{n.name}{_OMITTED_TAG}{i}"


def _is_alias(n: onnx.NodeProto, uses: collections.Counter, consts: dict, types: dict) -> bool:
    if n.op_type not in ALIAS_OPS or _domain(n.domain) != "" or not n.input or not n.input[0] or not n.output:
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


def _kept_outputs(n: onnx.NodeProto, uses: collections.Counter, opsets: dict[str, int]) -> tuple[str | None, ...]:
    """Outputs the task writes: trailing unused optional ones dropped, omitted middle ones as None (a gap)."""
    outs = list(n.output)
    optional = _optional_outputs(n, opsets)
    while outs and (not outs[-1] or (uses[outs[-1]] == 0 and (len(outs) - 1) in optional)):
        outs.pop()
    return tuple(None if (_OMITTED_TAG in o and uses[o] == 0) else o for o in outs)


_SCHEMA_CACHE: dict[tuple[str, str, int], set[int]] = {}


def _optional_outputs(n: onnx.NodeProto, opsets: dict[str, int]) -> set[int]:
    d = _domain(n.domain)
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


# -- checks -------------------------------------------------------------------------------------


def _check_static(task_inputs, task_outputs, outputs, types, res, path, model) -> None:
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
    omitted = [v for v in bad if _OMITTED_TAG in v]
    if omitted:
        n = producer[omitted[0]]
        i = omitted[0].rsplit(_OMITTED_TAG, 1)[1]
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
        what = "no type" if t is None or not t[0] else ("unknown rank" if t[1] is None else "shape " + _shape_text(list(t[1])))
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


# -- attributes and types -------------------------------------------------------------------------


def _attr_value(a: onnx.AttributeProto, n: onnx.NodeProto) -> Any:
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


def _nbytes_or_none(elem_type: int, dims: tuple[int, ...]) -> int | None:
    try:
        size = np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)).itemsize
    except Exception:
        return None
    return int(np.prod(dims, dtype=np.int64)) * size


def _elem_of_array(arr: np.ndarray, name: str) -> int:
    try:
        return int(helper.np_dtype_to_tensor_dtype(arr.dtype))
    except Exception:
        raise ModelError(
            f"value {name} has element type {arr.dtype}, which Turnip cannot plan; export the model with float/int/bool tensors"
        ) from None


def _elem_name(et: int) -> str:
    try:
        return TensorProto.DataType.Name(et)
    except ValueError:
        return f"#{et}"
