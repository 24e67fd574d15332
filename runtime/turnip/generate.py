"""Token generation with a KV cache, over any "runner" that runs one decoder step.

    >>> from turnip.generate import DecoderSignature, Sampling, generate
    >>> sig = DecoderSignature.from_onnx("llama_past.onnx")
    >>> res = generate(runner, sig, prompt_ids, max_new_tokens=32)
    >>> res.new_token_ids            # int64 [batch, steps]

WHY a runner protocol: the loop (cache bookkeeping, positions, sampling, eos)
is the same whoever runs the graph -- onnxruntime, one Turnip plan per past
length, or a loaded ``turnip.Session`` that keeps the cache as state. A runner
is anything with ``run(feeds) -> dict[name, ndarray]`` returning at least the
logits and the present outputs.

Two cache conventions (the ones transformers / optimum exports use):

* ``PAST_PRESENT`` (optimum, torch.onnx): inputs ``past_key_values.{i}.key``
  / ``.value`` ``[batch, kv_heads, past, head_dim]``, outputs
  ``present.{i}.key`` / ``.value`` of length ``past + seq``; each step feeds
  the presents back as the next pasts. The first step runs a separate prefill
  graph (optimum's ``decoder_model.onnx``) when one is given, otherwise the
  same graph with an empty (length 0) past. Optional ``attention_mask``
  (ones, ``[batch, past + seq]``) and ``position_ids`` inputs are fed when the
  graph has them.
* ``STATIC`` (transformers' StaticCache): the cache inputs have a fixed
  capacity on axis 2 and a ``cache_position`` input (int64 ``[seq]``) says
  where the new keys/values go; the presents are the same buffers after the
  in-place update (ScatterND / index_copy). The loop feeds them back; a runner
  that keeps them as state in place may return the same arrays.

Rows of a batch share one prompt length (no padding), like the exports here.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable, Mapping, Protocol, Sequence

import numpy as np


class GenerateError(ValueError):
    """Bad decoder graph or generate() arguments (one line: the problem and the fix)."""


class Runner(Protocol):
    def run(self, feeds: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]: ...


class CacheConvention(str, Enum):
    PAST_PRESENT = "past_present"
    STATIC = "static"


_PAST_RE = re.compile(r"^(?:past_key_values|past)[._](\d+)[._](key|value)$")
_PRESENT_RE = re.compile(r"^(?:present|present_key_values)[._](\d+)[._](key|value)$")

Dim = int | str | None


@dataclass(frozen=True)
class CacheSlot:
    """One cache tensor: the input that reads it and the output that writes it."""

    past: str
    present: str
    layer: int
    kind: str  # "key" | "value"
    kv_heads: int
    head_dim: int
    dtype: np.dtype


@dataclass(frozen=True)
class DecoderSignature:
    """What the loop needs to know about a decoder graph's inputs and outputs."""

    convention: CacheConvention
    input_ids: str
    logits: str
    slots: tuple[CacheSlot, ...]
    cache_position: str | None = None  # STATIC only
    capacity: int | None = None  # STATIC only: cache length on axis 2
    attention_mask: str | None = None  # PAST_PRESENT only (optional input)
    position_ids: str | None = None  # PAST_PRESENT only (optional input)

    @classmethod
    def from_io(
        cls,
        inputs: Mapping[str, tuple[Sequence[Dim], Any]],
        outputs: Sequence[str],
    ) -> DecoderSignature:
        """From ``{input name: (shape, dtype)}`` and the output names (an ONNX model's, or a plan's)."""
        if "input_ids" not in inputs:
            raise GenerateError(f"decoder has no 'input_ids' input (inputs: {', '.join(inputs)}); export it with the token ids named input_ids")
        logits = "logits" if "logits" in outputs else None
        if logits is None:
            raise GenerateError(f"decoder has no 'logits' output (outputs: {', '.join(outputs)}); export it with the logits named logits")
        presents = {}
        for name in outputs:
            m = _PRESENT_RE.match(name)
            if m:
                presents[(int(m.group(1)), m.group(2))] = name
        slots = []
        for name, (shape, dtype) in inputs.items():
            m = _PAST_RE.match(name)
            if not m:
                continue
            key = (int(m.group(1)), m.group(2))
            if key not in presents:
                raise GenerateError(f"cache input {name!r} has no matching present.{key[0]}.{key[1]} output; export the updated cache as an output")
            if len(shape) != 4 or not isinstance(shape[1], int) or not isinstance(shape[3], int):
                raise GenerateError(f"cache input {name!r} has shape {list(shape)}; expected [batch, kv_heads, length, head_dim] with fixed heads and head_dim")
            slots.append(CacheSlot(name, presents[key], key[0], key[1], int(shape[1]), int(shape[3]), np.dtype(dtype)))
        if not slots:
            raise GenerateError("decoder has no past_key_values.{i}.key/value inputs; export it with a KV cache (see docs/generate.md)")
        slots.sort(key=lambda s: (s.layer, s.kind != "key"))
        if "cache_position" in inputs:
            caps = {inputs[s.past][0][2] for s in slots}
            if len(caps) != 1 or not isinstance(next(iter(caps)), int):
                raise GenerateError(f"static-cache decoder needs one fixed cache length on axis 2, got {sorted(map(str, caps))}; export with a fixed max_cache_len")
            capacity = next(iter(caps))
            assert isinstance(capacity, int)
            return cls(CacheConvention.STATIC, "input_ids", logits, tuple(slots), cache_position="cache_position", capacity=capacity)
        return cls(
            CacheConvention.PAST_PRESENT,
            "input_ids",
            logits,
            tuple(slots),
            attention_mask="attention_mask" if "attention_mask" in inputs else None,
            position_ids="position_ids" if "position_ids" in inputs else None,
        )

    @classmethod
    def from_onnx(cls, model: Any) -> DecoderSignature:
        """From an ONNX ModelProto or file path (initializers listed as inputs are skipped)."""
        import onnx

        if isinstance(model, (str, os.PathLike)):
            model = onnx.load(os.fspath(model), load_external_data=False)
        inits = {t.name for t in model.graph.initializer}
        ins = {}
        for vi in model.graph.input:
            if vi.name in inits:
                continue
            tt = vi.type.tensor_type
            shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim]
            ins[vi.name] = (shape, onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type))
        return cls.from_io(ins, [o.name for o in model.graph.output])


@dataclass(frozen=True)
class Sampling:
    """Greedy when ``do_sample`` is False; else temperature, then top-k, then top-p (nucleus), seeded."""

    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0  # 0: no top-k filter
    top_p: float = 1.0  # 1.0: no nucleus filter
    seed: int = 0

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise GenerateError(f"temperature must be > 0 (got {self.temperature}); use do_sample=False for greedy")
        if self.top_k < 0:
            raise GenerateError(f"top_k must be >= 0 (got {self.top_k})")
        if not 0.0 < self.top_p <= 1.0:
            raise GenerateError(f"top_p must be in (0, 1] (got {self.top_p})")


def filtered_probs(logits: np.ndarray, s: Sampling) -> np.ndarray:
    """Row-wise sampling distribution ``[batch, vocab]`` after temperature / top-k / top-p.

    Top-p keeps the smallest set of most likely tokens whose probability sums
    to at least ``top_p`` (always at least one token), as transformers does.
    """
    x = logits.astype(np.float64) / s.temperature
    if s.top_k and s.top_k < x.shape[-1]:
        kth = np.partition(x, -s.top_k, axis=-1)[:, -s.top_k][:, None]
        x = np.where(x < kth, -np.inf, x)
    x = x - x.max(axis=-1, keepdims=True)
    p = np.exp(x)
    p /= p.sum(axis=-1, keepdims=True)
    if s.top_p < 1.0:
        order = np.argsort(-p, axis=-1, kind="stable")
        sorted_p = np.take_along_axis(p, order, axis=-1)
        before = np.cumsum(sorted_p, axis=-1) - sorted_p  # mass strictly above each token
        keep_sorted = before < s.top_p  # the first token always has before == 0
        keep = np.zeros_like(keep_sorted)
        np.put_along_axis(keep, order, keep_sorted, axis=-1)
        p = np.where(keep, p, 0.0)
        p /= p.sum(axis=-1, keepdims=True)
    return p


def next_tokens(logits: np.ndarray, s: Sampling, rng: np.random.Generator) -> np.ndarray:
    """One id per row from last-position logits ``[batch, vocab]`` (greedy: the first maximum)."""
    if not s.do_sample:
        return np.argmax(logits, axis=-1).astype(np.int64)
    p = filtered_probs(logits, s)
    u = rng.random(p.shape[0])
    cdf = np.cumsum(p, axis=-1)
    target = u * cdf[:, -1]
    ids = np.array([int(np.searchsorted(cdf[r], target[r], side="right")) for r in range(p.shape[0])], dtype=np.int64)
    return np.minimum(ids, p.shape[-1] - 1)


@dataclass
class StepStat:
    kind: str  # "prefill" | "decode"
    past: int  # cache length before the step
    tokens: int  # new positions per row
    seconds: float


@dataclass
class GenerateResult:
    new_token_ids: np.ndarray  # int64 [batch, steps]; after a row's eos: pad
    steps: list[StepStat] = field(default_factory=list)

    @property
    def prefill_s(self) -> float:
        return sum(s.seconds for s in self.steps if s.kind == "prefill")

    @property
    def decode_s(self) -> float:
        return sum(s.seconds for s in self.steps if s.kind == "decode")

    def decode_tokens_per_s(self) -> float:
        """Generated tokens (all rows) per second of decode steps (the first token comes from prefill)."""
        n = sum(s.tokens for s in self.steps if s.kind == "decode") * self.new_token_ids.shape[0]
        return n / self.decode_s if self.decode_s > 0 else float("nan")


def _cache_zeros(sig: DecoderSignature, batch: int, length: int) -> dict[str, np.ndarray]:
    return {s.past: np.zeros((batch, s.kv_heads, length, s.head_dim), dtype=s.dtype) for s in sig.slots}


def _step_feeds(sig: DecoderSignature, ids: np.ndarray, past_len: int, cache: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    batch, seq = ids.shape
    feeds: dict[str, np.ndarray] = {sig.input_ids: ids}
    positions = np.arange(past_len, past_len + seq, dtype=np.int64)
    if sig.convention is CacheConvention.STATIC:
        assert sig.cache_position is not None
        feeds[sig.cache_position] = positions
    else:
        if sig.attention_mask:
            feeds[sig.attention_mask] = np.ones((batch, past_len + seq), dtype=np.int64)
        if sig.position_ids:
            feeds[sig.position_ids] = np.broadcast_to(positions, (batch, seq)).copy()
    feeds.update(cache)
    return feeds


def generate(
    runner: Runner,
    sig: DecoderSignature,
    input_ids: np.ndarray,
    max_new_tokens: int,
    eos_token_id: int | None = None,
    pad_token_id: int | None = None,
    sampling: Sampling | None = None,
    prefill_runner: Runner | None = None,
    on_token: Callable[[int, np.ndarray], Any] | None = None,
) -> GenerateResult:
    """Generate up to ``max_new_tokens`` ids per row after the prompt ``input_ids [batch, seq]``.

    Stops early when every row has produced ``eos_token_id``; a finished row
    gets ``pad_token_id`` (default: the eos id) afterwards, as transformers
    does. ``prefill_runner`` (PAST_PRESENT only) runs the prompt pass when it
    is a separate graph. ``on_token(step, ids)`` is called after each step.
    """
    ids = np.asarray(input_ids)
    if ids.ndim == 1:
        ids = ids[None, :]
    if ids.ndim != 2 or ids.shape[1] == 0 or ids.dtype.kind not in "iu":
        raise GenerateError(f"input_ids must be integer [batch, seq] with seq >= 1 (got {ids.dtype} {list(ids.shape)})")
    ids = ids.astype(np.int64)
    if max_new_tokens < 1:
        raise GenerateError(f"max_new_tokens must be at least 1 (got {max_new_tokens})")
    sampling = sampling or Sampling()
    rng = np.random.default_rng(sampling.seed)
    batch, prompt_len = ids.shape
    if sig.convention is CacheConvention.STATIC:
        assert sig.capacity is not None
        need = prompt_len + max_new_tokens - 1  # the last new token is never fed back
        if need > sig.capacity:
            raise GenerateError(
                f"prompt ({prompt_len}) + max_new_tokens ({max_new_tokens}) - 1 = {need} exceeds the static cache capacity {sig.capacity}; "
                "export with a larger max_cache_len or ask for fewer tokens"
            )
        if prefill_runner is not None:
            raise GenerateError("a static-cache decoder runs the prompt itself; drop the prefill runner")
    # a runner with ``keeps_cache`` (turnip.session_generate's static-cache runner, turnip.generate_bucket's
    # past-length buckets) holds the cache itself between runs: it is fed no cache and its presents are not read back
    keeps_cache = bool(getattr(runner, "keeps_cache", False))
    if keeps_cache and prefill_runner is not None:
        raise GenerateError("a runner that keeps the cache runs the prompt itself; give it the prefill runner, not generate()")
    length = sig.capacity if sig.convention is CacheConvention.STATIC and sig.capacity is not None else 0
    cache = {} if keeps_cache else _cache_zeros(sig, batch, length)
    pad = eos_token_id if pad_token_id is None else pad_token_id

    out = np.zeros((batch, 0), dtype=np.int64)
    done = np.zeros(batch, dtype=bool)
    steps: list[StepStat] = []
    step_ids, past_len = ids, 0
    for step in range(max_new_tokens):
        first = step == 0
        r = prefill_runner if (first and prefill_runner is not None) else runner
        if first and prefill_runner is not None:
            feeds = _step_feeds(sig, step_ids, 0, {})
            wanted = getattr(prefill_runner, "input_names", None)  # a prefill graph may lack mask / positions
            if wanted is not None:
                feeds = {k: v for k, v in feeds.items() if k in wanted}
        else:
            feeds = _step_feeds(sig, step_ids, past_len, {} if keeps_cache else cache)
        t0 = time.perf_counter()
        res = r.run(feeds)
        seconds = time.perf_counter() - t0
        steps.append(StepStat("prefill" if first else "decode", past_len, step_ids.shape[1], seconds))
        try:
            logits = np.asarray(res[sig.logits])
            if not keeps_cache:
                cache = {s.past: np.asarray(res[s.present]) for s in sig.slots}
        except KeyError as e:
            raise GenerateError(f"runner returned no {e.args[0]!r}; it must return the logits and every present output") from None
        past_len += step_ids.shape[1]
        if sig.convention is CacheConvention.PAST_PRESENT and not keeps_cache:
            got = {a.shape[2] for a in cache.values()}
            if got != {past_len}:
                raise GenerateError(f"present outputs have length {sorted(got)} after step {step}, expected {past_len}; is this a KV-cache decoder?")
        nxt = next_tokens(logits[:, -1, :], sampling, rng)
        if eos_token_id is not None:
            nxt = np.where(done, np.int64(eos_token_id if pad is None else pad), nxt)
            done |= nxt == eos_token_id
        out = np.concatenate([out, nxt[:, None]], axis=1)
        if on_token is not None:
            on_token(step, nxt)
        if eos_token_id is not None and done.all():
            break
        step_ids = nxt[:, None]
    return GenerateResult(out, steps)


class OrtRunner:
    """The reference runner: one onnxruntime CPU session (onnxruntime is an optional dependency)."""

    def __init__(self, path: str | os.PathLike[str], threads: int | None = None):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.log_severity_level = 3
        if threads:
            so.intra_op_num_threads = threads
        self.session = ort.InferenceSession(os.fspath(path), so, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.calls = 0

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.calls += 1
        return dict(zip(self.output_names, self.session.run(None, dict(feeds))))
