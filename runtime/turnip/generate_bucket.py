"""Past-length buckets for past/present decoders: a few plans, the past padded and masked.

A past/present decoder (optimum's convention) takes the past as inputs of
length ``past`` and returns presents of length ``past + seq``. A plan is
static, so without buckets every past length needs its own plan
(:mod:`turnip.generate_past`). Here one plan serves every past length up to
its bucket's capacity ``B``: the past is padded to ``B`` positions and the
padded positions are masked.

The exports have no ``attention_mask`` input (the fixtures made by
tests/models/make_decoders.py have none): they compute the past length from
the past's shape (``Shape(past)[2]``) and build the causal mask from it. A
padded past would then shift every position and leave the padding visible,
so :func:`mask_past` rewrites the graph, exactly:

* the past length the graph reads from the past's shape
  (``Squeeze(Shape(past, start=2, end=3))``) becomes an input
  ``turnip_past_length`` (int64 scalar): positions, rotary angles and
  position embeddings use the true length;
* the additive attention mask (the operand of the ``Add`` before each
  ``Softmax`` that depends on no input's values, only on shapes) becomes an
  input ``turnip_attention_bias`` ``[batch, 1, seq, past + seq]``: 0 where a
  key is visible, ``-inf`` on the padding and on future new positions.

WHY exact: a masked score is ``-inf``, its softmax weight is exactly 0, so
the padding adds nothing to any attention sum; the true positions are fed,
so every other value is what the unpadded graph computes (the ids are checked
against transformers' in tests/test_generate_bucket.py).

WHY the weights are the original model's: the rewrite changes no
initializer, so a bucket plan names the ORIGINAL model file (its path and
sha256) for its weights; the runtime reads weights by initializer name, and a
bucket plan shares the weights of the session's plan (``weights_from``).

The cache as state: in a bucket plan the pasts are state (``append``: home in
host memory, kept between runs), the past ``[0, L)`` real, ``[L, B)``
padding. After each run the one new position (``present[:, :, B]``) is
written into the state at ``L``; moving to the next bucket copies ``[0, L)``
once into that plan's state. So per token one position per cache tensor is
copied, never the whole cache (:class:`BucketRunner`).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .generate import DecoderSignature, GenerateError
from .plan import RELOAD, Plan
from .run import LoadedPlan, _node_bytes

PAST_LENGTH = "turnip_past_length"
ATTENTION_BIAS = "turnip_attention_bias"
KV_DIM = "turnip_kv"  # the bias's last dim: past + seq (bound with the other dims)

#: The rewrite's name in the plan options and cache keys (change it when the rewrite changes).
REWRITE = "masked_past/1"


def _attr(node: Any, name: str, default: Any = None) -> Any:
    import onnx

    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _past_length_values(graph: Any, pasts: set[str]) -> list[str]:
    """Values holding a past's length as a scalar: ``Squeeze(Shape(past, start=2, end=3))`` or ``Gather(Shape(past), 2)``."""
    producer = {o: n for n in graph.node for o in n.output}
    consts = {t.name: t for t in graph.initializer}
    found = []
    for n in graph.node:
        if n.op_type == "Squeeze" and n.input and n.input[0] in producer:
            s = producer[n.input[0]]
            if s.op_type == "Shape" and s.input[0] in pasts and _attr(s, "start", 0) == 2 and _attr(s, "end") == 3:
                found.append(n.output[0])
        elif n.op_type == "Gather" and n.input[0] in producer and n.input[1] in consts:
            s = producer[n.input[0]]
            from onnx import numpy_helper

            idx = numpy_helper.to_array(consts[n.input[1]])
            if s.op_type == "Shape" and s.input[0] in pasts and _attr(s, "start", 0) == 0 and idx.ndim == 0 and int(idx) == 2:
                found.append(n.output[0])
    return found


def _value_inputs(graph: Any) -> dict[str, frozenset[str]]:
    """Each value -> the graph inputs whose VALUES it depends on (through ``Shape`` only their shapes: not counted)."""
    inputs = {i.name for i in graph.input}
    deps: dict[str, frozenset[str]] = {name: frozenset({name}) for name in inputs}
    for n in graph.node:  # ONNX nodes are topologically sorted
        if n.op_type in ("Shape", "Size"):
            d: frozenset[str] = frozenset()
        else:
            d = frozenset().union(*(deps.get(i, frozenset()) for i in n.input if i))
        for o in n.output:
            deps[o] = d
    return deps


def _attention_masks(graph: Any) -> set[str]:
    """The additive masks: the operand of each ``Add`` feeding a ``Softmax`` that depends on no input's values."""
    producer = {o: n for n in graph.node for o in n.output}
    deps = _value_inputs(graph)
    masks = set()
    for n in graph.node:
        if n.op_type != "Softmax":
            continue
        add = producer.get(n.input[0])
        if add is None or add.op_type != "Add":
            raise GenerateError(f"Softmax {n.name or n.output[0]!r} is not fed by an Add of scores and a mask; "
                                "past-length buckets need an additive attention mask (or plan one plan per past length: buckets=None)")
        free = [x for x in add.input if not deps.get(x)]
        if len(free) != 1:
            raise GenerateError(f"cannot tell the attention mask from the scores at {add.name or add.output[0]!r}; "
                                "use one plan per past length (buckets=None)")
        masks.add(free[0])
    return masks


def mask_past(model: Any, sig: DecoderSignature) -> Any:
    """The decoder ``model`` (ModelProto) rewritten to take ``turnip_past_length`` and ``turnip_attention_bias`` (module docstring).

    GenerateError when the graph does not have the structure the rewrite needs.
    """
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    pasts = {s.past for s in sig.slots}
    lengths = _past_length_values(g, pasts)
    if not lengths:
        raise GenerateError("the decoder reads no past length from the past's shape (Shape(past)[2]); "
                            "past-length buckets cannot feed the true length: use one plan per past length (buckets=None)")
    masks = _attention_masks(g)
    if not masks:
        raise GenerateError("the decoder has no Softmax attention; past-length buckets need one")
    if len(masks) != 1:
        raise GenerateError(f"the decoder adds {len(masks)} different attention masks; past-length buckets handle one")
    mask = next(iter(masks))
    producer = {o: n for n in g.node for o in n.output}
    positions = 0
    for n in g.node:
        # the positions: arange(seq) + past length (transformers' cache_position); the length's other uses are
        # shapes (the padded kv length), which stay as they are
        if n.op_type == "Add" and len(n.input) == 2:
            for k, x in enumerate(n.input):
                other = producer.get(n.input[1 - k])
                if x in lengths and other is not None and other.op_type == "Range":
                    n.input[k] = PAST_LENGTH
                    positions += 1
        for k, x in enumerate(n.input):
            if x == mask:
                n.input[k] = ATTENTION_BIAS
    if not positions:
        raise GenerateError("the decoder computes no positions as arange(seq) + past length; "
                            "past-length buckets cannot feed the true positions: use one plan per past length (buckets=None)")
    _drop_dead(g)
    ids = next(i for i in g.input if i.name == sig.input_ids)
    batch_dim, seq_dim = ids.type.tensor_type.shape.dim
    dtype = _elem_type_of(model, mask)
    bias = onnx.helper.make_tensor_value_info(ATTENTION_BIAS, dtype, [batch_dim.dim_param or batch_dim.dim_value, 1,
                                                                      seq_dim.dim_param or seq_dim.dim_value, KV_DIM])
    g.input.extend([onnx.helper.make_tensor_value_info(PAST_LENGTH, onnx.TensorProto.INT64, []), bias])
    del g.value_info[:]  # intermediate shapes changed (the past length is no longer known from shapes)
    return m


def _elem_type_of(model: Any, name: str) -> int:
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    for vi in list(inferred.graph.value_info) + list(inferred.graph.output):
        if vi.name == name and vi.type.tensor_type.elem_type:
            return int(vi.type.tensor_type.elem_type)
    return int(onnx.TensorProto.FLOAT)


def _drop_dead(g: Any) -> None:
    """Remove nodes and initializers no graph output needs (the mask's and the length's old producers)."""
    producer = {o: n for n in g.node for o in n.output}
    need = [o.name for o in g.output]
    live_nodes: set[int] = set()
    live_values: set[str] = set()
    while need:
        v = need.pop()
        if v in live_values:
            continue
        live_values.add(v)
        n = producer.get(v)
        if n is not None and id(n) not in live_nodes:
            live_nodes.add(id(n))
            need.extend(x for x in n.input if x)
    keep = [n for n in g.node if id(n) in live_nodes]
    del g.node[:]
    g.node.extend(keep)
    inits = [t for t in g.initializer if t.name in live_values]
    del g.initializer[:]
    g.initializer.extend(inits)


def masked_model_path(model_path: str, sig: DecoderSignature, folder: str) -> str:
    """The rewritten decoder written once into ``folder`` (keyed by the model's sha256 and :data:`REWRITE`)."""
    import onnx

    from .weights import file_sha256

    key = hashlib.sha256(f"{file_sha256(model_path)}:{REWRITE}".encode()).hexdigest()[:16]
    out = os.path.join(folder, f"{os.path.splitext(os.path.basename(model_path))[0]}-masked-{key}.onnx")
    if os.path.isfile(out):
        return out
    model = onnx.load(model_path, load_external_data=False)
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
        raise GenerateError("past-length buckets need a decoder with its weights inside the .onnx file for now; "
                            "use one plan per past length (buckets=None)")
    rewritten = mask_past(model, sig)
    os.makedirs(folder, exist_ok=True)
    tmp = f"{out}.{os.getpid()}.tmp"
    onnx.save(rewritten, tmp)
    os.replace(tmp, out)
    return out


def default_buckets(first_past: int, last_past: int, smallest: int = 8) -> list[int]:
    """Powers of two (at least ``smallest``) holding past lengths ``first_past .. last_past`` plus the new position."""
    first_past, last_past = first_past + 1, last_past + 1
    out, b = [], smallest
    while b < first_past:
        b *= 2
    out.append(b)
    while b < last_past:
        b *= 2
        out.append(b)
    return out


def bucket_of(length: int, buckets: Sequence[int]) -> int:
    """The smallest bucket of at least ``length`` positions."""
    for b in sorted(buckets):
        if b >= length:
            return b
    raise GenerateError(f"a cache of {length} positions is beyond the largest bucket {max(buckets)}; give a larger bucket")


def attention_bias(batch: int, past: int, capacity: int, seq: int, dtype: Any = np.float32) -> np.ndarray:
    """``[batch, 1, seq, capacity + seq]``: 0 on the true past ``[0, past)`` and on new positions up to each query's own, else -inf."""
    bias = np.full((batch, 1, seq, capacity + seq), -np.inf, dtype=dtype)
    bias[..., :past] = 0
    for j in range(seq):
        bias[:, :, j, capacity : capacity + j + 1] = 0
    return bias


#: Bucket plans read in this process, by masked model, original sha256, budget, dims, GPUs, solver, folder: a
#: later generation takes them from here instead of decoding the cached plan file again (the disk cache keeps them across processes).
_PLANS: dict[tuple[Any, ...], Plan] = {}
_PLANS_KEPT = 64

BucketPlanFor = Callable[[int, int], Plan]  # (batch, capacity) -> the masked decoder's seq-1 plan for that capacity


@dataclass
class BucketCounters:
    """What one bucketed generation cost: plans and weights loaded, runs, and the cache bytes it copied.

    The issue's "weights read once, cache never copied whole per token" is asserted on these counts.
    """

    plans_loaded: int = 0
    weight_loads: int = 0
    weight_bytes_at_load: int = 0
    weight_file_bytes_read: int = 0
    runs: int = 0
    bytes_reloaded: int = 0
    cache_bytes_copied: int = 0  # one position per cache tensor per token, plus [0, L) once per bucket change
    cache_bytes_copied_prompt: int = 0  # the prompt's presents into the first bucket plan's state, once
    cache_bytes_refilled: int = 0  # state arena copies a plan reuses, refilled from the home (the plan's reload traffic)
    bucket_moves: int = 0
    buckets_used: tuple[int, ...] = ()


class BucketRunner:
    """A :class:`turnip.generate.Runner` for a past/present decoder that keeps the cache itself (``keeps_cache``).

    The first call is the prompt: ``prompt_runner`` (the prefill graph, or the
    session's own plan with an empty past) runs it and its presents' ``[0, n)``
    go into the first bucket plan's state. Every later call is one decode step
    (seq 1) on the bucket plan of the current past length, loaded when first
    needed with the weights of ``weights_from`` and kept for later calls
    (``keep_loaded``) or closed when the next bucket is loaded (only one bucket
    plan's memory at a time, as on a GPU).
    """

    keeps_cache = True

    def __init__(self, sig: DecoderSignature, plan_for: BucketPlanFor, model_path: str, buckets: Sequence[int], *,
                 prompt_runner: Any, weights_from: LoadedPlan, backend: Any = "numpy", order: str = "dynamic", seed: int = 0,
                 keep_loaded: bool = False, loaded: dict[tuple[int, int], LoadedPlan] | None = None) -> None:
        self.sig = sig
        self.plan_for = plan_for
        self.model_path = model_path
        self.buckets = sorted(buckets)
        self.prompt_runner = prompt_runner
        self.weights_from = weights_from
        self.backend, self.order, self.seed = backend, order, seed
        self.keep_loaded = keep_loaded
        self.loaded: dict[tuple[int, int], LoadedPlan] = {} if loaded is None else loaded
        self.c = BucketCounters()
        self.past = 0  # true cache length
        self.current: LoadedPlan | None = None
        self.current_key: tuple[int, int] | None = None
        self.pending: dict[str, np.ndarray] | None = None  # the prompt's presents, until the first bucket plan takes them
        self.h2d: Any = None  # a turnip.session_generate.H2DMeter timing the reloads of the plans loaded here

    # -- plans ---------------------------------------------------------------
    def _load(self, batch: int, capacity: int) -> LoadedPlan:
        key = (batch, capacity)
        lp = self.loaded.get(key)
        if lp is None or lp.closed:
            plan = self.plan_for(batch, capacity)
            shared = self.weights_from.shared
            # with the session's memory: its arena and its host weight store (turnip/session_memory.py); else weights
            # from the bucket plan in use (same graph: it holds every weight this one needs, some of which the
            # session's plan may have folded away), else from the session's plan
            source = self.current if self.current is not None and not self.current.closed else self.weights_from
            lp = LoadedPlan(plan, backend=self.backend, order=self.order, seed=self.seed, model_path=self.model_path,
                            weights_from=None if shared is not None else source, shared=shared)
            missing = [s.past for s in self.sig.slots if s.past not in lp.state or lp.state[s.past].update is None]
            if missing:
                lp.close()
                raise GenerateError(f"the bucket plan does not keep {missing[0]!r} as state; plan it with the cache as state (auto_state)")
            self.loaded[key] = lp
            if self.h2d is not None:
                self.h2d.attach(lp)
            self.c.plans_loaded += 1
            self.c.weight_loads += lp.weight_loads
            self.c.weight_bytes_at_load += lp.source_bytes_at_load
            self.c.weight_file_bytes_read += lp.weight_file_bytes_read
        return lp

    def _switch(self, batch: int, capacity: int) -> LoadedPlan:
        """The bucket plan for ``capacity``, its state holding the cache's ``[0, past)`` (copied once)."""
        key = (batch, capacity)
        if self.current is not None and self.current_key == key:
            return self.current
        old, old_key = self.current, self.current_key
        # the cache's [0, past) out of the old plan's state home first: the next plan may share its buffers
        if self.pending is not None:
            carried = {s.past: self.pending[s.present] for s in self.sig.slots}
        else:
            assert old is not None
            carried = {s.past: np.array(old.state_views(s.past)[0][:, :, : self.past]) for s in self.sig.slots}
        lp = self._load(batch, capacity)
        for s in self.sig.slots:
            for dst, part in lp.state_parts(s.past):  # a tiled plan's block copy takes its block (part) of the cache
                src = _block(carried[s.past], part)
                _put(lp.backend, dst, src, slice(0, self.past), slice(0, self.past))
                if self.pending is not None:
                    self.c.cache_bytes_copied_prompt += _part_bytes(dst, self.past)
                else:
                    self.c.cache_bytes_copied += _part_bytes(dst, self.past)
                _zero_tail(lp.backend, dst, self.past)  # padding: finite (masked to weight 0; -inf * 0 would be NaN)
        self.pending = None
        if old is not None and old_key != key and not self.keep_loaded:
            old.close()
            self.loaded.pop(old_key, None)  # type: ignore[arg-type]
        if old is not None:
            self.c.bucket_moves += 1
        self.current, self.current_key = lp, key
        self.c.buckets_used = (*self.c.buckets_used, capacity)
        return lp

    # -- running -------------------------------------------------------------
    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        sig = self.sig
        ids = np.asarray(feeds[sig.input_ids])
        batch, seq = ids.shape
        if self.past == 0 and self.current is None and self.pending is None:
            out = dict(self.prompt_runner.run(feeds))
            self.pending = {s.present: np.asarray(out[s.present]) for s in sig.slots}
            self.past = seq
            return {sig.logits: np.asarray(out[sig.logits])}
        if seq != 1:
            raise GenerateError(f"a bucket plan runs one position per step (got {seq})")
        capacity = bucket_of(self.past + 1, self.buckets)  # room for the new position in the state
        lp = self._switch(batch, capacity)
        if self.h2d is not None:
            self.h2d.attach(lp)  # a plan kept from an earlier call
        step: dict[str, np.ndarray] = {sig.input_ids: ids, PAST_LENGTH: np.array(self.past, dtype=np.int64),
                                       ATTENTION_BIAS: attention_bias(batch, self.past, capacity, 1, _bias_dtype(lp))}
        if sig.position_ids:
            step[sig.position_ids] = np.full((batch, 1), self.past, dtype=np.int64)
        if sig.attention_mask:
            step[sig.attention_mask] = np.ones((batch, capacity + 1), dtype=np.int64)
        names = set(lp.input_names)
        refilled0 = lp.state_bytes_refilled
        out = lp.run({k: v for k, v in step.items() if k in names}, device_outputs=True, keep=[s.past for s in sig.slots])
        self.c.runs += 1
        self.c.cache_bytes_refilled += lp.state_bytes_refilled - refilled0
        self.c.bytes_reloaded += sum(_node_bytes(lp.plan, n) for n in lp.plan.nodes if n.kind == RELOAD)
        for s in sig.slots:  # the one new position: present[:, :, capacity] -> state[:, :, past]
            for dst, part in lp.state_parts(s.past):
                _put(lp.backend, dst, _block(out[s.present], part), self.past, capacity)
                self.c.cache_bytes_copied += _part_bytes(dst, 1)
        self.past += 1
        return {sig.logits: np.array(lp.backend.read(out[sig.logits]))}

    def close(self) -> None:
        """Close the bucket plans this runner loaded and does not keep (``keep_loaded`` leaves them to the owner)."""
        if not self.keep_loaded:
            for lp in self.loaded.values():
                lp.close()
            self.loaded.clear()


def _block(a: Any, part: tuple[Any, ...]) -> Any:
    """The part of a cache tensor ``[batch, heads, positions, head_dim]`` a (block) state copy holds; positions are never cut."""
    if part[2] != slice(None):
        raise GenerateError("the bucket plan tiles the KV cache along its positions, which the bucket runner cannot write; "
                            "plan it with a larger budget")
    return a[part]


def _bias_dtype(lp: LoadedPlan) -> np.dtype:
    from .dtypes import np_dtype

    t = lp.plan.tensors[lp.plan.tensor_index()[ATTENTION_BIAS]]
    return np.dtype(np_dtype(t.dtype))


def _part_bytes(dst: Any, positions: int) -> int:
    shape = dst.shape
    return int(shape[0] * shape[1] * positions * shape[3] * dst.dtype.itemsize)


def _zero_tail(be: Any, dst: Any, start: int) -> None:
    dst[:, :, start:, :] = 0


def _put(be: Any, dst: Any, src: Any, dst_pos: int | slice, src_pos: int | slice) -> None:
    """``dst[:, :, dst_pos] = src[:, :, src_pos]`` where each side is host NumPy or a device (CuPy) view."""
    dst_host, src_host = isinstance(dst, np.ndarray), isinstance(src, np.ndarray)
    if dst_host == src_host:
        dst[:, :, dst_pos] = src[:, :, src_pos]
    elif dst_host:
        dst[:, :, dst_pos] = be.read(be.xp.ascontiguousarray(src[:, :, src_pos]))
    else:
        dst[:, :, dst_pos] = be.xp.asarray(np.ascontiguousarray(src[:, :, src_pos]))


def bucket_plan_for(model_path: str, sig: DecoderSignature, gpu_mem: str, base_dims: Mapping[str, int], names: Any, *,
                    gpus: int = 1, use_cache: bool = True, folder: str | None = None, solver: str = "greedy") -> tuple[str, BucketPlanFor]:
    """``(masked model path, plan_for)``: plans of the rewritten decoder through :func:`turnip.autoplan.plan_model` (cached).

    Each plan is re-labelled with the ORIGINAL model's path and sha256 (and
    weight files): the runtime reads its weights from there by name, and it
    shares them with the session's plan (same sha256). ``options["rewrite"]``
    records that the graph is the rewrite, not the file.
    """
    from .autoplan import plan_model
    from .cache import cache_dir
    from .weights import file_sha256

    folder = folder or cache_dir()
    masked = masked_model_path(model_path, sig, folder)
    original_sha = file_sha256(model_path)

    def plan_for(batch: int, capacity: int) -> Plan:
        dims = bucket_dims(names, base_dims, batch, capacity)
        key = (masked, original_sha, gpu_mem, tuple(sorted(dims.items())), gpus, solver, folder)
        got = _PLANS.get(key) if use_cache else None
        if got is not None:
            return got
        plan = plan_model(masked, gpu_mem, [f"{k}={v}" for k, v in sorted(dims.items())], (), gpus,
                          use_cache=use_cache, folder=folder, solver=solver).plan
        plan = as_bucket_plan(plan, model_path, original_sha)
        if use_cache:
            if len(_PLANS) >= _PLANS_KEPT:
                _PLANS.pop(next(iter(_PLANS)))
            _PLANS[key] = plan
        return plan

    return masked, plan_for


def as_bucket_plan(plan: Plan, model_path: str, original_sha: str) -> Plan:
    """A plan of the masked decoder re-labelled with the ORIGINAL model (path, sha256): its weights are read from there by name."""
    import dataclasses

    return dataclasses.replace(plan, model_path=os.path.abspath(model_path), model_sha256=original_sha,
                               options=dict(plan.options, rewrite=REWRITE))


def bucket_dims(names: Any, base_dims: Mapping[str, int], batch: int, capacity: int) -> dict[str, int]:
    """The dims of the bucket plan of ``capacity`` (seq 1, past = capacity, the bias's kv length = capacity + 1)."""
    dims = names.bind(base_dims, batch, 1, capacity)
    dims[KV_DIM] = capacity + 1
    return dims


def prefill_plan_path(decode_plan: str) -> str:
    """Where ``turnipc plan --decode`` writes the prompt plan: ``out.plan`` -> ``out.prefill.plan``."""
    root, ext = os.path.splitext(decode_plan)
    return f"{root}.prefill{ext or '.plan'}"


def bucket_plan_path(decode_plan: str, capacity: int) -> str:
    """Where ``turnipc plan --decode`` writes the bucket plan of ``capacity``: ``out.plan`` -> ``out.bucket16.plan``."""
    root, ext = os.path.splitext(decode_plan)
    return f"{root}.bucket{capacity}{ext or '.plan'}"


def written_bucket_plans(decode_plan: str) -> dict[int, str]:
    """Capacity -> path of the bucket plans written beside a decode plan file (:func:`bucket_plan_path`), if any."""
    import glob
    import re

    root, ext = os.path.splitext(decode_plan)
    ext = ext or ".plan"
    out = {}
    for path in glob.glob(f"{glob.escape(root)}.bucket*{glob.escape(ext)}"):
        m = re.fullmatch(re.escape(root) + r"\.bucket(\d+)" + re.escape(ext), path)
        if m:
            out[int(m.group(1))] = path
    return dict(sorted(out.items()))


def from_written(plan_for: BucketPlanFor, written: Mapping[int, str], original_sha: str, say: Callable[[str], None] | None) -> BucketPlanFor:
    """``plan_for`` that reads the bucket plan written beside the decode plan when there is one for (batch, capacity).

    A missing file, or one of another batch or model, is planned at generation time by ``plan_for``, and ``say`` is told.
    """
    from .plan import read_plan

    got: dict[tuple[int, int], Plan] = {}  # each file read (or each missing one said) once per generation

    def plan_or_read(batch: int, capacity: int) -> Plan:
        if (batch, capacity) not in got:
            got[(batch, capacity)] = _plan_or_read(batch, capacity)
        return got[(batch, capacity)]

    def _plan_or_read(batch: int, capacity: int) -> Plan:
        path = written.get(capacity)
        why = "no such file"
        if path is not None:
            plan = read_plan(path)
            ids = plan.tensors[plan.tensor_index()["input_ids"]].shape if "input_ids" in plan.tensor_index() else ()
            if plan.options.get("rewrite") != REWRITE:
                why = f"{path} is no bucket plan of this runtime's rewrite ({REWRITE}); re-plan with turnipc plan --decode"
            elif plan.model_sha256 != original_sha:
                why = f"{path} was planned from another model file; re-plan with turnipc plan --decode"
            elif not ids or ids[0] != batch:
                why = f"{path} is for batch {ids[0] if ids else '?'}, not {batch}"
            else:
                return plan
        if say is not None:
            say(f"bucket plan {capacity} not written beside the decode plan ({why}): planning it now")
        return plan_for(batch, capacity)

    return plan_or_read
