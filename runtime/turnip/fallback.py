"""Fallback kernels: run one ONNX op through onnxruntime.

For an op without a native kernel the runtime builds a one-node ONNX model
(the op, its attributes, its input and output types and shapes, the model's
opset imports) and runs it with onnxruntime's CPU provider. The
InferenceSession is built once per node, on first use, and reused for every
run. Inputs are copied to the host (``ctx.host``), outputs are written back
into the planned output arrays with ``ctx.xp.asarray``.

Sessions use one intra-op thread and no graph optimizations, so results are
as exact (and as deterministic) as onnxruntime's plain kernels.
"""

from __future__ import annotations

import threading
from typing import Any, Sequence

import numpy as np

from .dtypes import np_dtype, onnx_elem_type

TensorInfo = tuple  # (dtype_name, shape)


def _attr_types(op: str, domain: str, opset: int) -> dict[str, int]:
    import onnx

    try:
        schema = onnx.defs.get_schema(op, opset, domain)
    except Exception:  # noqa: BLE001 - unknown op/domain: let make_attribute infer
        return {}
    return {name: int(a.type) for name, a in schema.attributes.items()}  # type: ignore[call-overload]  # a pybind11 enum: int() works, its stub lacks __int__


def make_attribute(name: str, value: Any, attr_type: int | None = None):
    """An AttributeProto from a plain Python value (int/float/str/list) or NumPy array (tensor)."""
    import onnx
    from onnx import helper, numpy_helper

    A = onnx.AttributeProto
    if isinstance(value, np.ndarray):
        return helper.make_attribute(name, numpy_helper.from_array(value))
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, (list, tuple)):
        value = [v.item() if isinstance(v, np.generic) else v for v in value]
        if value and isinstance(value[0], np.ndarray):
            return helper.make_attribute(name, [numpy_helper.from_array(v) for v in value])
        if attr_type in (A.INTS, A.FLOATS, A.STRINGS):
            if attr_type == A.FLOATS:
                value = [float(v) for v in value]
            elif attr_type == A.INTS:
                value = [int(v) for v in value]
            return helper.make_attribute(name, value, attr_type=attr_type)
        if not value:
            return helper.make_attribute(name, value, attr_type=A.INTS)
        return helper.make_attribute(name, value)
    if attr_type == A.FLOAT and isinstance(value, int):
        value = float(value)
    return helper.make_attribute(name, value)


def _value_info(name: str, info: TensorInfo):
    from onnx import helper

    dtype_name, shape = info
    dims = [d if isinstance(d, int) and d >= 0 else None for d in shape] if shape is not None else None
    return helper.make_tensor_value_info(name, onnx_elem_type(dtype_name), dims)


def build_model(
    op: str,
    domain: str,
    attrs: dict[str, Any],
    opset_imports: dict[str, int],
    input_infos: Sequence[TensorInfo | None],
    output_infos: Sequence[TensorInfo | None],
):
    """The one-node ModelProto that runs ``op``."""
    import onnx
    from onnx import helper

    domain = "" if domain == "ai.onnx" else domain
    imports = {("" if d == "ai.onnx" else d): int(v) for d, v in opset_imports.items()}
    if "" not in imports:
        imports[""] = onnx.defs.onnx_opset_version()
    opset = imports.get(domain, imports[""])
    types = _attr_types(op, domain, opset)
    in_names = ["" if info is None else f"in{i}" for i, info in enumerate(input_infos)]
    while in_names and in_names[-1] == "":
        in_names.pop()
    out_names = ["" if info is None else f"out{i}" for i, info in enumerate(output_infos)]
    node = helper.make_node(op, in_names, out_names, domain=domain or None, name=f"fallback_{op}")
    node.attribute.extend(make_attribute(k, v, types.get(k)) for k, v in sorted(attrs.items()) if v is not None)
    graph = helper.make_graph(
        [node],
        f"turnip_fallback_{op}",
        [_value_info(n, info) for n, info in zip(in_names, input_infos, strict=False) if info is not None],
        [_value_info(n, info) for n, info in zip(out_names, output_infos, strict=False) if info is not None],
    )
    opsets = [helper.make_opsetid(d, v) for d, v in sorted(imports.items())]
    model = helper.make_model(graph, opset_imports=opsets, producer_name="turnip-fallback")
    try:
        model.ir_version = max(helper.find_min_ir_version_for(opsets, ignore_unknown=True), 7)
    except Exception:  # noqa: BLE001
        pass
    return model


class OrtFallback:
    """A kernel (same signature as native ones) that runs one op with onnxruntime.

    Attributes come from ``attrs`` when given, else from ``ctx.attrs`` on the
    first call; the session is built then and kept for later runs.
    """

    def __init__(
        self,
        op: str,
        domain: str,
        opset_imports: dict[str, int],
        input_infos: Sequence[TensorInfo | None],
        output_infos: Sequence[TensorInfo | None],
        attrs: dict[str, Any] | None = None,
    ) -> None:
        self.op = op
        self.domain = domain
        self.opset_imports = dict(opset_imports)
        self.input_infos = list(input_infos)
        self.output_infos = list(output_infos)
        self.attrs = None if attrs is None else dict(attrs)
        self._session = None
        self._in_names: list[tuple[int, str, np.dtype]] = []
        self._out_names: list[tuple[int, str]] = []
        self._lock = threading.Lock()

    def _build(self, attrs: dict[str, Any]):
        import onnxruntime as ort

        model = build_model(self.op, self.domain, attrs, self.opset_imports, self.input_infos, self.output_infos)
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        so.log_severity_level = 3
        sess = ort.InferenceSession(model.SerializeToString(), sess_options=so, providers=["CPUExecutionProvider"])
        self._in_names = [(i, f"in{i}", np_dtype(info[0])) for i, info in enumerate(self.input_infos) if info is not None]
        self._out_names = [(i, f"out{i}") for i, info in enumerate(self.output_infos) if info is not None]
        self.model = model
        return sess

    def session(self, attrs: dict[str, Any] | None = None):
        if self._session is None:
            with self._lock:
                if self._session is None:
                    a = self.attrs if self.attrs is not None else dict(attrs or {})
                    self._session = self._build(a)
        return self._session

    def __call__(self, ctx, inputs: list, outputs: list) -> None:
        sess = self.session(ctx.attrs)
        feeds = {}
        for i, name, dt in self._in_names:
            x = inputs[i] if i < len(inputs) else None
            if x is None:
                raise ValueError(f"{self.op}: input {i} is declared but missing")
            h = np.asarray(ctx.host(x))
            feeds[name] = h if h.dtype == dt else h.astype(dt)
        wanted = [(i, n) for i, n in self._out_names if i < len(outputs) and outputs[i] is not None]
        if not wanted:
            return
        results = sess.run([n for _, n in wanted], feeds)
        for (i, _), r in zip(wanted, results, strict=False):
            out = outputs[i]
            out[...] = ctx.xp.asarray(np.asarray(r).reshape(out.shape))


#: A kernel that runs one op through onnxruntime (see :class:`OrtFallback`); the name the backends use.
make_fallback_kernel = OrtFallback
