"""The dependency graph of a plan's nodes, built and checked once.

The executor, the simulator, the priorities and, through
:class:`DependencyGraph`, the plan check (`turnipc verify`, and the check
before every run) and the compiler's task order all need the same
things from a list of nodes with dependencies: where each node id sits, who
waits on whom, how many distinct dependencies each node has, and whether
the whole is acyclic. Building that in one place means one set of checks
and one set of error messages for a malformed plan.

Nodes are referred to by their *position* (index into the node list), not
their id: positions are dense, so successor lists and counters are plain
lists.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from .errors import PlanError
from .plan import Node, NodeKind, Plan


class DependencyGraph:
    """Successors and dependency counts of ``n`` items given each item's dependencies (positions).

    ``succ[j]`` lists, in increasing order, the items that depend on ``j``;
    ``ndeps[i]`` is the number of *distinct* items ``i`` depends on.
    Duplicate dependencies count once; a self-dependency is the caller's
    error to report (see :class:`PlanGraph`).
    """

    __slots__ = ("succ", "ndeps")

    def __init__(self, deps: Sequence[Iterable[int]]) -> None:
        n = len(deps)
        succ: list[list[int]] = [[] for _ in range(n)]
        ndeps = [0] * n
        for i, ds in enumerate(deps):
            for j in set(ds):
                succ[j].append(i)
                ndeps[i] += 1
        self.succ: tuple[tuple[int, ...], ...] = tuple(tuple(s) for s in succ)
        self.ndeps: tuple[int, ...] = tuple(ndeps)

    def __len__(self) -> int:
        return len(self.ndeps)

    def unreachable(self) -> list[int]:
        """Positions that no dependency-respecting order reaches (those on or behind a cycle); empty if acyclic."""
        counts = list(self.ndeps)
        stack = [i for i, c in enumerate(counts) if c == 0]
        while stack:
            i = stack.pop()
            for s in self.succ[i]:
                counts[s] -= 1
                if counts[s] == 0:
                    stack.append(s)
        return [i for i, c in enumerate(counts) if c > 0]

    def topological_order(self) -> list[int]:
        """A dependency-respecting order of all positions: Kahn's algorithm, smallest ready position first.

        Raises ValueError on a cycle (:class:`PlanGraph` raises PlanError).
        """
        import heapq

        counts = list(self.ndeps)
        ready = [i for i, c in enumerate(counts) if c == 0]
        heapq.heapify(ready)
        out: list[int] = []
        while ready:
            i = heapq.heappop(ready)
            out.append(i)
            for s in self.succ[i]:
                counts[s] -= 1
                if counts[s] == 0:
                    heapq.heappush(ready, s)
        if len(out) != len(counts):
            raise ValueError(f"dependencies have a cycle ({len(counts) - len(out)} items can never run)")
        return out


class PlanGraph(DependencyGraph):
    """The MEMGRAPH's nodes as a dependency graph: ``index`` (id -> position), ``succ``, ``ndeps``.

    Construction checks what every consumer relies on, with one message
    each: node ids are unique, every dependency names a node of the plan,
    no node depends on itself. Acyclicity is checked by :meth:`check_acyclic`
    (a full pass: callers that detect a stall as they go need not pay it).
    """

    __slots__ = ("nodes", "index")

    def __init__(self, nodes: Sequence[Node]) -> None:
        self.nodes: tuple[Node, ...] = tuple(nodes)
        index: dict[int, int] = {}
        for i, node in enumerate(self.nodes):
            if node.id in index:
                raise PlanError(f"plan has two nodes with id {node.id}; re-plan the model with `turnipc plan`")
            index[node.id] = i
        deps: list[list[int]] = []
        for i, node in enumerate(self.nodes):
            ds = []
            for d in node.deps:
                j = index.get(d)
                if j is None:
                    raise PlanError(f"node {node.id} depends on node {d}, which the plan does not have; re-plan the model")
                if j == i:
                    raise PlanError(f"node {node.id} depends on itself; re-plan the model")
                ds.append(j)
            deps.append(ds)
        super().__init__(deps)
        self.index = index

    @staticmethod
    def of(plan: Plan) -> "PlanGraph":
        return PlanGraph(plan.nodes)

    def check_acyclic(self) -> None:
        """Raise PlanError if some nodes can never run (a cycle would make every order hang)."""
        stuck = self.unreachable()
        if stuck:
            ids = [self.nodes[i].id for i in stuck[:5]]
            raise PlanError(
                f"plan dependencies have a cycle ({len(stuck)} nodes can never run, e.g. nodes {ids}); re-plan the model"
            )

    def topological_order(self) -> list[int]:
        try:
            return super().topological_order()
        except ValueError:
            self.check_acyclic()
            raise

    def serial_order(self) -> list[int]:
        """Positions in the planned serial order: by ``pos``, ties by id."""
        nodes = self.nodes
        return sorted(range(len(nodes)), key=lambda i: (nodes[i].pos, nodes[i].id))

    def serial_violation(self, serial: Sequence[int]) -> tuple[int, int] | None:
        """The first (dependency, dependent) pair, by position, that ``serial`` runs the wrong way round; None if it respects every dependency."""
        rank = [0] * len(serial)
        for r, i in enumerate(serial):
            rank[i] = r
        for i in range(len(serial)):
            for s in self.succ[i]:
                if rank[s] < rank[i]:
                    return i, s
        return None


def describe_node(node: Node, plan: Plan | None = None) -> str:
    """'node 12 (compute Relu 'layer1/relu')' or 'node 3 (reload 'w', 4096 bytes)'."""
    if node.kind == NodeKind.COMPUTE:
        dom = f"{node.domain}." if node.domain and node.domain != "ai.onnx" else ""
        return f"node {node.id} (compute {dom}{node.op} {node.name!r})"
    what = ""
    dst = node.outputs[0] if node.outputs else None
    if plan is not None and dst is not None and 0 <= dst.tensor < len(plan.tensors):
        what = f" {plan.tensors[dst.tensor].name!r}"
    return f"node {node.id} ({node.kind}{what}, {node.bytes} bytes, device {node.device})"


def copy_label(node: Node, plan: Plan | None = None) -> str:
    """Short label of a copy node for traces: 'reload w'."""
    dst = node.outputs[0] if node.outputs else None
    if plan is not None and dst is not None and 0 <= dst.tensor < len(plan.tensors):
        return f"{node.kind} {plan.tensors[dst.tensor].name}"
    return f"{node.kind} #{node.id}"
