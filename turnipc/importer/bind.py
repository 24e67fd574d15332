"""Step "bind": the user's inputs, their dynamic dims bound to numbers, and the graph outputs checked.

Why: every later step needs static shapes. Dims are bound by name
(``--dim seq=128``) or by whole input shape (``--input-shape ids:1x128``);
every unbound, unknown or conflicting dim is one error naming all of them
and the option that fixes it. The dims are kept in order of first
appearance among the inputs (the plan records them).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from ..dims import format_shape
from ..errors import ModelError, UnboundDimError


@dataclass
class Bound:
    """The user's inputs with static shapes."""

    input_names: list[str]  # graph inputs the user feeds (not initializers), ONNX order
    input_elem: dict[str, int]  # name -> ONNX elem type
    dims: dict[str, int]  # bound dynamic dims, in order of first appearance
    shapes: dict[str, tuple[int, ...]]  # name -> static shape


def bind_inputs(
    g: onnx.GraphProto, weights: dict[str, tuple[int, tuple[int, ...]]], dims: dict[str, int], input_shapes: dict[str, tuple[int, ...]]
) -> Bound:
    """The graph inputs that are not initializers, each a tensor with every dim bound."""
    user_inputs = [vi for vi in g.input if vi.name not in weights]
    input_elem: dict[str, int] = {}
    for vi in user_inputs:
        if not vi.type.HasField("tensor_type"):
            raise ModelError(
                f"input {vi.name} is not a tensor ({vi.type.WhichOneof('value')}); Turnip plans tensor inputs only: "
                "export the model with tensor inputs"
            )
        input_elem[vi.name] = vi.type.tensor_type.elem_type
    bound, shapes = bind_dims(user_inputs, dims, input_shapes)
    return Bound([vi.name for vi in user_inputs], input_elem, bound, shapes)


def graph_outputs(g: onnx.GraphProto, weights: dict[str, tuple[int, tuple[int, ...]]], shapes: dict[str, tuple[int, ...]], path: str) -> list[str]:
    """The graph outputs, in ONNX order; each must be computed by a node (not a weight or an input itself)."""
    outputs = [o.name for o in g.output]
    if not outputs:
        raise ModelError(f"model {path} has no graph outputs; is the file complete? re-export it")
    for o in outputs:
        if o in weights or o in shapes:
            what = "a weight" if o in weights else "a graph input"
            raise ModelError(f"graph output {o} is {what} itself, with no node computing it; remove it from the model's outputs")
    return outputs


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


def shape_text(decl: list[int | str | None]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in decl) + "]"


def bind_dims(
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
                f"--input-shape {name}:{format_shape(shp)} has rank {len(shp)} but input {name} is {shape_text(ds)} "
                f"(rank {len(ds)}); give {len(ds)} dims"
            )
        declared = ds or []
        for i, (d, v) in enumerate(zip(declared, shp, strict=False)):
            if isinstance(d, int) and d != v:
                raise ModelError(
                    f"--input-shape {name}:{format_shape(shp)} sets dim {i} to {v} but the model fixes it at {d} "
                    f"(input {name} is {shape_text(declared)}); use {d} there"
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
