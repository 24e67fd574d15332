"""Execution backends: ``numpy`` (CPU, emulates the plan's GPUs) and ``cupy`` (GPUs).

``get_backend("auto")`` picks CuPy when a CUDA device is usable and the CuPy
backend is installed, else NumPy.
"""

from __future__ import annotations

from .base import Backend, BackendError, KernelError

BACKENDS = ("auto", "numpy", "cupy")


def cupy_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device."""
    try:
        import cupy  # type: ignore[import-not-found]

        return bool(cupy.cuda.is_available())
    except Exception:  # ImportError, or a CUDA driver error
        return False


def _cupy_backend() -> Backend:
    if not cupy_available():
        raise BackendError("backend 'cupy' needs CuPy and a CUDA GPU, and none is usable here; use --backend numpy")
    try:
        from .cupy_backend import CupyBackend  # type: ignore[import-not-found]
    except ImportError as e:
        raise BackendError(f"the cupy backend is not installed in this build of turnip ({e}); use --backend numpy") from e
    return CupyBackend()


def get_backend(name: str = "auto") -> Backend:
    """A fresh backend by name: "auto", "numpy" or "cupy"."""
    if isinstance(name, Backend):
        return name
    if name == "numpy":
        from .numpy_backend import NumpyBackend

        return NumpyBackend()
    if name == "cupy":
        return _cupy_backend()
    if name == "auto":
        if cupy_available():
            try:
                return _cupy_backend()
            except BackendError:
                pass
        from .numpy_backend import NumpyBackend

        return NumpyBackend()
    raise BackendError(f"unknown backend {name!r}; use one of {', '.join(BACKENDS)}")


__all__ = ["Backend", "BackendError", "KernelError", "BACKENDS", "get_backend", "cupy_available"]
