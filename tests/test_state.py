"""State in the plan (issue 13): KV-cache inputs found or named, their home in host memory, kept between runs.

Hand-built graphs for the residency rule (exact occupants), the fixtures'
decoders for detection and for plans end to end, and the plan format.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from click.testing import CliRunner
from turnip.plan import Loc, StateTensor, decode_plan, encode_plan
from turnip.run import LoadedPlan

import turnipc
from tests.tiny_graphs import U, graph, value
from turnipc.cli import main as plan_main
from turnipc.importer import import_model
from turnipc.residency import HOST as RES_HOST
from turnipc.residency import simulate
from turnipc.state import StateError, StatePair, find_state
from turnipc.taskgraph import Task

DEC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "models", "decoders")


def _cache_graph():
    """x (1U) and a 2U cache K; a = x + K; K2 = ScatterND(K, a) (the updated cache, an output); b = Relu(a) (2U); y = Relu(b).

    Working sets: t0 {x,K,a} 4U, t1 {K,a,K2} 5U, t2 {a,b} 3U, t3 {b,y} 3U.
    """
    vals = [value("x", 1, "input"), value("K", 2, "input"), value("a", 1), value("K2", 2, "output"), value("b", 2),
            value("y", 1, "output")]
    tasks = [
        Task(0, "t0", "Add", "", {}, ("x", "K"), ("a",), 0, 0),
        Task(1, "t1", "ScatterND", "", {}, ("K", "a", "a"), ("K2",), 0, 0),
        Task(2, "t2", "Relu", "", {}, ("a",), ("b",), 0, 0),
        Task(3, "t3", "Relu", "", {}, ("b",), ("y",), 0, 0),
    ]
    return graph(vals, tasks, ["x", "K"], ["K2", "y"])


def _occupants(res, storage):
    return [(o.device, o.writer, o.to_end) for o in res.occupants if o.storage == storage]


def test_find_state_on_a_hand_built_graph():
    g = _cache_graph()
    assert find_state(g) == [StatePair("K", "K2", "scatter")]
    assert find_state(g, auto=False) == []
    assert find_state(g, ("x",), auto=False) == [StatePair("x", None, "named")]
    with pytest.raises(StateError, match="'z' is not a graph input"):
        find_state(g, ("z",))


def test_residency_keeps_state_to_the_end_when_it_fits():
    g = _cache_graph()
    order = [0, 1, 2, 3]
    plain = simulate(g, order, [0] * 4, [100 * U])
    assert _occupants(plain, "K") == [(0, None, False)]  # preloaded, free after t1: its bytes are reused
    res = simulate(g, order, [0] * 4, [100 * U], state=frozenset({"K"}))
    # preloaded and resident to the end (never reused), plus its home in host memory for the whole run
    assert sorted(_occupants(res, "K")) == sorted([(0, None, True), (RES_HOST, None, True)])


def test_residency_drops_state_first_when_the_budget_is_small():
    g = _cache_graph()
    res = simulate(g, [0, 1, 2, 3], [0] * 4, [5 * U], state=frozenset({"K"}))
    # at 5U, K cannot stay beside b (t2 needs a, b; the outputs K2 stay): dropped after t1 for free (its home is clean)
    assert sorted(_occupants(res, "K")) == sorted([(0, None, False), (RES_HOST, None, True)])
    assert res.bytes_offloaded == 0 or all(ev.storage != "K" for ev in res.events if ev.kind == "offload")


@pytest.mark.parametrize("model, how", [("llama_static", "scatter"), ("gpt2_static", "scatter"), ("llama_past", "append"), ("gpt2_past", "append")])
def test_find_state_on_the_decoder_exports(model, how):
    dims = {"batch": 1, "seq": 1, "past": 4}
    g = import_model(os.path.join(DEC, f"{model}.onnx"), dims if "past" in model else {"batch": 1, "seq": 1}, {})
    pairs = find_state(g)
    assert [(p.input, p.update, p.how) for p in pairs] == [
        (f"past_key_values.{i}.{kv}", f"present.{i}.{kv}", how) for i in range(2) for kv in ("key", "value")
    ]


def test_prefill_graph_has_no_state():
    g = import_model(os.path.join(DEC, "gpt2_prefill.onnx"), {"batch": 1, "seq": 4}, {})
    assert find_state(g) == []


@pytest.mark.parametrize("gpu_mem", ["100%", "25%"])
def test_plan_homes_are_never_written(gpu_mem):
    """Each state's home is a host placement no node writes; at 100% its arena copy is never overwritten either."""
    plan = turnipc.plan(os.path.join(DEC, "llama_static.onnx"), gpu_mem=gpu_mem, dims={"batch": 8, "seq": 1})
    assert [plan.tensors[s.input].name for s in plan.state] == [f"past_key_values.{i}.{kv}" for i in range(2) for kv in ("key", "value")]
    assert plan.options["state"] == [plan.tensors[s.input].name for s in plan.state]
    host = plan.host_memory()
    assert host is not None
    for st in plan.state:
        assert st.home.mem == host.id and st.home.tensor == st.input and st.how == "scatter"
        assert plan.tensors[st.update].name == plan.tensors[st.input].name.replace("past_key_values", "present")
        lo, hi = st.home.offset, st.home.offset + plan.tensors[st.input].nbytes
        for n in plan.nodes:
            for loc in n.outputs:
                if loc is not None and loc.mem == host.id:
                    assert loc.offset + plan.tensors[loc.tensor].nbytes <= lo or loc.offset >= hi, n.name
    lp = LoadedPlan(plan, backend="numpy")
    try:
        assert set(lp.keepable_inputs()) >= {plan.tensors[s.input].name for s in plan.state}
        if gpu_mem == "100%":
            assert all(len(lp.state_views(plan.tensors[s.input].name)) == 2 for s in plan.state)
    finally:
        lp.close()


def test_kept_state_is_refilled_from_its_home():
    """A run with the state kept equals a run with it fed, at a budget where the plan reuses its arena copy."""
    plan = turnipc.plan(os.path.join(DEC, "llama_static.onnx"), gpu_mem="25%", dims={"batch": 8, "seq": 1})
    rng = np.random.default_rng(0)
    feeds = {"input_ids": rng.integers(0, 256, (8, 1)), "cache_position": np.array([5])}
    cache = {plan.tensors[s.input].name: rng.standard_normal(plan.tensors[s.input].shape).astype(np.float32) for s in plan.state}
    with LoadedPlan(plan, backend="numpy") as lp:
        want = lp.run({**feeds, **cache})
        lp.run({**feeds, **{k: np.zeros_like(v) for k, v in cache.items()}})  # scribble over the arena
        for k, v in cache.items():
            for view in lp.state_views(k):
                view[...] = v
        got = lp.run(feeds, keep=list(cache))
        assert lp.state_bytes_refilled > 0  # this budget reuses some arena copy of the cache
        for k in want:
            np.testing.assert_array_equal(got[k], want[k])
        # write-back copies only the written position into the home (and the kept arena copy)
        n = lp.write_back_state((slice(None), slice(None), 5))
        assert n == sum(8 * 2 * 16 * 4 * len(lp.state_views(k)) for k in cache)
        for k in cache:
            home = lp.state_views(k)[0]
            np.testing.assert_array_equal(home[:, :, 5], want[k.replace("past_key_values", "present")][:, :, 5])


def test_plan_format_round_trip():
    plan = turnipc.plan(os.path.join(DEC, "gpt2_static.onnx"), gpu_mem="100%", dims={"batch": 1, "seq": 1})
    again = decode_plan(encode_plan(plan))
    assert again.state == plan.state and len(plan.state) == 4
    no_state = turnipc.plan(os.path.join(DEC, "gpt2_static.onnx"), gpu_mem="100%", dims={"batch": 1, "seq": 1}, auto_state=False)
    assert no_state.state == [] and b"state" not in encode_plan(no_state)
    st = StateTensor(0, None, Loc(1, 0, 0), "named")
    assert StateTensor.from_obj(st.to_obj()) == st


def test_cli_state_options(tmp_path):
    out = str(tmp_path / "p.plan")
    model = os.path.join(DEC, "gpt2_static.onnx")
    r = CliRunner().invoke(plan_main, ["plan", model, "--gpu-mem", "50%", "--dim", "batch=1", "--dim", "seq=1", "-o", out, "-q",
                                       "--no-auto-state", "--state", "past_key_values.1.value"])
    assert r.exit_code == 0, r.output
    plan = LoadedPlan(out, backend="numpy")
    try:
        assert [(plan.plan.tensors[s.input].name, s.how) for s in plan.plan.state] == [("past_key_values.1.value", "scatter")]
    finally:
        plan.close()
    r = CliRunner().invoke(plan_main, ["plan", model, "--gpu-mem", "50%", "--dim", "batch=1", "--dim", "seq=1", "-o", out, "--state", "nope"])
    assert r.exit_code == 2 and "'nope' is not a graph input" in r.stderr
