"""The weights held once (issue 16): derived weights and blocks streamed from the file into place, no host copies.

* :class:`turnip.weightstream.StreamedWeight` makes the same bytes as the
  whole recipe, in any chunking, for a plain weight, a transposed / cast
  one, a reshaped one, whole or cut into a block, from a file range.
* A one-shot run (``run_plan``, ``LoadedPlan(weight_homes=False)``) holds no
  weight bytes in host memory besides the memories, rewrites the weights whose
  memory the plan reuses from the file, and its peak RSS over the imports is
  at most its memories plus a small slack on a model of 64 MiB of weights
  (32 MiB of it a transposed weight, which used to stay in host memory).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from turnip import weightstream
from turnip.check import compare, reference_outputs
from turnip.plan import DeriveOp, DeriveStep, write_plan
from turnip.run import LoadedPlan, random_feeds
from turnip.weights import _FileRange
from turnip.weightstream import StreamedWeight

from turnipc.importer import import_model
from turnipc.planner import PlanOptions, build_plan
from turnipc.units import Budget

T, C, R = DeriveOp.TRANSPOSE, DeriveOp.CAST, DeriveOp.RESHAPE
MiB = 1 << 20


def _file_source(tmp_path, a: np.ndarray, pad: int = 24) -> _FileRange:
    """``a``'s bytes in a file, after ``pad`` other bytes (an offset, as in an external-data file)."""
    p = tmp_path / "w.bin"
    p.write_bytes(b"\x07" * pad + a.tobytes() + b"\x09" * 8)
    return _FileRange(str(p), pad, a.nbytes)


CASES = [  # (source shape, dtype, steps, cut) -> the reference below
    ((37, 5, 3), "float32", [], (0, 4, 30)),
    ((37, 5, 3), "float32", [], (1, 1, 4)),
    ((37, 5, 3), "float32", [], (2, 2, 3)),
    ((41, 9), "float32", [DeriveStep(T, (1, 0))], None),
    ((41, 9), "float32", [DeriveStep(T, (1, 0))], (1, 10, 33)),
    ((41, 9), "float32", [DeriveStep(T, (1, 0))], (0, 2, 7)),
    ((23, 4, 6), "float16", [DeriveStep(T, (2, 0, 1)), DeriveStep(C, "float32")], (1, 5, 19)),
    ((23, 4, 6), "float16", [DeriveStep(C, "float32"), DeriveStep(T, (1, 2, 0))], None),
    ((12, 10), "float32", [DeriveStep(R, (10, 12)), DeriveStep(T, (1, 0))], (1, 3, 9)),
    ((), "float32", [], None),
]


def _reference(a: np.ndarray, steps, cut) -> np.ndarray:
    for s in steps:
        a = np.transpose(a, s.arg) if s.op == T else a.astype(s.arg) if s.op == C else a.reshape(s.arg)
    if cut is not None:
        axis, start, stop = cut
        idx = [slice(None)] * a.ndim
        idx[axis] = slice(start, stop)
        a = a[tuple(idx)]
    return np.array(a, order="C")  # (ascontiguousarray makes a 0-d array 1-d)


@pytest.mark.parametrize("chunk", [1, 100, 1 << 20])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_streamed_weight_makes_the_recipes_bytes_in_any_chunking(tmp_path, monkeypatch, chunk, case):
    shape, dtype, steps, cut = CASES[case]
    monkeypatch.setattr(weightstream, "CHUNK_BYTES", chunk)  # 1 byte: one source row per chunk
    a = np.random.default_rng(case).standard_normal(shape).astype(dtype)
    whole = _reference(a, steps, None)
    want = _reference(a, steps, cut)
    sw = StreamedWeight("w", _file_source(tmp_path, a), dtype, shape, steps, whole.dtype.name, whole.shape, cut)
    assert sw.size == want.nbytes
    dst = np.full(want.nbytes + 16, 0xAB, dtype=np.uint8)  # bytes around the destination stay untouched
    sw.write_into(None, dst[8:-8])
    assert (dst[:8] == 0xAB).all() and (dst[-8:] == 0xAB).all()
    assert dst[8:-8].tobytes() == want.tobytes()
    assert sw.materialize().tobytes() == want.tobytes()  # host bytes (a home), and from host bytes too:
    host = StreamedWeight("w", np.frombuffer(a.tobytes(), np.uint8), dtype, shape, steps, whole.dtype.name, whole.shape, cut)
    assert host.materialize().tobytes() == want.tobytes()


def test_a_streamed_weight_reads_a_bounded_chunk_at_a_time(tmp_path, monkeypatch):
    """A 1,000 x 256 transposed weight through 64 KiB chunks: every read is one chunk (64 rows of 1 KiB), rows outside the block unread."""
    monkeypatch.setattr(weightstream, "CHUNK_BYTES", 64 << 10)
    a = np.random.default_rng(0).standard_normal((1000, 256)).astype(np.float32)
    reads: list[int] = []
    real = weightstream.read_file_range
    monkeypatch.setattr(weightstream, "read_file_range", lambda fd, path, off, out: (reads.append(len(out)), real(fd, path, off, out))[1])
    sw = StreamedWeight("w", _file_source(tmp_path, a), "float32", a.shape, [DeriveStep(T, (1, 0))], "float32", (256, 1000), (1, 100, 900))
    out = sw.materialize()
    assert out.tobytes() == np.ascontiguousarray(a.T[:, 100:900]).tobytes()
    assert max(reads) == 64 << 10 and len(reads) == 14  # of 16 chunks of 64 rows, those that hold rows 100..899 (64..959)


def test_a_recipe_that_does_not_give_the_planned_tensor_is_refused_before_reading(tmp_path):
    from turnip.errors import PlanError

    a = np.zeros((4, 6), np.float32)
    with pytest.raises(PlanError, match="comes out float32"):
        StreamedWeight("w", _file_source(tmp_path, a), "float32", (4, 6), [DeriveStep(T, (1, 0))], "float32", (4, 6))
    with pytest.raises(PlanError, match="cannot apply"):
        StreamedWeight("w", _file_source(tmp_path, a), "float32", (4, 6), [DeriveStep(T, (0, 0))], "float32", (4, 6))
    with pytest.raises(PlanError, match="lies outside"):
        StreamedWeight("w", _file_source(tmp_path, a), "float32", (4, 6), [], "float32", (4, 6), (1, 2, 9))


# -- a model big enough to see: 64 MiB of weights, 32 MiB of them derived ------------------------


def _big_model_path(tmp_path) -> str:
    """x[1, 2048] @ w1[2048, 2048] @ Transpose(w2[4096, 2048]) @ w3[4096, 1024]: the middle weight is derived (32 MiB)."""
    rng = np.random.default_rng(0)

    def w(name, shape):
        return numpy_helper.from_array((rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float32), name)

    g = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w1"], ["h1"]),
            helper.make_node("Transpose", ["w2"], ["w2t"], perm=[1, 0]),
            helper.make_node("MatMul", ["h1", "w2t"], ["h2"]),
            helper.make_node("Relu", ["h2"], ["r2"]),
            helper.make_node("MatMul", ["r2", "w3"], ["y"]),
        ],
        "big",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2048])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1024])],
        [w("w1", (2048, 2048)), w("w2", (4096, 2048)), w("w3", (4096, 1024))],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    path = str(tmp_path / "big.onnx")
    onnx.save_model(m, path, save_as_external_data=True, all_tensors_to_one_file=True, location="big.onnx.data", size_threshold=128)
    return path


@pytest.fixture(scope="module")
def big_plans(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rss")
    path = _big_model_path(tmp)
    tg = import_model(path)
    out = {}
    for label, budget in (("100%", Budget(fraction=1.0)), ("min", Budget(minimum=True))):
        plan = build_plan(tg, PlanOptions(budget), plan_dir=str(tmp))
        out[label] = str(tmp / f"big.{label.rstrip('%')}.plan")
        write_plan(plan, out[label])
    return path, out


def _host_bytes_held(lp: LoadedPlan) -> int:
    return sum(src.nbytes for _, src, _ in lp._placements if isinstance(src, np.ndarray))


@pytest.mark.parametrize("budget", ["100%", "min"])
def test_a_one_shot_load_holds_no_weight_bytes_and_rewrites_reused_weights_from_the_file(big_plans, budget):
    path, plans = big_plans
    lp = LoadedPlan(plans[budget], backend="numpy", weight_homes=False)
    with lp:
        assert any(lp.plan.tensors[p.tensor].derive is not None for p, _, _ in lp._placements)
        assert _host_bytes_held(lp) < 64 << 10  # constants only: no derived weight, no home of a reused weight
        feeds = random_feeds(lp.plan, 3)
        want = reference_outputs(path, feeds)
        for _ in range(2):  # the second run rewrites the reused weights (if any) from the file
            lp.write_inputs(feeds)
            lp.execute()
            for c in compare(lp.outputs(), want, atol=1e-4, rtol=1e-3):
                assert c.ok, f"{c.name}: max abs {c.max_abs:g}"
        reused = sum(lp.plan.tensors[p.tensor].nbytes for p, src, again in lp._placements if again and isinstance(src, (_FileRange, StreamedWeight)))
    with LoadedPlan(plans[budget], backend="numpy") as homes:  # sessions keep a home per reused weight: the trade is explicit
        assert _host_bytes_held(homes) - _host_bytes_held(lp) == reused


_PEAK_SCRIPT = r"""
import json, sys
def status():
    return {k: int(v.split()[0]) * 1024 for k, v in (l.split(":", 1) for l in open("/proc/self/status")) if k in ("VmRSS", "VmHWM")}
import numpy, onnx, turnip.cli, turnip.run, turnip.weights, turnip.onnx_lazy
from turnip.plan import read_plan
from turnip.run import random_feeds, run_plan
base = status()["VmRSS"]
plan = read_plan(sys.argv[1])
run_plan(plan, random_feeds(plan, 0), backend="numpy", plan_path=sys.argv[1])
print(json.dumps({"base": base, "peak": status()["VmHWM"], "memories": sum(int(m.size) for m in plan.memories)}))
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads VmHWM from /proc (Linux)")
@pytest.mark.parametrize("budget", ["100%", "min"])
def test_a_one_shot_runs_peak_rss_is_its_memories_over_the_imports(big_plans, budget):
    """Peak RSS (VmHWM of a fresh interpreter) minus RSS after the imports: the memories and at most 12 MiB more.

    The weights are 64 MiB; before the weights were streamed, the derived 32 MiB (and a home per
    reused weight) stayed in host memory on top of the memories.
    """
    _, plans = big_plans
    out = subprocess.run([sys.executable, "-c", _PEAK_SCRIPT, plans[budget]], capture_output=True, text=True, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    over = got["peak"] - got["base"] - got["memories"]
    assert got["memories"] >= 64 * MiB
    assert over <= 12 * MiB, f"peak {got['peak'] / MiB:.1f} MiB = imports {got['base'] / MiB:.1f} + memories {got['memories'] / MiB:.1f} + {over / MiB:.1f}"


def test_discarding_all_but_the_outputs_keeps_the_outputs_and_gives_the_rest_back(big_plans):
    """The end of a one-shot run: every page no output lies on goes back to the OS before the outputs are copied."""
    _, plans = big_plans
    with LoadedPlan(plans["100%"], backend="numpy", weight_homes=False) as lp:
        lp.run(random_feeds(lp.plan, 1))
        want = lp.outputs()
        keep = [piece.loc for go in lp.graph_outputs for piece in go.pieces]
        mem = lp.backend.memories
        total = sum(len(b) for b in mem.buffers.values())
        given = mem.discard_except(keep)
        kept = sum(lp.plan.tensors[loc.tensor].nbytes for loc in keep)
        page = os.sysconf("SC_PAGE_SIZE")
        assert total - kept - 2 * page * (len(keep) + len(mem.buffers)) <= given <= total - kept
        got = lp.outputs()
        assert all(np.array_equal(got[k], want[k]) for k in want)
        w1 = next(p.loc for p, _, _ in lp._placements if lp.plan.tensors[p.tensor].name == "w3")
        assert not lp.backend.view(w1).any()  # a weight's pages were given back: they read as zeros
