"""docs/ must stay true: the CLI page is generated from the commands, the plan-format page names every field."""

from __future__ import annotations

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "docs"))


def test_cli_md_matches_the_commands():
    import gen_cli

    with open(os.path.join(ROOT, "docs", "cli.md")) as f:
        assert f.read() == gen_cli.render(), "docs/cli.md is stale: run `python docs/gen_cli.py`"


def test_plan_format_md_documents_every_field():
    from synthetic import skip_taskgraph
    from turnip.plan import Plan

    from turnipc.planner import PlanOptions, build_plan
    from turnipc.units import Budget

    plan: Plan = build_plan(skip_taskgraph(), PlanOptions(Budget(minimum=True), gpus=2))
    obj = plan.to_obj()
    doc = open(os.path.join(ROOT, "docs", "plan-format.md")).read()
    names = set(obj) | set(obj["model"]) | set(obj["options"]) | set(obj["stats"])
    names |= set(obj["tensors"][0]) | set(obj["memories"][0]) | set(obj["placements"][0])
    for n in obj["nodes"]:
        names |= set(n)
    missing = sorted(k for k in names if f"`{k}`" not in doc)
    assert not missing, f"docs/plan-format.md does not document: {missing}"
