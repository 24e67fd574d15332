"""Re-plan every golden plan and `turnipc diff` it against plans/: no change allowed.

A failure here means planning changed. If the change is intended, run
`make plans` and commit the new goldens with the change that caused them.

The re-plan is written to a temporary folder, never into the repository. A
plan records its model relative to its own folder, so that one field differs
by construction: the test checks that both paths name the same model file,
then compares the rest byte for byte.
"""

from __future__ import annotations

import dataclasses
import os
import sys

import pytest
from click.testing import CliRunner
from turnip.plan import encode_plan, read_plan, resolve_model_path, write_plan

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "plans"))

from regenerate import GOLDENS, plan_into  # noqa: E402

from turnipc.cli import main  # noqa: E402


@pytest.mark.parametrize("golden", GOLDENS, ids=lambda g: g.name)
def test_replanning_matches_golden(golden, tmp_path):
    assert os.path.exists(golden.plan_path), f"missing {golden.plan_path}: run `make plans`"
    out = tmp_path / f"{golden.name}.plan"
    plan_into(golden, str(out))
    golden_plan, replanned = read_plan(golden.plan_path), read_plan(out)
    assert resolve_model_path(replanned, out) == resolve_model_path(golden_plan, golden.plan_path)
    # same model file: give the re-plan the golden's relative path, then nothing else may differ
    rebased = tmp_path / f"{golden.name}.rebased.plan"
    write_plan(dataclasses.replace(replanned, model_path=golden_plan.model_path), rebased)
    r = CliRunner().invoke(main, ["diff", golden.plan_path, str(rebased), "--json"])
    assert r.exit_code == 0, f"{golden.name} changed (run `make plans` if intended):\n{r.output[:3000]}"
    with open(golden.plan_path, "rb") as g:
        assert rebased.read_bytes() == g.read()
    assert encode_plan(golden_plan) == rebased.read_bytes()  # decoding and re-encoding is lossless too


def test_no_replan_is_left_in_the_repository():
    left = [f for f in os.listdir(os.path.join(ROOT, "plans")) if f.startswith(".replan-")]
    assert not left, left
