"""Synthetic graphs for tests and benchmarks, built with onnx.helper.

``llama_shaped_model`` writes an ONNX graph with the shapes of a LLaMA-style
decoder (RMSNorm as Pow/ReduceMean/Sqrt/Div, attention as MatMul/Softmax,
SwiGLU MLP) whose weights are declared as external data that need not exist:
the planner never reads weights.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _external_weight(name: str, shape: list[int], elem: int, location: str, offset: int) -> tuple[TensorProto, int]:
    t = TensorProto()
    t.name = name
    t.data_type = elem
    t.dims.extend(shape)
    t.data_location = TensorProto.EXTERNAL
    nbytes = int(np.prod(shape)) * (2 if elem == TensorProto.FLOAT16 else 4)
    for k, v in (("location", location), ("offset", str(offset)), ("length", str(nbytes))):
        e = t.external_data.add()
        e.key, e.value = k, v
    return t, nbytes


def llama_shaped_model(layers: int = 32, hidden: int = 4096, heads: int = 32, ffn: int = 11008, vocab: int = 32000,
                       batch: int = 1, seq: int = 2048, fp16: bool = True, mask_in_graph: bool = False,
                       last_logits: bool = False) -> onnx.ModelProto:
    """A LLaMA-shaped decoder graph (weights declared, never written).

    ``mask_in_graph`` builds the causal mask from Range / Greater / Where
    instead of storing a seq x seq constant: at seq 32,768 the constant would
    be 2 GiB in fp16, over protobuf's 2 GiB message limit, and as tasks the
    mask is tiled like any elementwise op. ``last_logits`` computes logits
    for the last position only (as a prefill does): the seq x vocab logits
    of a long sequence are a graph output, which must exist whole.
    """
    elem = TensorProto.FLOAT16 if fp16 else TensorProto.FLOAT
    hd = hidden // heads
    inits: list[TensorProto] = []
    nodes: list[onnx.NodeProto] = []
    off = 0

    def w(name: str, shape: list[int]) -> str:
        nonlocal off
        t, nb = _external_weight(name, shape, elem, "weights.bin", off)
        off += nb
        inits.append(t)
        return name

    def const(name: str, arr: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(arr, name))
        return name

    def rmsnorm(x: str, p: str) -> str:
        g = w(f"{p}.weight", [hidden])
        nodes.extend([
            helper.make_node("Mul", [x, x], [f"{p}.sq"]),
            helper.make_node("ReduceMean", [f"{p}.sq", "axes_last"], [f"{p}.ms"], keepdims=1),
            helper.make_node("Add", [f"{p}.ms", "eps"], [f"{p}.mse"]),
            helper.make_node("Sqrt", [f"{p}.mse"], [f"{p}.rms"]),
            helper.make_node("Div", [x, f"{p}.rms"], [f"{p}.n"]),
            helper.make_node("Mul", [f"{p}.n", g], [f"{p}.out"]),
        ])
        return f"{p}.out"

    np_dt = np.float16 if fp16 else np.float32
    const("axes_last", np.array([-1], np.int64))
    const("eps", np.array(1e-5, np_dt))
    const("scale", np.array(1.0 / np.sqrt(hd), np_dt))
    const("shape_heads", np.array([batch, seq, heads, hd], np.int64))
    const("shape_hidden", np.array([batch, seq, hidden], np.int64))
    if mask_in_graph:
        const("pos_start", np.array(0, np.int64))
        const("pos_limit", np.array(seq, np.int64))
        const("pos_delta", np.array(1, np.int64))
        const("axes_col", np.array([1], np.int64))
        const("mask_neg", np.array(-1e4, np_dt))
        const("mask_zero", np.array(0, np_dt))
        nodes.extend([
            helper.make_node("Range", ["pos_start", "pos_limit", "pos_delta"], ["pos"]),
            helper.make_node("Unsqueeze", ["pos", "axes_col"], ["pos_rows"]),
            helper.make_node("Greater", ["pos", "pos_rows"], ["future"]),  # [seq, seq]: key j > query i
            helper.make_node("Where", ["future", "mask_neg", "mask_zero"], ["mask"]),
        ])
    else:
        const("mask", np.triu(np.full((seq, seq), -1e4, np_dt), 1))
    emb = w("embed.weight", [vocab, hidden])
    nodes.append(helper.make_node("Gather", [emb, "input_ids"], ["h0"]))
    h = "h0"
    for i in range(layers):
        p = f"l{i}"
        x = rmsnorm(h, f"{p}.in_norm")
        for m in ("q", "k", "v"):
            nodes.append(helper.make_node("MatMul", [x, w(f"{p}.{m}.weight", [hidden, hidden])], [f"{p}.{m}"]))
            nodes.append(helper.make_node("Reshape", [f"{p}.{m}", "shape_heads"], [f"{p}.{m}4"]))
            perm = [0, 2, 3, 1] if m == "k" else [0, 2, 1, 3]
            nodes.append(helper.make_node("Transpose", [f"{p}.{m}4"], [f"{p}.{m}t"], perm=perm))
        nodes.extend([
            helper.make_node("MatMul", [f"{p}.qt", f"{p}.kt"], [f"{p}.s"]),
            helper.make_node("Mul", [f"{p}.s", "scale"], [f"{p}.ss"]),
            helper.make_node("Add", [f"{p}.ss", "mask"], [f"{p}.sm"]),
            helper.make_node("Softmax", [f"{p}.sm"], [f"{p}.p"], axis=-1),
            helper.make_node("MatMul", [f"{p}.p", f"{p}.vt"], [f"{p}.a"]),
            helper.make_node("Transpose", [f"{p}.a"], [f"{p}.at"], perm=[0, 2, 1, 3]),
            helper.make_node("Reshape", [f"{p}.at", "shape_hidden"], [f"{p}.a3"]),
            helper.make_node("MatMul", [f"{p}.a3", w(f"{p}.o.weight", [hidden, hidden])], [f"{p}.o"]),
            helper.make_node("Add", [h, f"{p}.o"], [f"{p}.h1"]),
        ])
        y = rmsnorm(f"{p}.h1", f"{p}.post_norm")
        nodes.extend([
            helper.make_node("MatMul", [y, w(f"{p}.gate.weight", [hidden, ffn])], [f"{p}.g"]),
            helper.make_node("Sigmoid", [f"{p}.g"], [f"{p}.gs"]),
            helper.make_node("Mul", [f"{p}.g", f"{p}.gs"], [f"{p}.silu"]),
            helper.make_node("MatMul", [y, w(f"{p}.up.weight", [hidden, ffn])], [f"{p}.u"]),
            helper.make_node("Mul", [f"{p}.silu", f"{p}.u"], [f"{p}.gu"]),
            helper.make_node("MatMul", [f"{p}.gu", w(f"{p}.down.weight", [ffn, hidden])], [f"{p}.d"]),
            helper.make_node("Add", [f"{p}.h1", f"{p}.d"], [f"{p}.h2"]),
        ])
        h = f"{p}.h2"
    if last_logits:
        const("last_start", np.array([-1], np.int64))
        const("last_end", np.array([np.iinfo(np.int64).max], np.int64))
        const("seq_axis", np.array([1], np.int64))
        nodes.append(helper.make_node("Slice", [h, "last_start", "last_end", "seq_axis"], ["h_last"]))
        h = "h_last"
    x = rmsnorm(h, "final_norm")
    nodes.append(helper.make_node("MatMul", [x, w("lm_head.weight", [hidden, vocab])], ["logits"]))
    graph = helper.make_graph(
        nodes, "llama_shaped",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("logits", elem, ["batch", 1 if last_logits else "seq", vocab])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    return model


def mlp_taskgraph(layers: int = 6, hidden: int = 256, batch: int = 8):
    """A TaskGraph built directly (no ONNX): MatMul+Relu layers, for planner and verifier tests."""
    from turnipc.taskgraph import Task, TaskGraph, Value

    nb = batch * hidden * 4
    vals = {"x": Value("x", "float32", (batch, hidden), nb, "input", "x")}
    for i in range(layers):
        vals[f"w{i}"] = Value(f"w{i}", "float32", (hidden, hidden), hidden * hidden * 4, "weight", f"w{i}")
    tasks = []
    prev = "x"
    for i in range(layers):
        y, r = f"y{i}", f"r{i}"
        vals[y] = Value(y, "float32", (batch, hidden), nb, "activation", y)
        vals[r] = Value(r, "float32", (batch, hidden), nb, "output" if i == layers - 1 else "activation", r)
        tasks.append(Task(len(tasks), f"mm{i}", "MatMul", "", {}, (prev, f"w{i}"), (y,), 2 * batch * hidden * hidden, 3 * nb))
        tasks.append(Task(len(tasks), f"relu{i}", "Relu", "", {}, (y,), (r,), batch * hidden, 2 * nb))
        prev = r
    return TaskGraph("mlp.onnx", "0" * 64, {"": 17}, vals, tasks, ["x"], [prev])


def skip_taskgraph(layers: int = 8, hidden: int = 128, batch: int = 16):
    """Residual blocks whose skip values stay live across a block: offloads of dirty activations happen."""
    from turnipc.taskgraph import Task, TaskGraph, Value

    nb = batch * hidden * 4
    vals = {"x": Value("x", "float32", (batch, hidden), nb, "input", "x")}
    tasks = []
    for i in range(layers):
        vals[f"w{i}"] = Value(f"w{i}", "float32", (hidden, hidden), hidden * hidden * 4, "weight", f"w{i}")
    prev = "x"
    skips = []
    for i in range(layers):
        a, b = f"a{i}", f"h{i}"
        vals[a] = Value(a, "float32", (batch, hidden), nb, "activation", a)
        tasks.append(Task(len(tasks), f"mm{i}", "MatMul", "", {}, (prev, f"w{i}"), (a,), 2 * batch * hidden * hidden, 3 * nb))
        vals[b] = Value(b, "float32", (batch, hidden), nb, "activation", b)
        tasks.append(Task(len(tasks), f"relu{i}", "Relu", "", {}, (a,), (b,), batch * hidden, 2 * nb))
        skips.append(b)
        prev = b
    # fold the skips back in reverse order (U-Net style): long lifetimes
    acc = prev
    for i, s in enumerate(reversed(skips[:-1])):
        o = f"u{i}"
        vals[o] = Value(o, "float32", (batch, hidden), nb, "activation", o)
        tasks.append(Task(len(tasks), f"add{i}", "Add", "", {}, (acc, s), (o,), batch * hidden, 3 * nb))
        acc = o
    vals[acc] = Value(acc, "float32", (batch, hidden), nb, "output", acc)
    return TaskGraph("skip.onnx", "0" * 64, {"": 17}, vals, tasks, ["x"], [acc])


def write_random_weights(model: onnx.ModelProto, folder: str, seed: int = 0, scale: float = 0.02) -> None:
    """Fill the external weight file a ``llama_shaped_model`` names with seeded random values (for runnable benchmarks)."""
    import os

    rng = np.random.default_rng(seed)
    files: dict[str, list[tuple[int, int, int]]] = {}
    for t in model.graph.initializer:
        if t.data_location != TensorProto.EXTERNAL:
            continue
        info = {e.key: e.value for e in t.external_data}
        files.setdefault(info["location"], []).append((int(info["offset"]), int(info["length"]), t.data_type))
    for loc, chunks in files.items():
        with open(os.path.join(folder, loc), "wb") as f:
            for off, length, elem in sorted(chunks):
                dt = np.float16 if elem == TensorProto.FLOAT16 else np.float32
                n = length // np.dtype(dt).itemsize
                f.seek(off)
                f.write((rng.standard_normal(n) * scale + (1.0 if n <= 65536 else 0.0)).astype(dt).tobytes())
