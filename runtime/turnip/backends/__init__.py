"""Execution backends: ``numpy`` (CPU, emulates the plan's GPUs) and ``cupy`` (GPUs).

``get_backend("auto")`` picks CuPy when a CUDA device is usable and the CuPy
backend is installed, else NumPy.
"""

from __future__ import annotations

from .base import Backend, BackendError, KernelError, KernelRoute

BACKENDS = ("auto", "numpy", "cupy")


def cupy_status() -> tuple[bool, str]:
    """(usable, why not): whether CuPy imports and sees at least one CUDA device."""
    try:
        import cupy
    except ImportError as e:
        return False, f"CuPy is not installed ({e}); on a GPU machine: pip install -e '.[gpu]'"
    except Exception as e:  # noqa: BLE001 - a broken install (missing CUDA libraries)
        return False, f"CuPy failed to import ({type(e).__name__}: {e})"
    try:
        if not cupy.cuda.is_available():
            return False, "CuPy is installed but sees no CUDA GPU (no driver, or CUDA_VISIBLE_DEVICES hides them)"
    except Exception as e:  # noqa: BLE001 - a CUDA driver error
        return False, f"CuPy cannot query CUDA ({type(e).__name__}: {e})"
    return True, ""


def cupy_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device."""
    return cupy_status()[0]


def _cupy_backend() -> Backend:
    ok, why = cupy_status()
    if not ok:
        raise BackendError(f"backend 'cupy' needs CuPy and a CUDA GPU: {why}; use --backend numpy")
    try:
        from .cupy_backend import CupyBackend
    except ImportError as e:
        raise BackendError(f"the cupy backend is not installed in this build of turnip ({e}); use --backend numpy") from e
    return CupyBackend()


def get_backend(name: "str | Backend" = "auto") -> Backend:
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
            except BackendError as e:
                import warnings

                warnings.warn(f"backend auto: CUDA is available but the cupy backend is not usable ({e}); running on numpy", RuntimeWarning, stacklevel=2)
        from .numpy_backend import NumpyBackend

        return NumpyBackend()
    raise BackendError(f"unknown backend {name!r}; use one of {', '.join(BACKENDS)}")


__all__ = ["Backend", "BackendError", "KernelError", "KernelRoute", "BACKENDS", "get_backend", "cupy_available", "cupy_status"]
