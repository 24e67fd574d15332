"""Initial data: weights, plan-time constants and user inputs, written into place.

Before the first node runs, every :class:`~turnip.plan.Placement` of the plan
gets its bytes written at its planned location:

* ``weight``: the initializer of that name in the model the plan names. The
  model file must be the one that was planned (its sha256 is checked). The
  model is read with ``onnx.load(load_external_data=False)``; external-data
  initializers are read through one ``np.memmap`` per external file, so the
  weights are never parsed or held in memory twice.
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
from typing import Any, Mapping

import numpy as np

from .dtypes import np_dtype, onnx_elem_type
from .executor import PlanError, TurnipError
from .plan import Plan, resolve_model_path


class InputError(TurnipError, ValueError):
    """The user's feeds do not match the plan's inputs."""


class ModelError(TurnipError):
    """The model file is missing, changed since planning, or lacks a weight."""


_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str) -> str:
    """sha256 of a file's bytes (hex), cached per (path, size, mtime) in this process."""
    st = os.stat(path)
    key = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
    h = _SHA_CACHE.get(key)
    if h is None:
        d = hashlib.sha256()
        with open(path, "rb") as f:
            while True:
                chunk = f.read(1 << 22)
                if not chunk:
                    break
                d.update(chunk)
        h = _SHA_CACHE[key] = d.hexdigest()
    return h


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


def _block_root(plan: Plan, t: Any) -> Any:
    """The tensor whose initial bytes a block is cut from (the storage of the value it names)."""
    base = plan.tensors[t.block[0]]
    return plan.tensors[base.storage]


def _cut_block(plan: Plan, t: Any, raw: np.ndarray) -> np.ndarray:
    """Bytes of block tensor ``t``: its base's bytes viewed in the base's shape, cut along one axis.

    Why here: the partition pass splits weights and inputs at load time, in
    host memory, so no GPU ever holds the whole tensor only to cut it.
    """
    base_i, axis, start, stop = t.block
    base = plan.tensors[base_i]
    if not 0 <= axis < len(base.shape) or not 0 <= start <= stop <= base.shape[axis]:
        raise PlanError(f"block {t.name!r} lies outside {base.name!r}; re-plan the model")
    arr = np.ascontiguousarray(raw).view(np_dtype(base.dtype)).reshape(base.shape)
    idx = [slice(None)] * len(base.shape)
    idx[axis] = slice(start, stop)
    return _as_bytes(arr[tuple(idx)])


class InitialData:
    """The sources of every placement of a plan, opened once."""

    def __init__(self, plan: Plan, plan_path: str | os.PathLike[str] | None = None, model_path: str | None = None) -> None:
        self.plan = plan
        self.model_path = model_path
        self._sources: list[np.ndarray | None] = []  # per placement: bytes, or None for inputs
        self._mmaps: dict[str, np.memmap] = {}
        weights = [p for p in plan.placements if p.source == "weight"]
        for p in plan.placements:
            if p.source not in ("weight", "constant", "input"):
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
            if p.source == "input":
                self._sources.append(None)
                continue
            if t.block is not None and p.source == "weight":
                self._sources.append(_cut_block(plan, t, self._weight_bytes(inits, _block_root(plan, t))))
                continue
            if p.source == "constant":
                data = plan.constants.get(p.tensor)
                if data is None and t.storage in plan.constants:
                    data = plan.constants[t.storage]
                if data is None:
                    raise PlanError(f"constant {t.name!r} is placed but its bytes are not in the plan; re-plan the model")
                src = np.frombuffer(data, dtype=np.uint8)
            else:
                src = self._weight_bytes(inits, t)
            if src.size != t.nbytes:
                raise PlanError(f"{p.source} {t.name!r} has {src.size} bytes, the plan expects {t.nbytes}; re-plan the model")
            self._sources.append(src)

    # -- model ------------------------------------------------------------
    def _open_model(self, path: str) -> dict[str, Any]:
        plan = self.plan
        if not os.path.isfile(path):
            raise ModelError(f"model file {path!r} named by the plan not found; put the model there or re-plan it")
        if plan.model_sha256:
            digest = file_sha256(path)
            if digest != plan.model_sha256:
                raise ModelError(f"model changed since planning: re-plan {path!r} with `turnipc plan`")
        import onnx

        try:
            model = onnx.load(path, load_external_data=False)
        except Exception as e:
            raise ModelError(f"cannot read model {path!r} ({type(e).__name__}: {e}); re-export it and re-plan") from e
        self._model = model  # keeps raw_data buffers alive
        self._model_dir = os.path.dirname(os.path.abspath(path))
        return {init.name: init for init in model.graph.initializer}

    def _weight_bytes(self, inits: Mapping[str, Any], t: Any) -> np.ndarray:
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
            fpath = os.path.normpath(os.path.join(self._model_dir, loc))
            mm = self._mmaps.get(fpath)
            if mm is None:
                if not os.path.isfile(fpath):
                    raise ModelError(f"external data file {fpath!r} of weight {t.name!r} not found; put it next to the model")
                if os.path.getsize(fpath) == 0:
                    mm = np.zeros(0, dtype=np.uint8)  # memmap cannot map an empty file
                else:
                    mm = np.memmap(fpath, dtype=np.uint8, mode="r")
                self._mmaps[fpath] = mm
            off = int(info.get("offset", 0))
            length = int(info.get("length", mm.size - off))
            if off < 0 or off + length > mm.size:
                raise ModelError(f"weight {t.name!r} lies outside its external data file {fpath!r}; the file is truncated")
            return mm[off : off + length]
        if init.HasField("raw_data"):
            return np.frombuffer(init.raw_data, dtype=np.uint8)
        from onnx import numpy_helper

        a = numpy_helper.to_array(init)
        dt = np_dtype(t.dtype)
        if a.dtype != dt:
            a = a.astype(dt)
        return _as_bytes(a)

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
            if src.size != dst.size:
                raise PlanError(
                    f"{p.source} {plan.tensors[p.tensor].name!r} has {src.size} bytes but its location holds {dst.size}; re-plan the model"
                )
            backend.write(dst, src)

    def close(self) -> None:
        self._mmaps.clear()
        self._sources = []
        self._model = None


def load_initial(plan: Plan, plan_path: str | os.PathLike[str] | None, feeds: Mapping[str, Any], backend: Any) -> InitialData:
    """Open the plan's data sources and write every placement into ``backend``'s memories."""
    data = InitialData(plan, plan_path)
    data.write(backend, feeds)
    return data
