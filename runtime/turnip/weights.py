"""Initial data: weights, plan-time constants and user inputs, written into place.

Before the first node runs, every :class:`~turnip.plan.Placement` of the plan
gets its bytes written at its planned location:

* ``weight``: the initializer of that name in the model the plan names. The
  model file must be the one that was planned (its sha256 is checked, and a
  plan without one is refused). The model is read with
  :func:`turnip.onnx_lazy.load_model_lazily` (inline weights stay in the
  file); every weight's byte range is read (``pread``, no memory map) straight
  into its planned location, so the weights are never parsed or held in
  memory twice.

External weight files are opened exactly as onnx opens them
(``onnx.external_data_helper``: a relative path inside the model's folder, no
``..`` out of it, no symbolic link), so a crafted model cannot make the
runtime read a file elsewhere. Each must match the size and sha256 the plan
recorded (:class:`~turnip.plan.WeightFile`) unless the caller opts out
(``verify_weights=False``, ``turnip-run --no-verify-weights``). Hashes are
cached on disk per file state (:mod:`turnip.cache`), so an unchanged file,
inline weights included, is hashed once, not on every run.
* a derived ``weight`` (``TensorInfo.derive``: Transpose, Cast, Reshape
  steps of the initializer it names) and a block of a weight
  (``TensorInfo.block``): made from the file when written, a bounded chunk at
  a time, straight into place (:class:`turnip.weightstream.StreamedWeight`);
  nothing of them is kept in host memory.
* ``constant``: the bytes folded at plan time (``Plan.constants``).
* ``input``: the user's feeds, which must match the planned dtype and shape
  exactly.

The sources are opened once (:class:`InitialData`) and can be written again
for every repeat of a run (a plan may overwrite a weight's memory once the
weight is dead).
"""

from __future__ import annotations

import hashlib
import os
import stat
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    import onnx

import numpy as np

from .dtypes import np_dtype, onnx_elem_type
from .errors import InputError, ModelError, PlanError, WeightsError  # noqa: F401  (InputError, ModelError: re-exported)
from .plan import DeriveOp, DeriveStep, Plan, TensorInfo, TensorKind, WeightFile, resolve_model_path
from .weightstream import StreamedWeight

_SHA_CACHE: dict[str, str] = {}  # file state key -> sha256, in this process (turnip.cache keeps it across runs)


def fd_sha256(fd: int) -> str:
    """sha256 (hex) of an open file's bytes, cached per file state (identity, size, mtime, ctime).

    Hashing through the descriptor (not the path) means the bytes hashed are
    the bytes of the file that was opened and checked.
    """
    from . import cache

    st = os.fstat(fd)
    key = cache.file_state_key(st)
    h = _SHA_CACHE.get(key) or cache.cached_file_hash(st)
    if h is None:
        d = hashlib.sha256()
        pos = 0
        while True:
            chunk = os.pread(fd, 1 << 22, pos)
            if not chunk:
                break
            d.update(chunk)
            pos += len(chunk)
        h = d.hexdigest()
        cache.remember_file_hash(st, h)
    _SHA_CACHE[key] = h
    return h


def file_sha256(path: str) -> str:
    """sha256 of a file's bytes (hex), hashed once per file state (see :func:`fd_sha256`)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return fd_sha256(fd)
    finally:
        os.close(fd)


def _open_external(model_dir: str, location: str, tensor_name: str) -> int:
    """A read-only descriptor of an external data file, contained in the model's folder exactly as onnx checks it.

    onnx refuses an absolute path, a path that leaves ``model_dir`` (``..``)
    and a symbolic link (even one pointing inside); onnxruntime does the same.
    """
    try:
        from onnx.external_data_helper import _open_external_data_fd as onnx_open  # onnx >= 1.20: the C++ checker's
    except ImportError:  # pragma: no cover - older onnx: the same three rules, checked here
        onnx_open = None  # type: ignore[assignment]
    if onnx_open is not None:
        try:
            return onnx_open(model_dir, location, tensor_name, True)
        except Exception as e:  # onnx.checker.ValidationError, OSError
            raise WeightsError(f"external data of weight {tensor_name!r} refused: {e}; keep weight files inside the model's folder") from e
    if os.path.isabs(location) or os.path.normpath(location).split(os.sep)[0] == "..":  # pragma: no cover
        raise WeightsError(f"external data {location!r} of weight {tensor_name!r} is outside the model's folder; keep it inside")
    path = os.path.join(model_dir, location)  # pragma: no cover
    if os.path.islink(path) or not os.path.isfile(path):  # pragma: no cover
        raise WeightsError(f"external data {location!r} of weight {tensor_name!r} is a link or not a regular file; store it in the model's folder")
    return os.open(path, os.O_RDONLY)  # pragma: no cover


def external_locations(model: Any) -> list[tuple[str, str]]:
    """(location, tensor name) of every external-data initializer of a loaded ModelProto, in order."""
    import onnx

    out = []
    for init in model.graph.initializer:
        if init.data_location == onnx.TensorProto.EXTERNAL:
            loc = next((e.value for e in init.external_data if e.key == "location"), "")
            out.append((loc, init.name))
    return out


def weight_file_records(model_path: str) -> list[WeightFile]:
    """Size and sha256 of each external weight file of a model (for the plan), sorted by path.

    Files that do not exist are left out (a model may be planned without its
    weights; the runtime then refuses to run it until they exist and the plan
    is made again). A file outside the model's folder is a :class:`WeightsError`.
    """
    from .onnx_lazy import load_model_lazily

    try:
        # Lazily: only the external-data records are needed here, and a model with inline weights
        # (the legacy exporter's) would otherwise be read whole into memory by the compiler.
        model = load_model_lazily(model_path)
    except Exception as e:  # noqa: BLE001 - the importer reports unreadable models
        raise ModelError(f"cannot read model {model_path!r} ({type(e).__name__}); re-export it") from e
    model_dir = os.path.dirname(os.path.abspath(model_path))
    out: dict[str, WeightFile] = {}
    for loc, name in external_locations(model):
        key = os.path.normpath(loc).replace(os.sep, "/")
        if key in out or key == os.path.basename(model_path):
            continue  # inline weights read lazily name the model file itself, which the plan records already
        if not os.path.lexists(os.path.join(model_dir, loc)) and not os.path.isabs(loc):
            continue
        fd = _open_external(model_dir, loc, name)
        try:
            out[key] = WeightFile(key, os.fstat(fd).st_size, fd_sha256(fd))
        finally:
            os.close(fd)
    return [out[k] for k in sorted(out)]


def input_specs(plan: Plan) -> list[tuple[str, np.dtype, tuple[int, ...]]]:
    """(name, dtype, shape) of each graph input, in ONNX order."""
    out = []
    for i in plan.inputs:
        t = plan.tensors[i]
        out.append((t.name, np_dtype(t.dtype), tuple(t.shape)))
    return out


def validate_feeds(plan: Plan, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Feeds checked against the plan: every input present, exact dtype and shape."""
    specs = input_specs(plan)
    names = [s[0] for s in specs]
    unknown = sorted(set(feeds) - set(names))
    if unknown:
        raise InputError(f"unknown input {unknown[0]!r}: the model's inputs are {', '.join(repr(n) for n in names) or '(none)'}")
    missing = [n for n in names if n not in feeds]
    if missing:
        n, dt, shp = next(s for s in specs if s[0] == missing[0])
        raise InputError(f"missing input {n!r}: feed a {dt.name} array of shape {list(shp)}")
    out = {}
    for name, dt, shape in specs:
        a = feeds[name]
        if not isinstance(a, np.ndarray):
            if hasattr(a, "get") and hasattr(a, "__cuda_array_interface__"):
                a = a.get()
            else:
                a = np.asarray(a)
        if a.dtype != dt:
            raise InputError(
                f"input {name!r} has dtype {a.dtype.name}, the plan expects {dt.name}: "
                f"cast it (x.astype(np.{dt.name})) or re-plan the model"
            )
        if tuple(a.shape) != shape:
            raise InputError(
                f"input {name!r} has shape {list(a.shape)}, the plan expects {list(shape)}: "
                f"feed that shape or re-plan with the dimensions bound to it (turnipc plan --dim NAME=N)"
            )
        out[name] = a
    return out


def _as_bytes(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    return a.reshape(-1).view(np.uint8)


class _FileRange:
    """A weight's bytes in a file (external data, or inline raw_data left in the model file).

    WHY not a memory map: a mapped weight file stays resident next to the
    memory the weight is written into, doubling the weights in RAM. Reading
    the range straight into the destination keeps the weights once (the page
    cache is not the process' memory).
    """

    __slots__ = ("path", "offset", "size", "fd")

    def __init__(self, path: str, offset: int, size: int, fd: int | None = None) -> None:
        self.path, self.offset, self.size, self.fd = path, offset, size, fd

    def open_fd(self) -> int:
        """A descriptor to read the range through (the caller closes it): a duplicate of the checked one, else the file by path."""
        return os.dup(self.fd) if self.fd is not None else os.open(self.path, os.O_RDONLY)

    def read_into(self, backend: Any, dst: Any, block: int = 4 << 20) -> None:
        from .weightstream import read_file_range, scratch

        fd = self.open_fd()
        try:
            if isinstance(dst, np.ndarray) and dst.flags.c_contiguous:
                read_file_range(fd, self.path, self.offset, memoryview(dst).cast("B"))  # type: ignore[arg-type]  # an ndarray is a buffer
                return
            # device memory: through one bounded host buffer, reused (write_part returns once the buffer may be reused)
            buf = scratch(min(block, self.size))
            for s in range(0, self.size, block):
                n = min(block, self.size - s)
                read_file_range(fd, self.path, self.offset + s, memoryview(buf)[:n])  # type: ignore[arg-type]  # an ndarray is a buffer
                backend.write_part(dst[s : s + n], buf[:n])
        finally:
            os.close(fd)


def write_source(backend: Any, dst: Any, src: "np.ndarray | _FileRange | StreamedWeight") -> None:
    """Write one placement's bytes at ``dst`` (a raw view of its location): a file range or a streamed weight is read straight into place."""
    if isinstance(src, (_FileRange, StreamedWeight)):
        if src.size != int(dst.size):
            raise PlanError(f"a weight has {src.size} bytes but its location holds {int(dst.size)}; re-plan the model")
        if isinstance(src, _FileRange):
            src.read_into(backend, dst)
        else:
            src.write_into(backend, dst)
    else:
        backend.write(dst, src)


def host_bytes(src: "np.ndarray | _FileRange | StreamedWeight") -> np.ndarray:
    """A source's bytes in host memory (flat uint8): a new array for a file range or a streamed weight."""
    if isinstance(src, StreamedWeight):
        return src.materialize()
    return _read_whole(src)


def _block_root(plan: Plan, t: Any) -> Any:
    """The tensor whose initial bytes a block is cut from (the storage of the value it names)."""
    base = plan.tensors[t.block[0]]
    return plan.tensors[base.storage]


def _cut_block(plan: Plan, t: Any, raw: "np.ndarray | _FileRange") -> np.ndarray:
    """Bytes of block tensor ``t``: its base's bytes viewed in the base's shape, cut along one axis.

    Why here: the partition pass splits weights and inputs at load time, in
    host memory, so no GPU ever holds the whole tensor only to cut it.
    """
    base_i, axis, start, stop = t.block
    base = plan.tensors[base_i]
    if not 0 <= axis < len(base.shape) or not 0 <= start <= stop <= base.shape[axis]:
        raise PlanError(f"block {t.name!r} lies outside {base.name!r}; re-plan the model")
    raw = _read_whole(raw)  # the whole weight once, in host memory, to cut the block from
    arr = np.ascontiguousarray(raw).view(np_dtype(base.dtype)).reshape(base.shape)
    idx = [slice(None)] * len(base.shape)
    idx[axis] = slice(start, stop)
    return _as_bytes(arr[tuple(idx)])


def _read_whole(raw: "np.ndarray | _FileRange") -> np.ndarray:
    """A weight's bytes in host memory (a file range is read once, whole)."""
    if isinstance(raw, _FileRange):
        whole = np.empty(raw.size, dtype=np.uint8)
        raw.read_into(None, whole)
        return whole
    return raw


def derive_weight(t: Any, raw: "np.ndarray | _FileRange") -> np.ndarray:
    """Bytes of derived weight ``t`` (``TensorInfo.derive``): its recipe applied to its source's bytes, in a new host array.

    The runtime itself never holds a derived weight this way: it writes it
    from the file into place, a chunk at a time (:class:`StreamedWeight`,
    the same steps); this whole-array form is for tools and tests.
    """
    r = t.derive
    return StreamedWeight(t.name, raw, r.dtype, r.shape, r.steps, t.dtype, t.shape).materialize()


class InitialData:
    """The sources of every placement of a plan, opened once."""

    def __init__(
        self,
        plan: Plan,
        plan_path: str | os.PathLike[str] | None = None,
        model_path: str | None = None,
        verify_weights: bool = True,
        keep_model: bool = False,
    ) -> None:
        """``keep_model``: keep the parsed graph after the sources are made (a session's weight store sizes
        itself from its initializers; the caller drops it with :meth:`drop_model`)."""
        self.plan = plan
        self.model_path = model_path
        self.verify_weights = verify_weights
        self._recorded = {w.path: w for w in plan.weight_files}
        self._model: onnx.ModelProto | None = None  # the parsed graph, while the sources are made
        # per placement: host bytes (constants, small inline weights), a file range, a streamed weight (derived or a
        # block: made from its file range when written, never held), or None for inputs
        self._sources: list[np.ndarray | _FileRange | StreamedWeight | None] = []
        self._files: dict[str, tuple[int, int]] = {}  # external file (normalised location) -> (open fd, size)
        weights = [p for p in plan.placements if p.source == TensorKind.WEIGHT]
        for p in plan.placements:
            if p.source not in (TensorKind.WEIGHT, TensorKind.CONSTANT, TensorKind.INPUT):
                raise PlanError(f"placement of tensor {p.tensor} has unknown source {p.source!r}; re-plan the model")
            if not 0 <= p.tensor < len(plan.tensors):
                raise PlanError(f"placement names tensor {p.tensor}, which the plan does not have; re-plan the model")
        inits: dict[str, Any] = {}
        if weights:
            if self.model_path is None:
                if plan_path is None:
                    if not os.path.isabs(plan.model_path):
                        raise ModelError("the plan names its model by a relative path; pass the plan's file path so it can be found")
                    self.model_path = plan.model_path
                else:
                    self.model_path = resolve_model_path(plan, plan_path)
            inits = self._open_model(self.model_path)
        for p in plan.placements:
            t = plan.tensors[p.tensor]
            if p.source == TensorKind.INPUT:
                self._sources.append(None)
                continue
            if t.block is not None and p.source == TensorKind.WEIGHT:
                base_i, axis, start, stop = t.block
                self._sources.append(self._weight_source(inits, plan.tensors[base_i].storage, plan.tensors[base_i], (axis, start, stop), t.name))
                continue
            src: np.ndarray | _FileRange | StreamedWeight
            if p.source == TensorKind.CONSTANT:
                data = plan.constants.get(p.tensor)
                if data is None and t.storage in plan.constants:
                    data = plan.constants[t.storage]
                if data is None:
                    raise PlanError(f"constant {t.name!r} is placed but its bytes are not in the plan; re-plan the model")
                src = np.frombuffer(data, dtype=np.uint8)
            else:
                src = self._weight_source(inits, p.tensor)
            if src.size != t.nbytes:
                raise PlanError(f"{p.source} {t.name!r} has {src.size} bytes, the plan expects {t.nbytes}; re-plan the model")
            self._sources.append(src)
        # the parsed graph is not needed any more: a small inline weight's bytes were copied out of it
        # (protobuf hands out new ``bytes``), the others are file ranges
        if not keep_model:
            self._model = None

    def drop_model(self) -> None:
        """Forget the parsed graph kept by ``keep_model``."""
        self._model = None

    # -- model ------------------------------------------------------------
    def _open_model(self, path: str) -> dict[str, Any]:
        plan = self.plan
        if not os.path.isfile(path):
            raise ModelError(f"model file {path!r} named by the plan not found; put the model there or re-plan it")
        from .cache import is_sha256

        if not is_sha256(plan.model_sha256):  # an empty or damaged hash must not skip the check
            raise ModelError(f"the plan records no valid sha256 of its model ({plan.model_sha256!r}); re-plan {path!r} with `turnipc plan`")
        if self.verify_weights:
            digest = file_sha256(path)
            if digest != plan.model_sha256:
                raise ModelError(f"model changed since planning: re-plan {path!r} with `turnipc plan`")
        from .onnx_lazy import load_model_lazily

        try:
            # inline weights stay in the file too (read into place at write time): held once, in the memories
            model = load_model_lazily(path)
        except Exception as e:
            raise ModelError(f"cannot read model {path!r} ({type(e).__name__}: {e}); re-export it and re-plan") from e
        self._model = model  # until the sources are made (then dropped: they hold what they need)
        self._model_dir = os.path.dirname(os.path.abspath(path))
        self._model_file = os.path.abspath(path)
        return {init.name: init for init in model.graph.initializer}

    def _weight_source(
        self, inits: Mapping[str, Any], tensor: int, view: Any = None, cut: tuple[int, int, int] | None = None, name: str = ""
    ) -> "np.ndarray | _FileRange | StreamedWeight":
        """Where a weight tensor's bytes come from: its initializer's range, or a recipe that makes them when written.

        A derived weight (its recipe's steps) and a block (``cut`` of ``view``, a tensor holding ``tensor``'s
        bytes in its own shape) are :class:`StreamedWeight` s: nothing is read or held here, so no weight
        sits in host memory next to the memory it is written into.
        """
        t = self.plan.tensors[tensor]
        view = t if view is None else view
        if t.derive is None and cut is None:
            return self._weight_bytes(inits, t)
        if t.derive is None:
            source, src_dtype, src_shape, steps = self._weight_bytes(inits, t), t.dtype, t.shape, []
        else:
            r = t.derive
            init = TensorInfo(r.source, r.dtype, r.shape, 0, TensorKind.WEIGHT, tensor)  # the initializer, as the recipe expects it
            source, src_dtype, src_shape, steps = self._weight_bytes(inits, init), r.dtype, r.shape, list(r.steps)
        if view.dtype != t.dtype:
            raise PlanError(f"block {view.name!r} is cut from {t.name!r} of another dtype; re-plan the model")
        if tuple(view.shape) != tuple(t.shape):  # the block's base is a reshaped alias of the weight: its bytes, in its shape
            if steps:
                steps.append(DeriveStep(DeriveOp.RESHAPE, tuple(view.shape)))
            else:
                src_shape = tuple(view.shape)
        return StreamedWeight(name or view.name, source, src_dtype, src_shape, steps, view.dtype, view.shape, cut)

    def _weight_bytes(self, inits: Mapping[str, Any], t: Any) -> "np.ndarray | _FileRange":
        import onnx

        init = inits.get(t.name)
        if init is None:
            raise ModelError(f"the model has no initializer {t.name!r} the plan expects: re-plan the model")
        try:
            want = onnx_elem_type(t.dtype)
        except KeyError:
            want = None
        if want is not None and init.data_type != want:
            raise ModelError(
                f"weight {t.name!r} is {onnx.TensorProto.DataType.Name(init.data_type)} in the model, "
                f"the plan expects {t.dtype}: re-plan the model"
            )
        if init.data_location == onnx.TensorProto.EXTERNAL:
            info = {e.key: e.value for e in init.external_data}
            loc = info.get("location")
            if not loc:
                raise ModelError(f"weight {t.name!r} is external but names no file; re-export the model")
            key = os.path.normpath(loc).replace(os.sep, "/")
            opened = self._files.get(key)
            if opened is None:
                opened = self._open_external_checked(loc, key, t.name)
            fd, fsize = opened
            try:
                off = int(info.get("offset", 0))
                length = int(info.get("length", fsize - off))
            except ValueError:
                raise WeightsError(
                    f"weight {t.name!r} has external data offset {info.get('offset')!r} / length {info.get('length')!r}, "
                    "which are not whole numbers; re-export the model"
                ) from None
            if off < 0 or length < 0 or off + length > fsize:
                raise WeightsError(f"weight {t.name!r} lies outside its external data file {loc!r}; the file is truncated")
            return _FileRange(os.path.join(self._model_dir, loc), off, length, fd=fd)
        if init.HasField("raw_data"):
            return np.frombuffer(bytes(init.raw_data), dtype=np.uint8)  # its own copy: the model is dropped after loading
        from onnx import numpy_helper

        a = numpy_helper.to_array(init)
        dt = np_dtype(t.dtype)
        if a.dtype != dt:
            a = a.astype(dt)
        return _as_bytes(a)

    def _open_external_checked(self, loc: str, key: str, tensor_name: str) -> tuple[int, int]:
        """Open one external file (contained, as onnx does) and check it against the plan's record.

        The descriptor stays open until :meth:`close`: the bytes read into the
        memories are the bytes of the file that was checked (no path lookup in
        between), and reading them straight into place holds the weights once.
        """
        fd = _open_external(self._model_dir, loc, tensor_name)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise WeightsError(f"external data {loc!r} of weight {tensor_name!r} is not a regular file; re-export the model")
            # inline weights left in the model file (turnip.onnx_lazy) point at the model itself, checked by its sha256
            is_model = os.path.samestat(st, os.stat(self._model_file))
            if self.verify_weights and not is_model:
                rec = self._recorded.get(key)
                if rec is None:
                    raise WeightsError(
                        f"the plan records no size and hash for weight file {key!r}; re-plan the model with `turnipc plan`, "
                        "or run with --no-verify-weights if you vouch for it"
                    )
                if st.st_size != rec.size or fd_sha256(fd) != rec.sha256:
                    what = f"its size is {st.st_size} bytes, the plan recorded {rec.size}" if st.st_size != rec.size else "its sha256 differs"
                    raise WeightsError(
                        f"weight file {key!r} changed since planning ({what}); re-plan the model with `turnipc plan`, "
                        "or run with --no-verify-weights if you vouch for it"
                    )
        except BaseException:
            os.close(fd)
            raise
        self._files[key] = (fd, st.st_size)
        return fd, st.st_size

    # -- writing ------------------------------------------------------------
    def write(self, backend: Any, feeds: Mapping[str, Any] | None = None) -> None:
        """Write every placement's bytes at its planned location (feeds are validated first)."""
        plan = self.plan
        checked = validate_feeds(plan, feeds or {})
        for p, src in zip(plan.placements, self._sources, strict=True):
            dst = backend.raw(p.loc)
            if src is None:
                t = plan.tensors[p.tensor]
                if t.block is not None:
                    src = _cut_block(plan, t, _as_bytes(checked[_block_root(plan, t).name]))
                else:
                    src = _as_bytes(checked[t.name])
            if isinstance(src, (_FileRange, StreamedWeight)):
                if src.size != dst.size:
                    raise PlanError(f"weight {plan.tensors[p.tensor].name!r} has {src.size} bytes but its location holds {dst.size}; re-plan")
                write_source(backend, dst, src)
                continue
            if src.size != dst.size:
                raise PlanError(
                    f"{p.source} {plan.tensors[p.tensor].name!r} has {src.size} bytes but its location holds {dst.size}; re-plan the model"
                )
            backend.write(dst, src)

    def close(self) -> None:
        for fd, _ in self._files.values():
            os.close(fd)
        self._files.clear()
        self._sources = []
        self._model = None


def load_initial(
    plan: Plan, plan_path: str | os.PathLike[str] | None, feeds: Mapping[str, Any], backend: Any, verify_weights: bool = True
) -> InitialData:
    """Open the plan's data sources and write every placement into ``backend``'s memories."""
    data = InitialData(plan, plan_path, verify_weights=verify_weights)
    data.write(backend, feeds)
    return data
