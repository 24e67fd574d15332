"""GPU memory a plan needs besides its arena, and the free memory ``--gpu-mem auto`` plans for.

The arena holds every tensor the plan places; it is not all a GPU run uses.
Kernels written against the array API make temporaries (``a * b + c`` makes
one per operator; a softmax or a normalization several), which CuPy takes
from its memory pool, and cuBLAS keeps a workspace per handle. The plan
records a *reserve* for these (``stats.reserve_bytes``, per GPU), sized from
the ops it holds:

* the library workspace, when the graph has a matrix product
  (:data:`LIBRARY_WORKSPACE_BYTES`: cuBLAS's default workspace on Hopper-class
  GPUs is 32 MiB per handle, and the runtime uses one compute stream, so one
  handle, per GPU);
* the largest temporary footprint of a single op: :data:`TEMP_FACTOR` (how
  many output-sized temporaries its kernel makes; 1 when not listed) times
  the op's output bytes. The pool reuses freed blocks, so the peak is one
  op's worth, not the sum.

The CUDA context itself is not in the reserve: ``cudaMemGetInfo`` is read
after the context exists, both by ``--gpu-mem auto`` here and by the CuPy
backend's check before it allocates (it refuses to start when a GPU has less
free memory than arena + reserve, naming both numbers).
"""

from __future__ import annotations

from .errors import TurnipError
from .partition_attention import scratch_bytes
from .taskgraph import TaskGraph

LIBRARY_WORKSPACE_BYTES = 32 << 20
MATMUL_OPS = frozenset({"MatMul", "Gemm", "FusedMatMul", "MatMulInteger", "MatMulNBits", "Attention", "MultiHeadAttention", "Conv", "ConvTranspose",
                        "FusedAttention"})
#: Output-sized temporaries the shared kernels make, by op (1 when not listed).
TEMP_FACTOR = {
    "MatMul": 0,  # written straight into its planned output (matmul(out=))
    "Reshape": 0, "Squeeze": 0, "Unsqueeze": 0, "Flatten": 0, "Identity": 0,
    "Softmax": 2, "LogSoftmax": 2,
    "LayerNormalization": 3, "SkipLayerNormalization": 3, "SimplifiedLayerNormalization": 3, "RMSNormalization": 3,
    "BatchNormalization": 2, "InstanceNormalization": 3, "GroupNormalization": 3,
    "Gelu": 2, "BiasGelu": 2, "FastGelu": 3, "Erf": 1,
    "Conv": 2, "ConvTranspose": 2,  # im2col-style column buffers and the product
    "Attention": 4, "MultiHeadAttention": 4,
    "FusedAttention": 0,  # its scores are planned (output 1); the kernel makes row-sized temporaries only
}


class AutoBudgetError(TurnipError):
    """``--gpu-mem auto`` where no GPU's free memory can be read."""


def workspace_reserve(graph: TaskGraph) -> int:
    """Bytes to keep free on each GPU besides the arena (see the module docstring)."""
    temp = 0
    has_matmul = False
    for t in graph.tasks:
        has_matmul = has_matmul or t.op_type in MATMUL_OPS
        out = sum(graph.values[o].nbytes for o in t.outputs if o is not None and o in graph.values)
        temp = max(temp, TEMP_FACTOR.get(t.op_type, 1) * out, scratch_bytes(graph, t))
    return temp + (LIBRARY_WORKSPACE_BYTES if has_matmul else 0)


def free_gpu_memory(gpus: int) -> list[int]:
    """Free bytes on GPUs 0..gpus-1 (cudaMemGetInfo through CuPy). Raises AutoBudgetError on a machine without them."""
    try:
        import cupy

        count = int(cupy.cuda.runtime.getDeviceCount())
    except Exception as e:  # noqa: BLE001 - ImportError, or a CUDA driver error
        raise AutoBudgetError(
            f"--gpu-mem auto reads each GPU's free memory, but no CUDA GPU is visible here ({type(e).__name__}); "
            "give a size instead (e.g. --gpu-mem 20GiB), or plan on the GPU machine"
        ) from None
    if count < gpus:
        raise AutoBudgetError(f"--gpu-mem auto for {gpus} GPU(s), but {count} are visible; give sizes (--gpu-mem 20GiB,24GiB) or fewer --gpus")
    free = []
    for d in range(gpus):
        with cupy.cuda.Device(d):
            free.append(int(cupy.cuda.runtime.memGetInfo()[0]))
    return free


def auto_budgets(graph: TaskGraph, gpus: int) -> list[int]:
    """Per GPU: free memory minus the reserve this graph needs."""
    reserve = workspace_reserve(graph)
    out = []
    for d, free in enumerate(free_gpu_memory(gpus)):
        if free <= reserve:
            raise AutoBudgetError(f"GPU {d} has {free} bytes free, not more than the {reserve} byte reserve this model needs; free the GPU or give --gpu-mem")
        out.append(free - reserve)
    return out
