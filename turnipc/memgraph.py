"""MEMGRAPH construction: residency events + arena offsets -> plan nodes with dependencies.

Dependencies are of two sorts, and together they make every
dependency-respecting order safe (the TURNIP property):

* data (read after write): a node reading an occupant waits for the node that
  filled it;
* reuse hazards (write after read, write after write): a node filling an
  occupant waits for every node that touched an earlier occupant of any of
  the same bytes. Only the latest earlier occupant of each byte is needed:
  older ones are ordered before it by the same rule, transitively.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from turnip.plan import COMPUTE, Loc, Node, NodeKind

from .residency import HOST, Occupant, Residency
from .taskgraph import TaskGraph


@dataclass(frozen=True)
class MemoryMap:
    """Memory id of each device's arena and of the host region."""

    gpu: dict[int, int]  # device -> memory id
    host: int

    def mem_of(self, device: int) -> int:
        return self.host if device == HOST else self.gpu[device]


def hazard_deps(occupants: list[Occupant], offsets: dict[int, int], num_events: int) -> dict[int, set[int]]:
    """writer event -> events it must wait for because it reuses their bytes."""
    deps: dict[int, set[int]] = {}
    by_mem: dict[int, list[Occupant]] = {}
    for o in occupants:
        by_mem.setdefault(o.device, []).append(o)
    for occs in by_mem.values():
        occs.sort(key=lambda o: (o.lifetime(num_events)[0], o.id))
        # segment map: sorted disjoint [lo, hi) byte ranges -> latest occupant id
        starts: list[int] = []
        segs: list[tuple[int, int, int]] = []
        for o in occs:
            if o.size == 0:
                continue
            lo, hi = offsets[o.id], offsets[o.id] + o.size
            k = bisect.bisect_right(starts, lo) - 1
            if k < 0 or segs[k][1] <= lo:
                k += 1
            prev: set[int] = set()
            new_segs: list[tuple[int, int, int]] = []
            j = k
            while j < len(segs) and segs[j][0] < hi:
                a, b, pid = segs[j]
                prev.add(pid)
                if a < lo:
                    new_segs.append((a, lo, pid))
                if b > hi:
                    new_segs.append((hi, b, pid))
                j += 1
            new_segs.append((lo, hi, o.id))
            new_segs.sort()
            segs[k:j] = new_segs
            starts[k:j] = [s[0] for s in new_segs]
            if o.writer is not None:
                acc = deps.setdefault(o.writer, set())
                for pid in prev:
                    p = occupants[pid]
                    if p.writer is not None:
                        acc.add(p.writer)
                    acc.update(p.readers)
    return deps


def build_nodes(
    graph: TaskGraph,
    res: Residency,
    offsets: dict[int, int],
    memmap: MemoryMap,
    tensor_index: dict[str, int],
) -> list[Node]:
    """One plan node per residency event, in the serial order of the events."""
    n_events = len(res.events)
    hazards = hazard_deps(res.occupants, offsets, n_events)
    occ = res.occupants

    def loc(occ_id: int, tensor: str) -> Loc:
        o = occ[occ_id]
        return Loc(memmap.mem_of(o.device), offsets[occ_id], tensor_index[tensor])

    nodes: list[Node] = []
    for e, ev in enumerate(res.events):
        deps: set[int] = set(hazards.get(e, ()))
        for r in ev.reads:
            w = occ[r].writer
            if w is not None:
                deps.add(w)
        deps.discard(e)
        if ev.kind == COMPUTE:
            assert ev.task is not None
            task = graph.tasks[ev.task]
            by_storage_in = {occ[r].storage: r for r in ev.reads}
            by_storage_out = {occ[w].storage: w for w in ev.writes}
            inputs = tuple(
                None if v is None else loc(by_storage_in[graph.values[v].storage], v) for v in task.inputs
            )
            outputs = tuple(None if v is None else loc(by_storage_out[graph.values[v].storage], v) for v in task.outputs)
            nodes.append(
                Node(
                    id=e, kind=COMPUTE, device=ev.device, deps=tuple(sorted(deps)), inputs=inputs, outputs=outputs,
                    op=task.op_type, domain=task.domain, name=task.name, attrs=task.attrs,
                    flops=task.flops, bytes=task.bytes_touched, pos=e,
                )
            )
        else:
            (src,) = ev.reads
            (dst,) = ev.writes
            nodes.append(
                Node(
                    id=e, kind=NodeKind(ev.kind), device=ev.device, deps=tuple(sorted(deps)),
                    inputs=(loc(src, ev.storage),), outputs=(loc(dst, ev.storage),),
                    name=f"{ev.kind} {ev.storage}", bytes=graph.storage_bytes(ev.storage), pos=e,
                )
            )
    return nodes
