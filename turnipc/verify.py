"""`turnipc verify`: an independent static checker for plan files.

It reads only the plan (never the planner's data structures) and proves:

1. budget: every GPU arena is within its budget and every location lies
   inside its memory, so no device ever holds more than its budget;
2. ordering: every two nodes that touch overlapping bytes of one memory, one
   of them writing, are ordered by a dependency path (so every
   dependency-respecting execution order is safe);
3. data: replaying the nodes in a dependency-respecting order, every read
   sees the bytes of the tensor its ONNX producer wrote, and every graph
   output is where the plan says when the run ends.

Given (2), all dependency-respecting orders agree on what each read sees, so
replaying one of them proves (3) for all of them.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from turnip.plan import COMPUTE, GPU, Loc, Plan

PLACED = -1  # pseudo node: the runtime's writes before the first node


class VerifyError(Exception):
    """The first violation found, as a one-line message."""


@dataclass
class VerifyReport:
    nodes: int = 0
    accesses: int = 0
    ordered_pairs_checked: int = 0
    reads_checked: int = 0
    memories: list[str] = field(default_factory=list)


def _node_label(plan: Plan, nid: int) -> str:
    if nid == PLACED:
        return "initial placement"
    n = plan.nodes[nid]
    if n.kind == COMPUTE:
        return f"node {nid} ({n.op} '{n.name}')"
    return f"node {nid} ({n.name})"


def _nbytes(plan: Plan, loc: Loc) -> int:
    return plan.tensors[loc.tensor].nbytes


def topological_order(plan: Plan) -> list[int]:
    n = len(plan.nodes)
    indeg = [0] * n
    succ: list[list[int]] = [[] for _ in range(n)]
    for node in plan.nodes:
        for d in node.deps:
            if not 0 <= d < n:
                raise VerifyError(f"{_node_label(plan, node.id)} depends on missing node {d}")
            indeg[node.id] += 1
            succ[d].append(node.id)
    heap = [i for i in range(n) if indeg[i] == 0]
    heapq.heapify(heap)
    order = []
    while heap:
        i = heapq.heappop(heap)
        order.append(i)
        for j in succ[i]:
            indeg[j] -= 1
            if indeg[j] == 0:
                heapq.heappush(heap, j)
    if len(order) != n:
        stuck = min(i for i in range(n) if indeg[i] > 0)
        raise VerifyError(f"dependency cycle through {_node_label(plan, stuck)}")
    return order


def verify_plan(plan: Plan) -> VerifyReport:
    rep = VerifyReport(nodes=len(plan.nodes))
    mems = {m.id: m for m in plan.memories}
    for i, node in enumerate(plan.nodes):
        if node.id != i:
            raise VerifyError(f"node at index {i} has id {node.id}; ids must be 0..n-1 in order")

    # (1) budget and bounds
    for m in plan.memories:
        if m.kind == GPU and m.size > m.budget:
            raise VerifyError(f"GPU {m.device} arena is {m.size} bytes, over its budget of {m.budget} bytes")
        rep.memories.append(f"{m.kind}{'' if m.device < 0 else m.device}: {m.size} / {m.budget} bytes")

    # accesses per memory: (lo, hi, node, is_write)
    accesses: dict[int, list[tuple[int, int, int, bool]]] = {}

    def add(loc: Loc, nid: int, write: bool) -> None:
        if loc.mem not in mems:
            raise VerifyError(f"{_node_label(plan, nid)} uses unknown memory {loc.mem}")
        if not 0 <= loc.tensor < len(plan.tensors):
            raise VerifyError(f"{_node_label(plan, nid)} names unknown tensor {loc.tensor}")
        nb = _nbytes(plan, loc)
        if loc.offset < 0 or loc.offset + nb > mems[loc.mem].size:
            raise VerifyError(
                f"{_node_label(plan, nid)}: tensor '{plan.tensors[loc.tensor].name}' at offset {loc.offset} "
                f"({nb} bytes) lies outside memory {loc.mem} of {mems[loc.mem].size} bytes"
            )
        if nb:
            accesses.setdefault(loc.mem, []).append((loc.offset, loc.offset + nb, nid, write))

    for p in plan.placements:
        add(p.loc, PLACED, True)
    for node in plan.nodes:
        for loc in node.inputs:
            if loc is not None:
                add(loc, node.id, False)
        for loc in node.outputs:
            if loc is not None:
                add(loc, node.id, True)

    # (2) conflicting accesses are ordered
    order = topological_order(plan)
    anc: list[int] = [0] * len(plan.nodes)  # bitset of ancestors
    for i in order:
        a = 0
        for d in plan.nodes[i].deps:
            a |= anc[d] | (1 << d)
        anc[i] = a

    def ordered(x: int, y: int) -> bool:
        if x == PLACED or y == PLACED:
            return True  # placements happen before every node
        return bool((anc[y] >> x) & 1) or bool((anc[x] >> y) & 1)

    for mem_id in sorted(accesses):
        acc = sorted(accesses[mem_id])
        rep.accesses += len(acc)
        active: list[tuple[int, int, int, bool]] = []
        for a in acc:
            lo = a[0]
            active = [b for b in active if b[1] > lo]
            for b in active:
                if not (a[3] or b[3]):
                    continue
                if a[2] == b[2]:
                    if a[2] != PLACED:
                        raise VerifyError(f"{_node_label(plan, a[2])} reads and writes overlapping bytes of memory {mem_id} (no in-place kernels)")
                    raise VerifyError(f"two initial placements overlap in memory {mem_id} at bytes [{max(a[0], b[0])}, {min(a[1], b[1])})")
                rep.ordered_pairs_checked += 1
                if not ordered(a[2], b[2]):
                    raise VerifyError(
                        f"{_node_label(plan, a[2])} and {_node_label(plan, b[2])} touch bytes "
                        f"[{max(a[0], b[0])}, {min(a[1], b[1])}) of memory {mem_id}, one writing, "
                        "with no dependency path between them"
                    )
            active.append(a)

    # (3) replay: every read sees its tensor's bytes
    content: dict[int, list[tuple[int, int, int]]] = {m: [] for m in mems}  # mem -> [(lo, hi, storage)]

    def write(loc: Loc, storage: int) -> None:
        nb = _nbytes(plan, loc)
        if nb == 0:
            return
        lo, hi = loc.offset, loc.offset + nb
        segs = content[loc.mem]
        out = []
        for s in segs:
            if s[1] <= lo or s[0] >= hi:
                out.append(s)
                continue
            if s[0] < lo:
                out.append((s[0], lo, s[2]))
            if s[1] > hi:
                out.append((hi, s[1], s[2]))
        out.append((lo, hi, storage))
        content[loc.mem] = out

    def holds(loc: Loc) -> int | None:
        """The storage whose bytes fill the location entirely, or None."""
        nb = _nbytes(plan, loc)
        if nb == 0:
            return plan.tensors[loc.tensor].storage
        lo, hi = loc.offset, loc.offset + nb
        covered = 0
        tag = None
        for s in content[loc.mem]:
            if s[1] <= lo or s[0] >= hi:
                continue
            if tag is None:
                tag = s[2]
            elif tag != s[2]:
                return None
            covered += min(s[1], hi) - max(s[0], lo)
        return tag if covered == hi - lo else None

    def expect(loc: Loc, nid: int) -> None:
        want = plan.tensors[loc.tensor].storage
        got = holds(loc)
        rep.reads_checked += 1
        if got != want:
            what = "nothing (never written)" if got is None else f"tensor '{plan.tensors[got].name}'"
            raise VerifyError(
                f"{_node_label(plan, nid)} reads tensor '{plan.tensors[loc.tensor].name}' at memory {loc.mem} "
                f"offset {loc.offset}, but those bytes hold {what}"
            )

    for p in plan.placements:
        write(p.loc, plan.tensors[p.loc.tensor].storage)
    written: set[int] = set()
    for i in order:
        node = plan.nodes[i]
        for loc in node.inputs:
            if loc is not None:
                expect(loc, i)
        if node.kind == COMPUTE:
            for loc in node.outputs:
                if loc is None:
                    continue
                st = plan.tensors[loc.tensor].storage
                if st in written:
                    raise VerifyError(f"{_node_label(plan, i)} writes tensor '{plan.tensors[st].name}' a second time")
                written.add(st)
                write(loc, st)
        else:
            src, dst = node.inputs[0], node.outputs[0]
            if src is None or plan.tensors[src.tensor].storage != plan.tensors[dst.tensor].storage:
                raise VerifyError(f"{_node_label(plan, i)} copies between different tensors")
            write(dst, plan.tensors[dst.tensor].storage)
    for loc in plan.outputs:
        got = holds(loc)
        if got != plan.tensors[loc.tensor].storage:
            raise VerifyError(f"graph output '{plan.tensors[loc.tensor].name}' is not at memory {loc.mem} offset {loc.offset} when the run ends")
    return rep
