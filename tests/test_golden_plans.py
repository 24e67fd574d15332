"""Re-plan every golden plan and `turnipc diff` it against plans/: no change allowed.

A failure here means planning changed. If the change is intended, run
`make plans` and commit the new goldens with the change that caused them.
"""

from __future__ import annotations

import os
import sys

import pytest
from click.testing import CliRunner

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "plans"))

from regenerate import GOLDENS, plan_into  # noqa: E402

from turnipc.cli import main  # noqa: E402


@pytest.mark.parametrize("golden", GOLDENS, ids=lambda g: g.name)
def test_replanning_matches_golden(golden, tmp_path):
    assert os.path.exists(golden.plan_path), f"missing {golden.plan_path}: run `make plans`"
    # the plan records its model relative to its own folder: write beside the goldens
    out = os.path.join(os.path.dirname(golden.plan_path), f".replan-{golden.name}-{os.getpid()}.plan")
    try:
        plan_into(golden, out)
        r = CliRunner().invoke(main, ["diff", golden.plan_path, out, "--json"])
        with open(out, "rb") as f, open(golden.plan_path, "rb") as g:
            identical = f.read() == g.read()
    finally:
        if os.path.exists(out):
            os.unlink(out)
    assert r.exit_code == 0, f"{golden.name} changed (run `make plans` if intended):\n{r.output[:3000]}"
    assert identical
