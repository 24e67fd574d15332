"""Kernels: ONNX ops written once against the array API shared by NumPy and CuPy.

A kernel is ``fn(ctx, inputs, outputs) -> None``. ``ctx.xp`` is the array
module (numpy or cupy); ``inputs`` holds one array per ONNX input (None for an
omitted optional input); ``outputs`` holds preallocated arrays with the
planned shapes and dtypes, which the kernel must fill (``out=`` where the
library allows, else ``outputs[i][...] = result``). Kernels never allocate
their outputs and never change their shapes.

Small integer inputs that ONNX passes as tensors but that are really
parameters (Reshape's shape, Slice's starts, ReduceMean's axes, ...) are
declared where the kernel is registered (``@register("Slice",
host_inputs=(1, 2, 3, 4))``). Every backend then decides the same way, in
shared code (:meth:`turnip.backends.base.Backend.host_param`): such an input
that is a small plan-time constant reaches the kernel as a host NumPy array,
so a GPU kernel reading it never synchronizes the device. ``ctx.host(x)``
gives a host NumPy array for any input either way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Callable

import numpy as np


@dataclass
class KernelContext:
    """What a kernel may use besides its arrays."""

    xp: ModuleType  # numpy or cupy
    attrs: dict[str, Any]
    opset: int  # opset version of the op's domain
    op: str = ""
    name: str = ""  # ONNX node name, for error messages
    scratch: dict[str, Any] = field(default_factory=dict)  # per-node cache (e.g. a prepared kernel)

    def host(self, x: Any) -> np.ndarray:
        """A host NumPy copy (or view) of an input: for shape-like parameters."""
        if isinstance(x, np.ndarray):
            return x
        if hasattr(x, "get"):
            return x.get()
        return np.asarray(x)

    def attr(self, name: str, default: Any = None) -> Any:
        return self.attrs.get(name, default)


Kernel = Callable[[KernelContext, list, list], None]

#: (domain, op_type) -> kernel. Domain "" is the default ONNX domain.
REGISTRY: dict[tuple[str, str], Kernel] = {}
#: (domain, op_type) -> indices of the inputs the kernel reads only as host parameters.
HOST_INPUTS: dict[tuple[str, str], tuple[int, ...]] = {}


def _key(op: str, domain: str) -> tuple[str, str]:
    return ("" if domain == "ai.onnx" else domain, op)


def register(*ops: str, domain: str = "", host_inputs: tuple[int, ...] = ()) -> Callable[[Kernel], Kernel]:
    """Register ``fn`` as the kernel of ``ops``; ``host_inputs``: inputs it reads only through ``ctx.host``."""

    def deco(fn: Kernel) -> Kernel:
        for op in ops:
            REGISTRY[_key(op, domain)] = fn
            if host_inputs:
                HOST_INPUTS[_key(op, domain)] = tuple(host_inputs)
        return fn

    return deco


#: (domain, op_type) -> preparer: ``fn(ctx, inputs, outputs, consts)`` -> a zero-argument callable running the
#: node on exactly these arrays, or None (see :mod:`turnip.kernels.prepared`). ``consts[i]``: input i as a
#: host array when it is a small plan-time constant the kernel reads as a parameter, else None.
PREPARERS: dict[tuple[str, str], Callable[..., Callable[[], Any] | None]] = {}


def prepares(*ops: str, domain: str = "") -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register ``fn`` as the preparer of ``ops`` (NumPy arrays only; the registered kernel stays the general path)."""

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        for op in ops:
            PREPARERS[_key(op, domain)] = fn
        return fn

    return deco


def prepare_call(ctx: KernelContext, domain: str, inputs: list, outputs: list, consts: list) -> Callable[[], Any] | None:
    """A prepared zero-argument call for a node on NumPy arrays, or None: run the registered kernel."""
    _load_all()
    fn = PREPARERS.get(_key(ctx.op, domain))
    if fn is None or any(o is None for o in outputs[:1]) or not outputs:
        return None
    try:
        return fn(ctx, inputs, outputs, consts)
    except (ValueError, TypeError, IndexError):  # a form the preparer does not handle: the kernel reports it at run time
        return None


def get_kernel(op: str, domain: str = "") -> Kernel | None:
    """The native kernel for an op, or None (the runtime then uses the onnxruntime fallback)."""
    _load_all()
    return REGISTRY.get(_key(op, domain))


def host_inputs(op: str, domain: str = "") -> tuple[int, ...]:
    """Indices of the inputs of ``op`` that its kernel reads only as host parameters (see the module docstring)."""
    _load_all()
    return HOST_INPUTS.get(_key(op, domain), ())


_loaded = False


def _load_all() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    import importlib
    import pkgutil

    for mod in sorted(m.name for m in pkgutil.iter_modules(__path__)):
        importlib.import_module(f"{__name__}.{mod}")


# ---------------------------------------------------------------------------
# Helpers shared by the kernel modules (and by callers that build contexts).


def attrs_from_onnx(node: Any) -> dict[str, Any]:
    """An ONNX NodeProto's attributes as plain Python values.

    ints, floats and strings (decoded to str) and lists of them; tensor
    attributes become NumPy arrays. Graph attributes are not supported (the
    runtime has no control-flow kernels) and are left out.
    """
    import onnx
    from onnx import numpy_helper

    A = onnx.AttributeProto
    out: dict[str, Any] = {}
    for a in node.attribute:
        if a.type == A.INT:
            out[a.name] = int(a.i)
        elif a.type == A.FLOAT:
            out[a.name] = float(a.f)
        elif a.type == A.STRING:
            out[a.name] = a.s.decode("utf-8", errors="replace")
        elif a.type == A.INTS:
            out[a.name] = [int(v) for v in a.ints]
        elif a.type == A.FLOATS:
            out[a.name] = [float(v) for v in a.floats]
        elif a.type == A.STRINGS:
            out[a.name] = [s.decode("utf-8", errors="replace") for s in a.strings]
        elif a.type == A.TENSOR:
            out[a.name] = numpy_helper.to_array(a.t)
        elif a.type == A.TENSORS:
            out[a.name] = [numpy_helper.to_array(t) for t in a.tensors]
    return out


def has_output(outputs: list, i: int) -> bool:
    """Whether optional output ``i`` is wanted (present and not None).

    The runtime may pass a shorter list, or None in place of an omitted
    optional output; kernels use this before writing outputs past the first.
    """
    return len(outputs) > i and outputs[i] is not None


def opt_input(inputs: list, i: int) -> Any:
    """Input ``i``, or None when it is omitted (absent or None)."""
    return inputs[i] if len(inputs) > i else None


def to_str(v: Any) -> str:
    """A string attribute as str (accepts bytes)."""
    return v.decode() if isinstance(v, (bytes, bytearray)) else str(v)
