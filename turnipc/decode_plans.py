"""``turnipc plan MODEL --decode PROMPT_LEN``: the dims of a decoder's decode plan and of its prompt (prefill) plan.

A static-cache decoder (``cache_position`` input) is planned twice from the
same file: ``seq = 1`` (the decode plan) and ``seq = PROMPT_LEN`` (the
prefill plan). A past/present decoder's decode plan is the first decode step
(``seq = 1``, ``past = PROMPT_LEN``), its prefill plan is the prompt graph
given with ``--prefill-model`` (optimum's ``decoder_model.onnx``), and the
later steps run on past-length bucket plans (turnip/generate_bucket.py: the
decoder rewritten to take a padded, masked past), written beside the decode
plan as ``NAME.bucketB.plan`` (:func:`bucket_plans`) so that ``turnip-run
NAME.plan --generate N`` plans nothing. Dims the user binds with ``--dim``
are kept; the batch defaults to 1.

WHY only dims here: each plan is an ordinary plan made by the usual pipeline
(the cache marked as state). The plans share no layout; at run time a
past/present session's plans share one arena and one host weight store
(turnip/session_memory.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import TurnipError


class DecodePlanError(TurnipError, ValueError):
    """A model ``--decode`` cannot plan: not a decoder, or a past/present one without its prompt graph."""


@dataclass(frozen=True)
class DecodePlans:
    """What to plan: (model path, dims) of the decode plan and of the prefill plan, and where each is written."""

    decode: tuple[str, dict[str, int]]
    prefill: tuple[str, dict[str, int]]
    decode_output: str
    prefill_output: str


def _input_dims(model: str) -> dict[str, list[str | None]]:
    import onnx

    m = onnx.load(model, load_external_data=False)
    inits = {t.name for t in m.graph.initializer}
    return {vi.name: [d.dim_param or None for d in vi.type.tensor_type.shape.dim] for vi in m.graph.input if vi.name not in inits}


def prefill_output_path(output: str) -> str:
    """``out.plan`` -> ``out.prefill.plan`` (the runtime finds it by the same name: turnip.generate_bucket.prefill_plan_path)."""
    from turnip.generate_bucket import prefill_plan_path

    return prefill_plan_path(output)


def decode_plans(model: str, prompt_len: int, dims: dict[str, int], output: str, prefill_model: str | None = None) -> DecodePlans:
    """The two plans ``--decode`` writes (DecodePlanError when ``model`` is no KV-cache decoder)."""
    if prompt_len < 1:
        raise DecodePlanError(f"--decode {prompt_len}: the prompt length must be at least 1")
    ins = _input_dims(model)
    ids = ins.get("input_ids")
    past = [n for n in ins if n.startswith("past")]
    if ids is None or len(ids) != 2 or not past:
        raise DecodePlanError(f"--decode needs a decoder with input_ids and past_key_values inputs; {model!r} has {', '.join(ins)}")
    batch_dim, seq_dim = ids
    static = "cache_position" in ins

    def bind(base: dict[str, int], values: dict[str | None, int]) -> dict[str, int]:
        out = dict(base)
        for name, v in values.items():
            if name is not None and name not in dims:
                out[name] = v
        return out

    base = dict(dims)
    if batch_dim is not None:
        base.setdefault(batch_dim, 1)
    if static:
        if prefill_model is not None:
            raise DecodePlanError("--prefill-model is for past/present decoders; a static-cache decoder is its own prompt graph: drop it")
        dec = bind(base, {seq_dim: 1})
        pre = bind(base, {seq_dim: prompt_len})
        return DecodePlans((model, dec), (model, pre), output, prefill_output_path(output))
    if prefill_model is None:
        raise DecodePlanError(f"{model!r} is a past/present decoder: give its prompt graph with --prefill-model (optimum's decoder_model.onnx)")
    past_dims = ins[past[0]]
    dec = bind(base, {seq_dim: 1, past_dims[2] if len(past_dims) > 2 else None: prompt_len})
    pre_ins = _input_dims(prefill_model)
    if any(n.startswith("past") for n in pre_ins) or "input_ids" not in pre_ins:
        raise DecodePlanError(f"--prefill-model {prefill_model!r} is no prompt graph (input_ids in, no past inputs); pass optimum's decoder_model.onnx")
    used = {d for shape in pre_ins.values() for d in shape if d}
    pre_ids = pre_ins["input_ids"]
    pre = {k: v for k, v in base.items() if k in used}
    if len(pre_ids) == 2:
        pre = bind(pre, {pre_ids[0]: base.get(batch_dim or "", 1), pre_ids[1]: prompt_len})
    return DecodePlans((model, dec), (prefill_model, pre), output, prefill_output_path(output))


@dataclass(frozen=True)
class BucketPlan:
    """One past-length bucket plan to write: its capacity, the file, the masked decoder's dims."""

    capacity: int
    output: str
    dims: dict[str, int]


def bucket_plans(model: str, prompt_len: int, decode_dims: dict[str, int], output: str, new_tokens: int = 32,
                 buckets: tuple[int, ...] = ()) -> list[BucketPlan]:
    """The bucket plans of a past/present decoder for ``new_tokens`` after a prompt of ``prompt_len`` (or ``buckets``).

    Default capacities: powers of two from 8 holding the pasts ``prompt_len ..
    prompt_len + new_tokens - 2`` plus the new position, as the runtime picks
    them (:func:`turnip.generate_bucket.default_buckets`).
    """
    from turnip.generate import DecoderSignature
    from turnip.generate_bucket import bucket_dims, bucket_plan_path, default_buckets
    from turnip.generate_past import DimNames

    sig = DecoderSignature.from_onnx(model)
    names = DimNames.of(model, sig)
    batch = int(decode_dims.get(names.batch or "", 1))
    caps = tuple(sorted(set(buckets))) or tuple(default_buckets(prompt_len, prompt_len + max(new_tokens, 2) - 2))
    return [BucketPlan(b, bucket_plan_path(output, b), bucket_dims(names, decode_dims, batch, b)) for b in caps]
