"""Two plans compared: model and options, metrics, tensors, plan sections; thresholds checked.

The result, :class:`PlanDiff`, is plain data; the renderers (``render.py``)
and the command (``command.py``) only present it. ``exit_code`` follows the
command's convention (0 same, 1 changed, 2 threshold crossed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from turnip.plan import NodeKind, Plan, TensorInfo, encode_plan

from .metrics import (
    METRICS,
    MetricDiff,
    Threshold,
    _gpu_mems,
    _has,
    _num,
    _per_device_metrics,
    simulated_makespan,
)

EXIT_SAME, EXIT_CHANGED, EXIT_THRESHOLD, EXIT_UNREADABLE = 0, 1, 2, 3


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


def _transfer_counts(plan: Plan, kind: NodeKind) -> dict[str, tuple[int, int]]:
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
        for kind, newly, no_longer in ((NodeKind.OFFLOAD, "newly_offloaded", "no_longer_offloaded"),
                                       (NodeKind.RELOAD, "newly_reloaded", "no_longer_reloaded")):
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
    return {k: v for k, v in o.items() if k not in ("format",) and k not in plan.unread}


def diff_plans(old: Plan, new: Plan, device: str | None = "h100", thresholds: Sequence[Threshold] = ()) -> PlanDiff:
    """Compare two plans semantically. ``device``: simulator profile for the makespan (None: skip it)."""
    notes: list[str] = []
    not_compared: list[str] = []
    if old.version != new.version:
        notes.append(f"plan format versions differ (old v{old.version}, new v{new.version}): only what both have is compared")
    for label, p in (("old", old), ("new", new)):
        for s in p.unread:
            not_compared.append(f"{s} (not readable in the {label} plan, format v{p.version})")

    try:
        identical = encode_plan(old) == encode_plan(new)
    except Exception:
        identical = False

    model: dict[str, dict[str, Any]] = {}
    fields: tuple[tuple[str, Any, Any], ...] = (
        ("path", old.model_path, new.model_path), ("sha256", old.model_sha256, new.model_sha256), ("opset", old.opset, new.opset))
    for k, va, vb in fields:
        if va != vb:
            model[k] = {"old": va, "new": vb}
    same_model = bool(old.model_sha256) and old.model_sha256 == new.model_sha256
    if same_model and "path" in model:
        # the path is where the plan was written relative to its model, not what the plan means
        notes.append(f"model path differs ({old.model_path} vs {new.model_path}) but its sha256 is the same: same model")
        del model["path"]
    options: dict[str, dict[str, Any]] = {}
    if _has(old, "options") and _has(new, "options"):
        for k in sorted(set(old.options) | set(new.options), key=str):
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
    result = PlanDiff(old.version, new.version, identical, model, options, metrics, tensors, sections,
                 notes=notes, not_compared=not_compared, device=device)
    if result.changed and not (model or options or result.changed_metrics() or any(tensors.values())):
        result.notes.append("no summary number or tensor changed; the plans differ in "
                            + (", ".join(sections) if sections else "their encoding"))
    result.thresholds = check_thresholds(result, thresholds)
    return result


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
