"""``turnip-run``: run a MEMGRAPH plan, optionally check it against onnxruntime."""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.progress import TaskID

import click
import numpy as np

from .backends import BACKENDS
from .cli_errors import ErrorHandlingCommand, json_option, verbosity_options
from .errors import TurnipError
from .executor import ORDERS
from .plan import read_plan, resolve_model_path
from .units import format_bytes as _human

__version__ = "0.1.0"  # = turnip.__version__ (not imported from the package: keeps --help fast)

EXAMPLES = """\b
Examples:
  turnip-run model.plan --random-inputs --check
  turnip-run model.plan --inputs feeds.npz --output out.npz
  turnip-run model.plan --input input_ids=ids.npy --order random --seed 7 --check
  turnip-run model.plan --random-inputs --repeat 5 --trace run.json --report
  turnip-run model.plan --random-inputs --check --json
  turnip-run model.onnx --gpu-mem 25% --dim batch=2 --dim seq=16 --random-inputs
  turnip-run moved/model.plan --model /data/model.onnx --random-inputs
  turnip-run decoder_static.onnx --gpu-mem 25% --generate 32 --input-ids '1,2,3;4,5,6'


Exit status (one table for turnip-run and turnipc, docs/cli.md):
  0 ok, 1 --check failed, 2 bad or unsafe plan, changed model or weights, wrong inputs, or a node failed,
  4 out of memory, 5 cannot write an output, 6 a package the command needs is missing, 70 internal error (a bug; -v shows the traceback), 130 interrupted.
"""


def _load_feeds(inputs_npz: str | None, input_files: tuple[str, ...]) -> dict[str, np.ndarray]:
    feeds: dict[str, np.ndarray] = {}
    if inputs_npz:
        try:
            with np.load(inputs_npz, allow_pickle=False) as z:
                for k in z.files:
                    feeds[k] = z[k]
        except (OSError, ValueError) as e:
            raise TurnipError(f"cannot read inputs file {inputs_npz!r} ({e}); pass an .npz made with numpy.savez") from e
    for spec in input_files:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise TurnipError(f"--input {spec!r} is not NAME=FILE.npy; write it as e.g. --input input_ids=ids.npy")
        try:
            feeds[name] = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise TurnipError(f"cannot read input file {path!r} for {name!r} ({e}); pass an .npy made with numpy.save") from e
    return feeds


class _Progress:
    """A rich progress bar on stderr, shown only for runs long enough to matter."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(
            TextColumn("running plan"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        self.task: TaskID | None = None
        self.t0 = time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        if self.task is None:
            if done >= total or time.monotonic() - self.t0 < 0.5:
                return  # short runs get no bar
            self.progress.start()
            self.task = self.progress.add_task("run", total=total)
        self.progress.update(self.task, completed=done, total=total)

    def close(self) -> None:
        if self.task is not None:
            self.progress.stop()


@click.command(name="turnip-run", cls=ErrorHandlingCommand, epilog=EXAMPLES, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.argument("plan", metavar="PLAN_OR_MODEL", type=click.Path(dir_okay=False))
@click.version_option(__version__, prog_name="turnip-run")
@click.option("--model", "model_path", type=click.Path(dir_okay=False),
              help="The plan's model is here (overrides the path the plan records; its sha256 must match).")
@click.option("--gpu-mem", "gpu_mem", metavar="BUDGET",
              help="Given a MODEL.onnx: plan it for this budget first (as `turnipc plan --gpu-mem`), cached by model hash and options.")
@click.option("--dim", "dims", multiple=True, metavar="NAME=N", help="Given a MODEL.onnx: bind a dynamic dimension (repeatable).")
@click.option("--gpus", type=click.IntRange(1, 64), default=1, show_default=True, help="Given a MODEL.onnx: GPUs to plan for.")
@click.option("--no-cache", is_flag=True, help="Given a MODEL.onnx: plan again and do not write the plan cache.")
@click.option("--cache-dir", type=click.Path(file_okay=False), help="Plan cache folder [default: $TURNIP_CACHE_DIR or ~/.cache/turnip].")
@click.option("--inputs", "inputs_npz", type=click.Path(dir_okay=False), help="Feeds as an .npz (one array per input name).")
@click.option("--input", "input_files", multiple=True, metavar="NAME=FILE.npy", help="One feed from an .npy file (repeatable).")
@click.option("--random-inputs", is_flag=True, help="Random feeds of the planned shapes (ints index the table they gather from).")
@click.option("--output", "output_path", type=click.Path(dir_okay=False), help="Write the outputs to this .npz.")
@click.option("--check", is_flag=True, help="Compare with onnxruntime (CPU) on the same feeds; exit 1 if they differ.")
@click.option("--atol", type=float, default=1e-4, show_default=True, help="Absolute tolerance for --check.")
@click.option("--rtol", type=float, default=1e-3, show_default=True, help="Relative tolerance for --check.")
@click.option("--repeat", type=click.IntRange(min=1), default=1, show_default=True, help="Run the plan this many times.")
@click.option(
    "--order",
    type=click.Choice(ORDERS),
    default="dynamic",
    show_default=True,
    help="Execution order: dynamic (priority), fixed (planned serial order) or random.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for --random-inputs and --order random.")
@click.option(
    "--backend", type=click.Choice(BACKENDS), default="auto", show_default=True, help="auto: cupy if a CUDA GPU is usable, else numpy."
)
@click.option("--report", is_flag=True, help="List the nodes that ran through the onnxruntime fallback.")
@click.option(
    "--trace", "trace_path", type=click.Path(dir_okay=False), help="Write a Chrome trace (chrome://tracing, Perfetto) of the last run."
)
@json_option("Print one JSON object (outputs, check, stats) instead of text.")
@click.option("--no-verify-weights", "no_verify_weights", is_flag=True,
              help="Skip checking the model's weight files against the sizes and hashes the plan recorded (you vouch for them).")
@click.option("--generate", "generate_n", type=click.IntRange(min=1), metavar="N",
              help="Generate N tokens per row with a KV-cache decoder: static cache (cache_position; a model or its seq=1 plan) "
                   "or past/present (past-length bucket plans, planned like the first); needs --input-ids.")
@click.option("--input-ids", "input_ids", metavar="IDS", help="With --generate: the prompt, ids separated by ',', rows of a batch by ';' (e.g. '1,2,3;4,5,6').")
@click.option("--eos-token-id", "eos_token_id", type=int, help="With --generate: stop a row at this id (finished rows repeat it).")
@click.option("--prefill-model", "prefill_model", type=click.Path(dir_okay=False),
              help="With --generate and a past/present decoder: the prompt graph without past inputs (optimum's decoder_model.onnx).")
@click.option("--tokenizer", "tokenizer", type=click.Path(dir_okay=False),
              help="With --generate: a Hugging Face tokenizer.json; print the new ids as text too (needs the tokenizers package).")
@click.option("--past-buckets", "past_buckets", metavar="LIST",
              help="With --generate and a past/present decoder: past-length capacities of the decode plans, e.g. 16,32,64 "
                   "(default: powers of two from 8); 'none': one plan per past length.")
@verbosity_options
@click.option("--profile", is_flag=True, help="Print time per op type and the slowest nodes of the last run (in --json: \"profile\").")
def main(**options: Any) -> None:
    """Run PLAN_OR_MODEL on the given inputs: a MEMGRAPH plan (made by `turnipc plan`), or an ONNX model with --gpu-mem (planned once, cached).

    Before the first node runs, the plan is checked as `turnipc verify` checks it
    (dependencies order every hazard, locations in bounds and aligned, devices and
    budgets), and the weights against the hashes the plan recorded.
    """
    sys.exit(_main(plan_path=options.pop("plan"), **options))


def _main(
    plan_path: str,
    inputs_npz: str | None,
    input_files: tuple[str, ...],
    random_inputs: bool,
    output_path: str | None,
    check: bool,
    atol: float,
    rtol: float,
    repeat: int,
    order: str,
    seed: int,
    backend: str,
    report: bool,
    trace_path: str | None,
    as_json: bool,
    model_path: str | None = None,
    gpu_mem: str | None = None,
    dims: tuple[str, ...] = (),
    gpus: int = 1,
    no_cache: bool = False,
    cache_dir: str | None = None,
    verbosity: int | None = None,
    no_verify_weights: bool = False,
    profile: bool = False,
    generate_n: int | None = None,
    input_ids: str | None = None,
    eos_token_id: int | None = None,
    prefill_model: str | None = None,
    tokenizer: str | None = None,
    past_buckets: str | None = None,
) -> int:
    from .atomic import check_target
    from .autoplan import FileKind, WrongFileKindError, plan_model, sniff
    from .run import random_feeds, run_plan

    verbosity = verbosity or 0
    quiet = verbosity < 0

    def say(msg: str) -> None:
        if verbosity > 0 and not as_json:
            click.echo(msg, err=True)

    if not os.path.isfile(plan_path):
        raise TurnipError(f"plan file {plan_path!r} not found; make one with `turnipc plan MODEL.onnx`")
    if output_path and os.path.abspath(output_path) in {os.path.abspath(p) for p in (plan_path, model_path) if p}:
        raise TurnipError(f"--output {output_path!r} is the input file; write the outputs to another path (e.g. out.npz)")
    # Refuse unwritable output paths before the run, not after it.
    if output_path:
        check_target(output_path, "outputs")
    if trace_path:
        check_target(trace_path, "trace")
    kind = sniff(plan_path)
    gen_ids = None
    if generate_n is not None or input_ids is not None or eos_token_id is not None or prefill_model or tokenizer or past_buckets:
        from .cli_generate import decode_dims, parse_input_ids

        if generate_n is None or input_ids is None:
            raise TurnipError("--generate N and --input-ids IDS go together (--eos-token-id, --prefill-model, --tokenizer, --past-buckets need both); "
                              "give both, e.g. --generate 32 --input-ids 1,2,3")
        other = [o for o, v in (("--inputs", inputs_npz), ("--input", input_files), ("--random-inputs", random_inputs), ("--output", output_path),
                                ("--check", check), ("--repeat", repeat != 1), ("--trace", trace_path), ("--profile", profile), ("--report", report)) if v]
        if other:
            raise TurnipError(f"--generate runs its own feeds and prints ids: {', '.join(other)} do not apply; drop them")
        gen_ids = parse_input_ids(input_ids)
        if kind == FileKind.ONNX and gpu_mem:
            dims = tuple(decode_dims(plan_path, gen_ids.shape[0], dims, gen_ids.shape[1], prefill_model))
    if model_path is not None and sniff(model_path) == FileKind.PLAN:
        raise WrongFileKindError(f"--model {model_path!r} is a Turnip plan, not an ONNX model; pass the model the plan was made from")
    if kind == FileKind.ONNX:
        if model_path is not None:
            raise WrongFileKindError(f"{plan_path!r} is an ONNX model, not a plan; --model is for plans (drop it, the model is {plan_path!r})")
        if not gpu_mem:
            raise WrongFileKindError(
                f"{plan_path!r} is an ONNX model, not a plan: give --gpu-mem (e.g. --gpu-mem 25%) to plan and run it, "
                f"or plan it with `turnipc plan {plan_path} --gpu-mem 25% -o model.plan`"
            )
        auto = plan_model(plan_path, gpu_mem, dims, (), gpus, use_cache=not no_cache, folder=cache_dir, say=say)
        plan = auto.plan
        model_path = auto.model_path
        plan_path = auto.plan_path
    else:
        if gpu_mem or dims or no_cache or cache_dir or gpus != 1:
            used = [o for o, v in (("--gpu-mem", gpu_mem), ("--dim", dims), ("--no-cache", no_cache), ("--cache-dir", cache_dir), ("--gpus", gpus != 1)) if v]
            raise WrongFileKindError(
                f"{plan_path!r} is a Turnip plan, not an ONNX model: {', '.join(used)} are for models only (a plan is already planned); drop them"
            )
        plan = read_plan(plan_path)
    if gen_ids is not None and generate_n is not None:
        from .cli_generate import run_generate

        return run_generate(plan, plan_path, model_path, gen_ids, generate_n, eos_token_id, backend, order, seed,
                            not no_verify_weights, as_json, quiet, say, prefill_model=prefill_model, cache_dir=cache_dir,
                            use_cache=not no_cache, tokenizer=tokenizer, past_buckets=past_buckets, plan_file=kind != FileKind.ONNX)
    feeds = _load_feeds(inputs_npz, input_files)
    if random_inputs:
        for k, v in random_feeds(plan, seed).items():
            feeds.setdefault(k, v)
    needed = [plan.tensors[i].name for i in plan.inputs]
    if needed and not feeds:
        raise TurnipError(
            f"the plan needs inputs {', '.join(repr(n) for n in needed)}; pass --inputs FEEDS.npz, --input NAME=FILE.npy or --random-inputs"
        )

    prog = None
    if not as_json and sys.stderr.isatty():
        prog = _Progress()
    try:
        result = run_plan(
            plan, feeds, backend=backend, order=order, seed=seed, repeat=repeat, trace=trace_path, progress=prog, plan_path=plan_path,
            model_path=model_path,
            verify_weights=not no_verify_weights,
        )
    finally:
        if prog is not None:
            prog.close()
    stats = result.stats

    if output_path:
        from .atomic import atomic_write

        with atomic_write(output_path, "outputs") as f:
            np.savez(f, **result.outputs)  # type: ignore[arg-type]  # numpy stubs type **kwds as allow_pickle

    comparisons = None
    passed = None
    if check:
        from .check import compare, reference_outputs

        ref = reference_outputs(model_path or resolve_model_path(plan, plan_path), feeds)
        comparisons = compare(result.outputs, ref, atol=atol, rtol=rtol)
        passed = all(c.ok for c in comparisons)

    prof = None
    if profile:
        from .profile import build_profile

        prof = build_profile(stats.timeline, stats.wall_s[-1])

    fallback_ops = Counter(op if not dom else f"{dom}.{op}" for _, op, dom, _ in stats.fallback_nodes)
    if as_json:
        obj: dict[str, Any] = {
            "plan": plan_path,
            "outputs": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in result.outputs.items()},
            "check": None
            if comparisons is None
            else {
                "passed": passed,
                "atol": atol,
                "rtol": rtol,
                "worst_tol_ratio": _num(max((c.tol_ratio for c in comparisons), default=0.0)),
                "outputs": [
                    {"name": c.name, "max_abs": _num(c.max_abs), "max_rel": _num(c.max_rel), "tol_ratio": _num(c.tol_ratio), "ok": c.ok}
                    for c in comparisons
                ],
            },
            "stats": stats.to_dict(),
            "fallback_ops": dict(sorted(fallback_ops.items())),
        }
        if prof is not None:
            obj["profile"] = prof.to_dict()
        if output_path:
            obj["output_file"] = output_path
        if trace_path:
            obj["trace_file"] = trace_path
        click.echo(json.dumps(obj))
    elif not quiet:
        walls = stats.wall_s
        wall = (
            f"{walls[0]:.4f} s"
            if len(walls) == 1
            else f"best {min(walls):.4f} s, median {float(np.median(walls)):.4f} s over {len(walls)} runs"
        )
        click.echo(
            f"ran {stats.nodes_run} nodes in {wall} ({stats.backend}, {stats.order} order); "
            f"reloaded {_human(stats.bytes_reloaded)}, offloaded {_human(stats.bytes_offloaded)}"
            + (f", moved {_human(stats.bytes_moved)}" if stats.bytes_moved else "")
        )
        for name, v in result.outputs.items():
            click.echo(f"  output {name}: {v.dtype} {list(v.shape)}")
        if report:
            if fallback_ops:
                click.echo(f"onnxruntime fallback: {len(stats.fallback_nodes)} nodes")
                for op, cnt in fallback_ops.most_common():
                    click.echo(f"  {op}: {cnt}")
            else:
                click.echo("onnxruntime fallback: none (every node has a native kernel)")
        if prof is not None:
            for line in prof.lines():
                click.echo(line)
        if trace_path:
            click.echo(f"trace written to {trace_path}")
        if output_path:
            click.echo(f"outputs written to {output_path}")
        if comparisons is not None:
            for c in comparisons:
                click.echo(
                    f"  {c.name}: worst error {c.tol_ratio:.3g}x the tolerance (atol + rtol*|ref|; at most 1 passes), "
                    f"max abs {c.max_abs:.3g}, max rel {c.max_rel:.3g}  {'ok' if c.ok else 'MISMATCH'}"
                )
            worst = max((c.tol_ratio for c in comparisons), default=0.0)
            click.echo(f"{'PASSED' if passed else 'FAILED'}: worst error {worst:.3g}x the tolerance (atol {atol:g}, rtol {rtol:g})")
    elif passed is False:
        worst = max((c.tol_ratio for c in comparisons or ()), default=0.0)
        click.echo(f"check FAILED: worst error {worst:.3g}x the tolerance (atol {atol:g}, rtol {rtol:g})", err=True)
    return 1 if passed is False else 0


def _num(x: float) -> float | str:
    return x if np.isfinite(x) else str(x)


if __name__ == "__main__":  # pragma: no cover
    main(prog_name="turnip-run")
