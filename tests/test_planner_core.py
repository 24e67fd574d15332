"""Planner and verifier on TaskGraphs built directly (no ONNX import involved)."""

from __future__ import annotations

import dataclasses

import pytest
from synthetic import mlp_taskgraph, skip_taskgraph
from turnip.plan import COMPUTE, Loc, decode_plan, encode_plan

from turnipc.errors import BudgetError
from turnipc.planner import PlanOptions, build_plan
from turnipc.units import Budget
from turnipc.verify import VerifyError, verify_plan

GRAPHS = {"mlp": mlp_taskgraph, "skip": skip_taskgraph}


@pytest.mark.parametrize("name", sorted(GRAPHS))
@pytest.mark.parametrize("budget", [Budget(fraction=1.0), Budget(fraction=0.5), Budget(fraction=0.25), Budget(minimum=True)])
@pytest.mark.parametrize("gpus", [1, 2])
def test_plans_verify_within_budget(name, budget, gpus):
    g = GRAPHS[name]()
    full = build_plan(g, PlanOptions(Budget(fraction=1.0), gpus=gpus))
    below_largest_task = bool(budget.fraction) and (
        budget.resolve(full.stats.no_offload_peak_bytes) < full.stats.lower_bound_bytes)
    plan = build_plan(g, PlanOptions(budget, gpus=gpus))
    if below_largest_task:  # only the partition pass makes such a budget plan
        assert plan.stats.tiling["tiled_ops"] > 0
    verify_plan(plan)
    for m in plan.gpu_memories():
        assert m.size <= m.budget == plan.stats.budget_bytes
    assert plan.stats.peak_bytes <= plan.stats.budget_bytes
    assert plan.stats.lower_bound_bytes <= plan.stats.peak_bytes <= plan.stats.no_offload_peak_bytes or budget.fraction == 1.0


def test_full_budget_needs_no_transfers_and_tight_budget_does():
    g = skip_taskgraph()
    full = build_plan(g, PlanOptions(Budget(fraction=1.0)))
    assert full.stats.nodes["reload"] == 0 and full.stats.nodes["offload"] == 0
    tight = build_plan(g, PlanOptions(Budget(minimum=True)))
    assert tight.stats.offload_bytes > 0, "skip activations must be offloaded at the minimum budget"
    assert tight.stats.reload_bytes >= tight.stats.offload_bytes
    assert tight.stats.peak_bytes < full.stats.peak_bytes


def test_weights_are_dropped_not_written_back():
    plan = build_plan(mlp_taskgraph(), PlanOptions(Budget(minimum=True)))
    weights = {i for i, t in enumerate(plan.tensors) if t.kind == "weight"}
    offloaded = {n.dst.tensor for n in plan.nodes if n.kind == "offload"}
    assert plan.stats.nodes["reload"] > 0
    assert not (weights & offloaded), "a weight with a clean host copy was copied back"


def test_budget_below_lower_bound_is_tiled_and_a_tiny_one_refused():
    g = mlp_taskgraph()
    lb = build_plan(g, PlanOptions(Budget(fraction=1.0))).stats.lower_bound_bytes
    plan = build_plan(g, PlanOptions(Budget(bytes=lb - 1)))
    verify_plan(plan)
    assert plan.stats.tiling["tiled_ops"] > 0 and plan.stats.peak_bytes < lb
    with pytest.raises(BudgetError, match="smallest feasible"):
        build_plan(g, PlanOptions(Budget(bytes=2048)))


def test_planning_is_byte_identical_and_round_trips():
    g = skip_taskgraph()
    opts = PlanOptions(Budget(fraction=0.3), gpus=2)
    a, b = encode_plan(build_plan(g, opts)), encode_plan(build_plan(skip_taskgraph(), opts))
    assert a == b
    assert encode_plan(decode_plan(a)) == a


# ---- planted bugs: the verifier must catch each --------------------------------

def _tight_plan():
    plan = build_plan(skip_taskgraph(), PlanOptions(Budget(minimum=True)))
    verify_plan(plan)
    return plan


def _replace_node(plan, i, **changes):
    nodes = list(plan.nodes)
    nodes[i] = dataclasses.replace(nodes[i], **changes)
    return dataclasses.replace(plan, nodes=nodes)


def test_verifier_catches_dropped_dependency():
    plan = _tight_plan()
    caught = 0
    tried = 0
    for node in plan.nodes:
        for d in node.deps:
            bad = _replace_node(plan, node.id, deps=tuple(x for x in node.deps if x != d))
            tried += 1
            try:
                verify_plan(bad)
            except VerifyError as e:
                assert "no dependency path" in str(e) or "reads tensor" in str(e)
                caught += 1
    assert tried > 0 and caught > 0
    # removing all deps of every reload must always be caught (it reuses bytes or reads offloaded data)
    reload = next(n for n in plan.nodes if n.kind == "reload" and n.deps)
    with pytest.raises(VerifyError):
        verify_plan(_replace_node(plan, reload.id, deps=()))


def test_verifier_catches_overlapping_offsets():
    plan = _tight_plan()
    comp = [n for n in plan.nodes if n.kind == COMPUTE and n.inputs[0] is not None]
    node = comp[len(comp) // 2]
    src = node.inputs[0]
    out = node.outputs[0]
    bad = _replace_node(plan, node.id, outputs=(Loc(out.mem, src.offset, out.tensor),))
    with pytest.raises(VerifyError):
        verify_plan(bad)


def test_verifier_catches_skipped_reload():
    plan = _tight_plan()
    r = next(n for n in plan.nodes if n.kind == "reload" and plan.tensors[n.dst.tensor].kind == "activation")
    # turn the reload into a copy of the wrong (a never-written) host range: the reader then sees garbage
    bad_src = Loc(r.src.mem, r.src.offset + 256 * 1024 * 1024 % max(1, plan.host_memory().size), r.src.tensor)
    with pytest.raises(VerifyError):
        verify_plan(_replace_node(plan, r.id, inputs=(bad_src,)))
    # or remove it entirely: dependents keep their deps, the data never arrives
    nodes = [n for n in plan.nodes if n.id != r.id]
    remap = {n.id: k for k, n in enumerate(nodes)}
    nodes = [dataclasses.replace(n, id=remap[n.id], deps=tuple(sorted(remap[d] for d in n.deps if d in remap))) for n in nodes]
    with pytest.raises(VerifyError, match="reads tensor"):
        verify_plan(dataclasses.replace(plan, nodes=nodes))


def test_verifier_catches_budget_overflow():
    plan = _tight_plan()
    mems = list(plan.memories)
    mems[0] = dataclasses.replace(mems[0], budget=mems[0].size - 1)
    with pytest.raises(VerifyError, match="over its budget"):
        verify_plan(dataclasses.replace(plan, memories=mems))
