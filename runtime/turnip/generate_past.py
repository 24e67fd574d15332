"""Generation with a past/present decoder (optimum's convention) on Turnip plans.

    past_key_values.{i}.key/value [batch, heads, past, head_dim] in,
    present.{i}.key/value [batch, heads, past + seq, head_dim] out.

This is the FALLBACK: ``Session.generate`` runs past/present decode steps on
past-length bucket plans (:mod:`turnip.generate_bucket`: the past padded and
masked by a rewrite of the graph) and comes here only for a graph that
rewrite cannot mask, or when asked (``past_buckets=None``).

WHY one plan per past length: a plan is static, and the cache of this
convention grows by one position every token, so each decode step has other
shapes. Without an ``attention_mask`` input (the fixtures have none) a longer
past padded with zeros would change attention unless the graph is rewritten;
one plan per length is exact as it is. Plans are made when first
needed by a ``plan_for(batch, seq, past)`` callable (``turnip-run`` and
``Session.generate`` plan through :mod:`turnip.autoplan`, whose cache makes
the second generation free) and each is loaded once, run once and closed,
its weights copied from the first plan's (same model file), not read from
the files again (``weight_loads`` counts file loads),
and the presents are fed back whole as the next pasts (the convention copies
the whole cache per token; a static-cache export keeps it as state instead,
see :mod:`turnip.session_generate`).

The prompt pass runs a separate prefill graph (optimum's
``decoder_model.onnx``, ``--prefill-model``) when given, else this graph with
an empty past.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from .generate import CacheConvention, DecoderSignature, GenerateError
from .plan import RELOAD, Plan
from .run import LoadedPlan, _node_bytes

PlanFor = Callable[[int, int, "int | None"], Plan]  # (batch, seq, past) -> the decoder's plan for those dims


@dataclass(frozen=True)
class DimNames:
    """The symbolic dims of a past/present decoder's inputs: batch and sequence of input_ids, past length of the cache."""

    batch: str | None
    seq: str | None
    past: str | None

    @staticmethod
    def of(model_path: str, sig: DecoderSignature) -> "DimNames":
        from .onnx_lazy import load_model_lazily

        m = load_model_lazily(model_path)  # the structure only: inline weights stay in the file (not read per generation)
        shapes = {vi.name: [d.dim_param or None for d in vi.type.tensor_type.shape.dim] for vi in m.graph.input}
        ids = shapes.get(sig.input_ids, [])
        past = shapes.get(sig.slots[0].past, []) if sig.slots else []
        return DimNames(ids[0] if ids else None, ids[1] if len(ids) > 1 else None, past[2] if len(past) > 2 else None)

    def bind(self, base: Mapping[str, int], batch: int, seq: int, past: int | None) -> dict[str, int]:
        dims = dict(base)
        for name, value in ((self.batch, batch), (self.seq, seq), (self.past, past)):
            if name is not None and value is not None:
                dims[name] = value
        return dims


class PastPlanRunner:
    """A :class:`turnip.generate.Runner` over one loaded plan per (batch, seq, past), made by ``plan_for``."""

    def __init__(self, plan_for: PlanFor, model_path: str, *, backend: Any = "numpy", order: str = "dynamic", seed: int = 0,
                 verify_weights: bool = True, first: LoadedPlan | None = None) -> None:
        self.plan_for = plan_for
        self.model_path = model_path
        self.backend, self.order, self.seed, self.verify_weights = backend, order, seed, verify_weights
        self.first = first  # a plan already loaded by the caller (its session's), used when its shapes match
        self.input_names: list[str] | None = None
        self.plans_loaded = 0
        self.weight_loads = 0
        self.weight_bytes_at_load = 0
        self.runs = 0
        self.cache_bytes_fed = 0
        self.bytes_reloaded = 0
        self.h2d: Any = None  # a turnip.session_generate.H2DMeter timing the reloads of the plans loaded here

    def _shapes_of(self, lp: LoadedPlan) -> dict[str, tuple[int, ...]]:
        ts = lp.plan.tensors
        return {ts[i].name: tuple(ts[i].shape) for i in lp.plan.inputs}

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        ids = np.asarray(feeds["input_ids"])
        pasts = [k for k in feeds if k != "input_ids" and np.ndim(feeds[k]) == 4]
        past = int(np.shape(feeds[pasts[0]])[2]) if pasts else None
        want = {k: tuple(np.shape(v)) for k, v in feeds.items()}
        lp = self.first if self.first is not None and self._shapes_of(self.first) == want else None
        owned = lp is None
        if lp is None:
            plan = self.plan_for(int(ids.shape[0]), int(ids.shape[1]), past)
            lp = LoadedPlan(plan, backend=self.backend, order=self.order, seed=self.seed, model_path=self.model_path,
                            verify_weights=self.verify_weights, weights_from=self.first,  # weights from the first plan, not the files
                            shared=None if self.first is None else self.first.shared)  # (or the session's weight store and arena)
            self.plans_loaded += 1
            if self.h2d is not None:
                self.h2d.attach(lp)
            self.weight_loads += lp.weight_loads
            self.weight_bytes_at_load += lp.source_bytes_at_load
        try:
            names = {lp.plan.tensors[i].name for i in lp.plan.inputs}
            out = lp.run({k: v for k, v in feeds.items() if k in names})
            self.runs += 1
            self.cache_bytes_fed += sum(int(np.asarray(feeds[k]).nbytes) for k in pasts)
            self.bytes_reloaded += sum(_node_bytes(lp.plan, n) for n in lp.plan.nodes if n.kind == RELOAD)
            return out
        finally:
            if owned:
                lp.close()


#: Layout engine of the per-past-length plans: the greedy layout plans a small decoder step in a
#: third of the default search's time, and a generation of N tokens needs N - 1 plans.
PAST_PLAN_SOLVER = "greedy"


def past_plan_for(model_path: str, gpu_mem: str, base_dims: Mapping[str, int], names: DimNames, *,
                  gpus: int = 1, use_cache: bool = True, folder: str | None = None, solver: str = PAST_PLAN_SOLVER) -> PlanFor:
    """``plan_for`` through :func:`turnip.autoplan.plan_model` (planned once per shape, cached on disk)."""
    from .autoplan import plan_model

    def plan_for(batch: int, seq: int, past: int | None) -> Plan:
        dims = names.bind(base_dims, batch, seq, past)
        return plan_model(model_path, gpu_mem, [f"{k}={v}" for k, v in sorted(dims.items())], (), gpus,
                          use_cache=use_cache, folder=folder, solver=solver).plan

    return plan_for


def check_past_present(sig: DecoderSignature, prefill_sig: DecoderSignature | None) -> None:
    """GenerateError unless ``sig`` is a past/present decoder and the prefill graph (if any) makes its cache."""
    if sig.convention is not CacheConvention.PAST_PRESENT:
        raise GenerateError("expected a past/present decoder (past_key_values inputs without cache_position)")
    if prefill_sig is not None and prefill_sig.convention is CacheConvention.STATIC:
        raise GenerateError("the prefill model is a static-cache decoder; pass the prompt graph without past inputs (optimum's decoder_model.onnx)")


def model_of(lp: LoadedPlan, plan_path: str | None) -> str:
    """The model path a loaded plan was made from, on this machine."""
    from .plan import resolve_model_path

    if lp.initial is not None and getattr(lp.initial, "model_path", None):
        return str(lp.initial.model_path)
    if os.path.isabs(lp.plan.model_path) or plan_path is None:
        return lp.plan.model_path
    return resolve_model_path(lp.plan, plan_path)
