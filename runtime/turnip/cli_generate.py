"""``turnip-run MODEL_OR_PLAN --generate N --input-ids 1,2,3;4,5,6``: token generation from the command line.

Kept apart from :mod:`turnip.cli` (which only dispatches here) so that the
run-a-plan path stays as it was. Given an ONNX model, the decode plan is made
by :mod:`turnip.autoplan` with the batch dimension bound to the number of
rows and the sequence dimension to 1 (the dim names are read off the model's
``input_ids``), so ``--dim`` is needed only for other dimensions.
"""

from __future__ import annotations

import json
import sys
from typing import Any, Callable, Sequence

import click
import numpy as np

from .errors import TurnipError
from .units import format_bytes


def parse_input_ids(text: str) -> np.ndarray:
    """``"1,2,3;4,5,6"`` -> int64 ``[[1, 2, 3], [4, 5, 6]]`` (rows of one length), or a one-line TurnipError."""
    rows = [r.strip() for r in text.strip().strip(";").split(";")]
    try:
        ids = [[int(x) for x in r.split(",")] for r in rows]
    except ValueError:
        raise TurnipError(f"--input-ids {text!r} is not comma-separated integers; write rows as 1,2,3 separated by ';' (e.g. '1,2,3;4,5,6')") from None
    if not ids or any(len(r) != len(ids[0]) for r in ids):
        raise TurnipError(f"--input-ids {text!r}: every row needs the same number of ids (no padding); got lengths {[len(r) for r in ids]}")
    if any(x < 0 for r in ids for x in r):
        raise TurnipError(f"--input-ids {text!r} has a negative id; token ids are >= 0")
    return np.array(ids, dtype=np.int64)


def parse_buckets(text: str | None) -> tuple[int, ...] | None:
    """``--past-buckets``: ``"16,32,64"`` -> (16, 32, 64); ``"none"`` -> None (one plan per past length); absent -> () (powers of two)."""
    if text is None:
        return ()
    if text.strip().lower() == "none":
        return None
    try:
        out = tuple(sorted({int(x) for x in text.split(",") if x.strip()}))
    except ValueError:
        raise TurnipError(f"--past-buckets {text!r} is not comma-separated integers; write e.g. 16,32,64 (or 'none')") from None
    if not out or out[0] < 1:
        raise TurnipError(f"--past-buckets {text!r}: give capacities of at least 1, e.g. 16,32,64 (or 'none')")
    return out


def decode_dims(model: str, batch: int, dims: Sequence[str], prompt_len: int = 1, prefill_model: str | None = None) -> list[str]:
    """``--dim`` options for the first plan: the user's, plus input_ids' batch = rows and sequence = 1 when not given.

    A past/present decoder's first plan is the prompt's step: past = prompt
    length and seq = 1 after a ``--prefill-model``, else seq = prompt length
    and past = 0 (the prompt through the decoder with an empty cache).
    """
    from .generate import CacheConvention, DecoderSignature, GenerateError

    try:
        sig = DecoderSignature.from_onnx(model)
    except GenerateError as e:
        raise TurnipError(f"--generate needs a decoder with a KV cache: {e}") from None
    except Exception as e:  # noqa: BLE001 - an unreadable model: say so in one line
        raise TurnipError(f"cannot read {model!r} as an ONNX model ({e}); pass a decoder .onnx or a decode plan") from None
    if sig.convention is not CacheConvention.STATIC and prefill_model is not None:
        _check_prefill_model(prefill_model)
    elif prefill_model is not None:
        raise TurnipError(f"--prefill-model is for past/present decoders; {model!r} is a static-cache decoder, which runs the prompt itself: drop it")
    import onnx

    m = onnx.load(model, load_external_data=False)
    given = {d.partition("=")[0].strip() for d in dims}
    out = list(dims)
    for vi in m.graph.input:
        if vi.name != sig.input_ids:
            continue
        shape = vi.type.tensor_type.shape.dim
        seq = 1 if sig.convention is CacheConvention.STATIC or prefill_model is not None else prompt_len
        for axis, value in ((0, batch), (1, seq)):
            if axis < len(shape) and shape[axis].dim_param and shape[axis].dim_param not in given:
                out.append(f"{shape[axis].dim_param}={value}")
    if sig.convention is CacheConvention.PAST_PRESENT:
        past = prompt_len if prefill_model is not None else 0
        for vi in m.graph.input:
            if vi.name == sig.slots[0].past:
                d = vi.type.tensor_type.shape.dim
                if len(d) > 2 and d[2].dim_param and d[2].dim_param not in given:
                    out.append(f"{d[2].dim_param}={past}")
    return out


def _check_prefill_model(path: str) -> None:
    """A one-line TurnipError unless ``path`` is a prompt graph: input_ids in, logits and presents out, no past inputs."""
    try:
        import onnx

        m = onnx.load(path, load_external_data=False)
    except Exception as e:  # noqa: BLE001 - an unreadable model: say so in one line
        raise TurnipError(f"--prefill-model {path!r} is not a readable ONNX model ({e}); pass the prompt graph (optimum's decoder_model.onnx)") from None
    names = {vi.name for vi in m.graph.input}
    outs = [o.name for o in m.graph.output]
    if "input_ids" not in names or "logits" not in outs or not any(o.startswith("present") for o in outs):
        raise TurnipError(f"--prefill-model {path!r} is no prompt graph (input_ids in, logits and present.* out); pass optimum's decoder_model.onnx")
    if any(n.startswith("past") for n in names):
        raise TurnipError(f"--prefill-model {path!r} takes past inputs; pass the prompt graph without past (optimum's decoder_model.onnx)")


class _TokenBar:
    """A rich progress bar of new tokens on stderr (only on a terminal; transient)."""

    def __init__(self, total: int) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(TextColumn("generating"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                 console=Console(stderr=True), transient=True)
        self.task = self.progress.add_task("tokens", total=total)
        self.progress.start()

    def __call__(self, step: int, ids: Any) -> None:
        self.progress.update(self.task, completed=step + 1)

    def close(self) -> None:
        self.progress.stop()


def run_generate(
    plan: Any,
    plan_path: str,
    model_path: str | None,
    ids: np.ndarray,
    new_tokens: int,
    eos_token_id: int | None,
    backend: str,
    order: str,
    seed: int,
    verify_weights: bool,
    as_json: bool,
    quiet: bool,
    say: Callable[[str], None],
    prefill_model: str | None = None,
    cache_dir: str | None = None,
    use_cache: bool = True,
    tokenizer: str | None = None,
    past_buckets: str | None = None,
    plan_file: bool = False,
) -> int:
    """Load the decode plan once, generate, print ids (and tokens/s); exit status.

    ``plan_file``: the user gave a plan file (not a model): a past/present decoder's bucket plans are then
    looked for beside it (``turnipc plan --decode`` writes them), and planning one here is said on stderr.
    """
    buckets = parse_buckets(past_buckets)
    from .generate import CacheConvention, GenerateError
    from .plan import Plan, read_plan
    from .run import LoadedPlan
    from .session_generate import PastPlans, past_present_generate, plan_signature, session_generate
    from .session_memory import session_memory_for

    if not isinstance(plan, Plan):
        plan = read_plan(plan)
    # a past/present decoder's bucket plans share this plan's arena and host weight store (turnip/session_memory.py)
    shared = session_memory_for(plan)
    with LoadedPlan(plan, backend=backend, order=order, seed=seed, plan_path=plan_path, model_path=model_path,
                    verify_weights=verify_weights, shared=shared) as lp:
        say(f"loaded the decode plan in {lp.load_s:.2f} s")
        bar = _TokenBar(new_tokens) if not as_json and not quiet and sys.stderr.isatty() else None
        pre = None
        try:
            sig = plan_signature(lp)
            if sig.convention is CacheConvention.PAST_PRESENT:
                if prefill_model:
                    pre = _prefill_plan(prefill_model, lp, ids, backend, order, seed, verify_weights, cache_dir, use_cache)
                elif plan_file:
                    pre = _written_prefill_plan(plan_path, ids, backend, order, seed, verify_weights, shared)
                res = past_present_generate(lp, sig, ids, new_tokens, eos_token_id=eos_token_id, on_token=bar, prefill=pre,
                                            past_plans=PastPlans(plan_path if plan_file else None, cache_dir, use_cache, buckets,
                                                                 say=None if quiet else _note))
            elif prefill_model is not None:
                raise TurnipError("--prefill-model is for past/present decoders; a static-cache decoder runs the prompt itself: drop it")
            elif past_buckets is not None:
                raise TurnipError("--past-buckets is for past/present decoders; a static-cache decoder has one fixed cache: drop it")
            else:
                res = session_generate(lp, ids, new_tokens, eos_token_id=eos_token_id, on_token=bar)
        except GenerateError as e:
            raise TurnipError(f"--generate: {e}") from None
        finally:
            if bar is not None:
                bar.close()
            if pre is not None:
                pre.close()
        load_s = lp.load_s
    if shared is not None:
        shared.close()
    st = res.stats
    texts = decode_text(tokenizer, res.new_token_ids) if tokenizer else None
    if as_json:
        obj = {"plan": plan_path, "new_token_ids": res.new_token_ids.tolist(), "load_s": load_s, **st.to_dict()}
        if texts is not None:
            obj["new_text"] = texts
        click.echo(json.dumps({k: (v if not isinstance(v, float) or np.isfinite(v) else str(v)) for k, v in obj.items()}))
    elif not quiet:
        for r, row in enumerate(res.new_token_ids.tolist()):
            click.echo(f"row {r}: {' '.join(map(str, row))}")
            if texts is not None:
                click.echo(f"text {r}: {texts[r]!r}")
        click.echo(
            f"{st.new_tokens} new tokens x {st.batch} rows: prefill {st.prefill_tokens_per_s:.1f} tokens/s, "
            f"decode {st.decode_tokens_per_s:.1f} tokens/s ({st.plan_runs} runs of {st.plans_loaded} plan(s)); "
            f"weights loaded {st.weight_loads}x ({format_bytes(st.weight_bytes_at_load)} at load, "
            f"{format_bytes(st.weight_bytes_rewritten_per_run)} rewritten per run); "
            f"cache {format_bytes(st.cache_bytes)}, {format_bytes(int(st.cache_bytes_copied_per_token))} copied per token"
        )
    return 0


def _written_prefill_plan(plan_path: str, ids: np.ndarray, backend: str, order: str, seed: int, verify_weights: bool, shared: Any) -> Any:
    """The prompt plan ``turnipc plan --decode`` wrote beside the decode plan, loaded, when it fits the prompt; else None."""
    import os

    from .generate_bucket import prefill_plan_path
    from .plan import read_plan
    from .run import LoadedPlan

    path = prefill_plan_path(plan_path)
    if not os.path.isfile(path):
        return None
    plan = read_plan(path)
    idx = plan.tensor_index()
    if "input_ids" not in idx or tuple(plan.tensors[idx["input_ids"]].shape) != tuple(ids.shape):
        _note(f"{path} is for input_ids {list(plan.tensors[idx['input_ids']].shape) if 'input_ids' in idx else '?'}, "
              f"the prompt is {list(ids.shape)}: the prompt runs through the decoder instead")
        return None
    return LoadedPlan(plan, backend=backend, order=order, seed=seed, plan_path=path, verify_weights=verify_weights,
                      shared=shared)  # the decode plan's arena (its weights: another file, its own store)


def _note(message: str) -> None:
    click.echo(f"note: {message}", err=True)


def _prefill_plan(prefill_model: str, lp: Any, ids: np.ndarray, backend: str, order: str, seed: int, verify_weights: bool,
                  cache_dir: str | None, use_cache: bool) -> Any:
    """The prompt graph planned like the decode plan (same budget) for ``[rows, prompt length]``, loaded."""
    from .autoplan import plan_model
    from .run import LoadedPlan

    _check_prefill_model(prefill_model)
    import onnx

    m = onnx.load(prefill_model, load_external_data=False)
    used = {d.dim_param for vi in m.graph.input for d in vi.type.tensor_type.shape.dim if d.dim_param}
    dims = {str(k): int(v) for k, v in dict(lp.plan.options.get("dims", {})).items() if k in used}  # not the decoder's past
    for vi in m.graph.input:
        if vi.name == "input_ids":
            d = vi.type.tensor_type.shape.dim
            for axis, value in ((0, ids.shape[0]), (1, ids.shape[1])):
                if axis < len(d) and d[axis].dim_param:
                    dims[d[axis].dim_param] = int(value)
    auto = plan_model(prefill_model, str(lp.plan.options.get("gpu_mem", "100%")), [f"{k}={v}" for k, v in sorted(dims.items())],
                      (), max(lp.plan.num_devices, 1), use_cache=use_cache, folder=cache_dir)
    return LoadedPlan(auto.plan, backend=backend, order=order, seed=seed, plan_path=auto.plan_path, model_path=auto.model_path,
                      shared=lp.shared,  # the decode plan's arena (its weights: another file, its own store)
                      verify_weights=verify_weights)


def decode_text(tokenizer_path: str, ids: np.ndarray) -> list[str]:
    """Each row's new ids as text, with a Hugging Face ``tokenizer.json`` (the optional ``tokenizers`` package)."""
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise TurnipError("--tokenizer needs the tokenizers package: pip install 'turnip[text]' (or pip install tokenizers)") from None
    try:
        tok = Tokenizer.from_file(tokenizer_path)
    except Exception as e:  # noqa: BLE001 - any unreadable file: one line
        raise TurnipError(f"--tokenizer {tokenizer_path!r} is not a tokenizer.json the tokenizers package reads ({e}); pass a Hugging Face tokenizer.json") from None
    return [tok.decode([int(x) for x in row]) for row in ids.tolist()]
