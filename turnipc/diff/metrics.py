"""The numbers `turnipc diff` compares, and the thresholds that gate on them.

Every getter reads defensively: a plan of another format version may lack a
stat (``PlanStats`` field ``None``) or a whole section (``Plan.unread``); the
getter then falls back to what the plan's nodes or memories say, or returns
None, which the comparison reports as "not compared" instead of failing.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Callable

from turnip.plan import TRANSFER_KINDS, Memory, MemoryKind, NodeKind, Plan

from ..units import parse_size


@dataclass
class MetricDiff:
    name: str
    unit: str  # "bytes", "count", "s", "flops"
    old: float | None
    new: float | None
    help: str = ""

    @property
    def comparable(self) -> bool:
        return self.old is not None and self.new is not None

    @property
    def delta(self) -> float | None:
        return None if not self.comparable else self.new - self.old  # type: ignore[operator]

    @property
    def pct(self) -> float | None:
        """Change relative to the old value, in percent (inf when growing from 0)."""
        if not self.comparable:
            return None
        if self.old == 0:
            return 0.0 if self.new == 0 else math.inf
        assert self.old is not None and self.new is not None  # comparable
        return 100.0 * (self.new - self.old) / abs(self.old)

    @property
    def changed(self) -> bool:
        return self.comparable and self.old != self.new

    def to_obj(self) -> dict[str, Any]:
        pct = self.pct
        return {"old": self.old, "new": self.new, "delta": self.delta, "unit": self.unit,
                "pct": None if pct is None else (pct if math.isfinite(pct) else "inf")}


def _stat(plan: Plan, key: str) -> Any:
    return getattr(plan.stats, key, None)


def _num(v: Any) -> float | None:
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _has(plan: Plan, section: str) -> bool:
    return section not in plan.unread


def _transfer_bytes_from_nodes(plan: Plan, kind: NodeKind, device: int | None = None) -> int | None:
    if not _has(plan, "nodes"):
        return None
    total = 0
    for n in plan.nodes:
        # node.device: the reload's / move's destination GPU, the offload's source GPU
        if n.kind == kind and (device is None or n.device == device):
            total += n.bytes
    return total


def _node_counts(plan: Plan) -> dict[NodeKind, int] | None:
    s = _stat(plan, "nodes")
    if isinstance(s, dict):
        return {k: int(s.get(k, 0)) for k in NodeKind}
    if not _has(plan, "nodes"):
        return None
    c = {k: 0 for k in NodeKind}
    for n in plan.nodes:
        c[n.kind] = c.get(n.kind, 0) + 1
    return c


def _gpu_mems(plan: Plan) -> list[Memory]:
    return [m for m in plan.memories if m.kind == MemoryKind.GPU] if _has(plan, "memories") else []


def _peak(plan: Plan) -> float | None:
    v = _num(_stat(plan, "peak_bytes"))
    if v is None and _gpu_mems(plan):
        v = max(m.size for m in _gpu_mems(plan))
    return v


def _budget(plan: Plan) -> float | None:
    v = _num(_stat(plan, "budget_bytes"))
    if v is None and _gpu_mems(plan):
        v = max(m.budget for m in _gpu_mems(plan))
    return v


def _max_live(plan: Plan) -> float | None:
    v = _stat(plan, "max_live_bytes_per_device")
    if isinstance(v, list) and v and all(_num(x) is not None for x in v):
        return max(v)
    return None


def _transfer(kind: NodeKind) -> Callable[[Plan], float | None]:
    def get(plan: Plan) -> float | None:
        v = _num(plan.stats.transfer_bytes(kind))
        return v if v is not None else _transfer_bytes_from_nodes(plan, kind)

    return get


def _total_transfer(plan: Plan) -> float | None:
    parts = [_transfer(k)(plan) for k in TRANSFER_KINDS]
    return None if any(p is None for p in parts) else sum(parts)  # type: ignore[arg-type]


def _host(plan: Plan) -> float | None:
    v = _num(_stat(plan, "host_bytes"))
    if v is None and _has(plan, "memories"):
        v = sum(m.size for m in plan.memories if m.kind == MemoryKind.HOST)
    return v


def _count(kind: NodeKind) -> Callable[[Plan], float | None]:
    def get(plan: Plan) -> float | None:
        c = _node_counts(plan)
        return None if c is None else c.get(kind, 0)

    return get


#: (name, unit, getter, help): the plan-wide metrics, in display order.
METRICS: list[tuple[str, str, Callable[[Plan], float | None], str]] = [
    ("peak_bytes", "bytes", _peak, "largest GPU arena"),
    ("budget_bytes", "bytes", _budget, "budget per GPU"),
    ("max_live_bytes", "bytes", _max_live, "most bytes live at once on one GPU"),
    ("lower_bound_bytes", "bytes", lambda p: _num(_stat(p, "lower_bound_bytes")), "largest single-task working set"),
    ("no_offload_peak_bytes", "bytes", lambda p: _num(_stat(p, "no_offload_peak_bytes")), "arena with unlimited memory"),
    ("offload_bytes", "bytes", _transfer(NodeKind.OFFLOAD), "GPU -> host"),
    ("reload_bytes", "bytes", _transfer(NodeKind.RELOAD), "host -> GPU"),
    ("move_bytes", "bytes", _transfer(NodeKind.MOVE), "GPU -> GPU"),
    ("transfer_bytes", "bytes", _total_transfer, "offload + reload + move"),
    ("host_bytes", "bytes", _host, "host region"),
    ("nodes.compute", "count", _count(NodeKind.COMPUTE), ""),
    ("nodes.reload", "count", _count(NodeKind.RELOAD), ""),
    ("nodes.offload", "count", _count(NodeKind.OFFLOAD), ""),
    ("nodes.move", "count", _count(NodeKind.MOVE), ""),
    ("total_flops", "flops", lambda p: _num(_stat(p, "total_flops")), ""),
]


def _per_device_metrics(plan: Plan, d: int) -> dict[str, float | None]:
    mems = {m.device: m for m in _gpu_mems(plan)}
    ml = _stat(plan, "max_live_bytes_per_device")
    out: dict[str, float | None] = {
        "peak_bytes": mems[d].size if d in mems else None,
        "max_live_bytes": _num(ml[d]) if isinstance(ml, list) and d < len(ml) else None,
    }
    for k in TRANSFER_KINDS:
        out[f"{k}_bytes"] = _transfer_bytes_from_nodes(plan, k, d) if d in mems else None
    return out


def simulated_makespan(plan: Plan, device: str) -> tuple[float | None, str | None]:
    """Makespan (seconds) of ``plan`` on the named device profile, or (None, why not)."""
    try:
        from ..simulate.profiles import get_profile
        from ..simulate.sim import simulate
    except Exception as e:  # the simulator is optional
        return None, f"simulator not available ({type(e).__name__})"
    try:
        return float(simulate(plan, get_profile(device), order="dynamic").makespan), None
    except Exception as e:
        return None, f"simulation on {device!r} failed ({type(e).__name__}: {e})"


@dataclass(frozen=True)
class Threshold:
    """``metric`` may grow by at most ``limit``: percent of the old value (relative) or absolute units."""

    name: str  # "max-peak-increase", ...
    metric: str
    text: str  # as given: "5%", "64M", "2ms"
    limit: float
    relative: bool

    def increase(self, m: MetricDiff) -> float | None:
        if not m.comparable:
            return None
        return m.pct if self.relative else m.delta

    def to_obj(self, value: float | None, crossed: bool) -> dict[str, Any]:
        v = value if value is None or math.isfinite(value) else "inf"
        return {"name": self.name, "metric": self.metric, "limit": self.text, "relative": self.relative,
                "value": v, "crossed": crossed}


_TIME_UNITS = {"": 1.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
THRESHOLD_METRICS = {"max-peak-increase": ("peak_bytes", "bytes"), "max-transfer-increase": ("transfer_bytes", "bytes"),
                     "max-makespan-increase": ("makespan_s", "s")}


def parse_threshold(name: str, text: str) -> Threshold:
    """``5%`` (relative to the old value) or an absolute amount: ``64M`` for bytes, ``2ms`` for time."""
    metric, unit = THRESHOLD_METRICS[name]
    t = text.strip()
    if t.endswith("%"):
        try:
            v = float(t[:-1])
        except ValueError:
            raise ValueError(f"--{name} {text!r}: a percentage looks like 5%") from None
        if not v >= 0:
            raise ValueError(f"--{name} {text!r} must not be negative")
        return Threshold(name, metric, t, v, True)
    if unit == "bytes":
        try:
            return Threshold(name, metric, t, float(parse_size(t)), False)
        except ValueError:
            raise ValueError(f"--{name} {text!r}: give a percentage (5%) or bytes (64M, 1G, 1048576)") from None
    m = re.match(r"^([0-9]*\.?[0-9]+)\s*(s|ms|us|µs|ns)?$", t)
    if not m:
        raise ValueError(f"--{name} {text!r}: give a percentage (5%) or a time (0.5s, 20ms, 300us)")
    return Threshold(name, metric, t, float(m.group(1)) * _TIME_UNITS[m.group(2) or ""], False)
