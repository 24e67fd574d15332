"""kernels/threads.py: MatMul split into blocks for the runtime's threads, BLAS's own threads off around the call."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from turnip.kernels import threads

threadpoolctl = pytest.importorskip("threadpoolctl")


def _blas_libs() -> list:
    return list(threadpoolctl.ThreadpoolController().select(user_api="blas").lib_controllers)


@pytest.mark.parametrize(
    "ashape,bshape",
    [
        ((256, 96), (96, 200)),  # rows
        ((8, 96), (96, 4096)),  # fewer rows than columns: columns of b
        ((3, 128, 64), (3, 64, 128)),  # batched
        ((1, 130, 96), (96, 300)),  # broadcast weight, rows not a multiple of the blocks
        ((4, 1, 64, 32), (1, 5, 32, 70)),  # both broadcast
    ],
)
@pytest.mark.parametrize("width", [1, 2, 3])
def test_matmul_call_equals_numpy(ashape, bshape, width, monkeypatch):
    monkeypatch.setattr(threads, "MIN_PARALLEL_MACS", 1)  # split even these small ones
    rng = np.random.default_rng(0)
    a = rng.standard_normal(ashape, dtype=np.float32)
    b = rng.standard_normal(bshape, dtype=np.float32)
    want = np.matmul(a, b)
    out = np.full(want.shape, np.nan, dtype=np.float32)
    call = threads.matmul_call(a, b, out, width)
    call()
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-4)
    out[...] = np.nan
    call()  # a prepared call runs again on the same views
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-4)


def test_blas_threads_one_inside_restored_after(monkeypatch):
    libs = _blas_libs()
    if not libs:
        pytest.skip("no BLAS threadpoolctl knows")
    monkeypatch.setattr(threads, "MIN_PARALLEL_MACS", 1)
    seen = []
    a = np.ones((64, 32), np.float32)
    b = np.ones((32, 64), np.float32)
    out = np.empty((64, 64), np.float32)
    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        blocks_seen = threads.parallel_for

        def spy(blocks, width):
            seen.append(max(lib.get_num_threads() for lib in libs))
            blocks_seen(blocks, width)

        monkeypatch.setattr(threads, "parallel_for", spy)
        call = threads.matmul_call(a, b, out, 2)
        call()
        after = max(lib.get_num_threads() for lib in libs)
    assert seen == [1]
    assert after == 2
    assert (out == 32).all()


def test_parallel_for_runs_every_block_once_and_reraises():
    counts = [0] * 37
    lock = threading.Lock()

    def block(i):
        def f():
            with lock:
                counts[i] += 1
        return f

    for _ in range(20):
        threads.parallel_for([block(i) for i in range(37)], 3)
    assert counts == [20] * 37

    def boom():
        raise ValueError("block failed")

    with pytest.raises(ValueError, match="block failed"):
        threads.parallel_for([block(0), boom, block(1)], 2)
    threads.parallel_for([block(i) for i in range(37)], 2)  # the helpers still work after a failure
    assert counts[2] == 21


def test_parallel_for_from_two_threads_at_once():
    """Two queues calling at once: the second runs its blocks alone, both complete."""
    out = []

    def job(tag):
        got = []
        threads.parallel_for([lambda k=k: got.append(k) for k in range(50)], 2)
        out.append((tag, sorted(got)))

    ts = [threading.Thread(target=job, args=(t,)) for t in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(10)
    assert sorted(out) == [(t, list(range(50))) for t in range(4)]


def test_overlapping_output_is_one_numpy_call():
    """An output that aliases an input: the prepared MatMul keeps NumPy's one call (blocks could read written rows)."""
    from turnip.kernels.prepared import _matmul

    buf = np.arange(16, dtype=np.float32).reshape(4, 4)
    want = buf @ buf

    class Ctx:
        op = "MatMul"

    call = _matmul(Ctx(), [buf, buf], [buf], [None, None])
    call()
    np.testing.assert_array_equal(buf, want)


def test_numpy_run_holds_blas_at_one_thread_and_restores_it(tmp_path):
    """A whole run of a NumPy plan sees BLAS at one thread (the runtime's threads do MatMul); after it, the setting is back."""
    from test_executor import make_chain_plan
    from turnip.run import LoadedPlan

    libs = _blas_libs()
    if not libs:
        pytest.skip("no BLAS threadpoolctl knows")
    plan_path, _ = make_chain_plan(tmp_path)
    seen = []
    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        lp = LoadedPlan(plan_path, backend="numpy")
        try:
            lp.executor.tasks[1] = lambda: seen.append(max(lib.get_num_threads() for lib in libs))
            lp.execute()
        finally:
            lp.close()
        after = max(lib.get_num_threads() for lib in libs)
    assert seen == [1] and after == 2
