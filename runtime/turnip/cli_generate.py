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


def decode_dims(model: str, batch: int, dims: Sequence[str]) -> list[str]:
    """``--dim`` options for the decode plan: the user's, plus input_ids' batch = rows and sequence = 1 when not given."""
    from .generate import CacheConvention, DecoderSignature, GenerateError

    try:
        sig = DecoderSignature.from_onnx(model)
    except GenerateError as e:
        raise TurnipError(f"--generate needs a decoder with a KV cache: {e}") from None
    except Exception as e:  # noqa: BLE001 - an unreadable model: say so in one line
        raise TurnipError(f"cannot read {model!r} as an ONNX model ({e}); pass a decoder .onnx or a decode plan") from None
    if sig.convention is not CacheConvention.STATIC:
        raise TurnipError(
            f"--generate needs a static-cache decoder (a cache_position input); {model!r} is a past/present decoder, "
            "which turnip-run cannot generate with yet: export it with transformers' static cache (docs/generate.md)"
        )
    import onnx

    m = onnx.load(model, load_external_data=False)
    given = {d.partition("=")[0].strip() for d in dims}
    out = list(dims)
    for vi in m.graph.input:
        if vi.name != sig.input_ids:
            continue
        shape = vi.type.tensor_type.shape.dim
        for axis, value in ((0, batch), (1, 1)):
            if axis < len(shape) and shape[axis].dim_param and shape[axis].dim_param not in given:
                out.append(f"{shape[axis].dim_param}={value}")
    return out


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
) -> int:
    """Load the decode plan once, generate, print ids (and tokens/s); exit status."""
    from .generate import GenerateError
    from .run import LoadedPlan
    from .session_generate import session_generate

    with LoadedPlan(plan, backend=backend, order=order, seed=seed, plan_path=plan_path, model_path=model_path,
                    verify_weights=verify_weights) as lp:
        say(f"loaded the decode plan in {lp.load_s:.2f} s")
        bar = _TokenBar(new_tokens) if not as_json and not quiet and sys.stderr.isatty() else None
        try:
            res = session_generate(lp, ids, new_tokens, eos_token_id=eos_token_id, on_token=bar)
        except GenerateError as e:
            raise TurnipError(f"--generate: {e}") from None
        finally:
            if bar is not None:
                bar.close()
        load_s = lp.load_s
    st = res.stats
    if as_json:
        obj = {"plan": plan_path, "new_token_ids": res.new_token_ids.tolist(), "load_s": load_s, **st.to_dict()}
        click.echo(json.dumps({k: (v if not isinstance(v, float) or np.isfinite(v) else str(v)) for k, v in obj.items()}))
    elif not quiet:
        for r, row in enumerate(res.new_token_ids.tolist()):
            click.echo(f"row {r}: {' '.join(map(str, row))}")
        click.echo(
            f"{st.new_tokens} new tokens x {st.batch} rows: prefill {st.prefill_tokens_per_s:.1f} tokens/s, "
            f"decode {st.decode_tokens_per_s:.1f} tokens/s ({st.plan_runs} runs of the decode plan); "
            f"weights loaded {st.weight_loads}x ({format_bytes(st.weight_bytes_at_load)} at load, "
            f"{format_bytes(st.weight_bytes_rewritten_per_run)} rewritten per run); "
            f"cache {format_bytes(st.cache_bytes)}, {format_bytes(int(st.cache_bytes_copied_per_token))} copied per token"
        )
    return 0
