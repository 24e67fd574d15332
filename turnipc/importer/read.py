"""Step "read": the model's structure, its hash and its opsets; models Turnip cannot plan refused early.

Why its own step: it is the only place that touches the file. Planning never
needs weight bytes (issue 16), so the file is hashed in blocks and parsed with
every inline initializer too big to fold left in the file (described as
external data in the model file itself, :mod:`turnip.onnx_lazy`); small
initializers stay inline, for folding.
"""

from __future__ import annotations

import collections
import hashlib

import onnx
from onnx import AttributeProto
from turnip.onnx_lazy import load_model_lazily

from .. import folding
from ..errors import ModelError

_CONTROL_FLOW_HINT = "Turnip plans static task graphs only: export the model without control flow"


def read_model(path: str) -> tuple[onnx.ModelProto, str]:
    """The model (big inline weights left in the file) and the sha256 of the file; ModelError if unreadable."""
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


def inline_functions(model: onnx.ModelProto, path: str) -> onnx.ModelProto:
    """The model with its local functions inlined (a task is one op of a known schema)."""
    if not model.functions:
        return model
    try:
        import onnx.inliner

        return onnx.inliner.inline_local_functions(model)
    except Exception as e:
        raise ModelError(f"cannot inline the local functions of {path} ({e}); re-export the model without them") from None


def domain(d: str) -> str:
    """The canonical name of an op domain: "" for the default one (also spelled "ai.onnx")."""
    return "" if d in ("", "ai.onnx") else d


def opsets(model: onnx.ModelProto) -> dict[str, int]:
    """Opset version per domain ("" is the default domain)."""
    out: dict[str, int] = {}
    for o in model.opset_import:
        out[domain(o.domain)] = int(o.version)
    return out


def reject_structure(model: onnx.ModelProto, path: str) -> None:
    """ModelError for what a static task graph cannot hold: subgraphs (control flow) and sparse initializers."""
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
