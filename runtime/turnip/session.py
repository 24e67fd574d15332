"""``turnip.Session``: load a plan once, run it many times.

    >>> import turnip
    >>> with turnip.Session("model.plan") as session:
    ...     for ids in batches:
    ...         logits = session.run({"input_ids": ids})["logits"]

Creating a session does everything that does not depend on the feeds, once:
it reads the plan, allocates every memory the plan names (one arena per GPU,
the pinned host region), prepares one callable per node (kernels bound to
their planned views, onnxruntime fallback sessions, CUDA streams and events),
memory-maps the model's weights and writes the weights and constants that no
node overwrites. :meth:`Session.run` then writes the feeds, runs the MEMGRAPH
and returns the outputs; nothing is allocated per run (the memories are
counted once; see tests/test_session.py).

The object it wraps, :class:`turnip.run.LoadedPlan`, is what token
generation builds on; a session adds the user-facing shape: input and output
descriptions, statistics of the last run, ``close`` and ``with``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from .executor import ExecStats
from .plan import Plan, read_plan
from .run import LoadedPlan, RunStats


@dataclass(frozen=True)
class TensorSpec:
    """A graph input or output as the plan fixes it: name, NumPy dtype name, shape."""

    name: str
    dtype: str
    shape: tuple[int, ...]


def load_plan(path: str | os.PathLike[str]) -> Plan:
    """Read a plan file (made by ``turnipc plan`` or :meth:`turnip.plan.Plan.save`).

    Raises :class:`turnip.plan.PlanFormatError` (one line) when the file is
    not a plan this runtime reads. The plan remembers nothing about where it
    was read from: pass the path (not the Plan) to :class:`Session` when the
    plan names its model by a relative path, or give ``model=``.
    """
    return read_plan(path)


class Session:
    """A plan loaded once and run many times (see the module docstring).

    ``plan``: a plan file path, or a :class:`~turnip.plan.Plan` (from
    :func:`load_plan` or ``turnipc.plan``). ``model``: where the model is, when
    it is not where the plan says (relative to the plan file); its sha256 must
    still match the planned one. ``backend``: ``"auto"`` (CuPy on a CUDA GPU,
    else NumPy), ``"numpy"``, ``"cupy"`` or a backend instance. ``order``:
    ``"dynamic"`` (default), ``"fixed"`` or ``"random"``; ``seed`` seeds the
    random order. ``weights_from``: an open session on the SAME model file
    (e.g. the decode plan's, for a prompt-length plan): weights are copied from
    it instead of read from the weight files again (``weight_loads`` 0).
    ``memory``: a :class:`turnip.session_memory.SessionMemory` to share (default:
    a new one for a past/present decoder, whose bucket plans then use one arena
    and one host weight store with this plan; none otherwise). ``memory`` (the
    attribute) holds its counters.

    Not thread-safe: one ``run`` at a time per session.
    """

    def __init__(
        self,
        plan: Plan | str | os.PathLike[str],
        model: str | os.PathLike[str] | None = None,
        backend: Any = "auto",
        order: str = "dynamic",
        seed: int = 0,
        weights_from: "Session | None" = None,
        memory: Any = None,
    ) -> None:
        from .session_memory import session_memory_for

        plan_path = None if isinstance(plan, Plan) else os.fspath(plan)
        if not isinstance(plan, Plan):
            plan = read_plan(plan)
        # a past/present decoder runs bucket plans too: one arena and one weight store for all (turnip/session_memory.py)
        self.memory = session_memory_for(plan) if memory is None else memory
        self._loaded = LoadedPlan(plan, backend=backend, order=order, seed=seed, plan_path=plan_path, model_path=model,
                                  weights_from=None if weights_from is None else weights_from.loaded, shared=self.memory)
        self.plan: Plan = self._loaded.plan
        self.plan_path = plan_path
        self._last: RunStats | None = None
        self._last_exec: tuple[ExecStats, float] | None = None  # made into RunStats when asked (last_stats)
        self._generate_plans: dict[Any, LoadedPlan] = {}  # past/present bucket plans kept between generate calls

    # -- description ---------------------------------------------------------
    @property
    def backend(self) -> str:
        """The backend's name: ``"numpy"`` or ``"cupy"``."""
        return self._loaded.backend.name

    @property
    def inputs(self) -> list[TensorSpec]:
        """What :meth:`run` must be fed, in the model's order."""
        ts = self.plan.tensors
        return [TensorSpec(ts[i].name, ts[i].dtype, tuple(ts[i].shape)) for i in self.plan.inputs]

    @property
    def outputs(self) -> list[TensorSpec]:
        """What :meth:`run` returns, in the model's order."""
        ts = self.plan.tensors
        return [TensorSpec(ts[loc.tensor].name, ts[loc.tensor].dtype, tuple(ts[loc.tensor].shape)) for loc in self.plan.outputs]

    @property
    def load_s(self) -> float:
        """Seconds spent loading (allocate, prepare, open and write the weights)."""
        return self._loaded.load_s

    @property
    def runs(self) -> int:
        """How many times the plan has run in this session."""
        return self._loaded.runs

    @property
    def last_stats(self) -> RunStats | None:
        """What the last :meth:`run` did (wall time, bytes moved, timeline), or None before the first.

        Built on first access, not in :meth:`run`: the timeline has one event per
        node, as much Python work as running a small model's nodes.
        """
        if self._last_exec is not None:
            self._last = self._stats(*self._last_exec)
            self._last_exec = None
        return self._last

    @property
    def keepable_inputs(self) -> list[str]:
        """Inputs that may be kept between runs (``run(keep=...)``): the plan never overwrites their bytes."""
        return self._loaded.keepable_inputs()

    def input_views(self) -> dict[str, Any]:
        """Each input's planned bytes, zero-copy (CuPy arrays on the GPU): write state there in place, then ``run(keep=...)``."""
        return self._loaded.input_views()

    @property
    def loaded(self) -> LoadedPlan:
        """The underlying loaded plan (for code that drives runs step by step, e.g. token generation)."""
        return self._loaded

    # -- running -------------------------------------------------------------
    def run(self, feeds: Mapping[str, Any] | None = None, *, device_outputs: bool = False, keep: Iterable[str] = ()) -> dict[str, Any]:
        """Run the plan on ``feeds`` (input name -> array); returns output name -> array.

        Feeds must have exactly the planned dtype and shape. They may be NumPy
        arrays (any backend), or CuPy / DLPack GPU arrays on the ``cupy``
        backend (copied device to device). Outputs are host NumPy copies; with
        ``device_outputs=True`` they are zero-copy views of the plan's memory
        (CuPy arrays on the GPU): valid until the next ``run`` or ``close``,
        so copy what you keep. ``keep``: input names not fed this time, whose
        planned bytes stay as the last run (or :meth:`input_views`) left them,
        for state carried between runs (only inputs the plan never overwrites:
        :attr:`keepable_inputs`). Raises a :class:`turnip.TurnipError` subclass
        with a one-line message on bad feeds or a failing node.
        """
        import time

        lp = self._loaded
        lp.write_inputs(feeds or {}, keep)
        t0 = time.perf_counter()
        ex = lp.execute()
        wall = time.perf_counter() - t0
        out = lp.outputs(device=device_outputs)
        self._last, self._last_exec = None, (ex, wall)
        return out

    def _stats(self, ex: ExecStats, wall: float) -> RunStats:
        return self._loaded.run_stats(ex, [wall])

    def generate(
        self,
        input_ids: Any,
        max_new_tokens: int,
        eos_token_id: int | None = None,
        do_sample: bool = False,
        top_k: int = 0,
        top_p: float = 1.0,
        temperature: float = 1.0,
        seed: int = 0,
        on_token: Any = None,
        prefill: "Session | None" = None,
        past_buckets: Sequence[int] | None = (),
        keep_plans: bool | None = None,
    ) -> Any:
        """Generate up to ``max_new_tokens`` ids per row after ``input_ids`` (``[batch, prompt]`` ints).

        The session must hold a static-cache decode plan with ``seq = 1`` (plan
        the decoder with ``dims={"batch": B, "seq": 1}``); the prompt runs
        through the same plan one position at a time, and the KV cache stays in
        the plan's memory between runs where the plan allows it (see
        :mod:`turnip.session_generate`). Greedy unless ``do_sample``; then
        temperature, top-k, top-p, seeded by ``seed``. Returns a
        :class:`turnip.session_generate.SessionGenerateResult`:
        ``new_token_ids`` (int64 ``[batch, steps]``) and ``stats`` (tokens/s,
        weight loads, cache bytes copied per token). Raises
        :class:`turnip.generate.GenerateError` (one line) on a plan that is no
        static-cache decoder or bad arguments.

        ``prefill``: a second session on the same decoder planned for the
        prompt length (``seq = prompt length``, same batch): the prompt then runs
        in one pass there, and its cache is copied into this session's once
        (that session loads its own weights, ``stats.weight_loads`` 2, unless
        it was made with ``weights_from=`` this session: then 1).

        A past/present decoder (optimum's convention: no ``cache_position``)
        grows its cache every token: its decode steps run on past-length
        bucket plans (``past_buckets``: capacities; default powers of two
        from 8), the past padded to the bucket and masked, made like this
        session's plan (same budget and dims; planned through
        :mod:`turnip.autoplan`, cached), their weights copied from this
        session's and the cache kept in them as state
        (:mod:`turnip.generate_bucket`); ``past_buckets=None``: one plan per
        past length (:mod:`turnip.generate_past`). ``prefill`` is then a
        session on the prompt graph (optimum's ``decoder_model.onnx``,
        ``seq = prompt length``); without it the prompt runs through this
        decoder with an empty past. The session's plan and its bucket plans
        share ONE arena per GPU, sized to the largest, and one host weight
        store, read from the files once per session (``self.memory``,
        :mod:`turnip.session_memory`); they run one at a time. ``keep_plans``:
        keep the bucket plans loaded for later calls (closed with the
        session; they hold views of the shared arena, not arenas of their
        own); default: yes when the session shares its memory (a
        past/present decoder) or runs on the CPU backend.
        """
        from .generate import Sampling
        from .session_generate import session_generate

        sampling = Sampling(do_sample=do_sample, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
        return session_generate(self._loaded, input_ids, max_new_tokens, eos_token_id=eos_token_id, sampling=sampling, on_token=on_token,
                                prefill=None if prefill is None else prefill.loaded,
                                past_buckets=None if past_buckets is None else tuple(int(b) for b in past_buckets),
                                bucket_store=self._generate_plans if (self.backend == "numpy" or self.memory is not None
                                                                      if keep_plans is None else keep_plans) else None)

    # -- lifetime ------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._loaded.closed

    def close(self) -> None:
        """Free the plan's memories and close the weight files. Idempotent; ``with`` calls it."""
        for lp in self._generate_plans.values():
            lp.close()
        self._generate_plans.clear()
        self._loaded.close()
        memory = getattr(self, "memory", None)
        if memory is not None and not memory.plans:
            memory.close()

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:  # a forgotten session still frees its arenas
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{self.runs} runs"
        return f"<turnip.Session {self.plan_path or 'plan'} on {self.backend}, {len(self.plan.nodes)} nodes, {state}>"
