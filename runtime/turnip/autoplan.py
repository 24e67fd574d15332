"""``turnip-run MODEL.onnx --gpu-mem 25%``: plan on first use, then run the cached plan.

What a file is (:func:`sniff`) decides whether ``turnip-run`` was given a plan
or a model, so a plan where a model is expected (or the reverse) is named as
such instead of failing as unreadable bytes.

The cache: one plan file per (model bytes, planning options, turnip version),
under ``$TURNIP_CACHE_DIR``, else ``$XDG_CACHE_HOME/turnip``, else
``~/.cache/turnip``. The key is the sha256 of the model file and of the
options as canonical JSON, so any change to either plans again; plans are
deterministic, so a cached plan is byte-identical to a fresh one. Cached plans
name their model relative to the cache folder, which is meaningless: the
caller always runs them with the model's real path (``model_path=``), whose
sha256 the runtime checks as for any plan.

This is the one place the runtime reaches into the compiler (``turnipc``), and
only when given a model: running a plan never imports it.
"""

from __future__ import annotations

import enum
import hashlib
import json
import os
from dataclasses import dataclass
from typing import Callable, Sequence

from .executor import TurnipError
from .plan import FORMAT_NAME, FORMAT_VERSION, Plan, read_plan


class FileKind(str, enum.Enum):
    PLAN = "plan"
    ONNX = "onnx"
    OTHER = "other"


class WrongFileKindError(TurnipError):
    """A plan where a model was expected, or a model where a plan was expected."""


def sniff(path: str | os.PathLike[str]) -> FileKind:
    """Plan (msgpack with the ``turnip-plan`` header), ONNX (protobuf ModelProto) or something else, from the first bytes."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError:
        return FileKind.OTHER
    if FORMAT_NAME.encode() in head:  # "format" is the first key every plan writes
        return FileKind.PLAN
    # a ModelProto as onnx.save writes it starts with field 1 (ir_version, varint): tag byte 0x08
    if head[:1] == b"\x08" or (head and os.fspath(path).lower().endswith(".onnx")):
        return FileKind.ONNX
    return FileKind.OTHER
    if FORMAT_NAME.encode() in head[:32] and head[:1] and 0x80 <= head[0] <= 0x8F or head[:1] in (b"\xde", b"\xdf") and FORMAT_NAME.encode() in head:
        return FileKind.PLAN
    # ModelProto fields 1 (ir_version, varint) or 2..8 as written by onnx.save: tag bytes 0x08, 0x12, 0x1a, 0x22, 0x2a, 0x32, 0x3a, 0x42
    if head[:1] in (b"\x08", b"\x12", b"\x1a", b"\x22", b"\x2a", b"\x32", b"\x3a", b"\x42") and os.fspath(path).lower().endswith(".onnx"):
        return FileKind.ONNX
    if head[:1] == b"\x08" and len(head) > 2:
        return FileKind.ONNX
    return FileKind.OTHER


@dataclass(frozen=True)
class AutoPlan:
    plan: Plan
    plan_path: str  # the cached (or, with no_cache, never written) plan file
    model_path: str  # the model's real path: run the plan with it
    cached: bool  # True: read from the cache, False: planned now


def cache_key(model_sha256: str, options: dict) -> str:
    from . import __version__

    blob = json.dumps({"model": model_sha256, "options": options, "turnip": __version__, "format": FORMAT_VERSION}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def plan_model(
    model: str,
    gpu_mem: str,
    dims: Sequence[str] = (),
    input_shapes: Sequence[str] = (),
    gpus: int = 1,
    *,
    use_cache: bool = True,
    folder: str | None = None,
    say: Callable[[str], None] | None = None,
    solver: str = "search",
) -> AutoPlan:
    """The plan of ``model`` for these options: from the cache, or planned now (and cached)."""
    from .weights import file_sha256

    try:
        from turnipc.dims import parse_dim_options

        from .units import parse_budgets
    except ImportError as e:  # pragma: no cover - the compiler is part of every install today
        raise TurnipError(f"planning a model needs the compiler (turnipc) ({e}); pip install 'turnip[compiler]', or pass a plan") from e
    model_abs = os.path.abspath(model)
    try:
        budgets = parse_budgets(gpu_mem, gpus)
        dim_map, shape_map = parse_dim_options(list(dims), list(input_shapes))
    except ValueError as e:
        raise TurnipError(f"--gpu-mem/--dim: {e}") from e
    options = {
        "gpu_mem": gpu_mem.strip(),
        "budgets": [b.describe() if b.bytes is None else b.bytes for b in budgets],
        "dims": dict(sorted(dim_map.items())),
        "input_shapes": {k: list(v) for k, v in sorted(shape_map.items())},
        "gpus": gpus,
    }
    if solver != "search":  # keys of plans made with the default solver stay as they were
        options["solver"] = solver
    from .cache import cache_dir

    folder = folder or cache_dir()
    key = cache_key(file_sha256(model_abs), options)
    path = os.path.join(folder, f"{os.path.splitext(os.path.basename(model_abs))[0]}-{key[:16]}.plan")
    if any(b.auto for b in budgets):
        use_cache = False  # auto depends on what is free on the GPU right now
    if use_cache and os.path.isfile(path):
        try:
            plan = read_plan(path)
            if say:
                say(f"using cached plan {path}")
            return AutoPlan(plan, path, model_abs, True)
        except TurnipError:
            pass  # a damaged cache entry: plan again and overwrite it
        except ValueError:
            pass
    import time

    from turnipc import plan as compile_plan
    from turnipc.errors import TurnipError as CompilerError

    t0 = time.perf_counter()
    try:
        plan = compile_plan(model_abs, gpu_mem=gpu_mem, dims=dim_map, gpus=gpus, input_shapes=shape_map, solver=solver)
    except CompilerError as e:  # the compiler's own error classes: same one line, same exit code
        err = TurnipError(str(e))
        err.exit_code = e.exit_code
        raise err from e
    if say:
        say(f"planned {model} for --gpu-mem {gpu_mem} in {time.perf_counter() - t0:.1f} s" + ("" if use_cache else " (not cached)"))
    if use_cache:
        try:
            os.makedirs(folder, exist_ok=True)
            plan.save(path)
        except OSError as e:
            if say:
                say(f"cannot cache the plan in {folder} ({e.strerror}); running it anyway")
    return AutoPlan(plan, path, model_abs, False)
