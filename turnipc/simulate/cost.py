"""Time of one MEMGRAPH node on a device profile.

* compute (roofline): ``max(flops / peak[dtype], bytes / hbm_bw) + launch``,
  where ``dtype`` is the dtype of the node's first output (an op with no
  output, or an unknown dtype, uses the float32 peak);
* reload: ``bytes / h2d_bw + copy_latency``;
* offload: ``bytes / d2h_bw + copy_latency``;
* move: ``bytes / peer_bw + copy_latency``.

``flops`` and ``bytes`` are the plan's per-node estimates (turnipc/cost.py):
order-of-magnitude right, not exact.
"""

from __future__ import annotations

import numpy as np
from turnip.plan import COMPUTE, MOVE, OFFLOAD, RELOAD, Node, Plan

from .profiles import DeviceProfile, get_profile


def compute_time(flops: float, nbytes: float, dtype: str, profile: DeviceProfile) -> float:
    return max(flops / profile.peak(dtype), nbytes / profile.hbm_bw) + profile.launch_s


def transfer_time(nbytes: float, kind: str, profile: DeviceProfile) -> float:
    if kind == RELOAD:
        bw = profile.h2d_bw
    elif kind == OFFLOAD:
        bw = profile.d2h_bw
    elif kind == MOVE:
        bw = profile.peer_bw
    else:
        raise ValueError(f"not a transfer kind: {kind!r}")
    return nbytes / bw + profile.copy_latency_s


def output_dtype(node: Node, plan: Plan) -> str:
    if node.outputs and node.outputs[0] is not None:
        t = node.outputs[0].tensor
        if 0 <= t < len(plan.tensors):
            return plan.tensors[t].dtype
    return "float32"


def node_time(node: Node, plan: Plan, profile: DeviceProfile | str) -> float:
    p = get_profile(profile)
    if node.kind == COMPUTE:
        return compute_time(node.flops, node.bytes, output_dtype(node, plan), p)
    return transfer_time(node.bytes, node.kind, p)


def node_times(plan: Plan, profile: DeviceProfile | str) -> np.ndarray:
    """Duration in seconds of every node, index-aligned with ``plan.nodes`` (vectorized)."""
    p = get_profile(profile)
    nodes = plan.nodes
    n = len(nodes)
    flops = np.fromiter((nd.flops for nd in nodes), dtype=np.float64, count=n)
    nbytes = np.fromiter((nd.bytes for nd in nodes), dtype=np.float64, count=n)
    peak_of: dict[str, float] = {}
    peak = np.empty(n, dtype=np.float64)
    bw = np.empty(n, dtype=np.float64)
    fixed = np.empty(n, dtype=np.float64)
    is_compute = np.zeros(n, dtype=bool)
    link = {RELOAD: p.h2d_bw, OFFLOAD: p.d2h_bw, MOVE: p.peer_bw}
    tensors = plan.tensors
    nt = len(tensors)
    for i, nd in enumerate(nodes):
        if nd.kind == COMPUTE:
            is_compute[i] = True
            dt = "float32"
            if nd.outputs and nd.outputs[0] is not None:
                t = nd.outputs[0].tensor
                if 0 <= t < nt:
                    dt = tensors[t].dtype
            pk = peak_of.get(dt)
            if pk is None:
                pk = peak_of[dt] = p.peak(dt)
            peak[i] = pk
            bw[i] = p.hbm_bw
            fixed[i] = p.launch_s
        else:
            try:
                bw[i] = link[nd.kind]
            except KeyError:
                raise ValueError(f"node {nd.id} has unknown kind {nd.kind!r}") from None
            peak[i] = 1.0
            fixed[i] = p.copy_latency_s
    t_bytes = nbytes / bw
    out = np.where(is_compute, np.maximum(flops / peak, t_bytes), t_bytes) + fixed
    return out
