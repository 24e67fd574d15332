"""Checks that a plan is safe to run: shared by `turnipc verify` and the runtime.

The runtime executes any dependency-respecting order of a plan's nodes, on
several queues at once; it trusts the plan's dependencies and layout. A plan
that drops a dependency, puts a tensor at an unaligned offset or on a device
that does not exist would race on a GPU (and give wrong answers on the CPU
backend) rather than fail cleanly. So before the first node runs,
:func:`check_plan` proves, reading only the plan:

1. form: node ids are 0..n-1 in order; every node runs on a device the plan
   has an arena for, and touches only the memories its kind may touch
   (compute: its device's arena; reload: host -> its arena; offload: its
   arena -> host; move: another GPU's arena -> its arena);
2. budget and bounds: every GPU arena is within its budget and every location
   lies inside its memory, at an offset that is a multiple of the plan's
   recorded ``alignment`` (a power of two, at least :data:`MIN_ALIGNMENT`:
   256 is what cudaMalloc gives and what CUDA kernels assume);
3. ordering: every two nodes that touch overlapping bytes of one memory, one
   of them writing, are ordered by a dependency path (so every
   dependency-respecting execution order is safe);
4. data: replaying the nodes in a dependency-respecting order, every read
   sees the bytes of the tensor its ONNX producer wrote, and every graph
   output is where the plan says when the run ends.

Given (3), all dependency-respecting orders agree on what each read sees, so
replaying one of them proves (4) for all of them.

Cost: linear in accesses plus one ancestor bitset per node (n^2/8 bytes):
about 0.2-0.5 s on the 1,200-node LLaMA-7B-shaped plan (bench/bench_planner.py
reports ``verify_s``), small beside loading its 13 GB of weights, so the
runtime runs all of it every time. :mod:`turnip.verified` remembers plans
already proved safe, by the sha256 of their bytes.

`turnipc verify` (turnipc/verify.py) is a thin wrapper over this module.
"""

from __future__ import annotations

import bisect
import dataclasses
from dataclasses import dataclass, field

from .cache import is_sha256
from .errors import PlanCheckError
from .graph import DependencyGraph
from .plan import COMPUTE, DEFAULT_ALIGNMENT, GPU, HOST, MOVE, OFFLOAD, RELOAD, Loc, Plan

__all__ = ["MIN_ALIGNMENT", "PLACED", "CheckReport", "PlanCheckError", "check_plan", "topological_order"]

#: The smallest alignment a plan may record: every base the runtime allocates
#: (cudaMalloc, NumPy's host buffers) is aligned to it, so an offset that is a
#: multiple of the plan's alignment gives an address that is one too.
MIN_ALIGNMENT = DEFAULT_ALIGNMENT

PLACED = -1  # pseudo node: the runtime's writes before the first node


@dataclass
class CheckReport:
    """How much a passing check covered, so ``turnipc verify`` can say what "ok" was proven over."""

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
    """Node ids (dense: ``check_plan`` made them positions) in a dependency-respecting order, smallest ready first.

    The order is the runtime's own :class:`turnip.graph.DependencyGraph` order (one graph for the executor, the
    simulator, the priorities and this check); only the messages are the check's.
    """
    n = len(plan.nodes)
    for node in plan.nodes:
        for d in node.deps:
            if not 0 <= d < n:
                raise PlanCheckError(f"{_node_label(plan, node.id)} depends on missing node {d}")
    graph = DependencyGraph([node.deps for node in plan.nodes])
    try:
        return graph.topological_order()
    except ValueError:
        raise PlanCheckError(f"dependency cycle through {_node_label(plan, min(graph.unreachable()))}") from None


def check_plan(plan: Plan, data: bool = True) -> CheckReport:
    """Raise :class:`PlanCheckError` naming the first violation; return what was checked.

    ``data=False`` skips the replay (4); the runtime always runs it (it is cheap).
    """
    rep = CheckReport(nodes=len(plan.nodes))
    mems = {m.id: m for m in plan.memories}
    if sorted(n.id for n in plan.nodes) == list(range(len(plan.nodes))):
        # the runtime runs a plan whose node list is in any order (ids are what deps name): check it in id order
        plan = dataclasses.replace(plan, nodes=sorted(plan.nodes, key=lambda n: n.id))
    for i, node in enumerate(plan.nodes):
        if node.id != i:
            raise PlanCheckError(f"node ids are not 0..n-1, each once (node at index {i} has id {node.id})")
    if any(p.source == "weight" for p in plan.placements) and not is_sha256(plan.model_sha256):
        raise PlanCheckError(f"the plan reads weights from its model but records no valid sha256 of it ({plan.model_sha256!r}); "
                             "re-plan the model with `turnipc plan`")
    _check_devices(plan)
    _check_placements(plan)
    align = plan.alignment
    if align < MIN_ALIGNMENT or align & (align - 1):
        raise PlanCheckError(f"the plan's alignment is {align} bytes; the runtime needs a power of two of at least "
                             f"{MIN_ALIGNMENT}: re-plan the model with `turnipc plan`")

    # (1) budget and bounds
    for m in plan.memories:
        if m.kind == GPU and m.size > m.budget:
            raise PlanCheckError(f"GPU {m.device} arena is {m.size} bytes, over its budget of {m.budget} bytes")
        rep.memories.append(f"{m.kind}{'' if m.device < 0 else m.device}: {m.size} / {m.budget} bytes")

    # accesses per memory: (lo, hi, node, is_write)
    accesses: dict[int, list[tuple[int, int, int, bool]]] = {}

    def add(loc: Loc, nid: int, write: bool) -> None:
        if loc.mem not in mems:
            raise PlanCheckError(f"{_node_label(plan, nid)} uses unknown memory {loc.mem}")
        if not 0 <= loc.tensor < len(plan.tensors):
            raise PlanCheckError(f"{_node_label(plan, nid)} names unknown tensor {loc.tensor}")
        nb = _nbytes(plan, loc)
        if loc.offset % align:
            raise PlanCheckError(
                f"{_node_label(plan, nid)}: tensor '{plan.tensors[loc.tensor].name}' at offset {loc.offset} of memory {loc.mem} "
                f"is not a multiple of the plan's alignment {align}"
            )
        if loc.offset < 0 or loc.offset + nb > mems[loc.mem].size:
            raise PlanCheckError(
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

    for loc in plan.outputs:  # graph outputs are read by the runtime when the run ends: in bounds too
        if loc.mem not in mems or not 0 <= loc.tensor < len(plan.tensors):
            raise PlanCheckError(f"graph output at {loc} names a memory or tensor the plan does not have")
        if loc.offset % align or loc.offset + _nbytes(plan, loc) > mems[loc.mem].size:
            raise PlanCheckError(f"graph output '{plan.tensors[loc.tensor].name}' at offset {loc.offset} is unaligned or outside "
                                 f"memory {loc.mem} of {mems[loc.mem].size} bytes")

    from .outblocks import graph_outputs

    graph_outputs(plan)  # an output returned in blocks: its blocks tile it exactly

    # (3) conflicting accesses are ordered
    order = topological_order(plan)
    _check_hazards(plan, order, accesses, rep)

    if data:
        _replay(plan, order, mems, rep)
    return rep


def _check_hazards(plan: Plan, order: list[int], accesses: dict[int, list[tuple[int, int, int, bool]]], rep: CheckReport) -> None:
    """Every two accesses to overlapping bytes, one a write, are ordered by a dependency path.

    Replaying nodes in a topological order, it is enough that each read comes
    after the last write of its bytes, and each write after the last write and
    every read since: writes to a byte are then totally ordered, and every read
    lies between the write it sees and the next one. That checks
    O(accesses x segments touched) pairs rather than every overlapping pair
    (quadratic when thousands of nodes reuse one slot), each with one lookup in
    an ancestor bitset.
    """
    anc: list[int] = [0] * len(plan.nodes)  # bitset of ancestors
    for i in order:
        a = 0
        for d in plan.nodes[i].deps:
            a |= anc[d] | (1 << d)
        anc[i] = a

    def conflict(x: int, y: int, mem_id: int, lo: int, hi: int) -> PlanCheckError:
        return PlanCheckError(
            f"{_node_label(plan, x)} and {_node_label(plan, y)} touch bytes [{lo}, {hi}) of memory {mem_id}, one writing, "
            "with no dependency path between them"
        )

    by_node: dict[int, list[tuple[int, int, int, bool]]] = {}
    for mem_id, acc in accesses.items():
        rep.accesses += len(acc)
        placed = sorted((lo, hi) for lo, hi, nid, _ in acc if nid == PLACED)
        for (_lo1, hi1), (lo2, hi2) in zip(placed, placed[1:], strict=False):
            if lo2 < hi1:
                raise PlanCheckError(f"two initial placements overlap in memory {mem_id} at bytes [{lo2}, {min(hi1, hi2)})")
        for lo, hi, nid, w in acc:
            if nid != PLACED:
                by_node.setdefault(nid, []).append((mem_id, lo, hi, w))
    for nid, acc in by_node.items():  # no node reads and writes the same bytes (no in-place kernels)
        reads = [(m, lo, hi) for m, lo, hi, w in acc if not w]
        writes = [(m, lo, hi) for m, lo, hi, w in acc if w]
        for k, (m, lo, hi) in enumerate(writes):
            for m2, lo2, hi2 in reads + writes[k + 1 :]:
                if m2 == m and lo2 < hi and lo < hi2:
                    raise PlanCheckError(f"{_node_label(plan, nid)} reads and writes overlapping bytes of memory {m} (no in-place kernels)")

    # per memory: segments [lo, hi) -> [last writer, readers since that write]; starts, kept sorted
    segs: dict[int, list[list]] = {m: [] for m in accesses}
    starts: dict[int, list[int]] = {m: [] for m in accesses}
    def split(m: int, at: int) -> None:
        st = starts[m]
        k = bisect.bisect_right(st, at) - 1
        if k >= 0:
            seg = segs[m][k]
            if seg[0] < at < seg[1]:
                right = [at, seg[1], seg[2], list(seg[3])]
                seg[1] = at
                segs[m].insert(k + 1, right)
                st.insert(k + 1, at)

    def touch(m: int, lo: int, hi: int, nid: int, write: bool) -> None:
        split(m, lo)
        split(m, hi)
        st, sg = starts[m], segs[m]
        k = bisect.bisect_left(st, lo)
        cur = lo
        new: list[tuple[int, list]] = []
        while k < len(sg) and sg[k][0] < hi:
            seg = sg[k]
            if seg[0] > cur:  # a gap never touched by a node: only placements wrote there
                new.append((k, [cur, seg[0], PLACED, []]))
            w = seg[2]
            others = [w] + (seg[3] if write else [])
            for x in others:
                rep.ordered_pairs_checked += 1
                if x != PLACED and not (anc[nid] >> x) & 1:
                    raise conflict(x, nid, m, seg[0], seg[1])
            if write:
                seg[2] = nid
                seg[3] = []
            else:
                seg[3].append(nid)
            cur = seg[1]
            k += 1
        if cur < hi:
            new.append((k, [cur, hi, PLACED, []]))
        for off, (k0, seg) in enumerate(new):
            if write:
                seg[2] = nid
            else:
                seg[3].append(nid)
            sg.insert(k0 + off, seg)
            st.insert(k0 + off, seg[0])

    for i in order:
        node = plan.nodes[i]
        for loc in node.inputs:
            if loc is not None and _nbytes(plan, loc):
                touch(loc.mem, loc.offset, loc.offset + _nbytes(plan, loc), i, False)
        for loc in node.outputs:
            if loc is not None and _nbytes(plan, loc):
                touch(loc.mem, loc.offset, loc.offset + _nbytes(plan, loc), i, True)


def _replay(plan: Plan, order: list[int], mems: dict, rep: CheckReport) -> None:
    # (4) replay: every read sees its tensor's bytes
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
            raise PlanCheckError(
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
                    raise PlanCheckError(f"{_node_label(plan, i)} writes tensor '{plan.tensors[st].name}' a second time")
                written.add(st)
                write(loc, st)
        else:
            src, dst = node.inputs[0], node.outputs[0]
            if src is None or dst is None or plan.tensors[src.tensor].storage != plan.tensors[dst.tensor].storage:
                raise PlanCheckError(f"{_node_label(plan, i)} copies between different tensors")
            write(dst, plan.tensors[dst.tensor].storage)
    for loc in plan.outputs:
        got = holds(loc)
        if got != plan.tensors[loc.tensor].storage:
            raise PlanCheckError(f"graph output '{plan.tensors[loc.tensor].name}' is not at memory {loc.mem} offset {loc.offset} when the run ends")


def plan_digest(plan: Plan) -> str:
    """sha256 of the plan's canonical encoding: how :mod:`turnip.cache` remembers a plan proved safe."""
    import hashlib

    from .plan import encode_plan

    return hashlib.sha256(encode_plan(plan)).hexdigest()


def _is_input_block(plan: Plan, tensor: int, graph_inputs: set[int]) -> bool:
    """A block of a graph input, cut from the user's feed at load (tiled plans: ``TensorInfo.block``)."""
    if not 0 <= tensor < len(plan.tensors):
        return False
    blk = plan.tensors[tensor].block
    if blk is None or not 0 <= blk[0] < len(plan.tensors):
        return False
    return blk[0] in graph_inputs or plan.tensors[blk[0]].storage in graph_inputs


def _check_placements(plan: Plan) -> None:
    """Every placement has a known source; the user's feeds go only to graph inputs."""
    graph_inputs = set(plan.inputs)
    for p in plan.placements:
        if p.source not in ("weight", "constant", "input"):
            raise PlanCheckError(f"placement of tensor {p.tensor} has unknown source {p.source!r}")
        if p.source == "input" and p.tensor not in graph_inputs and not _is_input_block(plan, p.tensor, graph_inputs):
            raise PlanCheckError(f"placement of tensor {p.tensor} is fed by the user, but it is not one of the plan's graph inputs")


def _check_devices(plan: Plan) -> None:
    """(1) every node runs on a GPU the plan has an arena for, touching only the memories its kind may touch."""
    arena: dict[int, int] = {}  # device -> GPU memory id
    for m in plan.memories:
        if m.kind == GPU:
            if m.device < 0:
                raise PlanCheckError(f"GPU memory {m.id} names device {m.device}; GPU devices are 0, 1, ...")
            if m.device in arena:
                raise PlanCheckError(f"GPU {m.device} has two arenas (memories {arena[m.device]} and {m.id})")
            arena[m.device] = m.id
    kind_of = {m.id: m.kind for m in plan.memories}
    for node in plan.nodes:
        label = _node_label(plan, node.id)
        if node.device not in arena:
            raise PlanCheckError(f"{label} runs on GPU {node.device}, which the plan has no arena for "
                                 f"(devices: {sorted(arena) or 'none'})")
        own = arena[node.device]
        locs = [x for x in (*node.inputs, *node.outputs) if x is not None]
        if node.kind == COMPUTE:
            bad = [x for x in locs if x.mem != own]
            if bad:
                raise PlanCheckError(f"{label} on GPU {node.device} touches memory {bad[0].mem}, not its own arena {own}")
            continue
        if len(node.inputs) != 1 or len(node.outputs) != 1 or node.inputs[0] is None or node.outputs[0] is None:
            raise PlanCheckError(f"{label} must have exactly one source and one destination")
        src, dst = node.inputs[0].mem, node.outputs[0].mem
        want = {RELOAD: (HOST, "own"), OFFLOAD: ("own", HOST), MOVE: (GPU, "own")}.get(node.kind)
        if want is None:
            raise PlanCheckError(f"{label} has unknown kind {node.kind!r}")
        for role, mem, w in (("source", src, want[0]), ("destination", dst, want[1])):
            ok = mem == own if w == "own" else kind_of.get(mem) == w
            if node.kind == MOVE and role == "source" and mem == own:
                ok = False  # a move copies from another GPU
            if not ok:
                raise PlanCheckError(f"{label}: its {role} is memory {mem}, but a {node.kind} on GPU {node.device} "
                                     f"copies {'host -> arena' if node.kind == RELOAD else 'arena -> host' if node.kind == OFFLOAD else 'another arena -> arena'}")
