"""Memory plots: the series reconstructed from the plan alone, the PNG and the self-contained HTML."""

from __future__ import annotations

import json
import re

import click
import numpy as np
import pytest
from click.testing import CliRunner
from synthetic import mlp_taskgraph, skip_taskgraph

from turnipc.errors import BudgetError
from turnipc.planner import PlanOptions, build_plan
from turnipc.plot import KINDS, inspect_plot_options, memory_series, plot_memory, write_plots
from turnipc.units import Budget

GRAPHS = {"mlp": mlp_taskgraph, "skip": skip_taskgraph, "skip_wide": lambda: skip_taskgraph(layers=12, batch=64)}


def _plan(name, budget, gpus=1, prefetch=True):
    try:
        return build_plan(GRAPHS[name](), PlanOptions(budget, gpus=gpus, prefetch=prefetch))
    except BudgetError:
        pytest.skip("budget below the lower bound for this graph")


@pytest.mark.parametrize("name", sorted(GRAPHS))
@pytest.mark.parametrize("budget", [Budget(fraction=1.0), Budget(fraction=0.5), Budget(fraction=0.25), Budget(minimum=True)])
@pytest.mark.parametrize("gpus", [1, 2])
@pytest.mark.parametrize("prefetch", [True, False])
def test_series_max_equals_max_live_and_fits_budget(name, budget, gpus, prefetch):
    plan = _plan(name, budget, gpus, prefetch)
    s = memory_series(plan)
    n = max(nd.pos for nd in plan.nodes) + 1
    assert list(s["x"]) == list(range(-1, n)) and len(s["labels"]) == n + 1
    assert len(s["devices"]) == gpus
    for dv in s["devices"]:
        d = dv["device"]
        stacked = sum(dv[k] for k in KINDS)
        assert np.array_equal(stacked, dv["total"])
        assert all((dv[k] >= 0).all() for k in KINDS)
        assert int(stacked.max()) == plan.stats.max_live_bytes_per_device[d]
        assert stacked.max() <= dv["arena"] <= dv["budget"] == plan.stats.budget_bytes
        assert dv["total"][-1] > 0 or d != plan.outputs[0].mem, "the graph output is resident when the run ends"
    # transfer bars add up to the plan's totals
    for kind, key in (("reload", "reload_bytes"), ("offload", "offload_bytes"), ("move_in", "move_bytes"), ("move_out", "move_bytes")):
        assert sum(int(dv[kind].sum()) for dv in s["devices"]) == getattr(plan.stats, key)


@pytest.mark.parametrize("name", sorted(GRAPHS))
@pytest.mark.parametrize("gpus", [1, 2])
def test_full_budget_has_no_reloaded_bytes(name, gpus):
    s = memory_series(_plan(name, Budget(fraction=1.0), gpus))
    for dv in s["devices"]:
        assert not dv["reloaded"].any() and not dv["reload"].any() and not dv["offload"].any()


def test_tight_budget_shows_reloads_and_offloads():
    plan = _plan("skip_wide", Budget(fraction=0.25))
    (dv,) = memory_series(plan)["devices"]
    assert dv["reloaded"].max() > 0 and dv["offload"].sum() > 0
    # reloaded bytes appear exactly where a reload wrote them: at the first reload's position
    first = min(n.pos for n in plan.nodes if n.kind == "reload")
    assert dv["reloaded"][first] == 0 and dv["reloaded"][first + 1] > 0  # index = pos + 1
    assert dv["reload"][first + 1] == plan.nodes[first].bytes


def test_png_and_html(tmp_path):
    plan = _plan("skip_wide", Budget(fraction=0.25), gpus=2)
    png, html = tmp_path / "m.png", tmp_path / "m.html"
    data = plot_memory(plan, str(png))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert len(data["devices"]) == 2
    assert write_plots(plan, html=str(html)) == [str(html)]
    page = html.read_text()
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", page), "must be self-contained (no network)"
    assert "<script>" in page and "getContext" in page and "mousemove" in page
    blob = re.search(r"const DATA = (\{.*?\});\n", page).group(1)
    back = json.loads(blob)
    assert back["devices"][1]["total"] == data["devices"][1]["total"].tolist()


def test_inspect_plot_options(tmp_path):
    plan = _plan("mlp", Budget(fraction=0.5))

    @click.command()
    @inspect_plot_options
    def cmd(plot_png, plot_html):
        click.echo(",".join(write_plots(plan, png=plot_png, html=plot_html)))

    png, html = tmp_path / "a.png", tmp_path / "a.html"
    res = CliRunner().invoke(cmd, ["--plot", str(png), "--html", str(html)], catch_exceptions=False)
    assert res.exit_code == 0 and png.exists() and html.exists()
    assert "--plot" in CliRunner().invoke(cmd, ["--help"]).stdout
    assert CliRunner().invoke(cmd, []).stdout.strip() == ""
