"""memgraph on hand-built occupants and a hand-laid arena: the exact dependencies of every node.

A node depends on (1) the writer of every occupant it reads (data), and
(2) when it writes bytes that earlier occupants used, the writer and the
readers of the latest earlier occupant of each of those bytes (reuse
hazards). The layouts below put occupants on purpose at shared offsets.
"""

from __future__ import annotations

from tiny_graphs import U, skip_chain

from turnipc.memgraph import MemoryMap, build_nodes, hazard_deps
from turnipc.residency import HOST, Occupant, simulate


def test_hazards_only_for_overlapping_bytes_and_only_the_latest_occupant():
    occ = [
        Occupant(0, "p", 0, U, writer=0, readers=[1]),
        Occupant(1, "q", 0, U, writer=2, readers=[3]),  # same bytes as p: waits for p's writer and reader
        Occupant(2, "r", 0, U, writer=4, readers=[5]),  # next to q: no hazard
        Occupant(3, "s", 0, U, writer=6, readers=[]),  # straddles q and r: waits for both, not for p (q replaced it)
        Occupant(4, "h", HOST, U, writer=7, readers=[]),  # another memory, same offset: no hazard
        Occupant(5, "z", 0, 0, writer=8, readers=[]),  # zero bytes overlap nothing
    ]
    offsets = {0: 0, 1: 0, 2: U, 3: U // 2, 4: 0, 5: 0}
    deps = hazard_deps(occ, offsets, num_events=9)
    assert {k: sorted(v) for k, v in deps.items()} == {0: [], 2: [0, 1], 4: [], 6: [2, 3, 4, 5], 7: []}


def test_placed_occupants_add_their_readers_to_the_next_writer():
    occ = [
        Occupant(0, "w", 0, U, writer=None, readers=[0, 2]),  # placed before the run, read by events 0 and 2
        Occupant(1, "t", 0, U, writer=3, readers=[]),
    ]
    assert {k: sorted(v) for k, v in hazard_deps(occ, {0: 0, 1: 0}, 4).items()} == {3: [0, 2]}


def test_nodes_of_the_offload_reload_chain():
    g = skip_chain()
    res = simulate(g, [0, 1, 2, 3, 4], [0] * 5, [3 * U])
    # occupants (see test_residency_unit): 0 x, 1 a, 2 b, 3 a@host, 4 c (2U), 5 d, 6 a (reloaded), 7 y
    offsets = {0: 0, 1: U, 2: 0, 3: 0, 4: U, 5: 0, 6: U, 7: 2 * U}
    tindex = {name: i for i, name in enumerate(g.values)}
    nodes = build_nodes(g, res, offsets, MemoryMap({0: 0}, host=1), tindex)
    got = [(n.id, n.kind, n.device, n.deps, n.pos) for n in nodes]
    assert got == [
        (0, "compute", 0, (), 0),
        (1, "compute", 0, (0,), 1),  # b over x: waits for x's reader; reads a (written by 0)
        (2, "offload", 0, (0,), 2),  # reads a
        (3, "compute", 0, (0, 1, 2), 3),  # c over a: a's writer 0 and readers 1, 2; reads b (1)
        (4, "compute", 0, (1, 3), 4),  # d over b: b's writer 1 and reader 3; reads c (3)
        (5, "reload", 0, (2, 3, 4), 5),  # a over c's first half: c's writer 3, reader 4; reads a@host (2)
        (6, "compute", 0, (3, 4, 5), 6),  # y over c's second half; reads d (4) and a (5)
    ]
    t = tindex
    assert nodes[2].inputs[0].to_obj() == [0, U, t["a"]] and nodes[2].outputs[0].to_obj() == [1, 0, t["a"]]
    assert nodes[5].inputs[0].to_obj() == [1, 0, t["a"]] and nodes[5].outputs[0].to_obj() == [0, U, t["a"]]
    assert [x.to_obj() for x in nodes[6].inputs] == [[0, 0, t["d"]], [0, U, t["a"]]]
    assert nodes[6].op == "Add" and nodes[6].name == "t4" and nodes[2].name == "offload a" and nodes[2].bytes == U
