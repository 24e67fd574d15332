"""Types and ranges of a decoded plan: what :func:`turnip.plan.read_plan` accepts.

msgpack gives back whatever the bytes say: a string where an offset belongs,
a list where a mapping belongs, an integer of 2**70. Every consumer (the
runtime, ``verify``, ``inspect``, ``diff``) would otherwise meet those as a
``TypeError`` / ``OverflowError`` deep inside its own code. This module checks
the whole structure once, right after decoding, so a malformed file is one
:class:`~turnip.errors.PlanFormatError` naming the field, and everything past
the reader may rely on the types the dataclasses declare.

It checks form (types, ranges, indices that refer to existing entries), not
safety: whether the plan's dependencies order every hazard and its
locations fit is :mod:`turnip.plancheck`'s job.
"""

from __future__ import annotations

from typing import Any

from .errors import PlanFormatError

#: Largest byte count or offset a plan may hold (2**62: far above any memory, far below int64 overflow).
MAX_BYTES = 1 << 62
#: Largest element count of a shape dimension or id.
MAX_INT = 1 << 62

_FIX = "; re-plan the model with `turnipc plan`"

_STATS_NUMBERS = ("budget_bytes", "peak_bytes", "no_offload_peak_bytes", "lower_bound_bytes", "offload_bytes",
                  "reload_bytes", "move_bytes", "host_bytes", "total_flops", "reserve_bytes")


def _bad(what: str, why: str) -> PlanFormatError:
    return PlanFormatError(f"plan file is malformed: {what} {why}{_FIX}")


def _int(v: Any, what: str, lo: int = 0, hi: int = MAX_INT) -> int:
    if not isinstance(v, int):
        raise _bad(what, f"is {type(v).__name__} {_short(v)}, not an integer")
    if not lo <= v < hi:
        raise _bad(what, f"is {v}, outside [{lo}, {hi})")
    return v


def _str(v: Any, what: str) -> str:
    if not isinstance(v, str):
        raise _bad(what, f"is {type(v).__name__} {_short(v)}, not a string")
    if "\x00" in v:
        raise _bad(what, "contains a NUL character")
    return v


def _short(v: Any) -> str:
    r = repr(v)
    return r if len(r) <= 40 else r[:37] + "..."


def _loc(loc: Any, what: str, n_tensors: int) -> None:
    _int(loc.mem, f"{what} memory", -MAX_INT)
    _int(loc.offset, f"{what} offset", 0, MAX_BYTES)
    _int(loc.tensor, f"{what} tensor", 0, n_tensors)


def check_plan_form(plan: Any) -> None:
    """Raise PlanFormatError unless every field of ``plan`` has its declared type and range."""
    from .plan import GPU, HOST, NODE_KINDS, TENSOR_KINDS

    _str(plan.model_path, "model path")
    _str(plan.model_sha256, "model sha256")
    if not isinstance(plan.opset, dict):
        raise _bad("model opset", "is not a mapping")
    for k, v in plan.opset.items():
        _str(k, "opset domain")
        _int(v, f"opset version of {k!r}")
    from .cache import is_sha256

    if plan.model_sha256 and not is_sha256(plan.model_sha256):
        raise _bad("model sha256", f"{_short(plan.model_sha256)} is not 64 lowercase hex digits")
    for i, w in enumerate(plan.weight_files):
        _str(w.path, f"weight file {i} path")
        _int(w.size, f"weight file {i} size", 0, MAX_BYTES)
        if not is_sha256(w.sha256):
            raise _bad(f"weight file {i} sha256", f"{_short(w.sha256)} is not 64 lowercase hex digits")
    _int(plan.alignment, "alignment", 1, 1 << 30)
    if plan.alignment & (plan.alignment - 1):
        raise _bad("alignment", f"is {plan.alignment}, not a power of two")
    if not isinstance(plan.options, dict):
        raise _bad("options", "is not a mapping")
    stats = plan.stats.to_obj()  # PlanStats: the fields as read (unknown keys kept in extra)
    for key in _STATS_NUMBERS:
        v = stats.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise _bad(f"stats {key}", f"is {type(v).__name__}, not a number")
    nodes_stat = stats.get("nodes")
    if nodes_stat is not None and (not isinstance(nodes_stat, dict)
                                   or not all(isinstance(k, str) and isinstance(v, int) for k, v in nodes_stat.items())):
        raise _bad("stats nodes", "is not a mapping of kind to count")
    per_dev = stats.get("peak_bytes_per_device")
    if per_dev is not None and (not isinstance(per_dev, list) or not all(isinstance(x, int) for x in per_dev)):
        raise _bad("stats peak_bytes_per_device", "is not a list of integers")

    n_t = len(plan.tensors)
    for i, t in enumerate(plan.tensors):
        what = f"tensor {i}"
        _str(t.name, f"{what} name")
        _dtype_and_shape(t.dtype, t.shape, what)
        _int(t.nbytes, f"{what} nbytes", 0, MAX_BYTES)
        if t.kind not in TENSOR_KINDS:
            raise _bad(f"{what} kind", f"is {_short(t.kind)}, not one of {', '.join(TENSOR_KINDS)}")
        if t.block is not None:  # (tensor it is cut from, axis, start, stop): checked again when cut
            base, axis, start, stop = t.block
            _int(base, f"{what} block tensor", 0, n_t)
            _int(axis, f"{what} block axis", 0, 64)
            _int(start, f"{what} block start")
            _int(stop, f"{what} block stop")
            if start > stop:
                raise _bad(f"{what} block", f"starts at {start}, after its stop {stop}")
        if t.derive is not None:  # a weight made at load (turnip.weights applies the recipe and checks its result)
            _check_recipe(t, what)
        _int(t.storage, f"{what} storage", 0, n_t)

    mem_ids = set()
    for i, m in enumerate(plan.memories):
        what = f"memory {i}"
        _int(m.id, f"{what} id", -MAX_INT)
        if m.id in mem_ids:
            raise _bad(f"{what} id", f"{m.id} is used twice")
        mem_ids.add(m.id)
        if m.kind not in (GPU, HOST):
            raise _bad(f"{what} kind", f"is {_short(m.kind)}, not {GPU!r} or {HOST!r}")
        _int(m.device, f"{what} device", -1, 1 << 16)
        _int(m.size, f"{what} size", 0, MAX_BYTES)
        _int(m.budget, f"{what} budget", 0, MAX_BYTES)

    for i, p in enumerate(plan.placements):
        what = f"placement {i}"
        _int(p.tensor, f"{what} tensor", 0, n_t)
        _loc(p.loc, what, n_t)
        _str(p.source, f"{what} source")

    for i, node in enumerate(plan.nodes):
        what = f"node {i}"
        _int(node.id, f"{what} id", 0, MAX_INT)
        if node.kind not in NODE_KINDS:
            raise _bad(f"{what} kind", f"is {_short(node.kind)}, not one of {', '.join(NODE_KINDS)}")
        _int(node.device, f"{what} device", -1, 1 << 16)
        for d in node.deps:
            _int(d, f"{what} dependency", 0, MAX_INT)
        for j, loc in enumerate(node.inputs):
            if loc is not None:
                _loc(loc, f"{what} input {j}", n_t)
        for j, loc in enumerate(node.outputs):
            if loc is not None:
                _loc(loc, f"{what} output {j}", n_t)
        if node.kind != "compute" and (len(node.inputs) != 1 or len(node.outputs) != 1
                                       or node.inputs[0] is None or node.outputs[0] is None):
            raise _bad(f"{what} ({node.kind})", "must have exactly one source and one destination")
        _str(node.op, f"{what} op")
        _str(node.domain, f"{what} domain")
        _str(node.name, f"{what} name")
        if not isinstance(node.attrs, dict) or not all(isinstance(k, str) for k in node.attrs):
            raise _bad(f"{what} attributes", "are not a mapping of names")
        _int(node.flops, f"{what} flops", 0, 1 << 80)
        _int(node.bytes, f"{what} bytes", 0, MAX_BYTES)
        _int(node.pos, f"{what} pos", -MAX_INT)

    for i, ti in enumerate(plan.inputs):
        _int(ti, f"graph input {i}", 0, n_t)
    for i, loc in enumerate(plan.outputs):
        _loc(loc, f"graph output {i}", n_t)
    for k in plan.constants:
        _int(k, "constant's tensor", 0, n_t)
    _check_state(plan, n_t)


def _check_recipe(t: Any, what: str) -> None:
    """Form of a derived weight's recipe (``TensorInfo.derive``): its source and every step typed."""
    from .plan import DeriveOp

    r = t.derive
    if t.kind != "weight":
        raise _bad(f"{what} derive", f"is on a tensor of kind {t.kind}, not weight")
    _str(r.source, f"{what} derive source")
    _dtype_and_shape(r.dtype, r.shape, f"{what} derive")
    if not isinstance(r.steps, tuple) or not 0 < len(r.steps) <= 64:
        raise _bad(f"{what} derive steps", "are not a list of 1 to 64 steps")
    for j, s in enumerate(r.steps):
        if s.op == DeriveOp.CAST:
            _str(s.arg, f"{what} derive step {j} dtype")
            continue
        if not isinstance(s.arg, tuple) or len(s.arg) > 64:
            raise _bad(f"{what} derive step {j}", "has no list of at most 64 integers")
        for d in s.arg:
            _int(d, f"{what} derive step {j} value")


def _check_state(plan: Any, n_t: int) -> None:
    """Form of the plan's state entries (KV caches): graph inputs with a home location."""
    from .plan import STATE_HOWS

    inputs = set(plan.inputs)
    for i, st in enumerate(plan.state):
        what = f"state {i}"
        _int(st.input, f"{what} input", 0, n_t)
        if st.input not in inputs:
            raise _bad(f"{what} input", f"tensor {st.input} is not a graph input")
        if st.update is not None:
            _int(st.update, f"{what} update", 0, n_t)
        _loc(st.home, f"{what} home", n_t)
        if st.how not in STATE_HOWS:
            raise _bad(f"{what} how", f"is {_short(st.how)}, not one of {', '.join(STATE_HOWS)}")


def _dtype_and_shape(dtype: Any, shape: Any, what: str) -> None:
    """A dtype name this runtime knows and a shape of at most 64 non-negative integers."""
    from .dtypes import np_dtype

    _str(dtype, f"{what} dtype")
    try:
        np_dtype(dtype)
    except (TypeError, KeyError, ValueError):
        raise _bad(f"{what} dtype", f"{dtype!r} is not a dtype this runtime knows") from None
    if not isinstance(shape, tuple) or len(shape) > 64:
        raise _bad(f"{what} shape", "is not a list of at most 64 dimensions")
    for d in shape:
        _int(d, f"{what} shape dimension")
