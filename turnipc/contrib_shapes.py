"""Shapes of ops outside the ONNX standard (onnxruntime's ``com.microsoft`` contrib ops).

Models that went through onnxruntime's optimizer hold fused ops such as
FusedMatMul, BiasGelu, FastGelu, SkipLayerNormalization or MatMulNBits.
ONNX's shape inference knows nothing of them, so their outputs had no type
and planning stopped with advice about ``--dim`` that does not apply.

How their shapes are found: every input of such a node has a static shape
(dims are bound before inference), so the node is run ONCE through
onnxruntime on zeros of those shapes, and the dtypes and shapes of what it
returns are its output types. onnxruntime's own symbolic shape inference tool
(``onnxruntime.tools.symbolic_shape_infer``) was the first candidate, but it
needs sympy, re-infers the whole graph, and its table lacks FusedMatMul (it
stops with "Incomplete symbolic shape inference"); running the op covers
every op onnxruntime can run, exactly as the runtime will run it (the
onnxruntime fallback; ``turnip-run --report`` lists those nodes). The op's
output shapes must not depend on input values, which holds for the fused ops
the optimizer writes.

An op onnxruntime cannot run gets a one-line ``unsupported op X (domain Y)``
error naming it.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import onnx
from onnx import helper

from .errors import ModelError

STANDARD_DOMAINS = ("", "ai.onnx", "ai.onnx.ml")
Infer = Callable[[onnx.ModelProto], onnx.ModelProto]


def _static_type(vi: onnx.ValueInfoProto) -> tuple[int, tuple[int, ...]] | None:
    if not vi.type.HasField("tensor_type") or not vi.type.tensor_type.elem_type:
        return None
    tt = vi.type.tensor_type
    if not tt.HasField("shape") or not all(d.WhichOneof("value") == "dim_value" for d in tt.shape.dim):
        return None
    return tt.elem_type, tuple(int(d.dim_value) for d in tt.shape.dim)


def _typed(model: onnx.ModelProto) -> dict[str, tuple[int, tuple[int, ...]]]:
    g = model.graph
    out: dict[str, tuple[int, tuple[int, ...]]] = {}
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        t = _static_type(vi)
        if t is not None:
            out[vi.name] = t
    for t in g.initializer:
        out[t.name] = (t.data_type, tuple(int(d) for d in t.dims))
    return out


def _opsets(model: onnx.ModelProto) -> dict[str, int]:
    return {("" if o.domain == "ai.onnx" else o.domain): int(o.version) for o in model.opset_import}


def probe_node(node: onnx.NodeProto, in_types: dict[str, tuple[int, tuple[int, ...]]], opsets: dict[str, int]) -> dict[str, tuple[int, tuple[int, ...]]]:
    """Output name -> (ONNX elem type, shape) of ``node``, by running it once through onnxruntime on zeros."""
    where = f"unsupported op {node.op_type} (domain {node.domain}) at node {node.name or '?'}"
    try:
        import onnxruntime as ort
    except ImportError:
        raise ModelError(
            f"{where}: its output shapes come from running it once through onnxruntime, which is not installed; pip install onnxruntime"
        ) from None
    ins, feeds = [], {}
    for name in node.input:
        if name and name not in feeds:
            et, shape = in_types[name]
            ins.append(helper.make_tensor_value_info(name, et, list(shape)))
            feeds[name] = np.zeros(shape, dtype=helper.tensor_dtype_to_np_dtype(et))
    outs = [helper.make_value_info(o, onnx.TypeProto()) for o in node.output if o]
    n = onnx.NodeProto()
    n.CopyFrom(node)
    model = helper.make_model(helper.make_graph([n], "probe", ins, outs),
                              opset_imports=[helper.make_opsetid(d, v) for d, v in sorted(opsets.items())])
    model.ir_version = 8
    try:
        so = ort.SessionOptions()
        so.log_severity_level = 3
        sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        res = sess.run(None, feeds)
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelError(f"{where}: neither ONNX nor onnxruntime knows it ({first[:200]}); re-export the model without it") from None
    return {o.name: (helper.np_dtype_to_tensor_dtype(np.asarray(r).dtype), tuple(np.asarray(r).shape)) for o, r in zip(sess.get_outputs(), res)}


def infer_contrib(model: onnx.ModelProto, infer: Infer) -> onnx.ModelProto:
    """``model`` (already through ONNX's ``infer``) with every non-standard op's outputs typed, re-inferred after each addition.

    A node is probed once all its inputs have static types; ``infer`` then
    carries the new types to the standard ops downstream, which may type the
    inputs of the next contrib node. Raises ModelError for an op onnxruntime
    cannot run.
    """
    opsets = None
    while True:
        typed = _typed(model)
        added = False
        for node in model.graph.node:
            if node.domain in STANDARD_DOMAINS or all((not o) or o in typed for o in node.output):
                continue
            if not all((not i) or i in typed for i in node.input):
                continue  # an input still unknown (unbound dims upstream): the usual --dim error reports it
            opsets = opsets or _opsets(model)
            for name, (et, shape) in probe_node(node, typed, opsets).items():
                if name not in typed:
                    model.graph.value_info.append(helper.make_tensor_value_info(name, et, list(shape)))
                    typed[name] = (et, shape)
                    added = True
        if not added:
            return model
        model = infer(model)
