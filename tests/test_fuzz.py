"""Fuzzing the plan consumers (issue 15): only Turnip's own errors may come out.

A seeded mutator (tests/fuzz_plans.py) damages golden plans, by bytes and by
structure, and feeds each to the plan reader, the runtime's plan check (what
`turnipc verify` runs), `inspect`'s summaries and `diff`; a sample is also run
by the runtime. Bounded in time so `make test` stays fast; `make fuzz` runs
the long campaign with the same code.
"""

from __future__ import annotations

import fuzz_plans

SMALL = ("demo_mlp-25.plan", "demo_mlp-100.plan", "bert_dynamo23-50-2gpu.plan")


def _report(figures: dict) -> str:
    return "\n".join(figures["traceback_examples"]) or str(figures)


def test_fuzz_reader_check_inspect_diff(tmp_path, monkeypatch):
    monkeypatch.setenv("TURNIP_CACHE_DIR", str(tmp_path / "cache"))
    figures = fuzz_plans.fuzz(3000, seed=20261203, seconds=45, seeds=SMALL)
    assert figures["tracebacks"] == 0, _report(figures)
    assert figures["inputs_tried"] >= 300  # bounded by time on a loaded machine, never vacuous
    out = figures["outcomes"]
    # the mutator reaches every layer: unreadable files, readable-but-unsafe plans, and plans that pass
    assert out.get("read: PlanFormatError", 0) > 0 and out.get("check: PlanCheckError", 0) > 0 and out.get("check: ok", 0) > 0


def test_fuzz_runs_never_complete_on_plans_the_check_rejects(tmp_path, monkeypatch):
    monkeypatch.setenv("TURNIP_CACHE_DIR", str(tmp_path / "cache"))
    figures = fuzz_plans.fuzz(400, seed=7, run_every=2, seconds=20, seeds=("demo_mlp-25.plan",))
    assert figures["tracebacks"] == 0, _report(figures)
    assert figures["runs_completed_on_plans_the_check_rejects"] == 0
    runs = figures["runs"]
    assert runs.get("completed", 0) > 0 and any(k.startswith("refused") for k in runs), runs
