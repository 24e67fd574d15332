"""Tests of the static arena layout engine (turnipc.layout)."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import pytest
from click.testing import CliRunner

from turnipc.layout import (
    Buffer,
    check_layout,
    cpsat_layout,
    greedy_layout,
    max_live,
    parse_csv,
    read_csv,
    solve_layout,
    write_csv,
)
from turnipc.layout.cli import layout as layout_cmd
from turnipc.layout.csvio import LayoutInputError
from turnipc.layout.greedy import greedy_offsets
from turnipc.layout.search import search_layout

DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
INPUT12 = DATASETS / "minimalloc" / "examples" / "input.12.csv"

needs_datasets = pytest.mark.skipif(not DATASETS.is_dir(), reason="../shared/datasets is absent")

# Greedy (every ordering) needs 14 here, but 11 = max-live is reachable.
HARD_SMALL = [
    Buffer("p", 0, 4, 3),
    Buffer("q", 2, 3, 4),
    Buffer("r", 2, 6, 4),
    Buffer("s", 3, 7, 3),
    Buffer("t", 5, 7, 4),
]


def random_instance(seed: int, n: int = 60, horizon: int = 40, max_size: int = 64) -> list[Buffer]:
    rng = random.Random(seed)
    out = []
    for k in range(n):
        lo = rng.randrange(horizon)
        out.append(Buffer(f"b{k}", lo, lo + rng.randint(1, 12), rng.randint(1, max_size)))
    return out


# ---------------------------------------------------------------- model


def test_max_live_half_open():
    # [0,2) and [2,4) never live together
    assert max_live([Buffer("a", 0, 2, 5), Buffer("b", 2, 4, 7)]) == 7
    assert max_live([Buffer("a", 0, 3, 5), Buffer("b", 2, 4, 7)]) == 12
    assert max_live([Buffer("z", 0, 5, 0), Buffer("e", 3, 3, 9)]) == 0
    assert max_live([]) == 0


def test_check_layout_catches_overlap_and_names_both():
    bufs = [Buffer("a", 0, 4, 8), Buffer("b", 2, 6, 8), Buffer("c", 4, 9, 8)]
    check_layout(bufs, {"a": 0, "b": 8, "c": 0})  # a and c never live together
    with pytest.raises(ValueError) as e:
        check_layout(bufs, {"a": 0, "b": 4, "c": 16})
    assert "'a'" in str(e.value) and "'b'" in str(e.value)
    with pytest.raises(ValueError, match="'b'.*'c'|'c'.*'b'"):
        check_layout(bufs, {"a": 0, "b": 8, "c": 15})


def test_check_layout_capacity_negative_missing_alignment():
    bufs = [Buffer("a", 0, 4, 8), Buffer("b", 2, 6, 8, alignment=16)]
    with pytest.raises(ValueError, match="capacity"):
        check_layout(bufs, {"a": 0, "b": 16}, capacity=20)
    with pytest.raises(ValueError, match="negative"):
        check_layout(bufs, {"a": -8, "b": 16})
    with pytest.raises(ValueError, match="no offset"):
        check_layout(bufs, {"a": 0})
    with pytest.raises(ValueError, match="alignment"):
        check_layout(bufs, {"a": 0, "b": 8})
    check_layout(bufs, {"a": 0, "b": 16}, capacity=32)


def test_check_layout_sweep_on_many_disjoint_buffers():
    # a staircase: every buffer overlaps its neighbours in time, offsets alternate
    bufs = [Buffer(str(i), i, i + 2, 4) for i in range(2000)]
    check_layout(bufs, {str(i): 4 * (i % 2) for i in range(2000)})
    bad = {str(i): 4 * (i % 2) for i in range(2000)}
    bad["1500"] = bad["1501"]
    with pytest.raises(ValueError):
        check_layout(bufs, bad)


# ---------------------------------------------------------------- greedy


@pytest.mark.parametrize("seed", range(6))
def test_greedy_valid_on_random_instances(seed):
    bufs = random_instance(seed)
    lay = greedy_layout(bufs)
    check_layout(bufs, lay.offsets)
    assert lay.arena_bytes == max(lay.offsets[b.id] + b.size for b in bufs)
    assert lay.arena_bytes >= lay.max_live_bytes == max_live(bufs)


@pytest.mark.parametrize("tie_break", ["lowest", "earliest_freed"])
def test_greedy_tie_breaks_and_prefer_are_valid(tie_break):
    bufs = random_instance(11)
    check_layout(bufs, greedy_layout(bufs, tie_break=tie_break).offsets)
    lay = greedy_layout(bufs, prefer=lambda h: h.freed_at)
    check_layout(bufs, lay.offsets)


def test_greedy_earliest_freed_prefers_the_older_hole():
    # In "lower" order: young@0, longA@4, old@8, longB@12. At t=10 two equal 4-byte holes
    # remain: [0,4) freed at t=8 (young) and [8,12) freed at t=4 (old).
    bufs = [
        Buffer("young", 0, 8, 4),
        Buffer("longA", 1, 20, 4),
        Buffer("old", 2, 4, 4),
        Buffer("longB", 3, 20, 4),
        Buffer("new", 10, 12, 4),
    ]
    low = greedy_layout(bufs, orderings=["lower"])
    fresh = greedy_layout(bufs, tie_break="earliest_freed", orderings=["lower"])
    for lay in (low, fresh):
        check_layout(bufs, lay.offsets)
        assert [lay.offsets[k] for k in ("young", "longA", "old", "longB")] == [0, 4, 8, 12]
    assert low.offsets["new"] == 0
    assert fresh.offsets["new"] == 8
    # prefer= replaces best fit: the hole freed earliest among all fitting ones
    assert greedy_layout(bufs, prefer=lambda h: h.freed_at, orderings=["lower"]).offsets["new"] == 8


def test_greedy_alignment_is_honoured():
    bufs = [Buffer("a", 0, 5, 3), Buffer("b", 1, 6, 5, alignment=8), Buffer("c", 2, 7, 7, alignment=4)]
    lay = greedy_layout(bufs)
    check_layout(bufs, lay.offsets)
    assert lay.offsets["b"] % 8 == 0 and lay.offsets["c"] % 4 == 0


def test_greedy_deterministic():
    bufs = random_instance(3, n=200)
    assert greedy_layout(bufs).offsets == greedy_layout(list(bufs)).offsets


@pytest.mark.parametrize("seed", range(4))
def test_compiled_greedy_pass_equals_the_numpy_reference(seed):
    # the compiled pass must make the same decisions as the NumPy loop (offsets and arena),
    # for every tie-break and fit rule, with alignment, zero sizes, and the early stop;
    # 300 buffers make the compiled side split its offset-sorted blocks many times
    import numpy as np

    from turnipc.layout.canonical import compiled_available
    from turnipc.layout.greedy import _place

    assert compiled_available()
    rng = np.random.default_rng(seed)
    for n in (7, 40, 300):
        L = rng.integers(0, 30, n)
        U = L + rng.integers(0, 12, n)
        S = rng.integers(0, 9, n) * int(rng.choice([1, 3, 8]))
        A = rng.choice([1, 1, 2, 4], n)
        order = rng.permutation(n)
        for tie in ("lowest", "earliest_freed"):
            for fit in ("best", "first"):
                for limit in (None, int(S.sum()) // 4):
                    off, arena = _place(order, L, U, S, A, tie, None, fit, limit)
                    ref_off, ref_arena = _place(order, L, U, S, A, tie, None, fit, limit, compiled=False)
                    assert arena == ref_arena
                    assert off.tolist() == ref_off.tolist()


@needs_datasets
def test_greedy_on_input12():
    bufs = read_csv(INPUT12)
    lay = greedy_layout(bufs)
    check_layout(bufs, lay.offsets)
    assert lay.arena_bytes == lay.max_live_bytes == 12


# ---------------------------------------------------------------- exact search and CP-SAT


def test_hard_small_instance_beats_greedy():
    assert greedy_layout(HARD_SMALL).arena_bytes == 14
    assert max_live(HARD_SMALL) == 11
    lay = search_layout(HARD_SMALL, effort=1.0, use_squeaky=False)
    check_layout(HARD_SMALL, lay.offsets)
    assert lay.arena_bytes == 11 and lay.optimal and lay.stats["engines"] == ["search"]


def test_capacity_below_max_live_returns_best_layout_that_does_not_fit():
    bufs = [Buffer("a", 0, 4, 3), Buffer("b", 2, 6, 3), Buffer("c", 4, 8, 3), Buffer("d", 0, 8, 1)]
    assert max_live(bufs) == 7
    for lay in (search_layout(bufs, capacity=6, effort=1.0), cpsat_layout(bufs, capacity=6, effort=1.0)):
        check_layout(bufs, lay.offsets)
        assert lay.arena_bytes == 7


def test_search_alignment_is_honoured():
    bufs = [Buffer("a", 0, 5, 3), Buffer("b", 1, 6, 5, alignment=8), Buffer("c", 2, 7, 7, alignment=4),
            Buffer("d", 6, 9, 8, alignment=8)]
    lay = search_layout(bufs, effort=1.0, use_squeaky=False)
    check_layout(bufs, lay.offsets)
    assert lay.offsets["b"] % 8 == 0 and lay.offsets["c"] % 4 == 0 and lay.offsets["d"] % 8 == 0


def test_cpsat_reaches_max_live_where_greedy_does_not():
    lay = cpsat_layout(HARD_SMALL, effort=5.0)
    check_layout(HARD_SMALL, lay.offsets)
    assert lay.arena_bytes == 11 and lay.optimal


def test_cpsat_alone_reaches_max_live_on_small_instance():
    lay = cpsat_layout(HARD_SMALL, effort=5.0, use_search=False, use_squeaky=False)
    check_layout(HARD_SMALL, lay.offsets)
    assert lay.arena_bytes == 11 and lay.stats["engines"] == ["cpsat"]


def test_cpsat_lns_windows_on_a_longer_instance():
    # more buffers than one LNS window: CP-SAT works on windows around the top buffer
    bufs = random_instance(21, n=400, horizon=200)
    g = greedy_layout(bufs)
    lay = cpsat_layout(bufs, effort=3.0, use_search=False, use_squeaky=False, window=60)
    check_layout(bufs, lay.offsets)
    assert lay.arena_bytes <= g.arena_bytes


@pytest.mark.parametrize("seed", range(4))
def test_cpsat_never_worse_than_greedy(seed):
    bufs = random_instance(seed, n=40)
    g = greedy_layout(bufs)
    c = cpsat_layout(bufs, effort=1.0)
    check_layout(bufs, c.offsets)
    assert c.arena_bytes <= g.arena_bytes
    assert c.arena_bytes >= c.max_live_bytes


def test_cpsat_capacity_stops_when_it_fits():
    bufs = random_instance(5, n=40)
    g = greedy_layout(bufs)
    lay = cpsat_layout(bufs, capacity=g.arena_bytes, effort=2.0)
    check_layout(bufs, lay.offsets, capacity=g.arena_bytes)


def test_cpsat_deterministic():
    bufs = random_instance(7, n=50)
    first = cpsat_layout(bufs, effort=1.0)
    second = cpsat_layout(list(bufs), effort=1.0)
    assert first.offsets == second.offsets
    assert first.arena_bytes == second.arena_bytes


def test_progress_callback_sees_improvement():
    seen = []
    lay = cpsat_layout(HARD_SMALL, effort=5.0, progress=lambda best, lb: seen.append((best, lb)))
    assert seen and seen[0] == (14, 11) and seen[-1] == (11, 11)
    assert lay.arena_bytes == 11


def test_solve_layout_dispatch():
    assert solve_layout(HARD_SMALL).solver == "greedy"
    assert solve_layout(HARD_SMALL, solver="cpsat", effort=5.0).arena_bytes == 11
    assert solve_layout(HARD_SMALL, solver="search", effort=1.0).arena_bytes == 11
    with pytest.raises(ValueError):
        solve_layout(HARD_SMALL, solver="magic")


def test_greedy_with_no_orderings_says_so():
    with pytest.raises(ValueError, match="orderings is empty"):
        greedy_offsets(HARD_SMALL, orderings=())


@needs_datasets
def test_search_fits_challenging_b():
    # MiniMalloc's challenging set: B fits its 1 MiB capacity quickly with the exact search
    bufs = read_csv(DATASETS / "minimalloc" / "challenging" / "B.1048576.csv")
    lay = search_layout(bufs, capacity=1048576, effort=10.0)
    check_layout(bufs, lay.offsets, capacity=1048576)


# ---------------------------------------------------------------- CSV


def test_csv_round_trip(tmp_path):
    bufs = random_instance(2, n=20)
    lay = greedy_layout(bufs)
    path = tmp_path / "out.csv"
    write_csv(path, bufs, lay.offsets)
    text = path.read_text()
    assert text.splitlines()[0] == "id,lower,upper,size,offset"
    back = read_csv(path)  # the extra offset column is ignored on input
    assert back == bufs
    import csv

    rows = list(csv.DictReader(io.StringIO(text)))
    assert {r["id"]: int(r["offset"]) for r in rows} == lay.offsets


def test_csv_alignment_and_extra_columns():
    bufs = parse_csv("id,lower,upper,size,alignment,hint\nx,0,4,10,8,3\ny,2,6,6,,\n")
    assert bufs == [Buffer("x", 0, 4, 10, 8), Buffer("y", 2, 6, 6, 1)]
    out = io.StringIO()
    write_csv(out, bufs, {"x": 0, "y": 16})
    assert out.getvalue().splitlines()[0] == "id,lower,upper,size,alignment,offset"


@pytest.mark.parametrize(
    "text, needle",
    [
        ("", "empty"),
        ("id,lower,size\na,0,3\n", "upper"),
        ("id,lower,upper,size\na,0,x,3\n", "not an integer"),
        ("id,lower,upper,size\na,0,3,4\na,1,2,3\n", "duplicate"),
        ("id,lower,upper,size\na,5,3,4\n", "upper"),
        ("id,lower,upper,size\na,0,3,-4\n", "negative"),
        ("id,lower,upper,size,gaps\na,0,9,4,2-3\n", "gaps"),
    ],
)
def test_csv_rejects_bad_input(text, needle):
    with pytest.raises(LayoutInputError, match=needle):
        parse_csv(text)


# ---------------------------------------------------------------- CLI


def _write(tmp_path, bufs, name="in.csv"):
    p = tmp_path / name
    write_csv(p, bufs, {b.id: 0 for b in bufs})
    return p


def test_cli_json_and_exit_codes(tmp_path):
    path = _write(tmp_path, HARD_SMALL)
    runner = CliRunner()
    res = runner.invoke(layout_cmd, [str(path), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    for key in ("arena_bytes", "max_live_bytes", "ratio", "fits", "solver", "buffers", "seconds"):
        assert key in out
    assert out["arena_bytes"] == 14 and out["max_live_bytes"] == 11 and out["buffers"] == 5
    assert out["fits"] is None

    # greedy misses 12, so --capacity hands over to the exact search, which fits it
    res = runner.invoke(layout_cmd, [str(path), "--json", "--capacity", "12"])
    out = json.loads(res.output)
    assert res.exit_code == 0 and out["fits"] is True and out["engine"] in ("squeaky", "search") and out["arena_bytes"] <= 12
    # below max-live: does not fit, and that is proven
    res = runner.invoke(layout_cmd, [str(path), "--json", "--capacity", "10"])
    out = json.loads(res.output)
    assert res.exit_code == 1 and out["fits"] is False and out["proven_infeasible"] is True

    offsets = tmp_path / "offsets.csv"
    res = runner.invoke(
        layout_cmd,
        [str(path), "--json", "--capacity", "11", "--solver", "cpsat", "--time-budget", "5", "-o", str(offsets)],
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["fits"] is True and out["arena_bytes"] == 11 and out["solver"] == "cpsat"
    assert {r.id for r in read_csv(offsets)} == {b.id for b in HARD_SMALL}


def test_cli_table_output(tmp_path):
    path = _write(tmp_path, HARD_SMALL)
    res = CliRunner().invoke(layout_cmd, [str(path), "--solver", "cpsat", "--time-budget", "5"])
    assert res.exit_code == 0, res.output
    assert "max-live" in res.output and "11" in res.output


def test_cli_unreadable_input(tmp_path):
    runner = CliRunner()
    res = runner.invoke(layout_cmd, [str(tmp_path / "missing.csv")])
    assert res.exit_code == 2 and "cannot read" in res.output
    bad = tmp_path / "bad.csv"
    bad.write_text("name,start\nx,1\n")
    res = runner.invoke(layout_cmd, [str(bad)])
    assert res.exit_code == 2 and "header" in res.output
    assert len(res.output.strip().splitlines()) == 1


def test_cli_help_mentions_deterministic_budget():
    res = CliRunner().invoke(layout_cmd, ["--help"])
    assert res.exit_code == 0
    assert "deterministic" in res.output and "Examples" in res.output
