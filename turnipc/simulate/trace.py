"""Chrome trace (Perfetto, chrome://tracing) of a simulated execution.

Written with the runtime's own writer (:func:`turnip.trace.chrome_trace`), so
simulated and measured traces have the same layout: one process per device
(``pid`` = device index, named ``device N (simulated <profile>)``), one
thread per queue (``tid`` 0 compute, 1 h2d, 2 d2h, 3 peer, named after the
queue), and one complete event (``"ph": "X"``) per node, named by the ONNX
node name or ``"reload <tensor>"``, with ``ts``/``dur`` in microseconds and
args ``{node, kind, bytes, flops}`` (plus ``op`` for compute nodes).
"""

from __future__ import annotations

import json
import os
from typing import Any

from turnip.graph import copy_label
from turnip.plan import COMPUTE, QUEUE_OF_KIND, Plan
from turnip.trace import TimelineEvent, chrome_trace

from .sim import SimResult


def sim_trace(plan: Plan, result: SimResult) -> dict[str, Any]:
    """The trace object of ``result`` (a simulation of ``plan``)."""
    events = []
    flops: dict[int, int] = {}
    for i, nd in enumerate(plan.nodes):
        if nd.kind == COMPUTE:
            label = nd.name or nd.op
        else:
            label = nd.name or copy_label(nd, plan)
        flops[nd.id] = nd.flops
        events.append(TimelineEvent(nd.id, nd.kind, nd.device, QUEUE_OF_KIND[nd.kind], label, nd.op, nd.bytes,
                             float(result.start[i]), float(result.end[i])))
    events.sort(key=lambda e: (e.start, e.node))
    obj = chrome_trace(events, backend=f"simulated {result.device}", label="turnipc simulate")
    for ev in obj["traceEvents"]:
        if ev.get("ph") == "X":
            ev["args"]["flops"] = flops[ev["args"]["node"]]
    obj.setdefault("otherData", {}).update(
        {"device": result.device, "order": result.order, "makespan_s": result.makespan,
         "jitter": result.jitter, "seed": result.seed}
    )
    return obj


def write_sim_trace(path: str | os.PathLike[str], plan: Plan, result: SimResult) -> None:
    with open(path, "w") as f:
        json.dump(sim_trace(plan, result), f)
