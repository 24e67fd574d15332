"""The high-level API: run a plan on feeds, get the outputs and what happened.

    >>> from turnip.run import run_plan
    >>> result = run_plan("model.plan", {"input_ids": ids})
    >>> result.outputs["logits"], result.stats.wall_s

``run_plan`` reads the plan, allocates every memory once, prepares one
callable per node, writes weights / constants / inputs into place, runs the
MEMGRAPH (``order``: ``dynamic``, ``fixed`` or ``random``) ``repeat`` times,
and copies the graph outputs out of their planned locations.
"""

from __future__ import annotations

import bisect
import os
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

import numpy as np

from .backends import Backend, get_backend
from .errors import TurnipError
from .executor import ORDERS, ExecStats, Executor
from .graph import copy_label, describe_node
from .outblocks import assemble_output, graph_outputs
from .plan import COMPUTE, MOVE, OFFLOAD, RELOAD, Plan, TensorKind, read_plan
from .queues import QUEUE_OF_KIND, dynamic_priorities
from .trace import TimelineEvent
from .weights import InitialData, _FileRange, host_bytes, validate_feeds, write_source
from .weightstream import StreamedWeight

if TYPE_CHECKING:
    from .session_memory import SessionMemory


@dataclass
class RunStats:
    backend: str
    order: str
    seed: int
    repeat: int
    nodes: int  # nodes in the plan
    nodes_run: int  # nodes run per repeat
    wall_s: list[float]  # execution wall time of each repeat (inputs written before, outputs read after)
    load_s: float  # allocate + prepare + open the weights
    bytes_reloaded: int  # per repeat
    bytes_offloaded: int
    bytes_moved: int
    fallback_nodes: list[tuple[int, str, str, str]] = field(default_factory=list)  # (id, op, domain, name)
    timeline: list[TimelineEvent] = field(default_factory=list)  # of the last repeat

    def to_dict(self, timeline: bool = False) -> dict[str, Any]:
        d = asdict(self)
        d["fallback_nodes"] = [{"node": i, "op": op, "domain": dom, "name": nm} for i, op, dom, nm in self.fallback_nodes]
        if timeline:
            d["timeline"] = [asdict(e) for e in self.timeline]
        else:
            d.pop("timeline")
        return d


@dataclass
class RunResult:
    outputs: dict[str, np.ndarray]
    stats: RunStats


def _node_bytes(plan: Plan, node: Any) -> int:
    if node.bytes:
        return int(node.bytes)
    if node.outputs and 0 <= node.outputs[0].tensor < len(plan.tensors):
        return plan.tensors[node.outputs[0].tensor].nbytes
    return 0


def _overwritten(plan: Plan) -> list[bool]:
    """Per placement: whether some node writes bytes overlapping its location.

    A placement nobody overwrites (a weight or constant whose memory is never
    reused) keeps its bytes from one run to the next, so a loaded plan writes
    it once; the others (inputs, and weights whose memory the plan reuses once
    they are dead) are written before every run.
    """
    written: dict[int, list[tuple[int, int]]] = {}
    for node in plan.nodes:
        for loc in node.outputs:
            if loc is None or not 0 <= loc.tensor < len(plan.tensors):
                continue
            written.setdefault(loc.mem, []).append((loc.offset, loc.offset + plan.tensors[loc.tensor].nbytes))
    for spans in written.values():
        spans.sort()
    out = []
    for p in plan.placements:
        lo = p.loc.offset
        hi = lo + (plan.tensors[p.tensor].nbytes if 0 <= p.tensor < len(plan.tensors) else 0)
        spans = written.get(p.loc.mem, [])
        k = bisect.bisect_left(spans, (hi, -1))  # spans starting before hi
        out.append(any(s < hi and lo < e for s, e in spans[:k]))
    return out


class LoadedPlan:
    """A plan made ready to run many times: the object Session (and token generation) build on.

    Done ONCE, here: the plan is read and checked, the backend allocates every
    memory (arenas, pinned host region), every node gets its prepared callable
    (kernels bound to their views, onnxruntime fallback sessions built, CUDA
    streams and events made), the model's weights are opened (memory-mapped)
    and the weights and constants that no node overwrites are written into
    place. Each :meth:`run` then only writes the feeds (and the placements
    some node overwrites), runs the MEMGRAPH and reads the outputs.

    Not thread-safe: one :meth:`run` at a time.
    """

    def __init__(
        self,
        plan: Plan | str | os.PathLike[str],
        *,
        backend: str | Backend = "auto",
        order: str = "dynamic",
        seed: int = 0,
        plan_path: str | os.PathLike[str] | None = None,
        model_path: str | os.PathLike[str] | None = None,
        verify_weights: bool = True,
        weights_from: "LoadedPlan | None" = None,
        weight_homes: bool = True,
        shared: "SessionMemory | None" = None,
    ) -> None:
        """``weights_from``: a loaded plan of the SAME model (same sha256) whose weights are already in
        place; weights are copied from it (its arena or host memory) instead of read from the files again,
        so a session's prefill plan or a decoder's other past lengths read the weight files once.

        ``weight_homes``: a weight whose memory the plan reuses must be rewritten before every run. True
        (for many runs: sessions, token generation): its bytes are read once into a host copy (its home) and
        rewritten from there. False (a one-shot run, ``run_plan``): no home; it is rewritten from the model's
        file (the OS page cache, not this process' memory), so the weights are held once, in the memories.

        ``shared``: the memory of a session that runs several plans one at a time
        (:mod:`turnip.session_memory`): this plan's memories are views of the session's buffers (one arena
        per GPU, sized to the largest plan), its weights come from the session's host weight store (read
        from the files once per session; ``weights_from`` is then not used), and it is activated before
        each use (its once-placed bytes rewritten if another plan ran since)."""
        if order not in ORDERS:
            raise TurnipError(f"unknown order {order!r}; use one of {', '.join(ORDERS)}")
        if not isinstance(plan, Plan):
            plan_path = plan
            plan = read_plan(plan)
        check_before_run(plan)  # refuse an unsafe plan before allocating anything
        self.plan: Plan = plan
        self.order = order
        self.seed = seed
        self.runs = 0
        self._closed = False
        self.shared = shared
        self._external: set[int] = set()  # placements whose location is the store's bytes (nothing to write)
        t0 = time.perf_counter()
        self.backend: Backend = get_backend(backend)
        self.weight_loads = 1  # the weight files are opened (and their bytes written) here, once per loaded plan
        self.initial: InitialData | None = InitialData(
            plan, plan_path, None if model_path is None else os.fspath(model_path), verify_weights=verify_weights,
            keep_model=shared is not None,
        )
        try:
            # (placement, bytes or None for a feed, rewrite before every run?)
            self._placements = list(zip(plan.placements, _placement_sources(self.initial), _overwritten(plan), strict=True))
            store_file0 = shared.c.weight_file_bytes_read if shared is not None else 0
            if shared is not None:
                self._take_from_store(shared)
                self.initial.drop_model()
                weights_from = None
            self._bind()
            # bytes of weights / constants written from their sources: once here, and
            # per run for those whose memory the plan reuses (counted for token generation)
            self.source_bytes_at_load = 0
            self.source_bytes_per_run = 0
            self.weight_file_bytes_read = 0  # bytes read from the model's weight files: each weight once per loaded plan
            self.weight_bytes_shared = 0  # bytes copied from ``weights_from`` instead of read from the files
            from_other = _shared_weights(weights_from, plan)
            for k, (p, src, again) in enumerate(self._placements):
                t = plan.tensors[p.tensor]
                if isinstance(src, _FileRange) and t.block is None and t.name in from_other and (weight_homes or not again):
                    got = from_other[t.name]
                    # written once here when this plan never overwrites it; else copied into host memory once and
                    # rewritten from there every run (the other plan may close first)
                    src = got if not again else np.array(self._read_any(got))
                    self._placements[k] = (p, src, again)
                    self.weight_bytes_shared += t.nbytes
                if isinstance(src, _FileRange):
                    self.weight_file_bytes_read += src.size
                if k in self._external:
                    continue  # the location is the store's bytes
                if src is not None and not again:
                    if isinstance(src, (np.ndarray, _FileRange, StreamedWeight)):
                        write_source(self.backend, self.backend.raw(p.loc), src)
                    else:  # an arena view of ``weights_from`` (device to device)
                        be_write_any(self.backend, self.backend.raw(p.loc), src)
                    self.source_bytes_at_load += plan.tensors[p.tensor].nbytes
                elif src is not None:
                    self.source_bytes_per_run += plan.tensors[p.tensor].nbytes
                    if weight_homes and isinstance(src, (_FileRange, StreamedWeight)):
                        # a weight whose arena memory the plan reuses is rewritten every run: read the file
                        # once, into host memory (its home), and rewrite it from there, not from the file
                        self._placements[k] = (p, host_bytes(src), again)
            if self.weight_file_bytes_read == 0 and self.weight_bytes_shared:
                self.weight_loads = 0  # every weight came from ``weights_from``: the files were not read again
            if shared is not None:
                self.weight_file_bytes_read = shared.c.weight_file_bytes_read - store_file0  # read into the store for this plan
                self.weight_loads = 1 if self.weight_file_bytes_read else 0
                shared.c.weight_bytes_to_device += self.source_bytes_at_load
                shared.bound(self)
            self.source_bytes_rewritten = 0  # grows by source_bytes_per_run each write_inputs
            self.backend.synchronize()
        except BaseException:
            self.close()
            raise
        self.load_s = time.perf_counter() - t0
        self.input_names = [plan.tensors[i].name for i in plan.inputs]
        self.state = plan.state_by_name()  # persistent inputs (KV caches): kept between runs, home in host memory
        self.state_bytes_refilled = 0  # overwritten arena copies of state, refilled from the home before runs
        self.state_bytes_written_back = 0  # parts of update outputs written back into the state (write_back_state)
        self.graph_outputs = graph_outputs(plan)  # outputs a tiled plan returns in blocks are assembled on the host
        self.output_names = [plan.tensors[o.tensor].name for o in self.graph_outputs]

    # -- shared session memory (turnip/session_memory.py) ----------------------
    def _bind(self) -> None:
        """Allocate (or, with ``shared``, view) the memories, prepare every node and make the executor."""
        plan = self.plan
        if self.shared is not None:
            self.backend.allocator = self._allocator
        self.backend.allocate_all(plan)
        tasks = self.backend.prepare(plan)
        nodes = plan.nodes
        self.executor = Executor(
            nodes,
            tasks,
            order=self.order,
            seed=self.seed,
            priorities=dynamic_priorities(plan) if self.order == "dynamic" else None,
            describe=lambda i: describe_node(nodes[i], plan),
            # no thread binding to do (the CPU backend): a one-queue plan may then run on the calling thread
            thread_init=None if type(self.backend).thread_init is Backend.thread_init else self.backend.thread_init,
            synchronous=self.backend.synchronous,
        )

    def _unbind(self) -> None:
        """Drop every view of the shared buffers (one is about to grow); :meth:`_bind` again when next activated."""
        executor = getattr(self, "executor", None)
        if executor is not None:
            executor.close()
        self.executor = None  # type: ignore[assignment]
        self.backend.free()
        if self.shared is not None:
            self.shared.unbound(self)

    def _take_from_store(self, shared: "SessionMemory") -> None:
        """Weight sources -> the session's store (read from the files there once); host-homed ones become external."""
        from .plan import HOST

        plan = self.plan
        model = getattr(self.initial, "_model", None)
        model_dir = getattr(self.initial, "_model_dir", "")
        store = shared.store_for(plan.model_sha256, model, self.backend, model_dir) if model is not None else None
        host_mems = {m.id for m in plan.memories if m.kind == HOST}
        external: dict[tuple[int, int, int], Any] = {}
        for k, (p, src, again) in enumerate(self._placements):
            t = plan.tensors[p.tensor]
            if src is None or p.source != TensorKind.WEIGHT:
                continue
            got = None if store is None or t.block is not None or t.derive is not None else store.get(t.name, src)
            if got is None:  # a derived weight or a cut block: this plan's own host bytes
                shared.c.host_weight_copy_bytes += t.nbytes
                continue
            self._placements[k] = (p, got, again)
            if p.loc.mem in host_mems and not again:
                external[(p.loc.mem, p.loc.offset, t.nbytes)] = got
                self._external.add(k)
        self._allocator = shared.allocator_for(self)
        self._allocator.external = external

    def _write_resident(self) -> None:
        """Write again what this plan places once (weights, constants), after another plan used the shared buffers."""
        be = self.backend
        n = 0
        for k, (p, src, again) in enumerate(self._placements):
            if src is None or again or k in self._external:
                continue
            if isinstance(src, (np.ndarray, _FileRange, StreamedWeight)):
                write_source(be, be.raw(p.loc), src)
            else:
                be_write_any(be, be.raw(p.loc), src)
            n += self.plan.tensors[p.tensor].nbytes
        be.synchronize()
        if self.shared is not None:
            self.shared.c.weight_bytes_to_device += n

    def _read_any(self, a: Any) -> np.ndarray:
        """Host bytes of an array of this backend (or of NumPy)."""
        return a if isinstance(a, np.ndarray) else np.asarray(self.backend.read(a))

    # -- running -------------------------------------------------------------
    def write_inputs(self, feeds: Mapping[str, Any], keep: Iterable[str] = ()) -> None:
        """Write the feeds (NumPy, or any array the backend takes: CuPy / DLPack on the GPU) and the overwritten placements.

        ``keep``: inputs NOT written: their planned bytes stay as the last run
        (or the caller, through :meth:`input_views`) left them, e.g. state
        carried from one step to the next. Only inputs no node overwrites can
        be kept (:meth:`keepable_inputs`).
        """
        self._check_open()
        keep = set(keep)
        home_views = {k: self.backend.view(self.state[k].home) for k in keep if k in self.state}
        if keep:
            bad = sorted(keep - set(self.keepable_inputs()))
            if bad:
                raise TurnipError(
                    f"input {bad[0]!r} cannot be kept between runs: "
                    + ("the plan has no such input" if bad[0] not in self.input_names else "the plan reuses its memory during a run")
                    + "; feed it every run"
                )
            feeds = {k: v for k, v in feeds.items() if k not in keep}
            feeds.update({k: self._shadow(k) for k in keep})
        checked = check_feeds(self.plan, feeds, self.backend)
        be = self.backend
        for p, src, again in self._placements:
            if src is None:
                t = self.plan.tensors[p.tensor]
                root = self._input_root(p.tensor)
                if root not in keep:
                    be_write_any(be, be.raw(p.loc), _feed_block(checked[root], t.block))
                elif again and root in home_views:  # kept state whose arena copy the last run reused: from its home
                    be_write_any(be, be.raw(p.loc), _feed_block(home_views[root], t.block))
                    self.state_bytes_refilled += t.nbytes
            elif again:
                write_source(be, be.raw(p.loc), src)
                self.source_bytes_rewritten += self.plan.tensors[p.tensor].nbytes

    def _input_root(self, tensor: int) -> str:
        """The graph input a placed tensor is (or, in a tiled plan, the input its block is cut from)."""
        t = self.plan.tensors[tensor]
        return self.plan.tensors[self.plan.tensors[t.block[0]].storage].name if t.block is not None else t.name

    def keepable_inputs(self) -> list[str]:
        """Inputs whose planned bytes no node overwrites: they may be kept from run to run (``write_inputs(keep=)``)."""
        inputs = [(self._input_root(p.tensor), again) for p, src, again in self._placements if src is None]
        reused = {name for name, again in inputs if again}  # an input placed twice is keepable only if no copy is reused
        reused -= set(self.state)  # state: a reused copy is refilled from its home in host memory
        return list(dict.fromkeys(name for name, _ in inputs if name not in reused))

    def state_views(self, name: str) -> list[Any]:
        """Where state ``name`` is kept between runs: its home (host memory), then its arena copies no node overwrites."""
        return [v for v, _ in self.state_parts(name)]

    def state_parts(self, name: str) -> list[tuple[Any, tuple[Any, ...]]]:
        """:meth:`state_views` with the part of the whole state each view holds (an index into it).

        A tiled plan keeps blocks of a state in the arena (``TensorInfo.block``:
        cut along one axis), so a view may hold only ``state[index]``; the home
        and untiled copies hold all of it (``index`` selects everything).
        """
        self._check_open()
        st = self.state[name]
        whole = (slice(None),) * len(self.plan.tensors[st.input].shape)
        parts = [(self.backend.view(st.home), whole)]
        for p, src, again in self._placements:
            if src is None and not again and p.loc != st.home and self._input_root(p.tensor) == name:
                block = self.plan.tensors[p.tensor].block
                index = whole
                if block is not None:
                    _, axis, start, stop = block
                    index = tuple(slice(start, stop) if a == axis else slice(None) for a in range(len(whole)))
                parts.append((self.backend.view(p.loc), index))
        return parts

    def write_back_state(self, index: tuple[Any, ...], names: Iterable[str] | None = None) -> int:
        """After a run: copy ``update[index]`` into ``state[index]`` for each state with an update output; bytes copied.

        WHY an index from the caller: a static cache's update output differs
        from the state only where the run scattered (``cache_position``), so
        the caller names that part (``(slice(None), slice(None), p)``) and only
        it crosses into the home and the kept arena copy: never the whole
        state per run. The next run keeps the state (``write_inputs(keep=)``).
        """
        self._check_open()
        be = self.backend
        out_loc = {self.plan.tensors[loc.tensor].name: loc for loc in self.plan.outputs}
        copied = 0
        for name in (self.state if names is None else names):
            st = self.state[name]
            if st.update is None:
                continue
            src = be.view(out_loc[self.plan.tensors[st.update].name])
            for dst, part in self.state_parts(name):  # a block copy (tiled plan) takes its block of the update
                copied += _copy_part(be, dst, src[part] if part != (slice(None),) * len(part) else src, index)
        self.state_bytes_written_back += copied
        return copied

    def input_views(self) -> dict[str, Any]:
        """Each input's planned bytes as a zero-copy array (CuPy on the GPU): write state in place, then keep it."""
        self._check_open()
        return {self.plan.tensors[p.tensor].name: self.backend.view(p.loc) for p, src, _ in self._placements if src is None}

    def _shadow(self, name: str) -> np.ndarray:
        t = self.plan.tensors[self.plan.tensor_index()[name]]
        from .dtypes import np_dtype

        dt = np_dtype(t.dtype)
        return np.lib.stride_tricks.as_strided(np.zeros(1, dtype=dt), shape=tuple(t.shape), strides=(0,) * len(t.shape))

    def execute(self, progress: Callable[[int, int], Any] | None = None) -> ExecStats:
        """Run every node once on what is in place (write_inputs first). Returns the executor's stats."""
        self._check_open()
        self.backend.synchronize()
        with self.backend.run_scope():
            ex = self.executor.run(progress=progress)
        self.backend.synchronize()
        self.runs += 1
        return ex

    def outputs(self, device: bool = False) -> dict[str, Any]:
        """The graph outputs: host NumPy copies, or (``device=True``) zero-copy views of the arenas.

        Views stay valid until the next run writes over them; copy what you keep. An output a
        tiled plan returns in blocks (:mod:`turnip.outblocks`) is always a new host array.
        """
        self._check_open()
        be = self.backend
        out = {}
        for name, go in zip(self.output_names, self.graph_outputs):
            if go.in_blocks:
                out[name] = assemble_output(be, self.plan, go)
                continue
            v = be.view(go.pieces[0].loc)
            out[name] = v if device else be.read(v)
        return out

    def run(self, feeds: Mapping[str, Any] | None = None, *, device_outputs: bool = False, keep: Iterable[str] = ()) -> dict[str, Any]:
        """write_inputs + execute + outputs."""
        self.write_inputs(feeds or {}, keep)
        self.last_exec = self.execute()
        return self.outputs(device=device_outputs)

    def timeline(self, ex: ExecStats) -> tuple[list[TimelineEvent], dict[str, int]]:
        """What ran, sorted by start, and the bytes each copy kind moved."""
        plan = self.plan
        moved: dict[str, int] = {RELOAD: 0, OFFLOAD: 0, MOVE: 0}
        timeline = []
        for i, node in enumerate(plan.nodes):
            if not ex.ran[i]:
                continue
            nb = _node_bytes(plan, node)
            if node.kind in moved:
                moved[node.kind] += nb
            label = (node.name or node.op) if node.kind == COMPUTE else copy_label(node, plan)
            timeline.append(TimelineEvent(node.id, node.kind, node.device, QUEUE_OF_KIND[node.kind], label, node.op, nb, ex.start[i], ex.end[i]))
        timeline.sort(key=lambda e: e.start)
        return timeline, moved

    def run_stats(self, ex: ExecStats, wall_s: list[float]) -> RunStats:
        """The figures of ``len(wall_s)`` runs of this plan, ``ex`` the last: the one place a RunStats is made."""
        timeline, moved = self.timeline(ex)
        return RunStats(
            backend=self.backend.name,
            order=self.order,
            seed=self.seed,
            repeat=len(wall_s),
            nodes=len(self.plan.nodes),
            nodes_run=ex.nodes_run,
            wall_s=wall_s,
            load_s=self.load_s,
            bytes_reloaded=moved[RELOAD],
            bytes_offloaded=moved[OFFLOAD],
            bytes_moved=moved[MOVE],
            fallback_nodes=list(self.backend.fallback_nodes),
            timeline=timeline,
        )

    # -- lifetime ------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise TurnipError("this loaded plan (session) is closed; create a new turnip.Session")
        if self.shared is not None and self.shared.active is not self:
            self.shared.activate(self)  # another plan of the session used the shared buffers since

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Free the memories and close the weight files (idempotent)."""
        if self._closed:
            return
        self._closed = True
        executor = getattr(self, "executor", None)
        if executor is not None:
            executor.close()  # its worker threads exit
        try:
            self.backend.free()
        finally:
            if self.shared is not None:
                self.shared.unbound(self)
            if self.initial is not None:
                self.initial.close()
                self.initial = None

    def __enter__(self) -> "LoadedPlan":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _shared_weights(other: "LoadedPlan | None", plan: Plan) -> dict[str, Any]:
    """Weight name -> its bytes in ``other`` (flat uint8: a host array, or a raw view of other's arena), for ``plan``.

    Only a loaded, open plan of the same model file (sha256) shares, and only
    weights that stay put there: a host copy, or an arena placement no node
    overwrites (whole tensors, not blocks).
    """
    if other is None or other.closed or not plan.model_sha256 or other.plan.model_sha256 != plan.model_sha256:
        return {}
    out: dict[str, Any] = {}
    for p, src, again in other._placements:
        t = other.plan.tensors[p.tensor]
        if src is None or t.kind != TensorKind.WEIGHT or t.block is not None or t.name in out:
            continue
        if isinstance(src, np.ndarray):
            out[t.name] = src
        elif not again:
            out[t.name] = other.backend.raw(p.loc)
    return out


def _copy_part(be: Backend, dst: Any, src: Any, index: tuple[Any, ...]) -> int:
    """``dst[index] = src[index]`` where each side is host NumPy or a device (CuPy) view; bytes copied.

    A strided device part is made contiguous on the device before it crosses
    (the backend's read copies contiguous bytes).
    """
    dst_host, src_host = isinstance(dst, np.ndarray), isinstance(src, np.ndarray)
    if dst_host == src_host:
        dst[index] = src[index]
    elif dst_host:
        dst[index] = be.read(be.xp.ascontiguousarray(src[index]))
    else:
        dst[index] = be.xp.asarray(np.ascontiguousarray(src[index]))
    return int(dst[index].nbytes)


def _placement_sources(initial: InitialData) -> list[np.ndarray | _FileRange | StreamedWeight | None]:
    """Per placement of the plan: its bytes (weights, constants), None for a feed."""
    return list(initial._sources)  # noqa: SLF001 - InitialData opens them; the loaded plan decides when to write


def _is_host_array(a: Any) -> bool:
    return isinstance(a, np.ndarray)


def check_feeds(plan: Plan, feeds: Mapping[str, Any], backend: Backend) -> dict[str, Any]:
    """Feeds checked against the plan's inputs (names, exact dtype and shape) without copying device arrays.

    NumPy arrays and anything ``numpy.asarray`` or ``numpy.from_dlpack`` takes
    are accepted on every backend; on a GPU backend CuPy arrays and DLPack GPU
    arrays (torch, JAX) are taken as they are, so a feed already on the
    device is copied device to device.
    """
    host: dict[str, Any] = {}
    dev: dict[str, Any] = {}
    for name, a in feeds.items():
        if not _is_host_array(a):
            d = _as_device_array(backend, a) if backend.name == "cupy" else None
            if d is not None:
                dev[name] = d
                continue
            if hasattr(a, "__dlpack__"):
                try:
                    a = np.from_dlpack(a)
                except (TypeError, RuntimeError, BufferError, ValueError):
                    if hasattr(a, "get"):
                        a = a.get()  # a CuPy array fed to the CPU backend
        host[name] = a
    # device arrays are checked through a zero-stride stand-in of their dtype and shape (no copy)
    shadow = {k: np.lib.stride_tricks.as_strided(np.zeros(1, dtype=v.dtype), shape=tuple(v.shape), strides=(0,) * v.ndim) for k, v in dev.items()}
    checked = validate_feeds(plan, {**host, **shadow})
    checked.update(dev)
    return checked


def _as_device_array(backend: Backend, a: Any) -> Any:
    cp = backend.xp
    try:
        if hasattr(a, "__cuda_array_interface__"):
            return cp.asarray(a)
        if hasattr(a, "__dlpack_device__"):
            dev_type, _ = a.__dlpack_device__()
            if int(dev_type) in (2, 13):  # kDLCUDA, kDLCUDAManaged
                return cp.from_dlpack(a)
    except Exception:  # noqa: BLE001 - not a device array after all: the host path handles it
        return None
    return None


def _feed_block(a: Any, block: tuple[int, int, int, int] | None) -> Any:
    """A feed, or the block of it a tiled plan places (``TensorInfo.block``: cut along one axis at load)."""
    if block is None:
        return a
    _, axis, start, stop = block
    idx = [slice(None)] * a.ndim
    idx[axis] = slice(start, stop)
    return a[tuple(idx)]


def be_write_any(backend: Backend, dst: Any, a: Any) -> None:
    """Write a feed into its planned bytes: from the host, or device to device on the GPU backend."""
    if _is_host_array(a):
        backend.write(dst, np.ascontiguousarray(a).reshape(-1).view(np.uint8))
        return
    cp = backend.xp
    src = cp.ascontiguousarray(a).reshape(-1).view(cp.uint8)
    backend.copy(src, dst)


def run_plan(
    plan: Plan | str | os.PathLike[str],
    feeds: Mapping[str, Any] | None = None,
    backend: str | Backend = "auto",
    order: str = "dynamic",
    seed: int = 0,
    repeat: int = 1,
    trace: str | os.PathLike[str] | None = None,
    progress: Callable[[int, int], Any] | None = None,
    plan_path: str | os.PathLike[str] | None = None,
    model_path: str | os.PathLike[str] | None = None,
    verify_weights: bool = True,
) -> RunResult:
    """Run a plan once (or ``repeat`` times). ``plan`` is a Plan or a plan file (then weights are found relative to it).

    A one-shot wrapper around :class:`LoadedPlan` (load, run, close); to run
    the same plan many times, keep a :class:`turnip.Session` instead.
    ``model_path`` overrides where the plan's model is. ``progress(done,
    total)`` is called from the calling thread about ten times a second
    (``total`` counts every node of every repeat). ``trace`` writes a Chrome
    trace of the last repeat. Raises a :class:`turnip.executor.TurnipError`
    subclass (one line naming the problem and the fix) on bad plans, models,
    feeds or a failing node.

    Before anything is allocated the plan is checked as ``turnipc verify``
    checks it (:func:`check_before_run`), and, unless ``verify_weights`` is
    False, the weight files against the sizes and hashes the plan recorded.
    """
    if order not in ORDERS:
        raise TurnipError(f"unknown order {order!r}; use one of {', '.join(ORDERS)}")
    if repeat < 1:
        raise TurnipError(f"repeat must be at least 1 (got {repeat})")
    if not isinstance(plan, Plan):
        plan_path = plan
        plan = read_plan(plan)
    feeds = dict(feeds or {})
    if all(isinstance(v, np.ndarray) for v in feeds.values()):
        validate_feeds(plan, feeds)  # fail fast, before allocating anything

    # weight_homes=False: a one-shot run holds the weights once (reused weights are rewritten from the file per repeat)
    with LoadedPlan(plan, backend=backend, order=order, seed=seed, plan_path=plan_path, model_path=model_path,
                    verify_weights=verify_weights, weight_homes=False) as lp:
        n = len(plan.nodes)
        walls: list[float] = []
        ex = None
        for r in range(repeat):
            lp.write_inputs(feeds)
            prog = None
            if progress is not None:
                base = r * n

                def prog(done: int, total: int, _base: int = base) -> None:
                    progress(_base + done, n * repeat)

            lp.backend.synchronize()
            t_run = time.perf_counter()
            ex = lp.execute(progress=prog)
            walls.append(time.perf_counter() - t_run)
        assert ex is not None
        # the run is over: the memories' pages that hold no output go back to the OS before the outputs
        # are copied out, so the copies fit in the memories' footprint (the weights and memories held once)
        if lp.backend.memories is not None:
            lp.backend.memories.discard_except(piece.loc for go in lp.graph_outputs for piece in go.pieces)
        outputs = lp.outputs()
        stats = lp.run_stats(ex, walls)
        if trace is not None:
            from .trace import write_trace

            write_trace(trace, stats.timeline, backend=stats.backend)
        return RunResult(outputs, stats)


def check_before_run(plan: Plan) -> None:
    """Refuse an unsafe plan before the first node runs (:func:`turnip.plancheck.check_plan`).

    The whole check runs (form, devices, alignment, budgets, bounds, hazard
    ordering, data replay: about 0.2-0.5 s for the LLaMA-7B-shaped plan)
    unless a plan with exactly these bytes passed it before on this machine
    (:mod:`turnip.cache`, keyed by the sha256 of the encoded plan; ``turnipc
    verify`` records the plans it proves too).
    """
    from . import cache
    from .plancheck import check_plan, plan_digest

    digest = plan_digest(plan)
    if cache.is_verified(digest):
        return
    check_plan(plan, data=True)
    cache.remember_verified(digest)


def _index_bound(plan: Plan, tensor: int) -> int | None:
    """For an integer input read as Gather indices: the gathered axis' size (smallest over readers)."""
    storages = {tensor}
    for i, t in enumerate(plan.tensors):
        if t.storage == tensor:
            storages.add(i)
    for i, t in enumerate(plan.tensors):  # blocks cut from the input at load (tiled plans)
        if t.block is not None and plan.tensors[t.block[0]].storage in storages:
            storages.add(i)
    best = None
    for node in plan.nodes:
        if node.kind != COMPUTE or node.op not in ("Gather", "GatherElements") or len(node.inputs) < 2:
            continue
        idx, data = node.inputs[1], node.inputs[0]
        if idx is None or data is None or idx.tensor not in storages:
            continue
        shape = plan.tensors[data.tensor].shape
        if not shape:
            continue
        axis = int(node.attrs.get("axis", 0))
        if axis < 0:
            axis += len(shape)
        if 0 <= axis < len(shape) and shape[axis] > 0:
            best = shape[axis] if best is None else min(best, shape[axis])
    return best


def random_feeds(plan: Plan, seed: int = 0) -> dict[str, np.ndarray]:
    """Random feeds of the planned shapes and dtypes.

    Floats: standard normal. Integers: 0 .. n-1 where n is the size of the
    table the input indexes (the first Gather reading it), else 0 or 1.
    Bools: True.
    """
    from .dtypes import np_dtype

    rng = np.random.default_rng(seed)
    feeds = {}
    for ti in plan.inputs:
        t = plan.tensors[ti]
        dt = np_dtype(t.dtype)
        shape = tuple(t.shape)
        if dt == np.bool_:
            a = np.ones(shape, dtype=bool)
        elif dt.kind in "iu":
            bound = _index_bound(plan, ti) or 2
            a = rng.integers(0, bound, size=shape).astype(dt)
        else:
            a = rng.standard_normal(size=shape).astype(dt)
        feeds[t.name] = a
    return feeds
