"""Readable and machine-readable summaries of a plan (`turnipc inspect`)."""

from __future__ import annotations

from typing import Any

from turnip.plan import MemoryKind, NodeKind, Plan

from .units import format_bytes


def summary_obj(plan: Plan, top: int = 10) -> dict[str, Any]:
    """The keys scripts rely on (documented in docs/cli.md)."""
    s = plan.stats
    offloaded: dict[int, int] = {}
    reloaded: dict[int, int] = {}
    for n in plan.nodes:
        if n.kind == NodeKind.OFFLOAD:
            offloaded[n.dst.tensor] = offloaded.get(n.dst.tensor, 0) + 1
        elif n.kind == NodeKind.RELOAD:
            reloaded[n.dst.tensor] = reloaded.get(n.dst.tensor, 0) + 1
    biggest = sorted(range(len(plan.tensors)), key=lambda i: (-plan.tensors[i].nbytes, i))
    tops = []
    for i in biggest:
        t = plan.tensors[i]
        if t.storage != i:
            continue
        tops.append({"name": t.name, "kind": t.kind, "dtype": t.dtype, "shape": list(t.shape), "bytes": t.nbytes,
                     "offloads": offloaded.get(i, 0), "reloads": reloaded.get(i, 0)})
        if len(tops) >= top:
            break
    return {
        "format_version": plan.version,
        "model": plan.model_path,
        "model_sha256": plan.model_sha256,
        "options": plan.options,
        "devices": plan.num_devices,
        "budget_bytes": s.budget_bytes,
        "peak_bytes": s.peak_bytes,
        "peak_bytes_per_device": s.peak_bytes_per_device,
        "no_offload_peak_bytes": s.no_offload_peak_bytes,
        "lower_bound_bytes": s.lower_bound_bytes,
        "offload_bytes": s.offload_bytes,
        "reload_bytes": s.reload_bytes,
        "move_bytes": s.move_bytes,
        "host_bytes": s.host_bytes,
        "nodes": s.nodes,
        "total_flops": s.total_flops,
        "memories": [{"id": m.id, "kind": m.kind, "device": m.device, "size": m.size, "budget": m.budget} for m in plan.memories],
        "top_tensors": tops,
        "ops": op_counts(plan),
        "largest_tasks": largest_working_sets(plan, top),
        "tiling": s.tiling,
    }


def largest_working_sets(plan: Plan, top: int = 10) -> list[dict[str, Any]]:
    """The compute nodes needing the most GPU bytes at once (distinct storages read and written).

    Why: the largest working set is the floor under any budget; these are
    the tasks to look at (or to tile finer) when a budget is refused.
    """
    rows = []
    for n in plan.nodes:
        if n.kind != NodeKind.COMPUTE:
            continue
        storages = {plan.tensors[x.tensor].storage for x in (*n.inputs, *n.outputs) if x is not None}
        ws = sum(plan.tensors[i].nbytes for i in storages)
        rows.append((-ws, n.id, n.name, n.op))
    rows.sort()
    return [{"node": i, "name": name, "op": op, "bytes": -ws} for ws, i, name, op in rows[:top]]


def op_counts(plan: Plan) -> dict[str, int]:
    c: dict[str, int] = {}
    for n in plan.nodes:
        if n.kind == NodeKind.COMPUTE:
            c[n.op] = c.get(n.op, 0) + 1
    return dict(sorted(c.items(), key=lambda kv: (-kv[1], kv[0])))


def summary_text(plan: Plan, top: int = 10) -> str:
    o = summary_obj(plan, top)
    b = o["budget_bytes"] if isinstance(o["budget_bytes"], (int, float)) else 0
    lines = [
        f"model          {o['model']}  (sha256 {o['model_sha256'][:12]}...)",
        f"options        {', '.join(f'{k}={v}' for k, v in o['options'].items())}",
        f"budget         {format_bytes(b)} per GPU x {o['devices']}",
        f"peak           {_bytes(o['peak_bytes'])}  ({100 * o['peak_bytes'] / b:.1f}% of budget)" if b and isinstance(o['peak_bytes'], (int, float)) else "",
        f"no-offload     {_bytes(o['no_offload_peak_bytes'])}  (what this order needs with unlimited memory)",
        f"lower bound    {_bytes(o['lower_bound_bytes'])}  (largest single-task working set)",
        f"offloaded      {_bytes(o['offload_bytes'])}",
        f"reloaded       {_bytes(o['reload_bytes'])}",
        f"moved          {_bytes(o['move_bytes'] or 0)}",
        f"host region    {_bytes(o['host_bytes'] or 0)}",
        "nodes          " + ", ".join(f"{k} {v}" for k, v in (o["nodes"] or {}).items()),
        "",
        "largest tensors:",
    ]
    for t in o["top_tensors"]:
        moves = f"  offloaded x{t['offloads']}" if t["offloads"] else ""
        moves += f"  reloaded x{t['reloads']}" if t["reloads"] else ""
        lines.append(f"  {format_bytes(t['bytes']):>10}  {t['kind']:<10} {t['name']}  {t['dtype']}{t['shape']}{moves}")
    lines += ["", "largest working sets (bytes one task needs at once):"]
    for t in o["largest_tasks"]:
        lines.append(f"  {format_bytes(t['bytes']):>10}  {t['op']:<12} {t['name']}")
    til = o["tiling"]
    if til:
        lines += ["", f"tiling         {til['tiled_ops']} ops in {til['blocks']} blocks (tasks up to "
                  f"{format_bytes(til['max_task_bytes'])}); {til['assembles']} assembles, {til['splits']} re-partitions"]
        for name, n in sorted(til["tiled"].items(), key=lambda kv: (-kv[1], kv[0]))[:top]:
            lines.append(f"  {n:>4} blocks  {name}")
    return "\n".join(x for x in lines if x is not None)


def _bytes(v: object) -> str:
    """format_bytes, or 'n/a' for a number the plan does not record (stats are informative, never required)."""
    return format_bytes(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else "n/a"


def gpu_budget_ok(plan: Plan) -> bool:
    return all(m.size <= m.budget for m in plan.memories if m.kind == MemoryKind.GPU)
