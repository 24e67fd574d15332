"""The floor (turnipc.floor): the bound no budget below can plan at, the min search, the refusal message."""

from __future__ import annotations

import pytest
from onnx import helper
from test_output_blocks import _wide
from test_partition import FLOAT, _mlp, _save, _w

from turnipc.errors import BudgetError
from turnipc.floor import Floor, _bisect, _writers, refusal, tiling_floor, walk_down, whole_input_bound
from turnipc.importer import import_model
from turnipc.partition import largest_tasks, partition_graph
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


def _relu_then_wide(tmp_path, rows: int = 8, k: int = 64):
    """a = Relu(x[rows,k]); y = a @ W[k,k]: y's column blocks read ``a`` whole (defaults: a 2 KiB, W 16 KiB)."""
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="relu"), helper.make_node("MatMul", ["a", "W"], ["y"], name="mm")]
    return _save(tmp_path, nodes, [helper.make_tensor_value_info("x", FLOAT, [rows, k])],
                 [helper.make_tensor_value_info("y", FLOAT, [rows, k])], [_w("W", [k, k], 3)])


def test_floor_counts_making_a_whole_input(tmp_path):
    # mm's splits: 8 row blocks need all of W (16384 + 256 + 256); 64 column blocks need a column of W (256 B
    # aligned), of y (256) and ``a`` whole (2048): 2560, the old floor; K blocks need 3 x y = 6144. But ``a`` whole
    # needs Relu whole (x + a = 4096) or Relu's blocks assembled (blocks + whole = 4096): the floor is 4096
    g = import_model(_relu_then_wide(tmp_path))
    assert whole_input_bound(g, _writers(g), "a") == 4096
    assert whole_input_bound(g, _writers(g), "x") == 0  # a graph input is whole from the start
    fl = tiling_floor(g)
    assert fl == Floor(4096, "mm", "MatMul", whole_input="a")
    assert fl.describe() == "task 'mm' (MatMul) reads 'a' whole even split into blocks, and making it whole needs 4096 bytes at once"
    assert tiling_floor(g, tiling=False) == Floor(2048 + 16384 + 2048, "mm", "MatMul")
    # the partition pass agrees: at a 2560-byte task limit mm splits by columns and ``a`` is assembled (4096 at once)
    tg, rep = partition_graph(g, 2560)
    assert rep.assembles == ["a"] and largest_tasks(tg, 1)[0][0] == 4096


def test_plan_refuses_below_the_floor(tmp_path):
    g = import_model(_relu_then_wide(tmp_path))
    with pytest.raises(BudgetError, match="below the floor of this model: no budget below 4096 bytes can plan \\(task 'mm'"):
        build_plan(g, PlanOptions(Budget(bytes=4095)))
    verify_plan(build_plan(g, PlanOptions(Budget(bytes=4096 + 2048))))


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


def test_refusal_above_the_floor_names_the_smallest_budget_found(tmp_path):
    g = import_model(_mlp(tmp_path))
    least = build_plan(g, PlanOptions(Budget(minimum=True), min_search_tiled=True)).stats.budget_bytes
    floor = tiling_floor(g)
    assert (floor.bytes, least) == (1536, 6656)
    verify_plan(build_plan(g, PlanOptions(Budget(bytes=least))))
    with pytest.raises(BudgetError) as e:  # above the floor: the search runs and names the smallest budget found
        build_plan(g, PlanOptions(Budget(bytes=2048)))
    msg = str(e.value)
    assert f"the smallest feasible budget found for this model, {least} bytes" in msg
    assert "no budget below 1536 bytes can plan (task 'mm2' (MatMul) needs 1536 bytes" in msg


def test_refusal_below_the_floor_names_the_floor_without_a_search(tmp_path):
    g = import_model(_wide(tmp_path))
    floor = tiling_floor(g)
    verify_plan(build_plan(g, PlanOptions(Budget(bytes=floor.bytes))))  # the floor itself plans here
    with pytest.raises(BudgetError) as e:  # the floor proves the refusal: no search, no smallest budget found
        build_plan(g, PlanOptions(Budget(bytes=floor.bytes - 1)))
    assert str(e.value) == (
        f"--gpu-mem {floor.bytes - 1} bytes is below the floor of this model: no budget below {floor.bytes} bytes can "
        f"plan (task 'mm' (MatMul) needs {floor.bytes} bytes at once even split into blocks); the smallest feasible "
        f"budget is at least {floor.bytes} bytes: try `--gpu-mem min` to find it")


def test_refusal_wording():
    fl = Floor(100, "t", "Conv")
    assert refusal(50, fl, None, 1000) == (
        "--gpu-mem 50 bytes is below the floor of this model: no budget below 100 bytes can plan (task 't' (Conv) "
        "needs 100 bytes at once even split into blocks); the smallest feasible budget is at least 100 bytes: "
        "try `--gpu-mem min` to find it")
    assert refusal(150, fl, None, 1000) == (  # above the floor, no search (a graph too big for one)
        "--gpu-mem 150 bytes does not plan for this model; no budget below 100 bytes can plan (task 't' (Conv) needs "
        "100 bytes at once even split into blocks); the smallest feasible budget is not known without a search: "
        "try `--gpu-mem min` to find it")
    assert refusal(50, fl, 120, 1000).startswith(
        "--gpu-mem 50 bytes is below the smallest feasible budget found for this model, 120 bytes (12.0% of the no-offload peak;")
    assert "though the smaller budget of 120 bytes (12.0% of the no-offload peak) does: feasibility is not monotone" in refusal(130, fl, 120, 1000)


def test_min_finishes_the_probe_plan_it_found(tmp_path):
    # the probe plans without hoisting reloads into the layout's holes; finished, it is exactly the plan the planner
    # makes at that budget, and `--gpu-mem min` writes it without planning the budget again
    from turnipc.floor import min_feasible
    from turnipc.order import memory_aware_order
    from turnipc.placement import place_stages
    from turnipc.planner import INF, plan_residency, plan_tiled

    g = import_model(_wide(tmp_path))
    order = memory_aware_order(g)
    dev = place_stages(g, order, 1)
    opts = PlanOptions(Budget(minimum=True), min_search_tiled=True)
    unlimited = plan_residency(g, order, dev, INF, PlanOptions(Budget(bytes=INF), 1, "greedy", prefetch=True))
    found = min_feasible(g, order, dev, opts, max(unlimited.residency.lower_bound), max(unlimited.layouts.arena.values()))
    assert found.budget == 10035 and found.plan is not None
    tg, probe, report = found.plan
    assert probe.hoist is not None and report is not None  # a tiled probe, its hoisting deferred
    tg2, full, report2 = plan_tiled(g, order, dev, found.budget, opts)
    done = probe.finished()
    assert done.hoist is None and full.hoist is None
    assert [t.name for t in tg.tasks] == [t.name for t in tg2.tasks] and report.to_obj() == report2.to_obj()
    assert done.layouts.offsets == full.layouts.offsets and done.layouts.arena == full.layouts.arena
    assert done.residency.events == full.residency.events and done.effective == full.effective
    at_min = build_plan(g, opts)
    at_bytes = build_plan(g, PlanOptions(Budget(bytes=found.budget)))
    assert at_min.stats == at_bytes.stats and at_min.nodes == at_bytes.nodes and at_min.placements == at_bytes.placements


def test_min_search_answers_below_the_floor_without_planning_and_finds_the_same_budget(tmp_path):
    # a = Relu(x[64,512]) (128 KiB), W 1 MiB: column blocks of mm need 135,680 B, but ``a`` whole needs 262,144 B.
    # The walk's grid stays anchored to the blocks-only floor (the budgets probed before the floor counted whole
    # inputs); those below 262,144 are answered "no" without a plan, and each of them indeed fails when planned
    from turnipc.floor import min_feasible
    from turnipc.order import memory_aware_order
    from turnipc.placement import place_stages
    from turnipc.planner import INF, plan_residency

    g = import_model(_relu_then_wide(tmp_path, rows=64, k=512))
    blocks_only = tiling_floor(g, whole_inputs=False)
    assert (tiling_floor(g).bytes, blocks_only.bytes) == (262144, 135680)
    order = memory_aware_order(g)
    dev = place_stages(g, order, 1)
    opts = PlanOptions(Budget(minimum=True), min_search_tiled=True)
    unlimited = plan_residency(g, order, dev, INF, PlanOptions(Budget(bytes=INF), 1, "greedy", prefetch=True))
    lo, hi = max(unlimited.residency.lower_bound), max(unlimited.layouts.arena.values())
    runs = []
    for floor in (None, blocks_only):  # the whole-input floor, then the old one (every budget planned)
        lines: list[str] = []
        runs.append((min_feasible(g, order, dev, opts, lo, hi, lines.append, floor=floor).budget, lines))
    (least, lines), (old_least, old_lines) = runs
    assert least == old_least == 267497
    grid = [917504, 642252, 449576, 314703, 220292, 154204, 267497, 243894, 255695, 261596]
    assert [int(x.split()[2]) for x in lines] == [int(x.split()[2]) for x in old_lines] == grid
    below = [int(x.split()[2]) for x in lines if "below the floor (262144 B)" in x]
    assert below == [220292, 154204, 243894, 255695, 261596]
    assert all(f"min budget: {b} B does not plan" in old_lines for b in below)
