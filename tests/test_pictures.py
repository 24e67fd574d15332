"""The pictures in docs/img/ (made by docs/make_pictures.py) show what they claim: checked by value."""

from __future__ import annotations

import json
import os

from click.testing import CliRunner
from turnip.plan import COMPUTE, read_plan

from turnipc.plot import memory_series
from turnipc.timeline import lanes, makespan_us, timeline_cmd

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMG = os.path.join(ROOT, "docs", "img")


def _xs(path):
    with open(path) as f:
        return [e for e in json.load(f)["traceEvents"] if e["ph"] == "X"]


def test_docs_run_trace_has_every_node_of_its_plan():
    plan = read_plan(os.path.join(IMG, "gpt2-25.plan"))
    xs = _xs(os.path.join(IMG, "run-trace.json"))
    assert sorted(e["args"]["node"] for e in xs) == list(range(len(plan.nodes)))
    for e in xs:
        node = plan.nodes[e["args"]["node"]]
        assert e["args"]["kind"] == node.kind
        if node.kind == COMPUTE:
            assert e["name"] == node.name and e["args"]["op"] == node.op
        assert e["dur"] >= 0
    reloads = [e for e in xs if e["args"]["kind"] == "reload"]
    assert sum(e["args"]["bytes"] for e in reloads) == plan.stats.reload_bytes
    sim = _xs(os.path.join(IMG, "sim-trace.json"))
    assert sorted(e["args"]["node"] for e in sim) == list(range(len(plan.nodes)))


def test_docs_memory_plot_series_respect_the_plan():
    plan = read_plan(os.path.join(IMG, "gpt2-25.plan"))
    dev = memory_series(plan)["devices"][0]
    assert max(dev["total"]) == plan.stats.max_live_bytes_per_device[0]
    assert max(dev["total"]) <= plan.stats.budget_bytes
    assert sum(dev["reload"]) == plan.stats.reload_bytes


def test_timeline_command_reads_both_traces(tmp_path):
    real, sim = os.path.join(IMG, "run-trace.json"), os.path.join(IMG, "sim-trace.json")
    r = CliRunner().invoke(timeline_cmd, [sim, real, "--png", str(tmp_path / "t.png"), "--json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.output)
    assert [row["trace"] for row in rows] == ["sim-trace.json", "run-trace.json"]
    with open(real) as f:
        tr = json.load(f)
    assert rows[1]["makespan_us"] == makespan_us(tr) > 0
    busy = {f"dev{lane.device}/{lane.queue}": lane.busy_us for lane in lanes(tr)}
    assert rows[1]["busy_us"] == busy and set(busy) >= {"dev0/compute", "dev0/h2d"}
    assert (tmp_path / "t.png").stat().st_size > 10_000
    bad = CliRunner().invoke(timeline_cmd, [str(tmp_path / "t.png"), "--png", str(tmp_path / "u.png")])
    assert bad.exit_code == 2 and "cannot read trace" in bad.output
