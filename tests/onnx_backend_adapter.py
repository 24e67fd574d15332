"""An ``onnx.backend`` adapter: ONNX models run through turnipc (plan) + turnip (run).

    from onnx_backend_adapter import TurnipBackend
    rep = TurnipBackend.prepare(model)        # model: onnx.ModelProto
    outputs = rep.run([x, y])                 # arrays in the graph's input order

``run`` saves the model once per prepared rep into a private temporary folder
(the runtime reads weights from the model file the plan names), imports it
binding every graph input's shape from the arrays it is given (static shapes),
plans it (at 25% of the no-offload peak; when that is infeasible, as it is for
one-node graphs, at the smallest feasible budget), verifies the plan, runs it
with the NumPy backend and returns the outputs in ONNX order. The plan itself
is never written: it is a :class:`turnip.plan.Plan` in memory whose model path
is absolute. Plans are cached per input signature.

It lives under tests/ (not in the runtime package) because it drives the
compiler, and the ``turnip`` runtime package must never import ``turnipc``.

``freeze`` (names of graph inputs): those inputs are turned into initializers
holding the values given to ``run``: for inputs that are really parameters
(Reshape's shape, Tile's repeats, Range's limits...) whose values decide
output shapes, which a static plan needs at plan time.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import weakref
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import onnx
from onnx import numpy_helper
from onnx.backend.base import Backend, BackendRep, namedtupledict
from turnip.run import run_plan

from turnipc.errors import BudgetError
from turnipc.importer import import_model
from turnipc.planner import PlanOptions, build_plan
from turnipc.units import Budget
from turnipc.verify import verify_plan

DEFAULT_FRACTION = 0.25


def plan_graph(graph, fraction: float | None = DEFAULT_FRACTION, plan_dir: str | None = None):
    """Plan at ``fraction`` of the no-offload peak, else (BudgetError) at the minimum feasible budget.

    Returns (plan, budget_used) where budget_used is ``"25%"``-style or ``"min"``.
    """
    if fraction is not None:
        try:
            return build_plan(graph, PlanOptions(Budget(fraction=fraction)), plan_dir=plan_dir), f"{fraction * 100:g}%"
        except BudgetError:
            pass
    return build_plan(graph, PlanOptions(Budget(minimum=True)), plan_dir=plan_dir), "min"


def user_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """Graph inputs that are not initializers, in ONNX order (what ``run`` takes)."""
    inits = {t.name for t in model.graph.initializer}
    return [vi for vi in model.graph.input if vi.name not in inits]


class TurnipBackendRep(BackendRep):
    def __init__(
        self,
        model: onnx.ModelProto,
        fraction: float | None = DEFAULT_FRACTION,
        order: str = "dynamic",
        seed: int = 0,
        freeze: Iterable[str] = (),
        verify: bool = True,
    ) -> None:
        self.model = model
        self.fraction = fraction
        self.order = order
        self.seed = seed
        self.freeze = frozenset(freeze)
        self.verify = verify
        self.input_names = [vi.name for vi in user_inputs(model)]
        self.output_names = [o.name for o in model.graph.output]
        self._dir = tempfile.mkdtemp(prefix="turnip-backend-")
        self._finalizer = weakref.finalize(self, shutil.rmtree, self._dir, True)
        self._plans: dict[Any, Any] = {}
        self.last_budget: str | None = None  # "25%" or "min": how the last plan was made
        self.last_plan = None

    def close(self) -> None:
        self._finalizer()

    def _feeds(self, inputs: Any) -> dict[str, np.ndarray]:
        if isinstance(inputs, Mapping):
            feeds = {k: np.asarray(v) for k, v in inputs.items()}
        else:
            if isinstance(inputs, np.ndarray):
                inputs = [inputs]
            inputs = list(inputs)
            if len(inputs) > len(self.input_names):
                raise ValueError(f"{len(inputs)} inputs given; the model takes {len(self.input_names)}")
            feeds = {n: np.asarray(v) for n, v in zip(self.input_names, inputs, strict=False)}
        return feeds

    def _model_for(self, feeds: Mapping[str, np.ndarray]) -> tuple[str, dict[str, np.ndarray]]:
        """Save the model (with frozen inputs as initializers) and return (path, remaining feeds)."""
        frozen = {k: v for k, v in feeds.items() if k in self.freeze}
        rest = {k: v for k, v in feeds.items() if k not in self.freeze}
        h = hashlib.sha1()
        for k in sorted(frozen):
            v = np.ascontiguousarray(frozen[k])
            h.update(f"{k}|{v.dtype.str}|{v.shape}|".encode() + v.tobytes())
        name = f"model-{h.hexdigest()[:16]}.onnx" if frozen else "model.onnx"
        path = os.path.join(self._dir, name)
        if not os.path.exists(path):
            m = self.model
            if frozen:
                m = onnx.ModelProto()
                m.CopyFrom(self.model)
                keep = [vi for vi in m.graph.input if vi.name not in frozen]
                del m.graph.input[:]
                m.graph.input.extend(keep)
                for k, v in frozen.items():
                    m.graph.initializer.append(numpy_helper.from_array(v, k))
            onnx.save(m, path)
        return path, rest

    def plan_for(self, feeds: Mapping[str, np.ndarray]):
        path, rest = self._model_for(feeds)
        sig = (path, tuple(sorted((k, v.dtype.str, v.shape) for k, v in rest.items())))
        hit = self._plans.get(sig)
        if hit is None:
            graph = import_model(path, None, {k: tuple(v.shape) for k, v in rest.items()})
            plan, used = plan_graph(graph, self.fraction)
            if self.verify:
                verify_plan(plan)
            hit = self._plans[sig] = (plan, used)
        self.last_plan, self.last_budget = hit
        return hit[0], rest

    def run(self, inputs: Any, **kwargs: Any) -> tuple[np.ndarray, ...]:
        feeds = self._feeds(inputs)
        plan, rest = self.plan_for(feeds)
        res = run_plan(plan, rest, backend="numpy", order=self.order, seed=self.seed)
        return namedtupledict("Outputs", self.output_names)(*[res.outputs[n] for n in self.output_names])


class TurnipBackend(Backend):
    """onnx.backend.base.Backend running models through turnipc + turnip (NumPy backend, CPU)."""

    @classmethod
    def is_compatible(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs: Any) -> bool:
        return cls.supports_device(device)

    @classmethod
    def prepare(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs: Any) -> TurnipBackendRep:
        super().prepare(model, device, **kwargs)  # onnx.checker
        return TurnipBackendRep(model, **kwargs)

    @classmethod
    def run_model(cls, model: onnx.ModelProto, inputs: Any, device: str = "CPU", **kwargs: Any) -> tuple[np.ndarray, ...]:
        rep = cls.prepare(model, device, **kwargs)
        try:
            return rep.run(inputs)
        finally:
            rep.close()

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return str(device).upper().startswith("CPU")


def run_case_model(model: onnx.ModelProto, inputs: Sequence[np.ndarray], freeze: Iterable[str] = (), **kw: Any):
    """Convenience: prepare + run once; returns (outputs tuple, rep) — the caller closes rep."""
    rep = TurnipBackendRep(model, freeze=freeze, **kw)
    return rep.run(list(inputs)), rep


prepare = TurnipBackend.prepare
run_model = TurnipBackend.run_model
supports_device = TurnipBackend.supports_device


# -- the onnx node test cases (onnx.backend.test.case.node) ----------------------------------------
#
# onnx >= 1.17 wheels ship no backend/test/data/node folders: the cases are
# built in memory by onnx.backend.test.case.node.collect_testcases(). The test
# module (tests/test_onnx_backend.py) and the report script
# (tests/conformance_report.py) share what follows.

#: op -> input slots whose *values* decide output shapes (or are plan-time
#: parameters). When such a slot is fed by a graph input, a static plan needs
#: the value at plan time, so the case's value is frozen into an initializer.
SHAPE_PARAM_INPUTS: dict[str, tuple[int, ...]] = {
    "Reshape": (1,),
    "Expand": (1,),
    "Tile": (1,),
    "ConstantOfShape": (0,),
    "Range": (0, 1, 2),
    "OneHot": (1,),
    "Pad": (1, 3),
    "Slice": (1, 2, 3, 4),
    "Split": (1,),
    "Squeeze": (1,),
    "Unsqueeze": (1,),
    "TopK": (1,),
    "Resize": (1, 2, 3),
    "Upsample": (1,),
    "ReduceL1": (1,),
    "ReduceL2": (1,),
    "ReduceLogSum": (1,),
    "ReduceLogSumExp": (1,),
    "ReduceMax": (1,),
    "ReduceMean": (1,),
    "ReduceMin": (1,),
    "ReduceProd": (1,),
    "ReduceSum": (1,),
    "ReduceSumSquare": (1,),
}

#: Real failures (bugs or missing features in the importer/kernels), by case name.
KNOWN_FAILURES: dict[str, str] = {
    "test_group_normalization_example": "importer: no static shape for GroupNormalization (opset 21) output (onnx shape inference gives no rank)",
    "test_group_normalization_epsilon": "importer: no static shape for GroupNormalization (opset 21) output (onnx shape inference gives no rank)",
    "test_mvn": "importer: no static shape for MeanVarianceNormalization output (function-body shape inference fails)",
    "test_range_float16_type_positive_delta": "importer: Range with float16 constant start/limit/delta not folded to a static shape",
    "test_range_bfloat16_type_positive_delta": "importer: Range with bfloat16 constant start/limit/delta not folded to a static shape",
}

#: Ops with control flow (subgraph attributes): never planned (static task graphs only).
CONTROL_FLOW_OPS = frozenset({"If", "Loop", "Scan", "SequenceMap"})


def claimed_ops() -> frozenset[str]:
    """Op types (default domain) with a native turnip kernel: the ops Turnip claims."""
    from turnip import kernels

    kernels._load_all()
    return frozenset(op for (dom, op) in kernels.REGISTRY if dom in ("", "ai.onnx"))


def collect_node_cases() -> list:
    """onnx's node test cases (about 1900; takes ~10 s, warnings silenced)."""
    import warnings

    from onnx.backend.test.case import node as node_cases

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return list(node_cases.collect_testcases())


def case_op(case, by_name: Mapping[str, Any]) -> str | None:
    """The op a case tests: its single node's op; for a function-expanded case, its twin's op."""
    nodes = case.model.graph.node
    if len(nodes) == 1:
        return nodes[0].op_type
    base = case.name.split("_expanded")[0]
    twin = by_name.get(base)
    if twin is not None and len(twin.model.graph.node) == 1:
        return twin.model.graph.node[0].op_type
    return None


def to_array(x: Any) -> Any:
    """A case's data (ndarray or TensorProto, which onnx uses for bfloat16/float8/int4 data) as an ndarray."""
    if isinstance(x, onnx.TensorProto):
        return numpy_helper.to_array(x)
    if isinstance(x, np.ndarray) or np.isscalar(x):
        return np.asarray(x)
    return x  # a sequence / optional / map: left as is (such cases are skipped)


def _plannable_elem(et: int) -> bool:
    from turnip.dtypes import dtype_name_from_onnx

    try:
        dtype_name_from_onnx(et)
        return True
    except ValueError:
        return False


def _walk_types(tp: onnx.TypeProto) -> tuple[str, int]:
    kind = tp.WhichOneof("value")
    return kind or "", tp.tensor_type.elem_type if kind == "tensor_type" else 0


def skip_reason(case) -> str | None:
    """Why Turnip cannot take this case by design (None: it should run). One short reason."""
    g = case.model.graph
    for n in g.node:
        if n.op_type in CONTROL_FLOW_OPS or any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in n.attribute):
            return f"control flow ({n.op_type} with a subgraph): Turnip plans static task graphs only"
    for vi in list(g.input) + list(g.output):
        kind, et = _walk_types(vi.type)
        if kind != "tensor_type":
            return f"{kind.replace('_type', '')} value {vi.name!r}: Turnip plans tensors only"
        if et == onnx.TensorProto.STRING:
            return f"string tensor {vi.name!r}: numpy/cupy kernels hold no strings"
        if not _plannable_elem(et):
            return f"element type {onnx.TensorProto.DataType.Name(et)} of {vi.name!r} is not a Turnip dtype"
    for n in g.node:
        if n.op_type == "Dropout" and len(n.input) >= 3 and n.input[2]:
            return "training-mode Dropout (random mask): inference runtime"
        if n.op_type == "BatchNormalization" and any(a.name == "training_mode" and a.i for a in n.attribute):
            return "training-mode BatchNormalization (running statistics): inference runtime"
    for ins, outs in case.data_sets or []:
        for x in list(ins) + list(outs):
            a = to_array(x)
            if not isinstance(a, np.ndarray):
                return "non-tensor data (sequence/optional): Turnip plans tensors only"
    return None


def frozen_inputs(model: onnx.ModelProto) -> list[str]:
    """Graph inputs read by a shape-parameter slot (see SHAPE_PARAM_INPUTS): frozen at plan time."""
    names = {vi.name for vi in user_inputs(model)}
    out: list[str] = []
    for n in model.graph.node:
        for i in SHAPE_PARAM_INPUTS.get(n.op_type, ()):
            if i < len(n.input) and n.input[i] in names and n.input[i] not in out:
                out.append(n.input[i])
    return out


_LOW_PRECISION_RTOL = {"float16": 1e-3, "bfloat16": 1.6e-2}


def _is_float(dt: np.dtype) -> bool:
    return dt.kind in "fc" or dt.name in ("bfloat16",) or dt.name.startswith("float8")


def compare_outputs(got: Sequence[Any], expected: Sequence[Any], rtol: float = 1e-3, atol: float = 1e-4) -> list[str]:
    """Problems (empty: all match). Floats: |a-b| <= atol + rtol*|b| (NaN matches NaN); others exact."""
    probs: list[str] = []
    if len(got) != len(expected):
        return [f"{len(got)} outputs, expected {len(expected)}"]
    for k, (g, e) in enumerate(zip(got, expected, strict=True)):
        e = to_array(e)
        g = np.asarray(g)
        if g.shape != e.shape:
            probs.append(f"output {k}: shape {g.shape}, expected {e.shape}")
            continue
        if g.dtype != e.dtype:
            probs.append(f"output {k}: dtype {g.dtype}, expected {e.dtype}")
            continue
        if _is_float(e.dtype):
            r = max(rtol, _LOW_PRECISION_RTOL.get(e.dtype.name, 0.0))
            a_ = max(atol, _LOW_PRECISION_RTOL.get(e.dtype.name, 0.0) * 0.1)
            x, y = g.astype(np.float64), e.astype(np.float64)
            with np.errstate(invalid="ignore"):
                ok = np.isclose(x, y, rtol=r, atol=a_, equal_nan=True)
            if not ok.all():
                with np.errstate(invalid="ignore"):
                    d = np.abs(x - y)
                probs.append(f"output {k}: {int((~ok).sum())} of {ok.size} differ, max |diff| {np.nanmax(np.where(ok, 0, d)):.3g}")
        elif not np.array_equal(g, e):
            probs.append(f"output {k}: {int((g != e).sum())} of {g.size} differ (exact)")
    return probs


def run_node_case(case, rtol: float = 1e-3, atol: float = 1e-4) -> tuple[list[str], dict[str, Any]]:
    """Plan + run every data set of a case. Returns (problems, info); raises on errors."""
    freeze = frozen_inputs(case.model)
    rep = TurnipBackendRep(case.model, freeze=freeze)
    info: dict[str, Any] = {"frozen": freeze, "budgets": []}
    try:
        probs: list[str] = []
        for ins, outs in case.data_sets:
            got = rep.run([to_array(x) for x in ins])
            info["budgets"].append(rep.last_budget)
            probs += compare_outputs(got, outs, rtol=max(rtol, case.rtol), atol=max(atol, case.atol))
        return probs, info
    finally:
        rep.close()
