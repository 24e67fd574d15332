"""A decoder "runner" that plans each distinct step shape with turnipc and runs it with turnip.

    >>> from turnip.generate import DecoderSignature, generate
    >>> from plan_runner import PlanPerShapeRunner   # tests/ on sys.path
    >>> runner = PlanPerShapeRunner("llama_static.onnx", Budget(fraction=0.25))
    >>> generate(runner, DecoderSignature.from_onnx("llama_static.onnx"), prompt, 32)

WHY: groundwork for ``turnipc plan --decode`` before plans carry state. A
decode step's graph is static once its symbolic dims (``batch``, ``seq``,
``past``) are bound, so each distinct binding gets its own plan (a static
cache needs two: the prompt length and 1; the past/present convention needs
one per past length). Plans are cached by binding; each ``run`` writes the
feeds, weights and cache into a fresh arena (``turnip.run.run_plan``), so
weights ARE re-read and the cache IS copied every step -- exactly what the
state work of issue 13 removes. It exists to prove that Turnip's plans give
the same tokens as onnxruntime at any budget, not to be fast. It lives in
tests/ (used by tests/test_generate.py and bench/bench_decode.py) because it
joins compiler and runtime, which no package module may do.
"""

from __future__ import annotations

import os
from typing import Mapping

import numpy as np
import onnx
from turnip.plan import Plan
from turnip.run import run_plan

from turnipc.importer import import_model
from turnipc.planner import PlanOptions, build_plan
from turnipc.units import Budget


def symbolic_input_dims(model_path: str) -> dict[str, list[tuple[int, str]]]:
    """``{input name: [(axis, dim name), ...]}`` for every symbolic dim of every graph input."""
    m = onnx.load(model_path, load_external_data=False)
    inits = {t.name for t in m.graph.initializer}
    out: dict[str, list[tuple[int, str]]] = {}
    for vi in m.graph.input:
        if vi.name in inits:
            continue
        dims = [(ax, d.dim_param) for ax, d in enumerate(vi.type.tensor_type.shape.dim) if d.dim_param]
        if dims:
            out[vi.name] = dims
    return out


def bind_dims(symbolic: Mapping[str, list[tuple[int, str]]], feeds: Mapping[str, np.ndarray]) -> dict[str, int]:
    """Values of the symbolic dims read off the feeds' shapes (one value per name, or ValueError)."""
    dims: dict[str, int] = {}
    for name, axes in symbolic.items():
        if name not in feeds:
            continue
        shape = np.shape(feeds[name])
        for ax, dim in axes:
            v = int(shape[ax])
            if dims.setdefault(dim, v) != v:
                raise ValueError(f"dim {dim!r} is {dims[dim]} in one feed and {v} in {name!r}; feed consistent shapes")
    return dims


class PlanPerShapeRunner:
    """``run(feeds)``: plan the model for the feeds' dims (once per binding) and run the plan."""

    def __init__(self, model_path: str | os.PathLike[str], budget: Budget, order: str = "dynamic", seed: int = 0,
                 backend: str = "numpy"):
        self.model_path = os.fspath(model_path)
        self.budget = budget
        self.order = order
        self.seed = seed
        self.backend = backend
        self.symbolic = symbolic_input_dims(self.model_path)
        self.plans: dict[tuple[tuple[str, int], ...], Plan] = {}
        self.calls = 0
        self.bytes_reloaded = 0

    def plan_for(self, feeds: Mapping[str, np.ndarray]) -> Plan:
        dims = bind_dims(self.symbolic, feeds)
        key = tuple(sorted(dims.items()))
        plan = self.plans.get(key)
        if plan is None:
            graph = import_model(self.model_path, dims, None)
            plan = build_plan(graph, PlanOptions(self.budget), plan_dir=os.path.dirname(os.path.abspath(self.model_path)))
            self.plans[key] = plan
        return plan

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        plan = self.plan_for(feeds)
        res = run_plan(plan, feeds, backend=self.backend, order=self.order, seed=self.seed + self.calls,
                       plan_path=os.path.join(os.path.dirname(os.path.abspath(self.model_path)), "decode.plan"))
        self.calls += 1
        self.bytes_reloaded += res.stats.bytes_reloaded
        return res.outputs


def plan_matches_onnxruntime(tmp_path, fx, plan) -> bool:
    """``plan`` (of fixture ``fx``) written, run by a NumPy session on the fixture's seed-0 inputs, equal to onnxruntime."""
    import fixtures
    from turnip import Session
    from turnip.check import compare, reference_outputs
    from turnip.plan import write_plan

    p = str(tmp_path / "matches.plan")
    write_plan(plan, p)
    feeds = fixtures.make_inputs(fx, 0)
    with Session(p, model=fx.path, backend="numpy") as s:
        out = s.run(feeds)
    return all(c.ok for c in compare(out, reference_outputs(fx.path, feeds), atol=1e-4, rtol=1e-3))
