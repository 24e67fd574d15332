"""``turnip.Session.generate``: token generation on one loaded static-cache decode plan.

    >>> plan = turnipc.plan("llama_static.onnx", gpu_mem="25%", dims={"batch": 1, "seq": 1})
    >>> with turnip.Session(plan, model="llama_static.onnx") as s:
    ...     out = s.generate([[1, 2, 3]], max_new_tokens=32)
    >>> out.new_token_ids, out.stats.weight_loads, out.stats.cache_bytes_copied_per_token

The loop is :func:`turnip.generate.generate` (one loop for every runner);
this module is the runner that drives a loaded plan, :class:`DecodePlanRunner`.

WHY one decode plan (seq = 1) and the prompt fed one token at a time through
it, not a second prefill plan: a static-cache graph takes ``cache_position``,
so position ``p`` of the prompt is exactly a decode step at ``p``. One plan
means one session, one arena, weights opened and written once, and the
cache's planned bytes shared by prompt and decode with nothing to hand over
between two plans (a separate prefill plan would be a second session with
its own weights and a copy of the whole cache into the decode plan). The cost
is ``prompt_len`` runs of the seq-1 plan instead of one run of a wider plan,
which matters for long prompts: for those, ``prefill=`` takes a second
loaded plan of the same decoder made for the prompt length; it runs the
prompt once and its presents' prompt positions are copied into the decode
plan's cache once (that plan loads its own weights).

WHY only the written positions are copied: in a static cache the present
output equals the past input except at ``cache_position`` (the graph
scatters the new keys / values there). So after each run the runner copies
``present[:, :, p, :]`` -- one position, ``batch * heads * head_dim`` values
per cache tensor -- into the cache's planned input bytes, which the next run
keeps (``keep=``) when the plan never overwrites them
(:meth:`LoadedPlan.keepable_inputs`). A cache input the plan does reuse
during a run (small budgets) cannot live in the arena between runs: the
runner holds it in host memory, updates the same one position there, and
feeds it whole each run; those bytes are counted in
``cache_bytes_copied_per_token``. The plan does not alias a present with its
past (they are separate tensors), so in-place update by the graph itself is
not available; this is the copy it costs instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from .generate import CacheConvention, DecoderSignature, GenerateError, GenerateResult, Sampling, generate
from .plan import RELOAD
from .run import LoadedPlan, _node_bytes


@dataclass
class GenerateStats:
    """What one ``Session.generate`` call did, beyond the ids (``to_dict`` for ``--json``)."""

    batch: int
    prompt_tokens: int  # per row
    new_tokens: int  # per row (steps generated)
    plan_runs: int  # runs of the decode plan in this call (prompt_tokens + new_tokens - 1)
    prefill_s: float  # the prompt's runs (the first new token comes from the last one)
    decode_s: float  # the runs that produce new tokens 2..n
    weight_loads: int  # times the model's weight files were opened and written into place: 1 per loaded plan (2 with a prefill plan)
    weight_bytes_at_load: int  # written once, when the session was made
    weight_bytes_rewritten_per_run: int  # weights whose memory the plan reuses: rewritten from the mapped files each run
    cache_bytes: int  # the whole KV cache (all layers, keys and values)
    cache_bytes_copied_per_token: float  # per decode run: cache bytes written into / read out of the plan (one position per kept tensor)
    cache_bytes_copied_prompt: int  # the prompt step's (with a prefill plan: zeros in, the prompt's positions out, once)
    cache_inputs_kept: int  # cache tensors that stay in the plan's memory between runs
    cache_inputs_fed: int  # cache tensors held on the host and fed whole each run (the plan reuses their memory)
    bytes_reloaded_per_run: float  # the plan's own reload traffic (offloaded tensors, weights in host memory)
    weight_file_bytes_read: int = 0  # read from the model's weight files, all at load (reused weights then refilled from host memory)
    cache_is_state: bool = False  # the plan marks every cache tensor as state (home in host memory, kept between runs)
    cache_bytes_refilled_per_token: float = 0.0
    plans_loaded: int = 1  # loaded plans used (past/present: one per past length or bucket, plus the prefill plan)  # per decode run: state arena copies the plan reused, refilled from the home (reload traffic)
    buckets: tuple[int, ...] = ()  # past/present with buckets: the capacities used, in order
    # the session's shared memory (turnip/session_memory.py: one arena, one weight store), its counters over the
    # session so far; None when the plans do not share (a static-cache decoder's one plan)
    memory: dict[str, Any] | None = None
    # host-to-device bandwidth of the plans' reload copies: measured (CuPy events around each reload), or null with why
    h2d_bandwidth: dict[str, Any] | None = None

    @property
    def decode_tokens_per_s(self) -> float:
        n = self.batch * max(self.new_tokens - 1, 0)
        return n / self.decode_s if self.decode_s > 0 else float("nan")

    @property
    def prefill_tokens_per_s(self) -> float:
        n = self.batch * self.prompt_tokens
        return n / self.prefill_s if self.prefill_s > 0 else float("nan")

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["decode_tokens_per_s"] = self.decode_tokens_per_s
        d["prefill_tokens_per_s"] = self.prefill_tokens_per_s
        return d


@dataclass
class SessionGenerateResult:
    new_token_ids: np.ndarray  # int64 [batch, steps]
    result: GenerateResult  # per-step timings from the loop
    stats: GenerateStats


def plan_signature(lp: LoadedPlan) -> DecoderSignature:
    """The decoder signature read off a plan's inputs and outputs (GenerateError when it is no decoder)."""
    ts = lp.plan.tensors
    ins = {ts[i].name: (list(ts[i].shape), np.dtype(ts[i].dtype)) for i in lp.plan.inputs}
    return DecoderSignature.from_io(ins, lp.output_names)


class DecodePlanRunner:
    """Runs one loaded static-cache decode plan (seq = 1) as a :class:`turnip.generate.Runner` that keeps the cache.

    ``run(feeds)`` takes ``input_ids [batch, n]`` and ``cache_position [n]``
    (the loop's prompt step has n = prompt length, decode steps n = 1) and runs
    the plan once per position; it returns the last position's logits.
    """

    keeps_cache = True

    def __init__(self, lp: LoadedPlan, sig: DecoderSignature, prefill: LoadedPlan | None = None):
        if sig.convention is not CacheConvention.STATIC:
            raise GenerateError(
                "Session.generate needs a static-cache decoder (cache_position input); "
                "a past/present decoder grows its cache every step, which one plan cannot hold"
            )
        ids_shape = tuple(lp.plan.tensors[lp.plan.tensor_index()[sig.input_ids]].shape)
        if len(ids_shape) != 2 or ids_shape[1] != 1:
            raise GenerateError(f"the decode plan's input_ids is {list(ids_shape)}; plan the decoder with seq=1 (--dim seq=1)")
        self.lp = lp
        self.sig = sig
        self.batch = int(ids_shape[0])
        keepable = set(lp.keepable_inputs())
        # a plan with the cache marked as state (turnipc/state.py) keeps every cache tensor: home in host memory
        self.state = all(s.past in lp.state and lp.state[s.past].update is not None for s in sig.slots)
        self.kept = [s for s in sig.slots if self.state or s.past in keepable]
        self.fed = [s for s in sig.slots if s not in self.kept]
        self.host_cache: dict[str, np.ndarray] = {}
        self.slot_bytes = {s.past: lp.plan.tensors[lp.plan.tensor_index()[s.past]].nbytes for s in sig.slots}
        self.position_bytes = {s.past: self.batch * s.kv_heads * s.head_dim * s.dtype.itemsize for s in sig.slots}
        self.reload_per_run = _reload_bytes(lp)
        self.prefill = prefill
        self.prefill_seq = self._check_prefill(prefill) if prefill is not None else None
        self._zero_counters()

    def _check_prefill(self, pre: LoadedPlan) -> int:
        """The prefill plan's prompt length, after checking it is the same decoder at the same batch (GenerateError if not)."""
        psig = plan_signature(pre)
        if psig.convention is not CacheConvention.STATIC or psig.capacity != self.sig.capacity or \
                [(x.past, x.present) for x in psig.slots] != [(x.past, x.present) for x in self.sig.slots]:
            raise GenerateError("the prefill plan is not the same static-cache decoder as the decode plan; plan the same model with seq=PROMPT_LENGTH")
        shape = tuple(pre.plan.tensors[pre.plan.tensor_index()[psig.input_ids]].shape)
        if len(shape) != 2 or shape[0] != self.batch:
            raise GenerateError(f"the prefill plan's input_ids is {list(shape)}, the decode plan's batch is {self.batch}; plan both for the same batch")
        return int(shape[1])

    def _zero_counters(self) -> None:
        """What one generate call counts (runs, cache bytes copied, bytes reloaded), from zero."""
        self.runs = 0
        self.cache_bytes_copied = 0
        self.refilled0 = self.lp.state_bytes_refilled
        self.decode_refilled = 0
        self.bytes_reloaded = 0
        self.calls = 0
        self.decode_runs = 0
        self.decode_cache_bytes = 0

    @property
    def cache_bytes(self) -> int:
        return sum(self.slot_bytes.values())

    def reset(self) -> None:
        """An empty cache: zero the kept cache bytes in place, fresh host arrays for the fed ones (not per token)."""
        for s in self.kept:
            for v in self._dests(s):
                v[...] = 0
        cap = self.sig.capacity
        assert cap is not None
        self.host_cache = {s.past: np.zeros((self.batch, s.kv_heads, cap, s.head_dim), dtype=s.dtype) for s in self.fed}
        self._zero_counters()

    def _dests(self, s: Any) -> list[Any]:
        """Where cache slot ``s`` lives between runs: the state's home and kept arena copy, the kept input, or the host copy."""
        return [v for v, _ in self._dest_parts(s)]

    def _dest_parts(self, s: Any) -> list[tuple[Any, tuple[Any, ...]]]:
        """:meth:`_dests` with the part of the cache each holds (a tiled plan keeps blocks: ``LoadedPlan.state_parts``)."""
        if self.state:
            return self.lp.state_parts(s.past)
        whole = (slice(None),) * 4
        if s in self.kept:
            return [(self.lp.input_views()[s.past], whole)]
        return [(self.host_cache[s.past], whole)]

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        sig, lp = self.sig, self.lp
        ids = np.asarray(feeds[sig.input_ids])
        assert sig.cache_position is not None
        positions = np.asarray(feeds[sig.cache_position])
        if ids.shape[0] != self.batch:
            raise GenerateError(f"input_ids has {ids.shape[0]} rows but the decode plan was made for batch {self.batch}; plan it with --dim batch={ids.shape[0]}")
        be = lp.backend
        kept = [s.past for s in self.kept]
        first = self.calls == 0
        self.calls += 1
        copied0 = self.cache_bytes_copied
        if first and self.prefill is not None:
            return self._run_prefill(ids, positions)
        logits = None
        for j in range(ids.shape[1]):
            p = int(positions[j])
            step = {sig.input_ids: ids[:, j : j + 1], sig.cache_position: positions[j : j + 1]}
            step.update(self.host_cache)
            self.cache_bytes_copied += sum(self.slot_bytes[s.past] for s in self.fed)  # fed whole
            refilled0 = lp.state_bytes_refilled
            out = lp.run(step, device_outputs=True, keep=kept)
            self.runs += 1
            self.bytes_reloaded += self.reload_per_run  # every node runs every time
            if not first:
                self.decode_refilled += lp.state_bytes_refilled - refilled0
            if self.state:  # the one written position, back into each state's home (and kept arena copy)
                self.cache_bytes_copied += lp.write_back_state((slice(None), slice(None), p), [s.past for s in self.kept])
            views = lp.input_views() if kept and not self.state else {}
            for s in ([] if self.state else self.kept):  # the one written position, into the kept input's planned bytes
                _copy_position(be, views[s.past], out[s.present], p)
                self.cache_bytes_copied += self.position_bytes[s.past]
            for s in self.fed:  # the one written position, back to the host copy
                _copy_position(be, self.host_cache[s.past], out[s.present], p)
                self.cache_bytes_copied += self.position_bytes[s.past]
            logits = out[sig.logits]
        if not first:
            self.decode_runs += ids.shape[1]
            self.decode_cache_bytes += self.cache_bytes_copied - copied0
        assert logits is not None
        return {sig.logits: np.array(be.read(logits))}

    def _run_prefill(self, ids: np.ndarray, positions: np.ndarray) -> dict[str, np.ndarray]:
        """The whole prompt in one run of the prefill plan; its presents' prompt positions are copied into the decode cache once."""
        sig, pre = self.sig, self.prefill
        assert pre is not None and sig.capacity is not None and sig.cache_position is not None
        if ids.shape[1] != self.prefill_seq or int(positions[0]) != 0:
            raise GenerateError(f"the prompt has {ids.shape[1]} tokens but the prefill plan was made for {self.prefill_seq}; plan it with seq={ids.shape[1]}")
        n = ids.shape[1]
        feeds: dict[str, np.ndarray] = {sig.input_ids: ids, sig.cache_position: positions}
        cap = sig.capacity
        feeds.update({s.past: np.zeros((self.batch, s.kv_heads, cap, s.head_dim), dtype=s.dtype) for s in sig.slots})
        out = pre.run(feeds, device_outputs=True)
        self.runs += 1
        self.bytes_reloaded += _reload_bytes(pre)
        for s in sig.slots:
            for dst, part in self._dest_parts(s):
                _copy_position(pre.backend, dst, out[s.present][part], slice(0, n))
                self.cache_bytes_copied += n * self.position_bytes[s.past]  # n positions out
            self.cache_bytes_copied += self.slot_bytes[s.past]  # zeros in
        return {sig.logits: np.array(pre.backend.read(out[sig.logits]))[:, -1:, :]}


def _reload_bytes(lp: LoadedPlan) -> int:
    """Bytes one run of the plan reloads (host to arena), summed once from its nodes, not from each run's timeline."""
    return sum(_node_bytes(lp.plan, n) for n in lp.plan.nodes if n.kind == RELOAD)


def _copy_position(be: Any, dst: Any, src: Any, p: int | slice) -> None:
    """``dst[:, :, p, :] = src[:, :, p, :]`` where each side is host NumPy or a device (CuPy) view.

    The slice is strided, so a device side is made contiguous on the device
    before crossing (the backend's read copies contiguous bytes).
    """
    dst_host, src_host = isinstance(dst, np.ndarray), isinstance(src, np.ndarray)
    if dst_host == src_host:
        dst[:, :, p, :] = src[:, :, p, :]
        return
    import cupy  # a device side exists only on the cupy backend

    if dst_host:
        dst[:, :, p, :] = be.read(cupy.ascontiguousarray(src[:, :, p, :]))
    else:
        dst[:, :, p, :] = cupy.asarray(np.ascontiguousarray(src[:, :, p, :]))


def session_generate(
    lp: LoadedPlan,
    input_ids: Any,
    max_new_tokens: int,
    eos_token_id: int | None = None,
    sampling: Sampling | None = None,
    on_token: Any = None,
    prefill: LoadedPlan | None = None,
    past_buckets: tuple[int, ...] | None = (),
    bucket_store: dict[Any, LoadedPlan] | None = None,
) -> SessionGenerateResult:
    """What :meth:`turnip.Session.generate` does (see the module docstring); ``past_buckets``: see :class:`PastPlans`."""
    sig = plan_signature(lp)
    if sig.convention is CacheConvention.PAST_PRESENT:
        return past_present_generate(lp, sig, input_ids, max_new_tokens, prefill=prefill, past_plans=PastPlans(buckets=past_buckets),
                                     bucket_store=bucket_store, eos_token_id=eos_token_id, sampling=sampling, on_token=on_token)
    runner = DecodePlanRunner(lp, sig, prefill)
    runner.reset()
    rewritten0, lp_runs0 = lp.source_bytes_rewritten, lp.runs
    h2d = H2DMeter(lp.backend)
    with h2d.on(lp, prefill):
        res = generate(runner, sig, np.asarray(input_ids), max_new_tokens, eos_token_id=eos_token_id, sampling=sampling, on_token=on_token)
    batch, prompt = np.asarray(input_ids).reshape(-1, np.shape(input_ids)[-1]).shape
    runs = max(runner.runs, 1)
    lp_runs = max(lp.runs - lp_runs0, 1)
    per_token = runner.decode_cache_bytes / runner.decode_runs if runner.decode_runs else runner.cache_bytes_copied / runs
    stats = GenerateStats(
        batch=batch,
        prompt_tokens=prompt,
        new_tokens=int(res.new_token_ids.shape[1]),
        plan_runs=runner.runs,
        prefill_s=res.prefill_s,
        decode_s=res.decode_s,
        weight_loads=lp.weight_loads + (prefill.weight_loads if prefill is not None else 0),
        weight_bytes_at_load=lp.source_bytes_at_load + (prefill.source_bytes_at_load if prefill is not None else 0),
        weight_bytes_rewritten_per_run=(lp.source_bytes_rewritten - rewritten0) // lp_runs,
        cache_bytes=runner.cache_bytes,
        cache_bytes_copied_per_token=per_token,
        cache_bytes_copied_prompt=runner.cache_bytes_copied - runner.decode_cache_bytes,
        cache_inputs_kept=len(runner.kept),
        cache_inputs_fed=len(runner.fed),
        bytes_reloaded_per_run=runner.bytes_reloaded / runs,
        weight_file_bytes_read=lp.weight_file_bytes_read + (prefill.weight_file_bytes_read if prefill is not None else 0),
        cache_is_state=runner.state,
        cache_bytes_refilled_per_token=runner.decode_refilled / runner.decode_runs if runner.decode_runs else 0.0,
        memory=_memory(lp),
        h2d_bandwidth=h2d.report(),
    )
    return SessionGenerateResult(res.new_token_ids, res, stats)


@dataclass(frozen=True)
class PastPlans:
    """Where a past/present decoder's plans come from: the session's plan file, a cache folder, whether to cache, the buckets.

    ``buckets``: the past-length capacities of the bucket plans
    (:mod:`turnip.generate_bucket`); ``()`` (default) powers of two from 8
    covering the generation, falling back to one plan per past length when the
    graph cannot be masked; ``None``: one plan per past length
    (:mod:`turnip.generate_past`).
    """

    plan_path: str | None = None
    plan_folder: str | None = None
    use_cache: bool = True
    buckets: tuple[int, ...] | None = ()
    say: Any = None  # told (one line) when a bucket plan written beside ``plan_path`` is missing and is planned instead


def past_present_generate(lp: LoadedPlan, sig: DecoderSignature, input_ids: Any, max_new_tokens: int, *,
                          prefill: LoadedPlan | None = None, past_plans: PastPlans = PastPlans(),
                          bucket_store: dict[Any, LoadedPlan] | None = None, **loop: Any) -> SessionGenerateResult:
    """A past/present decoder: decode steps on past-length bucket plans (:mod:`turnip.generate_bucket`), planned like ``lp``.

    ``prefill`` (a loaded plan of the prompt graph, seq = prompt length) runs
    the prompt; without it the prompt runs through the decoder with an empty
    past (``lp`` when it was planned for that step). Bucket plans share
    ``lp``'s weights; ``bucket_store`` (the session's) keeps them loaded for
    later calls, else each is closed when the next is loaded. ``loop`` holds the decode loop's options
    (``eos_token_id``, ``sampling``, ``on_token``), passed on to
    :func:`turnip.generate.generate` as they are.
    """
    from .generate_past import DimNames, PastPlanRunner, model_of, past_plan_for

    model = model_of(lp, past_plans.plan_path)
    gpu_mem = str(lp.plan.options.get("gpu_mem", "100%"))
    base = {str(k): int(v) for k, v in dict(lp.plan.options.get("dims", {})).items()}
    names = DimNames.of(model, sig)
    plan_for = past_plan_for(model, gpu_mem, base, names, gpus=max(lp.plan.num_devices, 1),
                             use_cache=past_plans.use_cache, folder=past_plans.plan_folder)
    ids = np.asarray(input_ids)
    batch, prompt = ids.reshape(-1, ids.shape[-1]).shape
    if past_plans.buckets is not None:
        from .generate_bucket import bucket_plan_for, default_buckets, from_written, written_bucket_plans

        try:
            _, bucket_for = bucket_plan_for(model, sig, gpu_mem, base, names, gpus=max(lp.plan.num_devices, 1),
                                            use_cache=past_plans.use_cache, folder=past_plans.plan_folder)
        except GenerateError:
            if past_plans.buckets:  # asked for by the caller: say why not
                raise
        else:
            buckets = past_plans.buckets or tuple(default_buckets(prompt, prompt + max_new_tokens - 2))
            written = written_bucket_plans(past_plans.plan_path) if past_plans.plan_path else {}
            if written:  # turnipc plan --decode wrote them beside the decode plan: theirs, if they cover the generation
                if not past_plans.buckets and max(written) >= prompt + max_new_tokens - 1:
                    buckets = tuple(written)
                bucket_for = from_written(bucket_for, written, lp.plan.model_sha256, past_plans.say)
            elif past_plans.plan_path and past_plans.say is not None:
                past_plans.say("no bucket plans beside the decode plan (turnipc plan --decode writes them): planning them now")
            return _bucket_generate(lp, sig, ids, max_new_tokens, prefill, plan_for, bucket_for, model, buckets, loop, bucket_store)
    # by name: each loaded plan gets its own backend (closing one must not free this session's memories)
    runner = PastPlanRunner(plan_for, model, backend=lp.backend.name, order=lp.order, seed=lp.seed, first=lp)
    pre_runner = None
    if prefill is not None:
        pre_runner = _LoadedRunner(prefill)
    h2d = H2DMeter(lp.backend)
    runner.h2d = h2d
    with h2d.on(lp, prefill):
        res = generate(runner, sig, ids, max_new_tokens, prefill_runner=pre_runner, **loop)
    runs = runner.runs + (pre_runner.runs if pre_runner is not None else 0)
    decode_runs = max(runner.runs - (0 if pre_runner is not None else 1), 1)
    cache_bytes = _cache_bytes(sig, batch, prompt + int(res.new_token_ids.shape[1]) - 1)
    stats = GenerateStats(
        batch=batch,
        prompt_tokens=prompt,
        new_tokens=int(res.new_token_ids.shape[1]),
        plan_runs=runs,
        prefill_s=res.prefill_s,
        decode_s=res.decode_s,
        weight_loads=lp.weight_loads + runner.weight_loads + (prefill.weight_loads if prefill is not None else 0),
        weight_bytes_at_load=lp.source_bytes_at_load + runner.weight_bytes_at_load + (prefill.source_bytes_at_load if prefill is not None else 0),
        weight_bytes_rewritten_per_run=0,
        cache_bytes=cache_bytes,
        cache_bytes_copied_per_token=runner.cache_bytes_fed / decode_runs,  # the whole past, fed each token (this convention)
        cache_bytes_copied_prompt=0,
        cache_inputs_kept=0,
        cache_inputs_fed=len(sig.slots),
        bytes_reloaded_per_run=runner.bytes_reloaded / max(runner.runs, 1),
        weight_file_bytes_read=lp.weight_file_bytes_read,
        cache_is_state=False,
        plans_loaded=1 + runner.plans_loaded + (1 if prefill is not None else 0),
        memory=_memory(lp),
        h2d_bandwidth=h2d.report(),
    )
    return SessionGenerateResult(res.new_token_ids, res, stats)


def _memory(lp: LoadedPlan) -> dict[str, Any] | None:
    return None if lp.shared is None else lp.shared.c.to_dict()


class H2DMeter:
    """Host-to-device bandwidth of the reload copies of the plans one generation runs.

    On the CuPy backend each reload copy is bracketed by two timing events on
    its stream (:meth:`turnip.backends.cupy_backend.CupyBackend.start_h2d_timing`);
    bandwidth = bytes / summed event time (the copy engine's busy time, not the
    wall time around it). The NumPy backend has no device: a reload is a host
    memcpy, so there is no host-to-device bandwidth to measure, and the report
    says so (``bytes_per_s`` null, ``reason``) rather than give a number.
    """

    def __init__(self, backend: Any) -> None:
        self.name = backend.name
        self.timer: Any = backend.new_h2d_timer() if hasattr(backend, "start_h2d_timing") else None
        self.timing: list[Any] = []  # the backends timing into ``timer`` now

    def attach(self, lp: LoadedPlan | None) -> None:
        """Time ``lp``'s reloads too (a plan loaded during the generation: a bucket, a past length)."""
        if lp is not None and self.timer is not None and hasattr(lp.backend, "start_h2d_timing"):
            lp.backend.start_h2d_timing(self.timer)
            if lp.backend not in self.timing:
                self.timing.append(lp.backend)

    def on(self, *plans: LoadedPlan | None) -> Any:
        """A scope timing ``plans`` (and those attached inside it); every backend stops timing at its end."""
        from contextlib import contextmanager

        @contextmanager
        def scope() -> Any:
            for lp in plans:
                self.attach(lp)
            try:
                yield self
            finally:
                for be in self.timing:
                    be.stop_h2d_timing()
                self.timing.clear()

        return scope()

    def report(self) -> dict[str, Any]:
        if self.timer is None:
            return {"bytes_per_s": None, "bytes": None, "seconds": None,
                    "reason": f"the {self.name} backend has no GPU: reloads are host memory copies, so no host-to-device bandwidth is measured"}
        nbytes, seconds = self.timer.total()
        if not nbytes or seconds <= 0:
            return {"bytes_per_s": None, "bytes": nbytes, "seconds": seconds,
                    "reason": "no reload copies ran (the plans keep everything on the GPU)"}
        return {"bytes_per_s": nbytes / seconds, "bytes": nbytes, "seconds": seconds,
                "reason": "measured: CUDA events around each reload copy, bytes / summed copy time"}


def _cache_bytes(sig: DecoderSignature, batch: int, length: int) -> int:
    return sum(batch * s.kv_heads * length * s.head_dim * s.dtype.itemsize for s in sig.slots)


def _bucket_generate(lp: LoadedPlan, sig: DecoderSignature, ids: np.ndarray, max_new_tokens: int, prefill: LoadedPlan | None,
                     plan_for: Any, bucket_for: Any, model: str, buckets: tuple[int, ...], loop: dict[str, Any],
                     store: dict[Any, LoadedPlan] | None = None) -> SessionGenerateResult:
    """The past-length bucket loop (:class:`turnip.generate_bucket.BucketRunner`) and its stats."""
    from .generate_bucket import BucketRunner
    from .generate_past import PastPlanRunner

    batch, prompt = ids.reshape(-1, ids.shape[-1]).shape
    # the prompt: the prompt graph, else the decoder with an empty past (this session's plan, or one planned for that step)
    prompt_runner: Any = _LoadedRunner(prefill) if prefill is not None else \
        PastPlanRunner(plan_for, model, backend=lp.backend.name, order=lp.order, seed=lp.seed, first=lp)
    if lp.shared is not None:  # one arena for all: sized once to the largest bucket plan this generation uses
        from .generate_bucket import bucket_of

        used = sorted({bucket_of(past + 1, buckets) for past in range(prompt, prompt + max(max_new_tokens - 1, 0))})
        shares = [p.plan for p in (prefill,) if p is not None and p.shared is lp.shared]  # a prompt plan on the same memory
        lp.shared.reserve([lp.plan, *shares, *(bucket_for(batch, b) for b in used)])
    runner = BucketRunner(sig, bucket_for, model, buckets, prompt_runner=_EmptyPast(prompt_runner, sig), weights_from=lp,
                          backend=lp.backend.name, order=lp.order, seed=lp.seed, keep_loaded=store is not None, loaded=store)
    h2d = H2DMeter(lp.backend)
    runner.h2d = h2d
    if isinstance(prompt_runner, PastPlanRunner):
        prompt_runner.h2d = h2d
    try:
        with h2d.on(lp, prefill):
            res = generate(runner, sig, ids, max_new_tokens, **loop)
    finally:
        runner.close()
    c = runner.c
    decode_runs = max(c.runs, 1)
    prompt_loads = getattr(prompt_runner, "weight_loads", 0)
    stats = GenerateStats(
        batch=batch,
        prompt_tokens=prompt,
        new_tokens=int(res.new_token_ids.shape[1]),
        plan_runs=c.runs + 1,
        prefill_s=res.prefill_s,
        decode_s=res.decode_s,
        weight_loads=lp.weight_loads + c.weight_loads + prompt_loads + (prefill.weight_loads if prefill is not None else 0),
        weight_bytes_at_load=lp.source_bytes_at_load + c.weight_bytes_at_load + (prefill.source_bytes_at_load if prefill is not None else 0),
        weight_bytes_rewritten_per_run=0,
        cache_bytes=_cache_bytes(sig, batch, prompt + int(res.new_token_ids.shape[1]) - 1),
        # per decode token: one position per cache tensor (and its kept arena copy), plus the bucket moves' [0, L) copies
        cache_bytes_copied_per_token=c.cache_bytes_copied / decode_runs,
        cache_bytes_copied_prompt=c.cache_bytes_copied_prompt,
        cache_inputs_kept=len(sig.slots),
        cache_inputs_fed=0,
        bytes_reloaded_per_run=c.bytes_reloaded / decode_runs,
        weight_file_bytes_read=lp.weight_file_bytes_read + c.weight_file_bytes_read
        + (prefill.weight_file_bytes_read if prefill is not None else 0),
        cache_is_state=True,
        cache_bytes_refilled_per_token=c.cache_bytes_refilled / decode_runs,
        # plans used: the session's, each bucket's (loaded now or kept from an earlier call), a prompt plan, the prefill's
        plans_loaded=1 + len(set(c.buckets_used)) + getattr(prompt_runner, "plans_loaded", 0) + (1 if prefill is not None else 0),
        buckets=c.buckets_used and tuple(dict.fromkeys(c.buckets_used)),
        memory=_memory(lp),
        h2d_bandwidth=h2d.report(),
    )
    return SessionGenerateResult(res.new_token_ids, res, stats)


class _EmptyPast:
    """The prompt step of a past/present decoder: the feeds plus zero-length pasts (a prompt graph without them ignores them)."""

    def __init__(self, inner: Any, sig: DecoderSignature) -> None:
        self.inner, self.sig = inner, sig

    def run(self, feeds: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        batch = np.shape(feeds[self.sig.input_ids])[0]
        empty = {s.past: np.zeros((batch, s.kv_heads, 0, s.head_dim), dtype=s.dtype) for s in self.sig.slots}
        return self.inner.run({**feeds, **empty})


class _LoadedRunner:
    """A loaded plan as a :class:`turnip.generate.Runner` (the prefill graph of a past/present decoder)."""

    def __init__(self, lp: LoadedPlan) -> None:
        self.lp = lp
        self.input_names = [lp.plan.tensors[i].name for i in lp.plan.inputs]
        self.runs = 0

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.runs += 1
        return dict(self.lp.run({k: v for k, v in feeds.items() if k in self.input_names}))
