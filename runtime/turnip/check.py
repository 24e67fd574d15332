"""Checking a run against onnxruntime (CPU), the reference implementation."""

from __future__ import annotations

import os
from typing import Mapping, NamedTuple

import numpy as np

from .errors import MissingDependencyError, TurnipError

ORT_INSTALL = "pip install onnxruntime (CPU) or pip install onnxruntime-gpu (CUDA); from a checkout: pip install -e '.[cpu]'"


class Comparison(NamedTuple):
    """One output against the reference.

    ``tol_ratio`` is what decided: the largest |a-b| / (atol + rtol*|b|) over
    the elements (polygraphy's way of reading a tolerance); the output passes
    when it is at most 1. ``max_rel`` alone can be huge on near-zero values
    that the absolute tolerance covers.
    """

    name: str
    max_abs: float
    max_rel: float
    ok: bool
    tol_ratio: float = 0.0


def reference_outputs(model_path: str | os.PathLike[str], feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every graph output of the model, computed by onnxruntime on the CPU (external data loaded)."""
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise MissingDependencyError(f"--check needs onnxruntime, which is not installed ({e}); {ORT_INSTALL}") from e

    path = os.fspath(model_path)
    if not os.path.isfile(path):
        raise TurnipError(f"model file {path!r} not found; --check needs the model the plan was made from")
    so = ort.SessionOptions()
    so.log_severity_level = 3
    try:
        sess = ort.InferenceSession(path, sess_options=so, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise TurnipError(f"onnxruntime cannot load {path!r} ({type(e).__name__}: {e}); cannot --check this model") from e
    names = [i.name for i in sess.get_inputs()]
    outs = sess.run(None, {k: np.asarray(feeds[k]) for k in names if k in feeds})
    return {o.name: np.asarray(v) for o, v in zip(sess.get_outputs(), outs, strict=True)}


def _compare_one(a: np.ndarray, b: np.ndarray, atol: float, rtol: float) -> tuple[float, float, bool, float]:
    if a.shape != b.shape:
        return float("inf"), float("inf"), False, float("inf")
    if a.size == 0:
        return 0.0, 0.0, True, 0.0
    x = a.astype(np.float64)
    y = b.astype(np.float64)
    both_nan = np.isnan(x) & np.isnan(y)
    same_inf = np.isinf(x) & (x == y)
    diff = np.abs(x - y)
    diff = np.where(both_nan | same_inf, 0.0, diff)
    diff = np.where(np.isnan(diff), np.inf, diff)
    rel = diff / np.maximum(np.abs(np.where(np.isfinite(y), y, 0.0)), np.finfo(np.float64).tiny)
    allowed = atol + rtol * np.abs(np.where(np.isfinite(y), y, 0.0))
    ok = bool(np.all(diff <= allowed))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(diff == 0, 0.0, diff / allowed)
    return float(diff.max()), float(np.where(diff == 0, 0.0, rel).max()), ok, float(np.nan_to_num(ratio, nan=np.inf).max())


def compare(outputs: Mapping[str, np.ndarray], ref: Mapping[str, np.ndarray], atol: float = 1e-4, rtol: float = 1e-3) -> list[Comparison]:
    """Per output of ``ref``: (name, max |a-b|, max |a-b|/|b|, ok) where ok is |a-b| <= atol + rtol*|b| everywhere.

    NaNs match NaNs; an output missing from ``outputs`` or of another shape is not ok.
    """
    res = []
    for name, b in ref.items():
        if name not in outputs:
            res.append(Comparison(name, float("inf"), float("inf"), False, float("inf")))
            continue
        ma, mr, ok, tr = _compare_one(np.asarray(outputs[name]), np.asarray(b), atol, rtol)
        res.append(Comparison(name, ma, mr, ok, tr))
    return res
