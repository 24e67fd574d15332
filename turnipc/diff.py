"""`turnipc diff`: a semantic comparison of two plan files, for code review and CI.

It compares what a plan *means*, not its bytes: the model and options it was
made from, the summary numbers (peak, budget, bounds, bytes moved, node
counts, a simulated makespan) and the tensors (matched by ONNX name: added,
removed, resized, newly offloaded or reloaded...). Thresholds turn it into a
regression gate:

    exit 0  no change: the plans are semantically identical
    exit 1  changes, all within the thresholds given
    exit 2  a threshold was crossed
    exit 3  an input is unreadable (missing file, not a plan, truncated)

Plans of two different format versions are compared on what both have; every
field is read defensively (``plan.stats`` may lack a key, a section may not
parse) and what could not be compared is listed in ``PlanDiff.not_compared``.
"""

from __future__ import annotations

import json
import math
import re
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import click
from turnip.plan import (
    FORMAT_NAME,
    FORMAT_VERSION,
    GPU,
    HOST,
    Loc,
    Memory,
    Node,
    Placement,
    Plan,
    PlanFormatError,
    TensorInfo,
    encode_plan,
)

from .units import format_bytes, parse_size

EXIT_SAME, EXIT_CHANGED, EXIT_THRESHOLD, EXIT_UNREADABLE = 0, 1, 2, 3

TRANSFER_KINDS = ("offload", "reload", "move")
NODE_KINDS = ("compute", "reload", "offload", "move")
_MISSING_ATTR = "_turnip_diff_missing"  # sections of a plan that did not parse (lenient reads only)


# ---------------------------------------------------------------------------
# reading plans, leniently


class UnreadablePlan(PlanFormatError):
    """The file is missing, is not a plan, or is truncated (exit 3)."""


def read_plan_lenient(path: str) -> Plan:
    """Read a plan for comparison, accepting format versions this runtime cannot execute.

    A plan of the current version is read exactly as the runtime reads it.
    Another version is read section by section; sections that do not parse
    are left empty and recorded, so :func:`diff_plans` can say what it could
    not compare. Raises :class:`UnreadablePlan` for a file that is not a plan.
    """
    import msgpack

    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise UnreadablePlan(f"cannot read {path!r}: {e.strerror}") from e
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception as e:  # msgpack raises several unrelated types
        raise UnreadablePlan(f"{path}: not valid msgpack ({type(e).__name__}); is it truncated or not a plan?") from e
    if not isinstance(obj, dict) or obj.get("format") != FORMAT_NAME:
        raise UnreadablePlan(f"{path}: not a Turnip plan (no 'format: turnip-plan' header)")
    version = obj.get("version")
    if version == FORMAT_VERSION:
        try:
            return Plan.from_obj(obj)
        except PlanFormatError as e:
            raise UnreadablePlan(f"{path}: {e}") from e
    if not isinstance(version, int):
        raise UnreadablePlan(f"{path}: plan has no integer format version ({version!r})")
    return _plan_from_obj_partial(obj, version)


def _plan_from_obj_partial(o: dict[str, Any], version: int) -> Plan:
    missing: list[str] = []

    def section(name: str, parse: Callable[[Any], Any], default: Any) -> Any:
        try:
            return parse(o[name])
        except Exception:
            missing.append(name)
            return default

    model = o.get("model") if isinstance(o.get("model"), dict) else {}
    if not model:
        missing.append("model")
    plan = Plan(
        model_path=str(model.get("path", "")),
        model_sha256=str(model.get("sha256", "")),
        opset=dict(model.get("opset", {}) or {}),
        options=section("options", dict, {}),
        tensors=section("tensors", lambda v: [TensorInfo.from_obj(t) for t in v], []),
        memories=section("memories", lambda v: [Memory.from_obj(m) for m in v], []),
        placements=section("placements", lambda v: [Placement.from_obj(p) for p in v], []),
        nodes=section("nodes", lambda v: [Node.from_obj(n) for n in v], []),
        inputs=section("inputs", list, []),
        outputs=section("outputs", lambda v: [Loc.from_obj(x) for x in v], []),
        constants=section("constants", lambda v: {int(k): bytes(b) for k, b in v}, {}),
        stats=section("stats", dict, {}),
        version=version,
    )
    setattr(plan, _MISSING_ATTR, tuple(missing))
    return plan


def _missing(plan: Plan) -> tuple[str, ...]:
    return getattr(plan, _MISSING_ATTR, ())


# ---------------------------------------------------------------------------
# metrics


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
        return 100.0 * (self.new - self.old) / abs(self.old)  # type: ignore[operator]

    @property
    def changed(self) -> bool:
        return self.comparable and self.old != self.new

    def to_obj(self) -> dict[str, Any]:
        pct = self.pct
        return {"old": self.old, "new": self.new, "delta": self.delta, "unit": self.unit,
                "pct": None if pct is None else (pct if math.isfinite(pct) else "inf")}


def _stat(plan: Plan, key: str) -> Any:
    s = plan.stats if isinstance(plan.stats, dict) else {}
    return s.get(key)


def _num(v: Any) -> float | None:
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _has(plan: Plan, section: str) -> bool:
    return section not in _missing(plan)


def _transfer_bytes_from_nodes(plan: Plan, kind: str, device: int | None = None) -> int | None:
    if not _has(plan, "nodes"):
        return None
    total = 0
    for n in plan.nodes:
        # node.device: the reload's / move's destination GPU, the offload's source GPU
        if n.kind == kind and (device is None or n.device == device):
            total += n.bytes
    return total


def _node_counts(plan: Plan) -> dict[str, int] | None:
    s = _stat(plan, "nodes")
    if isinstance(s, dict):
        return {k: int(s.get(k, 0)) for k in NODE_KINDS}
    if not _has(plan, "nodes"):
        return None
    c = {k: 0 for k in NODE_KINDS}
    for n in plan.nodes:
        c[n.kind] = c.get(n.kind, 0) + 1
    return c


def _gpu_mems(plan: Plan) -> list[Memory]:
    return [m for m in plan.memories if m.kind == GPU] if _has(plan, "memories") else []


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


def _transfer(kind: str) -> Callable[[Plan], float | None]:
    def get(plan: Plan) -> float | None:
        v = _num(_stat(plan, f"{kind}_bytes"))
        return v if v is not None else _transfer_bytes_from_nodes(plan, kind)

    return get


def _total_transfer(plan: Plan) -> float | None:
    parts = [_transfer(k)(plan) for k in TRANSFER_KINDS]
    return None if any(p is None for p in parts) else sum(parts)  # type: ignore[arg-type]


def _host(plan: Plan) -> float | None:
    v = _num(_stat(plan, "host_bytes"))
    if v is None and _has(plan, "memories"):
        v = sum(m.size for m in plan.memories if m.kind == HOST)
    return v


def _count(kind: str) -> Callable[[Plan], float | None]:
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
    ("offload_bytes", "bytes", _transfer("offload"), "GPU -> host"),
    ("reload_bytes", "bytes", _transfer("reload"), "host -> GPU"),
    ("move_bytes", "bytes", _transfer("move"), "GPU -> GPU"),
    ("transfer_bytes", "bytes", _total_transfer, "offload + reload + move"),
    ("host_bytes", "bytes", _host, "host region"),
    ("nodes.compute", "count", _count("compute"), ""),
    ("nodes.reload", "count", _count("reload"), ""),
    ("nodes.offload", "count", _count("offload"), ""),
    ("nodes.move", "count", _count("move"), ""),
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
        from .simulate.profiles import get_profile
        from .simulate.sim import simulate
    except Exception as e:  # the simulator is optional
        return None, f"simulator not available ({type(e).__name__})"
    try:
        return float(simulate(plan, get_profile(device), order="dynamic").makespan), None
    except Exception as e:
        return None, f"simulation on {device!r} failed ({type(e).__name__}: {e})"


# ---------------------------------------------------------------------------
# thresholds


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


# ---------------------------------------------------------------------------
# the diff


@dataclass
class PlanDiff:
    """The semantic difference between two plans. ``exit_code`` follows the CLI's convention."""

    old_version: int
    new_version: int
    identical_bytes: bool
    model: dict[str, dict[str, Any]]  # changed model fields: name -> {old, new}
    options: dict[str, dict[str, Any]]  # changed options: name -> {old, new}
    metrics: dict[str, MetricDiff]
    tensors: dict[str, list[dict[str, Any]]]
    sections_changed: list[str]  # top-level plan sections whose content differs
    thresholds: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    not_compared: list[str] = field(default_factory=list)
    device: str | None = None

    @property
    def changed(self) -> bool:
        if self.identical_bytes:
            return False
        return bool(self.model or self.options or any(m.changed for m in self.metrics.values())
                    or any(self.tensors.values()) or self.sections_changed or self.old_version != self.new_version)

    @property
    def crossed(self) -> list[dict[str, Any]]:
        return [t for t in self.thresholds if t["crossed"]]

    @property
    def exit_code(self) -> int:
        if not self.changed:
            return EXIT_SAME
        return EXIT_THRESHOLD if self.crossed else EXIT_CHANGED

    def changed_metrics(self) -> list[MetricDiff]:
        return [m for m in self.metrics.values() if m.changed]

    def to_obj(self) -> dict[str, Any]:
        return {
            "changed": self.changed,
            "exit_code": self.exit_code,
            "identical_bytes": self.identical_bytes,
            "versions": {"old": self.old_version, "new": self.new_version},
            "model": self.model,
            "options": self.options,
            "metrics": {k: m.to_obj() for k, m in self.metrics.items()},
            "tensors": self.tensors,
            "sections_changed": self.sections_changed,
            "thresholds": self.thresholds,
            "notes": self.notes,
            "not_compared": self.not_compared,
            "device": self.device,
        }


TENSOR_LISTS = ("added", "removed", "resized", "newly_offloaded", "no_longer_offloaded", "newly_reloaded",
                "no_longer_reloaded", "kind_changed")


def _storages(plan: Plan) -> dict[str, tuple[int, TensorInfo]]:
    """Storages (tensors owning their bytes; aliases skipped), by ONNX name."""
    return {t.name: (i, t) for i, t in enumerate(plan.tensors) if t.storage == i}


def _transfer_counts(plan: Plan, kind: str) -> dict[str, tuple[int, int]]:
    """storage name -> (number of ``kind`` nodes, bytes they copy)."""
    out: dict[str, tuple[int, int]] = {}
    for n in plan.nodes:
        if n.kind != kind:
            continue
        try:
            t = plan.tensors[n.dst.tensor]
            name = plan.tensors[t.storage].name
        except (IndexError, AssertionError):
            continue
        c, b = out.get(name, (0, 0))
        out[name] = (c + 1, b + n.bytes)
    return out


def _tensor_obj(t: TensorInfo) -> dict[str, Any]:
    return {"name": t.name, "kind": t.kind, "dtype": t.dtype, "shape": list(t.shape), "bytes": t.nbytes}


def _diff_tensors(old: Plan, new: Plan, not_compared: list[str]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {k: [] for k in TENSOR_LISTS}
    if not (_has(old, "tensors") and _has(new, "tensors")):
        not_compared.append("tensors (the tensor table of one plan did not parse)")
        return out
    a, b = _storages(old), _storages(new)
    for name in b.keys() - a.keys():
        out["added"].append(_tensor_obj(b[name][1]))
    for name in a.keys() - b.keys():
        out["removed"].append(_tensor_obj(a[name][1]))
    for name in a.keys() & b.keys():
        ta, tb = a[name][1], b[name][1]
        if (ta.dtype, tuple(ta.shape), ta.nbytes) != (tb.dtype, tuple(tb.shape), tb.nbytes):
            out["resized"].append({"name": name, "kind": tb.kind, "old": {"dtype": ta.dtype, "shape": list(ta.shape), "bytes": ta.nbytes},
                                   "new": {"dtype": tb.dtype, "shape": list(tb.shape), "bytes": tb.nbytes},
                                   "delta_bytes": tb.nbytes - ta.nbytes})
        if ta.kind != tb.kind:
            out["kind_changed"].append({"name": name, "old": ta.kind, "new": tb.kind, "bytes": tb.nbytes})
    if _has(old, "nodes") and _has(new, "nodes"):
        for kind, newly, no_longer in (("offload", "newly_offloaded", "no_longer_offloaded"),
                                       ("reload", "newly_reloaded", "no_longer_reloaded")):
            ca, cb = _transfer_counts(old, kind), _transfer_counts(new, kind)
            for name in set(ca) | set(cb):
                (na, ba), (nb, bb) = ca.get(name, (0, 0)), cb.get(name, (0, 0))
                if name not in a or name not in b:
                    continue  # added / removed tensors are listed as such
                size = b[name][1].nbytes
                entry = {"name": name, "kind": b[name][1].kind, "bytes": size, f"{kind}s_old": na, f"{kind}s_new": nb,
                         "old_bytes": ba, "new_bytes": bb}
                if na == 0 and nb > 0:
                    out[newly].append(entry)
                elif na > 0 and nb == 0:
                    out[no_longer].append(entry)
    else:
        not_compared.append("offloaded / reloaded tensors (the node list of one plan did not parse)")
    key_by = {
        "added": lambda e: e["bytes"], "removed": lambda e: e["bytes"], "resized": lambda e: abs(e["delta_bytes"]),
        "kind_changed": lambda e: e["bytes"],
    }
    for k, lst in out.items():
        f = key_by.get(k, lambda e: max(e["old_bytes"], e["new_bytes"]))
        lst.sort(key=lambda e: (-f(e), e["name"]))
    return out


def _section_objs(plan: Plan) -> dict[str, Any]:
    try:
        o = plan.to_obj()
    except Exception:
        return {}
    return {k: v for k, v in o.items() if k not in ("format",) and k not in _missing(plan)}


def diff_plans(old: Plan, new: Plan, device: str | None = "h100", thresholds: Sequence[Threshold] = ()) -> PlanDiff:
    """Compare two plans semantically. ``device``: simulator profile for the makespan (None: skip it)."""
    notes: list[str] = []
    not_compared: list[str] = []
    if old.version != new.version:
        notes.append(f"plan format versions differ (old v{old.version}, new v{new.version}): only what both have is compared")
    for label, p in (("old", old), ("new", new)):
        for s in _missing(p):
            not_compared.append(f"{s} (not readable in the {label} plan, format v{p.version})")

    try:
        identical = encode_plan(old) == encode_plan(new)
    except Exception:
        identical = False

    model: dict[str, dict[str, Any]] = {}
    for k, va, vb in (("path", old.model_path, new.model_path), ("sha256", old.model_sha256, new.model_sha256),
                      ("opset", old.opset, new.opset)):
        if va != vb:
            model[k] = {"old": va, "new": vb}
    same_model = bool(old.model_sha256) and old.model_sha256 == new.model_sha256
    if same_model and "path" in model:
        # the path is where the plan was written relative to its model, not what the plan means
        notes.append(f"model path differs ({old.model_path} vs {new.model_path}) but its sha256 is the same: same model")
        del model["path"]
    options: dict[str, dict[str, Any]] = {}
    if _has(old, "options") and _has(new, "options"):
        for k in sorted(set(old.options) | set(new.options)):
            va, vb = old.options.get(k), new.options.get(k)
            if va != vb:
                options[k] = {"old": va, "new": vb}

    metrics: dict[str, MetricDiff] = {}
    for name, unit, get, help_ in METRICS:
        m = MetricDiff(name, unit, _safe(get, old), _safe(get, new), help_)
        metrics[name] = m
        if not m.comparable and (m.old is not None or m.new is not None):
            which = "old" if m.old is None else "new"
            not_compared.append(f"{name} (missing in the {which} plan)")
    ndev = max(len(_gpu_mems(old)), len(_gpu_mems(new)))
    if ndev > 1:
        for d in range(ndev):
            pa, pb = _per_device_metrics(old, d), _per_device_metrics(new, d)
            for k in pa:
                metrics[f"gpu{d}.{k}"] = MetricDiff(f"gpu{d}.{k}", "bytes", pa[k], pb[k])
    if device:
        ma, why_a = simulated_makespan(old, device)
        mb, why_b = (ma, None) if identical else simulated_makespan(new, device)
        metrics["makespan_s"] = MetricDiff("makespan_s", "s", ma, mb, f"simulated on {device}")
        why = why_a or why_b
        if why:
            notes.append(f"makespan: n/a ({why})")
            not_compared.append("makespan_s")

    tensors = _diff_tensors(old, new, not_compared)
    sa, sb = _section_objs(old), _section_objs(new)
    if same_model:
        for so in (sa, sb):
            if isinstance(so.get("model"), dict):
                so["model"] = {k: v for k, v in so["model"].items() if k != "path"}
    sections = [k for k in sorted(set(sa) & set(sb)) if k != "version" and sa[k] != sb[k]]
    d = PlanDiff(old.version, new.version, identical, model, options, metrics, tensors, sections,
                 notes=notes, not_compared=not_compared, device=device)
    if d.changed and not (model or options or d.changed_metrics() or any(tensors.values())):
        d.notes.append("no summary number or tensor changed; the plans differ in "
                       + (", ".join(sections) if sections else "their encoding"))
    d.thresholds = check_thresholds(d, thresholds)
    return d


def _safe(get: Callable[[Plan], Any], plan: Plan) -> float | None:
    try:
        return _num(get(plan))
    except Exception:
        return None


def check_thresholds(d: PlanDiff, thresholds: Sequence[Threshold]) -> list[dict[str, Any]]:
    out = []
    for t in thresholds:
        m = d.metrics.get(t.metric)
        value = None if m is None else t.increase(m)
        crossed = value is not None and value > t.limit
        if value is None and not d.identical_bytes:
            d.notes.append(f"--{t.name} not checked: {t.metric} is not available for both plans")
        out.append(t.to_obj(value, crossed))
    return out


# ---------------------------------------------------------------------------
# rendering


def _fmt_value(v: float | None, unit: str) -> str:
    if v is None:
        return "n/a"
    if unit == "bytes":
        return format_bytes(v)
    if unit == "s":
        return _fmt_time(v)
    if unit == "flops":
        return _fmt_si(v, "FLOP")
    return f"{int(v):,}"


def _fmt_delta(m: MetricDiff) -> str:
    d = m.delta
    if d is None:
        return "n/a"
    if d == 0:
        return "="
    sign = "+" if d > 0 else "-"
    return sign + _fmt_value(abs(d), m.unit)


def _fmt_pct(m: MetricDiff) -> str:
    p = m.pct
    if p is None:
        return "n/a"
    if p == 0 and not m.changed:
        return ""
    if math.isinf(p):
        return "new"
    return f"{p:+.1f}%"


def _fmt_time(s: float) -> str:
    for unit, f in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if abs(s) >= f:
            return f"{s / f:.3g} {unit}"
    return f"{s * 1e9:.3g} ns"


def _fmt_si(v: float, unit: str) -> str:
    for p, f in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= f:
            return f"{v / f:.3g} {p}{unit}"
    return f"{v:.0f} {unit}"


def _fmt_threshold(t: dict[str, Any]) -> str:
    v = t["value"]
    if v is None:
        val = "n/a"
    elif v == "inf":
        val = "new (was 0)"
    elif t["relative"]:
        val = f"{v:+.1f}%"
    elif t["metric"] == "makespan_s":
        val = ("+" if v >= 0 else "-") + _fmt_time(abs(v))
    else:
        val = ("+" if v >= 0 else "-") + format_bytes(abs(v))
    return val


def _tensor_line(kind: str, e: dict[str, Any]) -> str:
    if kind == "resized":
        o, n = e["old"], e["new"]
        dt = "" if o["dtype"] == n["dtype"] else f" {o['dtype']} -> {n['dtype']}"
        return (f"{e['name']}: {format_bytes(o['bytes'])} -> {format_bytes(n['bytes'])} "
                f"({'+' if e['delta_bytes'] >= 0 else '-'}{format_bytes(abs(e['delta_bytes']))}), "
                f"shape {o['shape']} -> {n['shape']}{dt}")
    if kind in ("added", "removed"):
        return f"{e['name']}: {format_bytes(e['bytes'])} {e['kind']} {e['dtype']}{e['shape']}"
    if kind == "kind_changed":
        return f"{e['name']}: {e['old']} -> {e['new']} ({format_bytes(e['bytes'])})"
    verb = "offload" if "offload" in kind else "reload"
    return (f"{e['name']}: {format_bytes(e['bytes'])} {e['kind']}, {verb}ed x{e[verb + 's_old']} -> "
            f"x{e[verb + 's_new']} ({format_bytes(e['old_bytes'])} -> {format_bytes(e['new_bytes'])} copied)")


def _headline(d: PlanDiff) -> str:
    if not d.changed:
        return "no change: the plans are semantically identical" + (" (byte-identical)" if d.identical_bytes else "")
    n = len(d.changed_metrics())
    t = sum(len(v) for v in d.tensors.values())
    msg = f"{n} metric{'s' if n != 1 else ''} changed, {t} tensor change{'s' if t != 1 else ''}"
    if d.crossed:
        msg += "; THRESHOLD CROSSED: " + ", ".join(f"--{t['name']} {t['limit']}" for t in d.crossed)
    elif d.thresholds:
        msg += "; within thresholds"
    return msg


def render_text(d: PlanDiff, old_label: str = "old", new_label: str = "new", top: int = 10, console: Any = None) -> None:
    """Print the diff as rich tables (plain text when not a terminal)."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    con = console or Console(highlight=False)
    con.print(f"[bold]turnipc diff[/bold] {old_label} -> {new_label}: {_headline(d)}", soft_wrap=True)
    if d.model or d.options:
        t = Table(title="inputs", title_justify="left", box=box.SIMPLE_HEAD)
        t.add_column("field")
        t.add_column("old", overflow="fold")
        t.add_column("new", overflow="fold")
        for k, v in d.model.items():
            t.add_row(f"model.{k}", str(v["old"]), str(v["new"]))
        for k, v in d.options.items():
            t.add_row(f"options.{k}", str(v["old"]), str(v["new"]))
        con.print(t)
    t = Table(box=box.SIMPLE_HEAD)
    t.add_column("metric")
    t.add_column("old", justify="right")
    t.add_column("new", justify="right")
    t.add_column("change", justify="right")
    t.add_column("%", justify="right")
    for m in d.metrics.values():
        style = "bold" if m.changed else "dim"
        t.add_row(m.name, _fmt_value(m.old, m.unit), _fmt_value(m.new, m.unit), _fmt_delta(m), _fmt_pct(m), style=style)
    con.print(t)
    for kind in TENSOR_LISTS:
        lst = d.tensors.get(kind, [])
        if not lst:
            continue
        con.print(f"[bold]{kind.replace('_', ' ')}[/bold] ({len(lst)}):")
        for e in lst[:top]:
            con.print("  " + _tensor_line(kind, e), markup=False)
        if len(lst) > top:
            con.print(f"  ... and {len(lst) - top} more (--top, or --json for all)")
    for th in d.thresholds:
        mark = "[red]CROSSED[/red]" if th["crossed"] else "ok"
        con.print(f"threshold --{th['name']} {th['limit']}: {_fmt_threshold(th)}  {mark}")
    if d.changed and d.sections_changed:
        con.print("plan sections that differ: " + ", ".join(d.sections_changed), markup=False)
    for n in d.notes:
        con.print(f"note: {n}", markup=False)
    if d.not_compared:
        con.print("not compared: " + "; ".join(d.not_compared), markup=False)


def render_markdown(d: PlanDiff, old_label: str = "old", new_label: str = "new", top: int = 10) -> str:
    """A GitHub-flavoured Markdown report, for a pull-request comment."""
    icon = {EXIT_SAME: ":white_check_mark:", EXIT_CHANGED: ":information_source:", EXIT_THRESHOLD: ":x:"}[d.exit_code]
    out = [f"### {icon} turnipc diff: {_headline(d)}", "", f"`{old_label}` → `{new_label}`", ""]
    if d.model or d.options:
        out += ["| input | old | new |", "| --- | --- | --- |"]
        for k, v in d.model.items():
            out.append(f"| model.{k} | `{_md(v['old'])}` | `{_md(v['new'])}` |")
        for k, v in d.options.items():
            out.append(f"| options.{k} | `{_md(v['old'])}` | `{_md(v['new'])}` |")
        out.append("")
    out += ["| metric | old | new | change | % |", "| --- | ---: | ---: | ---: | ---: |"]
    for m in d.metrics.values():
        name = f"**{m.name}**" if m.changed else m.name
        out.append(f"| {name} | {_fmt_value(m.old, m.unit)} | {_fmt_value(m.new, m.unit)} | {_fmt_delta(m)} | {_fmt_pct(m)} |")
    if d.thresholds:
        out += ["", "| threshold | limit | value | result |", "| --- | ---: | ---: | --- |"]
        for th in d.thresholds:
            res = ":x: crossed" if th["crossed"] else ("n/a" if th["value"] is None else ":white_check_mark: ok")
            out.append(f"| --{th['name']} | {th['limit']} | {_fmt_threshold(th)} | {res} |")
    for kind in TENSOR_LISTS:
        lst = d.tensors.get(kind, [])
        if not lst:
            continue
        out += ["", f"<details><summary>{kind.replace('_', ' ')} tensors ({len(lst)})</summary>", ""]
        out += [f"- `{_md(_tensor_line(kind, e))}`" for e in lst[:top]]
        if len(lst) > top:
            out.append(f"- ... and {len(lst) - top} more")
        out += ["", "</details>"]
    if d.notes or d.not_compared:
        out.append("")
        out += [f"> note: {_md(n)}" for n in d.notes]
        if d.not_compared:
            out.append(f"> not compared: {_md('; '.join(d.not_compared))}")
    return "\n".join(out) + "\n"


def _md(v: Any) -> str:
    return str(v).replace("|", "\\|").replace("`", "'")


# ---------------------------------------------------------------------------
# command line


def _threshold_option(name: str, example: str, what: str):
    def cb(ctx: click.Context, param: click.Parameter, value: str | None) -> Threshold | None:
        if value is None:
            return None
        try:
            return parse_threshold(name, value)
        except ValueError as e:
            raise click.BadParameter(str(e)) from None

    return click.option(f"--{name}", metavar="PCT|AMOUNT", default=None, callback=cb,
                        help=f"Fail (exit 2) if {what} grows by more than this: a percentage of the old value, or {example}.")


class _DiffCommand(click.Command):
    """Usage errors exit 3 (bad input), so that exit 2 always means a threshold was crossed."""

    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        try:
            return super().make_context(*args, **kwargs)
        except click.UsageError as e:
            e.exit_code = EXIT_UNREADABLE
            raise


def _device_cb(ctx: click.Context, param: click.Parameter, value: str) -> str | None:
    if value.lower() == "none":
        return None
    try:
        from .simulate.profiles import get_profile, profile_names
    except Exception:
        return value  # no simulator: the makespan line says n/a
    try:
        get_profile(value)
    except Exception:
        raise click.BadParameter(f"unknown device profile {value!r}; known: {', '.join(profile_names())}, or 'none'") from None
    return value


@click.command("diff", cls=_DiffCommand, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("old_path", metavar="OLD", type=click.Path(dir_okay=False))
@click.argument("new_path", metavar="NEW", type=click.Path(dir_okay=False))
@_threshold_option("max-peak-increase", "bytes (64M)", "the peak GPU arena")
@_threshold_option("max-transfer-increase", "bytes (1G)", "offload + reload + move bytes")
@_threshold_option("max-makespan-increase", "a time (20ms)", "the simulated makespan")
@click.option("--device", default="h100", show_default=True, metavar="PROFILE", callback=_device_cb,
              help="Simulator device profile for the makespan line; 'none' to skip the simulation.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (keys below).")
@click.option("--markdown", "as_markdown", is_flag=True, help="Print a GitHub-flavoured Markdown report (for a PR comment).")
@click.option("--top", default=10, show_default=True, type=click.IntRange(0), help="Tensors listed per category (text/Markdown).")
def diff_cmd(old_path: str, new_path: str, max_peak_increase: Threshold | None, max_transfer_increase: Threshold | None,
             max_makespan_increase: Threshold | None, device: str | None, as_json: bool, as_markdown: bool, top: int) -> None:
    """Compare two plans of a model semantically: peak, budget, bounds, bytes moved, node counts, simulated makespan, and tensors
    added, removed, resized, newly offloaded or reloaded (largest first).

    \b
    Exit codes:
      0  no change (the plans are semantically identical)
      1  changes, all within the thresholds given (none given: any change)
      2  a threshold was crossed
      3  an input is unreadable (missing file, not a plan, truncated),
         or the command line is wrong

    \b
    Thresholds are off unless given; a percentage is relative to OLD:
      --max-peak-increase 5%        or an absolute amount: 64M
      --max-transfer-increase 10%   or 1G
      --max-makespan-increase 5%    or 20ms

    \b
    JSON (--json): {"changed", "exit_code", "metrics": {name: {old, new, delta, pct}},
      "tensors": {"added", "removed", "resized", "newly_offloaded", "no_longer_offloaded",
      "newly_reloaded", "no_longer_reloaded", "kind_changed"}, "thresholds": [{name, limit, value, crossed}],
      "notes", "not_compared", "model", "options"}

    \b
    CI example (fail the job only when a threshold is crossed):
      turnipc plan model.onnx --gpu-mem 25% -o new.plan
      turnipc diff plans/golden.plan new.plan --max-peak-increase 5% --markdown > diff.md
      rc=$?; [ $rc -le 1 ] || exit $rc
    """
    if as_json and as_markdown:
        raise click.UsageError("--json and --markdown are exclusive")
    plans = []
    for p in (old_path, new_path):
        try:
            plans.append(read_plan_lenient(p))
        except PlanFormatError as e:
            if as_json:
                click.echo(json.dumps({"changed": None, "exit_code": EXIT_UNREADABLE, "error": str(e)}))
            click.echo(f"error: {e}", err=True)
            sys.exit(EXIT_UNREADABLE)
    thresholds = [t for t in (max_peak_increase, max_transfer_increase, max_makespan_increase) if t is not None]
    d = diff_plans(plans[0], plans[1], device=device, thresholds=thresholds)
    if as_json:
        click.echo(json.dumps(d.to_obj(), indent=2))
    elif as_markdown:
        click.echo(render_markdown(d, old_path, new_path, top), nl=False)
    else:
        render_text(d, old_path, new_path, top)
    sys.exit(d.exit_code)
