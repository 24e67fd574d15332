"""The floor (turnipc.floor): the bound no budget below can plan at, the min search, the refusal message."""

from __future__ import annotations

import pytest
from test_output_blocks import _wide
from test_partition import _mlp

from turnipc.errors import BudgetError
from turnipc.floor import Floor, _bisect, refusal, tiling_floor, walk_down
from turnipc.importer import import_model
from turnipc.planner import PlanOptions, build_plan
from turnipc.units import Budget
from turnipc.verify import verify_plan


def test_tiling_floor_is_the_best_split_of_the_worst_task(tmp_path):
    # x[64,8] @ W[8,64] -> y[64,64]: whole 2048 + 2048 + 16384 B; 64 row blocks need a row of x (256 B aligned),
    # all of W and a row of y (256 B): 2560 B, as do 64 column blocks; splitting K needs 3 x 16 KiB
    g = import_model(_wide(tmp_path))
    assert tiling_floor(g) == Floor(2560, "mm", "MatMul")
    assert tiling_floor(g, tiling=False) == Floor(2048 + 2048 + 16384, "mm", "MatMul")


def test_tiling_floor_names_the_unsplittable_task(tmp_path):
    # mm2 = s[8,64] @ W2[64,16] -> y[8,16] (512 B): 8 row blocks need all of W2 (4096 B); 16 column blocks need all
    # of s (2048 B); splitting K needs the partial sums: 3 x y = 1536 B, its best. mm1 splits to 1024 B (64 columns),
    # softmax to 512 B (rows): mm2 sets the floor
    g = import_model(_mlp(tmp_path))
    fl = tiling_floor(g)
    assert fl == Floor(1536, "mm2", "MatMul")
    assert fl.describe() == "task 'mm2' (MatMul) needs 1536 bytes at once even split into blocks"


def test_bisect_returns_a_budget_that_passed():
    seen = []

    def ok(b):
        seen.append(b)
        return b >= 700

    assert _bisect(ok, 0, 1024, 64) == 704 and seen == [512, 768, 640, 704]


def test_walk_down_passes_a_failure_between_two_budgets_that_plan():
    seen = []

    def ok(b):  # not monotone: 2401 fails between 3430 and 1680, which plan
        seen.append(b)
        return b >= 3000 or 1500 <= b < 2200

    assert walk_down(ok, 10000, 100, 200) == 1554
    assert seen == [7000, 4900, 3430, 2401, 1680, 1176, 823, 1428, 1554]


def test_walk_down_stops_at_its_resolution_and_at_the_floor():
    seen = []

    def ok(b):
        seen.append(b)
        return True

    assert walk_down(ok, 1000, 10, 400) == 1000 and seen == []  # a 300-byte step is finer than 400
    assert walk_down(ok, 1000, 900, 10) == 900 and seen == [900]  # the floor is probed once, nothing below


def test_refusal_names_the_smallest_budget_found_and_the_floor(tmp_path):
    g = import_model(_wide(tmp_path))
    least = build_plan(g, PlanOptions(Budget(minimum=True), min_search_tiled=True)).stats.budget_bytes
    floor = tiling_floor(g)
    assert floor.bytes <= least < 16384  # below the output itself: its blocks go to host memory
    verify_plan(build_plan(g, PlanOptions(Budget(bytes=least))))
    with pytest.raises(BudgetError) as e:
        build_plan(g, PlanOptions(Budget(bytes=least - 1 if least - 1 < floor.bytes else floor.bytes - 1)))
    msg = str(e.value)
    assert f"the smallest feasible budget found for this model, {least} bytes" in msg
    assert f"no budget below {floor.bytes} bytes can plan (task 'mm' (MatMul) needs {floor.bytes} bytes" in msg


def test_refusal_wording():
    fl = Floor(100, "t", "Conv")
    assert refusal(50, fl, None, 1000) == (
        "--gpu-mem 50 bytes does not plan for this model; no budget below 100 bytes can plan (task 't' (Conv) needs "
        "100 bytes at once even split into blocks); the smallest feasible budget is not known without a search: "
        "try `--gpu-mem min` to find it")
    assert refusal(50, fl, 120, 1000).startswith(
        "--gpu-mem 50 bytes is below the smallest feasible budget found for this model, 120 bytes (12.0% of the no-offload peak;")
    assert "though the smaller budget of 120 bytes (12.0% of the no-offload peak) does: feasibility is not monotone" in refusal(130, fl, 120, 1000)
