"""`turnipc diff`: semantic plan comparison, thresholds, exit codes and output formats."""

from __future__ import annotations

import dataclasses
import json
import sys

import msgpack
import pytest
from click.testing import CliRunner
from synthetic import mlp_taskgraph, skip_taskgraph
from turnip.plan import encode_plan, write_plan

from turnipc.diff import diff_cmd, diff_plans, parse_threshold, read_plan_lenient
from turnipc.planner import PlanOptions, build_plan
from turnipc.units import Budget

QUARTER = PlanOptions(Budget(fraction=0.25))


@pytest.fixture(scope="module")
def plans(tmp_path_factory):
    d = tmp_path_factory.mktemp("plans")
    made = {
        "base": build_plan(mlp_taskgraph(), QUARTER),
        "again": build_plan(mlp_taskgraph(), QUARTER),  # planned twice: byte-identical
        "deeper": build_plan(mlp_taskgraph(layers=7), QUARTER),
        "wider": build_plan(mlp_taskgraph(hidden=320), QUARTER),
        "skip_full": build_plan(skip_taskgraph(), PlanOptions(Budget(fraction=1.0))),
        "skip_quarter": build_plan(skip_taskgraph(), QUARTER),
    }
    paths = {}
    for k, p in made.items():
        paths[k] = str(d / f"{k}.plan")
        write_plan(p, paths[k])
    return made, paths, d


def run(*args):
    res = CliRunner().invoke(diff_cmd, [str(a) for a in args], catch_exceptions=False)
    return res


def run_json(*args):
    res = run(*args, "--json")
    return res.exit_code, json.loads(res.stdout)


def test_identical_plans_exit_0(plans):
    made, paths, _ = plans
    d = diff_plans(made["base"], made["again"], device=None)
    assert d.identical_bytes and not d.changed and d.exit_code == 0
    assert not any(d.tensors.values()) and not d.changed_metrics()
    code, o = run_json(paths["base"], paths["again"])
    assert code == 0 and o["changed"] is False and o["exit_code"] == 0
    assert all(m["delta"] == 0 for m in o["metrics"].values() if m["delta"] is not None)
    assert all(v == [] for v in o["tensors"].values())
    res = run(paths["base"], paths["again"], "--max-peak-increase", "0%")
    assert res.exit_code == 0 and "no change" in res.stdout


def test_one_more_layer_adds_tensors(plans):
    made, paths, _ = plans
    old, new = made["base"], made["deeper"]
    code, o = run_json(paths["base"], paths["deeper"], "--device", "none")
    assert code == 1 and o["changed"] is True
    t = o["tensors"]
    assert {e["name"] for e in t["added"]} == {"w6", "y6", "r6"}
    assert t["added"][0]["name"] == "w6", "largest change first"
    assert t["removed"] == [] and t["resized"] == []
    assert {"name": "r5", "old": "output", "new": "activation", "bytes": 8 * 256 * 4} in t["kind_changed"]
    m = o["metrics"]
    for key in ("peak_bytes", "budget_bytes", "no_offload_peak_bytes", "reload_bytes", "lower_bound_bytes"):
        assert m[key]["old"] == getattr(old.stats, key) and m[key]["new"] == getattr(new.stats, key)
        assert m[key]["delta"] == getattr(new.stats, key) - getattr(old.stats, key)
    assert m["nodes.compute"]["delta"] == 2
    assert m["transfer_bytes"]["delta"] == sum(getattr(new.stats, k) - getattr(old.stats, k) for k in ("offload_bytes", "reload_bytes", "move_bytes"))
    assert m["budget_bytes"]["pct"] == pytest.approx(100 * (new.stats.budget_bytes / old.stats.budget_bytes - 1))


def test_wider_hidden_resizes_tensors(plans):
    made, paths, _ = plans
    old, new = made["base"], made["wider"]
    d = diff_plans(old, new, device=None)
    assert d.exit_code == 1
    resized = d.tensors["resized"]
    assert {e["name"] for e in resized} == {f"w{i}" for i in range(6)} | {f"y{i}" for i in range(6)} | {f"r{i}" for i in range(6)} | {"x"}
    w0 = next(e for e in resized if e["name"] == "w0")
    assert w0["old"]["shape"] == [256, 256] and w0["new"]["shape"] == [320, 320]
    assert w0["delta_bytes"] == (320 * 320 - 256 * 256) * 4
    deltas = [abs(e["delta_bytes"]) for e in resized]
    assert deltas == sorted(deltas, reverse=True)
    assert not d.tensors["added"] and not d.tensors["removed"]
    peak = d.metrics["peak_bytes"]
    assert (peak.old, peak.new) == (old.stats.peak_bytes, new.stats.peak_bytes)
    assert peak.delta == new.stats.peak_bytes - old.stats.peak_bytes > 0


def test_threshold_crossed_exit_2(plans):
    made, paths, _ = plans
    pct = 100 * (made["wider"].stats.peak_bytes / made["base"].stats.peak_bytes - 1)
    code, o = run_json(paths["base"], paths["wider"], "--max-peak-increase", "5%", "--device", "none")
    assert code == 2 and o["exit_code"] == 2
    (th,) = o["thresholds"]
    assert th["name"] == "max-peak-increase" and th["crossed"] is True and th["limit"] == "5%"
    assert th["value"] == pytest.approx(pct)
    # a limit above the increase passes; absolute limits are bytes
    assert run(paths["base"], paths["wider"], "--max-peak-increase", f"{pct + 1:.0f}%", "--device", "none").exit_code == 1
    assert run(paths["base"], paths["wider"], "--max-peak-increase", "64M", "--device", "none").exit_code == 1
    assert run(paths["base"], paths["wider"], "--max-peak-increase", "1K", "--device", "none").exit_code == 2
    # a decrease never crosses an increase threshold
    assert run(paths["wider"], paths["base"], "--max-peak-increase", "0%", "--device", "none").exit_code == 1


def test_transfer_threshold_from_zero(plans):
    _, paths, _ = plans
    code, o = run_json(paths["skip_full"], paths["skip_quarter"], "--max-transfer-increase", "10%", "--device", "none")
    assert code == 2
    assert o["metrics"]["transfer_bytes"]["old"] == 0 and o["metrics"]["transfer_bytes"]["pct"] == "inf"
    assert o["options"]["gpu_mem"] == {"old": "100%", "new": "25%"}
    assert o["tensors"]["newly_reloaded"], "weights reloaded at 25% but not at 100%"


def test_makespan_line(plans, monkeypatch):
    made, paths, _ = plans
    try:
        import turnipc.simulate.sim  # noqa: F401
        have_sim = True
    except Exception:
        have_sim = False
    d = diff_plans(made["base"], made["wider"])
    m = d.metrics["makespan_s"]
    if have_sim:
        assert m.old > 0 and m.new > 0
    # without the simulator the diff still works and says so
    monkeypatch.setitem(sys.modules, "turnipc.simulate.sim", None)
    d = diff_plans(made["base"], made["wider"], thresholds=[parse_threshold("max-makespan-increase", "5%")])
    assert d.metrics["makespan_s"].old is None
    assert any(n.startswith("makespan: n/a") for n in d.notes)
    assert d.thresholds[0]["value"] is None and not d.thresholds[0]["crossed"]
    assert d.exit_code == 1
    assert "makespan: n/a" in run(paths["base"], paths["wider"]).stdout


@pytest.mark.parametrize("what", ["missing", "truncated", "text", "other_msgpack"])
def test_unreadable_exit_3(plans, what):
    _, paths, d = plans
    bad = d / f"bad_{what}.plan"
    if what == "truncated":
        data = open(paths["base"], "rb").read()
        bad.write_bytes(data[: len(data) // 2])
    elif what == "text":
        bad.write_text("this is not a plan\n")
    elif what == "other_msgpack":
        bad.write_bytes(msgpack.packb({"hello": 1}))
    res = run(paths["base"], bad, "--json")
    assert res.exit_code == 3
    assert json.loads(res.stdout)["exit_code"] == 3
    assert "error:" in res.stderr
    assert run(bad, paths["base"]).exit_code == 3


def test_bad_options_exit_3(plans):
    _, paths, _ = plans
    assert run(paths["base"], paths["wider"], "--max-peak-increase", "lots").exit_code == 3
    assert run(paths["base"]).exit_code == 3


def test_markdown_and_text(plans):
    _, paths, _ = plans
    res = run(paths["base"], paths["deeper"], "--markdown", "--device", "none", "--max-peak-increase", "5%")
    md = res.stdout
    assert res.exit_code == 1
    assert md.startswith("### ")
    assert "| metric | old | new | change | % |" in md and "| --- | ---: | ---: | ---: | ---: |" in md
    assert "| **budget_bytes** |" in md and "| peak_bytes |" in md  # changed rows are bold, unchanged plain
    assert "<details><summary>added tensors (3)</summary>" in md and "`w6: 256 KiB weight float32[256, 256]`" in md
    assert "| --max-peak-increase | 5% |" in md
    txt = run(paths["base"], paths["wider"], "--device", "none", "--top", "2").stdout
    assert "resized (19):" in txt and "... and 17 more" in txt and "peak_bytes" in txt


def test_other_format_version_compares_what_both_have(plans):
    made, paths, d = plans
    o = made["wider"].to_obj()
    o["version"] = 2
    del o["stats"]["lower_bound_bytes"]
    o["nodes"] = "a v2 node encoding this reader does not know"
    p = d / "v2.plan"
    p.write_bytes(msgpack.packb(o, use_bin_type=True))
    new = read_plan_lenient(str(p))
    assert new.version == 2
    dd = diff_plans(made["base"], new, device=None)
    assert any("versions differ" in n for n in dd.notes)
    assert any(s.startswith("lower_bound_bytes") for s in dd.not_compared)
    assert any(s.startswith("nodes") for s in dd.not_compared)
    assert dd.metrics["peak_bytes"].delta == made["wider"].stats.peak_bytes - made["base"].stats.peak_bytes
    assert dd.tensors["resized"] and dd.exit_code == 1
    assert run(paths["base"], p, "--device", "none").exit_code == 1


def test_structure_only_change_is_a_change(plans):
    made, _, _ = plans
    base = made["base"]
    nodes = list(base.nodes)
    last = nodes[-1]
    nodes[-1] = dataclasses.replace(last, deps=tuple(sorted(set(last.deps) | {0})))  # a redundant dependency
    other = dataclasses.replace(base, nodes=nodes)
    assert encode_plan(other) != encode_plan(base)
    d = diff_plans(base, other, device=None)
    assert d.changed and d.exit_code == 1 and not d.changed_metrics()
    assert d.sections_changed == ["nodes"]
    assert any("differ in nodes" in n for n in d.notes)


def test_help_documents_exit_codes_and_ci():
    out = CliRunner().invoke(diff_cmd, ["--help"]).stdout
    for s in ("Exit codes:", "0  no change", "2  a threshold was crossed", "3  an input is unreadable",
              "--max-peak-increase 5%", "turnipc diff plans/golden.plan new.plan"):
        assert s in out


def test_parse_threshold():
    t = parse_threshold("max-peak-increase", "64M")
    assert (t.limit, t.relative) == (64 * 10**6, False)  # M = 10^6, MiB = 2^20 (turnip.units)
    assert parse_threshold("max-peak-increase", "64MiB").limit == 64 << 20
    t = parse_threshold("max-makespan-increase", "20ms")
    assert t.limit == pytest.approx(0.02) and not t.relative
    assert parse_threshold("max-transfer-increase", "10%").limit == 10.0
    with pytest.raises(ValueError):
        parse_threshold("max-peak-increase", "-5%")
