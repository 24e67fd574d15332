"""turnipc.graphio (per-task storages computed once per graph) and the prefetch room scan, against plain recomputation."""

from __future__ import annotations

import dataclasses
import random

import numpy as np
from test_order_heap import random_dag
from tiny_graphs import U, skip_chain

from turnipc.graphio import consumers_of, graph_io, producers_of
from turnipc.residency import _earliest_room, aligned, task_working_sets


def test_graph_io_matches_the_graph_s_own_views():
    for seed in range(40):
        g = random_dag(seed)
        io = graph_io(g)
        assert io.reads == [t.storages_read(g) for t in g.tasks]
        assert io.writes == [t.storages_written(g) for t in g.tasks]
        assert producers_of(io) == g.producers()
        assert consumers_of(io) == g.consumers()
        assert io.size == {s: aligned(g.storage_bytes(s)) for s in g.storages()}
        assert io.working_set == [sum(aligned(g.storage_bytes(s)) for s in set(t.storages_read(g)) | set(t.storages_written(g)))
                                  for t in g.tasks]


def test_graph_io_is_reused_for_the_same_graph_and_recomputed_for_a_new_task_list():
    g = skip_chain()
    assert graph_io(g) is graph_io(g)
    h = dataclasses.replace(g, tasks=g.tasks[:3])  # a new graph object: its own entry
    assert graph_io(h).reads == [t.storages_read(h) for t in h.tasks]
    g.tasks = list(g.tasks)  # same graph, a new task list: recomputed
    assert graph_io(g) is not graph_io(h)
    assert task_working_sets(g, [0, 1, 2, 3, 4], [0] * 5, 1) == [3 * U]


def test_earliest_room_equals_the_step_by_step_scan():
    rng = random.Random(0)
    for _ in range(300):
        n = rng.randint(1, 400)
        row = np.array([rng.choice([0, 1, 2, 3, 5, 8]) for _ in range(n)], dtype=np.int64)
        start = rng.randint(0, n)
        lo = rng.randint(0, start + 2)
        room = rng.randint(0, 8)
        s = start
        while s - 1 >= lo and row[s - 1] <= room:
            s -= 1
        assert _earliest_room(row, lo, start, room) == s
