"""Chrome trace (chrome://tracing, Perfetto) of one run's timeline.

One process per device (``pid`` = device index) and one track per queue of
that device (``tid``: 0 compute, 1 h2d, 2 d2h, 3 peer). Every node is a
complete event (``"ph": "X"``) named by its ONNX node name (compute) or by
``"reload t"`` / ``"offload t"`` / ``"move t"`` (copies), with args
``{bytes, node, kind}`` (and ``op`` for compute nodes).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Iterable

from .plan import QUEUE_KINDS


@dataclass(frozen=True)
class TimelineEvent:
    """One node's run: seconds since its repeat started (the runtime's, or the simulator's, timeline)."""

    node: int
    kind: str
    device: int
    queue: str
    name: str
    op: str
    bytes: int
    start: float
    end: float


def chrome_trace(timeline: Iterable[Any], *, backend: str = "", label: str = "turnip") -> dict[str, Any]:
    """Trace object from timeline events (objects with node, kind, device, queue, name, op, bytes, start, end)."""
    events: list[dict[str, Any]] = []
    seen: set[tuple[int, str]] = set()
    for ev in timeline:
        key = (ev.device, ev.queue)
        if key not in seen:
            seen.add(key)
        args: dict[str, Any] = {"bytes": ev.bytes, "node": ev.node, "kind": ev.kind}
        if ev.op:
            args["op"] = ev.op
        events.append(
            {
                "name": ev.name,
                "cat": ev.kind,
                "ph": "X",
                "ts": round(ev.start * 1e6, 3),
                "dur": round(max(ev.end - ev.start, 0.0) * 1e6, 3),
                "pid": ev.device,
                "tid": QUEUE_KINDS.index(ev.queue),
                "args": args,
            }
        )
    meta: list[dict[str, Any]] = []
    suffix = f" ({backend})" if backend else ""
    for dev in sorted({d for d, _ in seen}):
        meta.append({"name": "process_name", "ph": "M", "pid": dev, "tid": 0, "args": {"name": f"device {dev}{suffix}"}})
        meta.append({"name": "process_sort_index", "ph": "M", "pid": dev, "tid": 0, "args": {"sort_index": dev}})
    for dev, q in sorted(seen):
        tid = QUEUE_KINDS.index(q)
        meta.append({"name": "thread_name", "ph": "M", "pid": dev, "tid": tid, "args": {"name": q}})
        meta.append({"name": "thread_sort_index", "ph": "M", "pid": dev, "tid": tid, "args": {"sort_index": tid}})
    events.sort(key=lambda e: (e["ts"], e["pid"], e["tid"]))
    return {"traceEvents": meta + events, "displayTimeUnit": "ms", "otherData": {"producer": label}}


def write_trace(path: str | os.PathLike[str], timeline: Iterable[Any], *, backend: str = "") -> None:
    """Write the trace atomically (turnip.atomic): whole or not at all, a disk error is one OutputError."""
    from .atomic import atomic_write

    obj = chrome_trace(timeline, backend=backend)
    with atomic_write(path, "trace", text=True) as f:
        json.dump(obj, f)
