"""Per-op profile of a run: where the compute time went, so the next slow kernel is found in one run.

The executor already stamps every node's start and end (it needs them for
traces), so profiling costs nothing extra at run time: this module only
aggregates the last repeat's timeline (:class:`turnip.run.TimelineEvent`) by
op type and picks the slowest nodes. ``turnip-run --profile`` prints it and
``--json`` carries it under ``"profile"``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

from .plan import COMPUTE


@dataclass(frozen=True)
class OpTime:
    """Total time of one op type (compute) or copy kind (reload, offload, move)."""

    op: str
    count: int
    total_s: float
    share: float  # of the summed node time of all compute nodes (copies: of all copy time)


@dataclass(frozen=True)
class NodeTime:
    node: int
    op: str
    name: str
    seconds: float


@dataclass
class Profile:
    wall_s: float  # the profiled repeat's wall time
    compute_s: float  # summed time of the compute nodes
    copy_s: float  # summed time of reloads, offloads and moves
    by_op: list[OpTime] = field(default_factory=list)  # compute ops, slowest first
    by_copy: list[OpTime] = field(default_factory=list)  # reload / offload / move
    slowest: list[NodeTime] = field(default_factory=list)  # slowest compute nodes

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self, top_ops: int = 15) -> list[str]:
        """Human-readable table (what `turnip-run --profile` prints)."""
        out = [f"profile (last run, wall {self.wall_s * 1e3:.1f} ms; compute {self.compute_s * 1e3:.1f} ms, copies {self.copy_s * 1e3:.1f} ms):"]
        out.append(f"  {'op':<28}{'nodes':>7}{'total ms':>11}{'share':>8}")
        for o in self.by_op[:top_ops]:
            out.append(f"  {o.op:<28}{o.count:>7}{o.total_s * 1e3:>11.2f}{o.share * 100:>7.1f}%")
        if len(self.by_op) > top_ops:
            rest = self.by_op[top_ops:]
            out.append(f"  {'(' + str(len(rest)) + ' more op types)':<28}{sum(o.count for o in rest):>7}{sum(o.total_s for o in rest) * 1e3:>11.2f}")
        for o in self.by_copy:
            out.append(f"  {o.op:<28}{o.count:>7}{o.total_s * 1e3:>11.2f}")
        if self.slowest:
            out.append("  slowest nodes:")
            for n in self.slowest:
                out.append(f"    {n.seconds * 1e3:9.2f} ms  node {n.node} {n.op} {n.name!r}")
        return out


def build_profile(timeline: Iterable[Any], wall_s: float, top_nodes: int = 10) -> Profile:
    """Aggregate timeline events (``kind, op, name, node, start, end``) into a :class:`Profile`."""
    ops: dict[str, list[float]] = {}
    copies: dict[str, list[float]] = {}
    nodes: list[NodeTime] = []
    for e in timeline:
        dt = max(0.0, e.end - e.start)
        if e.kind == COMPUTE:
            acc = ops.setdefault(e.op, [0, 0.0])
            nodes.append(NodeTime(e.node, e.op, e.name, dt))
        else:
            acc = copies.setdefault(e.kind, [0, 0.0])
        acc[0] += 1
        acc[1] += dt
    compute = sum(v[1] for v in ops.values())
    copy = sum(v[1] for v in copies.values())

    def table(d: dict[str, list[float]], total: float) -> list[OpTime]:
        rows = [OpTime(k, int(v[0]), v[1], v[1] / total if total > 0 else 0.0) for k, v in d.items()]
        return sorted(rows, key=lambda r: (-r.total_s, r.op))

    nodes.sort(key=lambda n: (-n.seconds, n.node))
    return Profile(wall_s, compute, copy, table(ops, compute), table(copies, copy), nodes[:top_nodes])
