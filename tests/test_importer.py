"""Tests of turnipc.importer (ONNX -> TASKGRAPH), turnipc.dims, turnipc.folding and turnipc.cost."""

from __future__ import annotations

import collections
import hashlib
import importlib.util
import os
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from turnipc import folding
from turnipc.cost import estimate
from turnipc.dims import DimSyntaxError, parse_dim_options
from turnipc.errors import ModelError, TurnipError, UnboundDimError
from turnipc.importer import import_model
from turnipc.taskgraph import VALUE_KINDS, TaskGraph

HERE = os.path.dirname(os.path.abspath(__file__))


def _load_fixtures():
    path = os.path.join(HERE, "models", "fixtures.py")
    if not os.path.exists(path):
        return None
    spec = importlib.util.spec_from_file_location("turnip_test_fixtures", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


FX = _load_fixtures()
LIGHT_DIR = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")
LIGHT_MODELS = sorted(f for f in os.listdir(LIGHT_DIR) if f.endswith(".onnx")) if os.path.isdir(LIGHT_DIR) else []
FLOAT = TensorProto.FLOAT
INT64 = TensorProto.INT64


# -- helpers ------------------------------------------------------------------------------------


def save(tmp_path, model: onnx.ModelProto, name: str = "m.onnx", **kw) -> str:
    p = str(tmp_path / name)
    onnx.save_model(model, p, **kw)
    return p


def make_model(nodes, inputs, outputs, inits=(), opset=17, ir=8):
    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=ir)


def legacy_chain_model() -> onnx.ModelProto:
    """x[batch, 8] -> MatMul -> Reshape via Shape->Gather->Unsqueeze->Concat (torch legacy style) -> Relu."""
    w = numpy_helper.from_array(np.ones((8, 8), np.float32), "w")
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
        helper.make_node("Shape", ["h"], ["sh"], name="shape"),
        helper.make_node("Constant", [], ["zero"], value=numpy_helper.from_array(np.array(0, np.int64))),
        helper.make_node("Gather", ["sh", "zero"], ["b"], axis=0, name="gather"),
        helper.make_node("Constant", [], ["ax0"], value=numpy_helper.from_array(np.array([0], np.int64))),
        helper.make_node("Unsqueeze", ["b", "ax0"], ["b1"], name="unsq"),
        helper.make_node("Constant", [], ["rest"], value=numpy_helper.from_array(np.array([2, 4], np.int64))),
        helper.make_node("Concat", ["b1", "rest"], ["target"], axis=0, name="concat"),
        helper.make_node("Reshape", ["h", "target"], ["h3"], name="reshape"),
        helper.make_node("Relu", ["h3"], ["y"], name="relu"),
    ]
    return make_model(
        nodes,
        [helper.make_tensor_value_info("x", FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("y", FLOAT, ["batch", 2, 4])],
        [w],
    )


def build_llama_like(layers=2, hidden=64, heads=4, ffn=128, vocab=512, max_pos=128, external_location=None):
    """A legacy-export-shaped LLaMA graph (opset 17): Shape->Gather->Unsqueeze->Concat->Reshape chains,
    Constant nodes, a Range/Where causal mask, dynamic batch and seq.

    external_location: every weight is an external-data reference to that (possibly missing) file and
    carries no bytes; None: weights are small random inline arrays.
    """
    hd = hidden // heads
    nodes, inits = [], []
    rng = np.random.default_rng(0)
    state = {"offset": 0, "n": 0}

    def u(prefix):
        state["n"] += 1
        return f"{prefix}_{state['n']}"

    def weight(name, shape):
        if external_location is None:
            inits.append(numpy_helper.from_array((rng.standard_normal(shape) * 0.05).astype(np.float32), name))
        else:
            t = TensorProto(name=name, data_type=FLOAT, dims=list(shape))
            n = int(np.prod(shape)) * 4
            t.data_location = TensorProto.EXTERNAL
            for k, v in (("location", external_location), ("offset", str(state["offset"])), ("length", str(n))):
                e = t.external_data.add()
                e.key, e.value = k, v
            state["offset"] += n
            inits.append(t)
        return name

    def const(value, dtype=np.int64):
        out = u("const")
        nodes.append(helper.make_node("Constant", [], [out], value=numpy_helper.from_array(np.array(value, dtype=dtype))))
        return out

    def node(op, ins, **attrs):
        out = u(op)
        nodes.append(helper.make_node(op, ins, [out], name=u(op + "_node"), **attrs))
        return out

    def dim_of(x, i):
        sh = node("Shape", [x])
        return node("Unsqueeze", [node("Gather", [sh, const(i)], axis=0), const([0])])

    def norm(x, w):
        m = node("ReduceMean", [node("Pow", [x, const(2.0, np.float32)])], axes=[-1], keepdims=1)
        r = node("Sqrt", [node("Add", [m, const(1e-6, np.float32)])])
        return node("Mul", [node("Div", [x, r]), w])

    def heads_view(x):
        shape = node("Concat", [dim_of(x, 0), dim_of(x, 1), const([heads]), const([hd])], axis=0)
        return node("Transpose", [node("Reshape", [x, shape])], perm=[0, 2, 1, 3])

    def rotate(x, cos, sin):
        x1 = node("Slice", [x, const([0]), const([hd // 2]), const([3])])
        x2 = node("Slice", [x, const([hd // 2]), const([1 << 62]), const([3])])
        rot = node("Concat", [node("Neg", [x2]), x1], axis=-1)
        return node("Add", [node("Mul", [x, cos]), node("Mul", [rot, sin])])

    h = node("Gather", [weight("embed", (vocab, hidden)), "input_ids"], axis=0)
    seq = node("Gather", [node("Shape", ["input_ids"]), const(1)], axis=0)
    r = node("Range", [const(0), seq, const(1)])
    upper = node("Greater", [node("Unsqueeze", [r, const([0])]), node("Unsqueeze", [r, const([1])])])
    mask = node("Unsqueeze", [node("Where", [upper, const(-1e9, np.float32), const(0.0, np.float32)]), const([0, 1])])
    cos_t, sin_t = weight("cos_cached", (max_pos, hd)), weight("sin_cached", (max_pos, hd))
    seq1 = node("Unsqueeze", [seq, const([0])])
    cos = node("Unsqueeze", [node("Slice", [cos_t, const([0]), seq1, const([0])]), const([0, 1])])
    sin = node("Unsqueeze", [node("Slice", [sin_t, const([0]), seq1, const([0])]), const([0, 1])])
    for i in range(layers):
        n1 = norm(h, weight(f"l{i}.norm1", (hidden,)))
        q = rotate(heads_view(node("MatMul", [n1, weight(f"l{i}.wq", (hidden, hidden))])), cos, sin)
        k = rotate(heads_view(node("MatMul", [n1, weight(f"l{i}.wk", (hidden, hidden))])), cos, sin)
        v = heads_view(node("MatMul", [n1, weight(f"l{i}.wv", (hidden, hidden))]))
        s = node("MatMul", [q, node("Transpose", [k], perm=[0, 1, 3, 2])])
        s = node("Add", [node("Div", [s, const(float(np.sqrt(hd)), np.float32)]), mask])
        a = node("Transpose", [node("MatMul", [node("Softmax", [s], axis=-1), v])], perm=[0, 2, 1, 3])
        back = node("Concat", [dim_of(a, 0), dim_of(a, 1), const([hidden])], axis=0)
        o = node("MatMul", [node("Reshape", [a, back]), weight(f"l{i}.wo", (hidden, hidden))])
        h = node("Add", [h, o])
        n2 = norm(h, weight(f"l{i}.norm2", (hidden,)))
        g = node("MatMul", [n2, weight(f"l{i}.wg", (hidden, ffn))])
        up = node("MatMul", [n2, weight(f"l{i}.wu", (hidden, ffn))])
        act = node("Mul", [node("Mul", [g, node("Sigmoid", [g])]), up])
        h = node("Add", [h, node("MatMul", [act, weight(f"l{i}.wd", (ffn, hidden))])])
    logits = node("MatMul", [norm(h, weight("norm_f", (hidden,))), weight("lm_head", (hidden, vocab))])
    nodes.append(helper.make_node("Identity", [logits], ["logits"], name="out"))
    return make_model(
        nodes,
        [helper.make_tensor_value_info("input_ids", INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("logits", FLOAT, ["batch", "seq", vocab])],
        inits,
    )


def rebuild_onnx(tg: TaskGraph, weights: dict[str, np.ndarray]) -> onnx.ModelProto:
    """An ONNX model computing what the TASKGRAPH says: tasks as nodes, each alias as a Reshape of
    its storage to the alias's shape (exactly the runtime's view semantics), constants inline."""
    from turnip.dtypes import onnx_elem_type

    nodes, inits, ready = [], [], set(tg.inputs)

    def need(name):
        if name in ready:
            return
        v = tg.values[name]
        assert v.is_alias, f"{name} used before it is produced"
        need(v.storage)
        inits.append(numpy_helper.from_array(np.array(v.shape, np.int64), name + "__shape"))
        nodes.append(helper.make_node("Reshape", [v.storage, name + "__shape"], [name]))
        ready.add(name)

    for name, v in tg.values.items():
        if not v.is_alias and v.kind == "weight" and name in tg.derived:  # made at load from its source (turnip.weights)
            from turnip.plan import TensorInfo
            from turnip.weights import derive_weight

            src = np.ascontiguousarray(weights[tg.derived[name].source]).reshape(-1).view(np.uint8)
            got = derive_weight(TensorInfo(name, v.dtype, v.shape, v.nbytes, "weight", 0, None, tg.derived[name]), src)
            inits.append(numpy_helper.from_array(got.view(np.dtype(v.dtype)).reshape(v.shape), name))
            ready.add(name)
        elif not v.is_alias and v.kind == "weight":
            inits.append(numpy_helper.from_array(weights[name], name))
            ready.add(name)
        elif not v.is_alias and v.kind == "constant":
            inits.append(numpy_helper.from_array(tg.constants[name], name))
            ready.add(name)
    for t in tg.tasks:
        for i in t.inputs:
            if i is not None:
                need(i)
        attrs = {k: numpy_helper.from_array(a) if isinstance(a, np.ndarray) else a for k, a in t.attrs.items()}
        attrs = {k: a for k, a in attrs.items() if not (isinstance(a, list) and not a)}
        nodes.append(helper.make_node(t.op_type, [i or "" for i in t.inputs], list(t.outputs), name=t.name, domain=t.domain, **attrs))
        ready.update(t.outputs)
    for o in tg.outputs:
        need(o)

    def vi(n):
        return helper.make_tensor_value_info(n, onnx_elem_type(tg.values[n].dtype), tg.values[n].shape)

    g = helper.make_graph(nodes, "rebuilt", [vi(n) for n in tg.inputs], [vi(n) for n in tg.outputs], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid(d, v) for d, v in tg.opset.items()])
    m.ir_version = 10
    return m


def run_ort(model, feeds):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    src = model if isinstance(model, str) else model.SerializeToString()
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"]).run(None, feeds)


def check_invariants(tg: TaskGraph) -> None:
    """Properties every TASKGRAPH must have."""
    assert [t.id for t in tg.tasks] == list(range(len(tg.tasks)))
    assert len({t.name for t in tg.tasks}) == len(tg.tasks)
    produced: set[str] = set()
    for v in tg.values.values():
        assert v.kind in VALUE_KINDS
        assert all(isinstance(d, int) and d >= 0 for d in v.shape), v
        assert v.nbytes == int(np.prod(v.shape, dtype=np.int64)) * np.dtype(v.dtype if v.dtype != "bfloat16" else "uint16").itemsize
        root = tg.values[v.storage]
        assert not root.is_alias and root.kind == v.kind and root.nbytes == v.nbytes
    for t in tg.tasks:
        for i in t.inputs:
            if i is None:
                continue
            s = tg.values[i].storage
            assert tg.values[s].kind in ("input", "weight", "constant") or s in produced, (t.name, i)
        for o in t.outputs:
            if o is None:  # an omitted optional output (a gap)
                continue
            assert not tg.values[o].is_alias and o not in produced
            produced.add(o)
        assert t.flops >= 0 and t.bytes_touched > 0 or not t.outputs
    out_storages = [tg.values[o].storage for o in tg.outputs]
    assert len(set(out_storages)) == len(out_storages), "graph outputs must have distinct storages"
    for s in out_storages:
        assert tg.values[s].kind == "output" and s in produced
    assert set(tg.constants) == {n for n, v in tg.values.items() if v.kind == "constant" and not v.is_alias}
    for name, arr in tg.constants.items():
        assert arr.shape == tg.values[name].shape and arr.dtype.name == tg.values[name].dtype
    for i in tg.inputs:
        assert tg.values[i].kind == "input"


# -- dims parsing ---------------------------------------------------------------------------------


def test_parse_dim_options_accepts_both_spellings():
    dims, shapes = parse_dim_options(["batch=2", "seq=16,heads=4"], ["input_ids:2x16", "mask:[2, 16]", "s:[]", "t:0:7"])
    assert dims == {"batch": 2, "seq": 16, "heads": 4}
    assert shapes == {"input_ids": (2, 16), "mask": (2, 16), "s": (), "t:0": (7,)}
    assert parse_dim_options(None, None) == ({}, {})


@pytest.mark.parametrize(
    "dim_opts,shape_opts,needle",
    [
        (["batch"], [], "NAME=N"),
        (["batch=two"], [], "non-negative integer"),
        (["batch=-1"], [], "non-negative integer"),
        (["batch=2", "batch=3"], [], "given twice"),
        ([], ["input_ids"], "NAME:SHAPE"),
        ([], ["input_ids:2xx16"], "non-negative integer"),
        ([], ["input_ids:[2,16"], "brackets"),
        ([], [":2x16"], "no input name"),
    ],
)
def test_parse_dim_options_rejects_malformed_text(dim_opts, shape_opts, needle):
    with pytest.raises(DimSyntaxError, match=needle) as ei:
        parse_dim_options(dim_opts, shape_opts)
    assert isinstance(ei.value, TurnipError) and isinstance(ei.value, ValueError)
    assert "\n" not in str(ei.value)


# -- binding --------------------------------------------------------------------------------------


def two_input_model():
    nodes = [helper.make_node("Add", ["a", "b"], ["y"], name="add")]
    return make_model(
        nodes,
        [
            helper.make_tensor_value_info("a", FLOAT, ["batch", "seq"]),
            helper.make_tensor_value_info("b", FLOAT, ["batch", "seq"]),
        ],
        [helper.make_tensor_value_info("y", FLOAT, ["batch", "seq"])],
    )


def test_unbound_dims_are_all_named_with_their_inputs(tmp_path):
    p = save(tmp_path, two_input_model())
    with pytest.raises(UnboundDimError) as ei:
        import_model(p)
    msg = str(ei.value)
    assert "batch (in a, b)" in msg and "seq (in a, b)" in msg
    assert "--dim batch=N" in msg and "--input-shape a:" in msg and "\n" not in msg
    with pytest.raises(UnboundDimError, match=r"seq \(in a, b\)") as ei:
        import_model(p, dims={"batch": 2})
    assert "batch" not in str(ei.value).split(";")[0]


def test_unnamed_unknown_dim_needs_input_shape(tmp_path):
    nodes = [helper.make_node("Relu", ["x"], ["y"])]
    m = make_model(nodes, [helper.make_tensor_value_info("x", FLOAT, [None, 4])], [helper.make_tensor_value_info("y", FLOAT, None)])
    p = save(tmp_path, m)
    with pytest.raises(UnboundDimError, match=r"dim 0 of x .*--input-shape x:Nx4"):
        import_model(p)
    tg = import_model(p, input_shapes={"x": (3, 4)})
    assert tg.values["y"].shape == (3, 4) and tg.dims == {}


def test_unknown_dim_name_is_an_error(tmp_path):
    p = save(tmp_path, two_input_model())
    with pytest.raises(ModelError, match=r"unknown dim bacth.*batch, seq") as ei:
        import_model(p, dims={"bacth": 2, "seq": 4})
    assert not isinstance(ei.value, UnboundDimError)


def test_input_shapes_bind_dims_and_conflicts_are_errors(tmp_path):
    p = save(tmp_path, two_input_model())
    tg = import_model(p, input_shapes={"a": (2, 5)})
    assert tg.dims == {"batch": 2, "seq": 5}
    assert tg.values["b"].shape == (2, 5) and tg.values["y"].shape == (2, 5)
    with pytest.raises(ModelError, match="give it one value"):
        import_model(p, dims={"batch": 3}, input_shapes={"a": (2, 5)})
    with pytest.raises(ModelError, match="rank 3"):
        import_model(p, input_shapes={"a": (2, 5, 1)})
    with pytest.raises(ModelError, match="no model input named c"):
        import_model(p, dims={"batch": 1, "seq": 1}, input_shapes={"c": (2,)})


def test_static_dim_mismatch_is_an_error(tmp_path):
    p = save(tmp_path, legacy_chain_model())
    with pytest.raises(ModelError, match="fixes it at 8"):
        import_model(p, input_shapes={"x": (2, 9)})


# -- folding and aliases ----------------------------------------------------------------------------


def test_legacy_shape_chain_folds_and_reshape_becomes_alias(tmp_path):
    p = save(tmp_path, legacy_chain_model())
    tg = import_model(p, dims={"batch": 3})
    ops = [t.op_type for t in tg.tasks]
    assert ops == ["MatMul", "Relu"]  # Shape, Gather, Unsqueeze, Concat, Constant folded; Reshape is an alias
    h3 = tg.values["h3"]
    assert h3.is_alias and h3.storage == "h" and h3.shape == (3, 2, 4) and h3.kind == "activation"
    assert tg.tasks[1].inputs == ("h3",)
    assert tg.values["y"].shape == (3, 2, 4) and tg.values["y"].kind == "output"
    assert tg.constants == {}  # the folded shape vector feeds only the alias: dropped
    assert tg.dims == {"batch": 3}


def test_folding_fixpoint_needs_reinference(tmp_path):
    """Reshape's result shape is unknown until its shape input is folded; a Shape of it then folds too."""
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("ReduceProd", ["s"], ["n"], keepdims=1),
        helper.make_node("Reshape", ["x", "n"], ["flat"]),
        helper.make_node("Neg", ["flat"], ["neg"]),
        helper.make_node("Shape", ["neg"], ["s2"]),
        helper.make_node("ConstantOfShape", ["s2"], ["ones"], value=numpy_helper.from_array(np.array([1.0], np.float32))),
        helper.make_node("Add", ["neg", "ones"], ["y"]),
    ]
    m = make_model(nodes, [helper.make_tensor_value_info("x", FLOAT, ["b", 3])], [helper.make_tensor_value_info("y", FLOAT, None)])
    tg = import_model(save(tmp_path, m), dims={"b": 2})
    assert [t.op_type for t in tg.tasks] == ["Neg", "Add"]
    assert tg.values["flat"].is_alias and tg.values["flat"].shape == (6,)
    assert tg.values["ones"].kind == "constant" and np.array_equal(tg.constants["ones"], np.ones(6, np.float32))
    assert tg.values["y"].shape == (6,)
    check_invariants(tg)


def test_alias_chains_resolve_to_root_and_outputs_are_copied_when_needed(tmp_path):
    w = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("Flatten", ["r"], ["f"], axis=0, name="flat"),
        helper.make_node("Identity", ["f"], ["f2"], name="id1"),
        helper.make_node("Unsqueeze", ["f2", "ax"], ["u"], name="unsq"),
        helper.make_node("Neg", ["u"], ["n"], name="neg"),
        helper.make_node("Identity", ["x"], ["x_out"], name="x_passthrough"),  # output of an input: copy
        helper.make_node("Reshape", ["w", "shape16"], ["w_out"], name="w_view"),  # output of a weight: copy
        helper.make_node("Identity", ["n"], ["n_out1"], name="n_view1"),  # alias of n, claims n's storage
        helper.make_node("Identity", ["n"], ["n_out2"], name="n_view2"),  # same storage again: copy
        helper.make_node("Dropout", ["n"], ["d"], name="drop"),  # inference Dropout: alias
        helper.make_node("Sigmoid", ["d"], ["sig"], name="sig"),
    ]
    inits = [
        w,
        numpy_helper.from_array(np.array([0], np.int64), "ax"),
        numpy_helper.from_array(np.array([16], np.int64), "shape16"),
    ]
    m = make_model(
        nodes,
        [helper.make_tensor_value_info("x", FLOAT, [4, 4])],
        [helper.make_tensor_value_info(o, FLOAT, None) for o in ("x_out", "w_out", "n_out1", "n_out2", "sig")],
        inits,
    )
    tg = import_model(save(tmp_path, m))
    ops = {t.name: t.op_type for t in tg.tasks}
    assert ops == {
        "relu": "Relu",
        "neg": "Neg",
        "x_passthrough": "Identity",
        "w_view": "Reshape",
        "n_view2": "Identity",
        "sig": "Sigmoid",
    }
    neg = next(t for t in tg.tasks if t.name == "neg")
    assert neg.inputs == ("u",)
    assert tg.values["u"].storage == "r" and tg.values["u"].shape == (1, 1, 16)  # chain Flatten->Identity->Unsqueeze
    assert tg.values["n_out1"].storage == "n" and tg.values["n"].kind == "output"
    assert tg.values["d"].storage == "n" and tg.values["d"].kind == "output"  # kind follows the storage
    assert not tg.values["n_out2"].is_alias and not tg.values["x_out"].is_alias
    assert tg.values["w_out"].kind == "output" and tg.values["w"].kind == "weight"
    assert tg.values["r"].kind == "activation"
    check_invariants(tg)


def test_dead_nodes_and_unused_initializers_are_dropped(tmp_path):
    inits = [
        numpy_helper.from_array(np.ones(4, np.float32), "unused_w"),
        numpy_helper.from_array(np.ones(4, np.float32), "b"),
    ]
    nodes = [
        helper.make_node("Add", ["x", "b"], ["y"], name="add"),
        helper.make_node("Exp", ["x"], ["dead"], name="dead_exp"),
        helper.make_node("Mul", ["dead", "unused_w"], ["dead2"], name="dead_mul"),
    ]
    m = make_model(nodes, [helper.make_tensor_value_info("x", FLOAT, [4])], [helper.make_tensor_value_info("y", FLOAT, [4])], inits)
    tg = import_model(save(tmp_path, m))
    assert [t.name for t in tg.tasks] == ["add"]
    assert list(tg.values) == ["x", "b", "y"]
    assert tg.values["b"].kind == "weight"


def test_large_constant_of_shape_stays_a_task(tmp_path):
    """A generator whose result is big is not folded into an inline constant; small ones are."""
    big, small = (512, 1024), (4, 4)  # 2 MiB and 64 B of float32
    inits = [
        numpy_helper.from_array(np.array(big, np.int64), "big_shape"),
        numpy_helper.from_array(np.array(small, np.int64), "small_shape"),
    ]
    val = numpy_helper.from_array(np.array([0.5], np.float32))
    nodes = [
        helper.make_node("ConstantOfShape", ["big_shape"], ["big"], value=val, name="make_big"),
        helper.make_node("ConstantOfShape", ["small_shape"], ["small"], value=val, name="make_small"),
        helper.make_node("MatMul", ["x", "big"], ["y1"], name="mm"),
        helper.make_node("MatMul", ["x4", "small"], ["y2"], name="mm2"),
    ]
    m = make_model(
        nodes,
        [helper.make_tensor_value_info("x", FLOAT, [2, 512]), helper.make_tensor_value_info("x4", FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y1", FLOAT, None), helper.make_tensor_value_info("y2", FLOAT, None)],
        inits,
    )
    tg = import_model(save(tmp_path, m))
    assert [t.name for t in tg.tasks] == ["make_big", "mm", "mm2"]
    assert tg.values["big"].kind == "activation" and tg.values["big"].nbytes == 2 << 20
    assert tg.values["big_shape"].kind == "weight"
    assert tg.values["small"].kind == "constant" and tg.constants["small"].shape == small
    check_invariants(tg)


def test_external_weights_are_never_read(tmp_path):
    m = build_llama_like(layers=1)
    p = save(tmp_path, m, save_as_external_data=True, all_tensors_to_one_file=True, location="m.onnx.data", size_threshold=0)
    data = tmp_path / "m.onnx.data"
    assert data.stat().st_size > 0
    data.write_bytes(b"")  # truncated: any read of a weight would fail
    tg = import_model(p, dims={"batch": 2, "seq": 5})
    assert tg.values["embed"].kind == "weight" and tg.values["embed"].shape == (512, 64)
    assert tg.values["logits"].shape == (2, 5, 512)
    # the Slice of the (external, small) cos table is not folded: its bytes are unknown at plan time
    assert "Slice" in {t.op_type for t in tg.tasks if t.inputs and t.inputs[0] == "cos_cached"}
    data.unlink()
    tg2 = import_model(p, dims={"batch": 2, "seq": 5})
    assert list(tg2.values) == list(tg.values)
    check_invariants(tg)


def test_llama_like_legacy_graph_folds_every_shape_op(tmp_path):
    p = save(tmp_path, build_llama_like(layers=2, external_location="nowhere.data"))
    tg = import_model(p, dims={"batch": 2, "seq": 16})
    ops = collections.Counter(t.op_type for t in tg.tasks)
    assert not {"Shape", "Constant", "Unsqueeze", "Reshape", "Range"} & set(ops), ops
    assert ops["MatMul"] == 2 * 9 + 1
    assert sum(v.is_alias for v in tg.values.values()) >= 2 * 4  # the head reshapes
    assert tg.values["input_ids"].kind == "input" and tg.values["logits"].kind == "output"
    check_invariants(tg)


def test_llama_7b_shaped_graph_imports_without_weights(tmp_path):
    m = build_llama_like(layers=32, hidden=4096, heads=32, ffn=11008, vocab=32000, max_pos=4096, external_location="none.data")
    p = save(tmp_path, m)
    assert len(m.graph.node) > 3000
    tg = import_model(p, dims={"batch": 1, "seq": 2048})  # its import time is measured in make bench
    assert sum(v.nbytes for v in tg.values.values() if v.kind == "weight") > 6e9 * 4 / 1.0 / 1.2
    assert not any(t.op_type == "Shape" for t in tg.tasks)
    assert tg.values["logits"].shape == (1, 2048, 32000)
    # the 2048x2048 causal mask is too big to inline: it is computed by tasks
    assert all(a.nbytes <= folding.FOLD_OUTPUT_MAX_BYTES for a in tg.constants.values())


# -- errors -------------------------------------------------------------------------------------------


def test_truncated_and_garbage_files_are_model_errors(tmp_path):
    good = save(tmp_path, build_llama_like(layers=1))
    data = open(good, "rb").read()
    for cut in (10, len(data) // 3, len(data) // 2, len(data) - 3):
        p = tmp_path / f"cut{cut}.onnx"
        p.write_bytes(data[:cut])
        with pytest.raises(ModelError, match="is the file complete") as ei:
            import_model(str(p), dims={"batch": 1, "seq": 4})
        assert "\n" not in str(ei.value)
    junk = tmp_path / "junk.onnx"
    junk.write_text("not a model\n" * 20)
    with pytest.raises(ModelError, match="cannot read model"):
        import_model(str(junk))
    with pytest.raises(ModelError, match="check the path"):
        import_model(str(tmp_path / "missing.onnx"))


def test_subgraphs_are_rejected_with_counts(tmp_path):
    then_g = helper.make_graph([helper.make_node("Identity", ["x"], ["t"])], "then", [], [helper.make_tensor_value_info("t", FLOAT, [2])])
    else_g = helper.make_graph([helper.make_node("Neg", ["x"], ["e"])], "else", [], [helper.make_tensor_value_info("e", FLOAT, [2])])
    nodes = [
        helper.make_node("If", ["c"], ["y1"], then_branch=then_g, else_branch=else_g),
        helper.make_node("If", ["c"], ["y2"], then_branch=then_g, else_branch=else_g),
    ]
    m = make_model(
        nodes,
        [helper.make_tensor_value_info("x", FLOAT, [2]), helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y1", FLOAT, [2]), helper.make_tensor_value_info("y2", FLOAT, [2])],
    )
    with pytest.raises(ModelError, match=r"subgraphs \(If x2\)"):
        import_model(save(tmp_path, m))


def test_unsupported_ops_listed_at_once_with_counts(tmp_path):
    p = save(tmp_path, build_llama_like(layers=2, external_location="x.data"))
    supported = {("", "MatMul"), ("", "Add"), ("", "Gather"), ("", "Transpose")}
    with pytest.raises(ModelError) as ei:
        import_model(p, dims={"batch": 1, "seq": 4}, supported_ops=supported)
    msg = str(ei.value)
    assert msg.startswith("unsupported ops: Mul x")
    for op in ("Softmax x2", "Sigmoid x2", "Neg x4", "Pow x5"):
        assert op in msg, (op, msg)
    assert "Where" not in msg  # the 4x4 causal mask is folded
    assert "MatMul" not in msg and "Reshape" not in msg and "Shape" not in msg  # aliases and folded ops need no kernel
    counts = collections.Counter(t.op_type for t in import_model(p, dims={"batch": 1, "seq": 4}).tasks)
    assert f"Mul x{counts['Mul']}" in msg


def test_custom_domain_ops_are_named_with_their_domain(tmp_path):
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("FastGelu", ["r"], ["y"], domain="com.microsoft")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", FLOAT, [2])], [helper.make_tensor_value_info("y", FLOAT, [2])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)], ir_version=8)
    p = save(tmp_path, m)
    with pytest.raises(ModelError, match=r"unsupported ops: com\.microsoft\.FastGelu x1;"):
        import_model(p, supported_ops={("", "Relu")})


def test_unplannable_element_type_names_the_value(tmp_path):
    nodes = [helper.make_node("Identity", ["s"], ["y"])]
    m = make_model(
        nodes,
        [helper.make_tensor_value_info("s", TensorProto.STRING, [2])],
        [helper.make_tensor_value_info("y", TensorProto.STRING, [2])],
    )
    with pytest.raises(ModelError, match=r"value s has element type STRING"):
        import_model(save(tmp_path, m))


def test_unresolvable_shape_names_value_and_op(tmp_path):
    nodes = [helper.make_node("NonZero", ["x"], ["nz"], name="nz_node"), helper.make_node("Neg", ["nz"], ["y"])]
    m = make_model(nodes, [helper.make_tensor_value_info("x", FLOAT, [4])], [helper.make_tensor_value_info("y", INT64, None)])
    with pytest.raises(ModelError, match=r"cannot find a static shape for nz .*NonZero node nz_node"):
        import_model(save(tmp_path, m))


def test_graph_output_that_is_a_graph_input_is_an_error(tmp_path):
    m = make_model(
        [helper.make_node("Neg", ["x"], ["y"])],
        [helper.make_tensor_value_info("x", FLOAT, [2])],
        [helper.make_tensor_value_info("y", FLOAT, [2]), helper.make_tensor_value_info("x", FLOAT, [2])],
    )
    with pytest.raises(ModelError, match="graph output x is a graph input"):
        import_model(save(tmp_path, m))


# -- graph details ------------------------------------------------------------------------------------


def test_names_attrs_inputs_and_metadata(tmp_path):
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="same"),
        helper.make_node("Relu", ["a"], ["b"], name="same"),
        helper.make_node("Clip", ["b", "", "hi"], ["c"]),  # omitted optional input in the middle
        helper.make_node("ConstantOfShape", ["shape_c"], ["big"], value=numpy_helper.from_array(np.array([2.0], np.float32))),
        helper.make_node("Add", ["c", "big"], ["d"]),
        helper.make_node("LayerNormalization", ["d", "g", ""], ["y", "mean", "istd"], axis=-1, epsilon=1e-5),
        helper.make_node("Cast", ["y"], ["y16"], to=TensorProto.FLOAT16),
    ]
    inits = [
        numpy_helper.from_array(np.array(6.0, np.float32), "hi"),
        numpy_helper.from_array(np.ones(256, np.float32), "g"),
        numpy_helper.from_array(np.array([256, 256], np.int64), "shape_c"),
    ]
    m = make_model(
        nodes,
        [helper.make_tensor_value_info("x", FLOAT, [256, 256])],
        [helper.make_tensor_value_info("y16", TensorProto.FLOAT16, None)],
        inits,
    )
    m.opset_import.append(helper.make_opsetid("ai.onnx.ml", 3))
    p = save(tmp_path, m)
    tg = import_model(p)
    assert [t.name for t in tg.tasks] == [
        "same",
        "same_1",
        "Clip_2",
        "ConstantOfShape_3",
        "Add_4",
        "LayerNormalization_5",
        "Cast_6",
    ]
    clip = tg.tasks[2]
    assert clip.inputs == ("b", None, "hi")
    ln = tg.tasks[5]
    assert ln.inputs == ("d", "g") and ln.outputs == ("y",)  # unused optional outputs dropped
    assert ln.attrs == {"axis": -1, "epsilon": pytest.approx(1e-5)} and isinstance(ln.attrs["axis"], int)
    cos = tg.tasks[3].attrs["value"]
    assert isinstance(cos, np.ndarray) and cos.dtype == np.float32 and cos.tolist() == [2.0]
    assert tg.tasks[6].attrs == {"to": TensorProto.FLOAT16}
    assert tg.values["y16"].dtype == "float16" and tg.values["y16"].nbytes == 256 * 256 * 2
    assert tg.opset == {"": 17, "ai.onnx.ml": 3}
    assert tg.model_path == p and tg.model_sha256 == hashlib.sha256(open(p, "rb").read()).hexdigest()
    assert tg.inputs == ["x"] and tg.outputs == ["y16"]
    assert list(tg.values)[:4] == ["x", "hi", "shape_c", "g"]  # inputs, then weights in first-use order
    check_invariants(tg)


def test_zero_size_tensors_are_allowed(tmp_path):
    m = make_model(
        [helper.make_node("Relu", ["x"], ["y"])],
        [helper.make_tensor_value_info("x", FLOAT, ["n", 3])],
        [helper.make_tensor_value_info("y", FLOAT, ["n", 3])],
    )
    tg = import_model(save(tmp_path, m), dims={"n": 0})
    assert tg.values["y"].shape == (0, 3) and tg.values["y"].nbytes == 0


def test_import_is_deterministic(tmp_path):
    p = save(tmp_path, build_llama_like(layers=2, external_location="w.data"))
    a = import_model(p, dims={"batch": 2, "seq": 8})
    b = import_model(p, dims={"batch": 2, "seq": 8})
    assert list(a.values.items()) == list(b.values.items())
    assert [(t.name, t.inputs, t.outputs, t.flops) for t in a.tasks] == [(t.name, t.inputs, t.outputs, t.flops) for t in b.tasks]
    assert a.constants.keys() == b.constants.keys()


def test_local_functions_are_inlined(tmp_path):
    fn = helper.make_function("custom", "Twice", ["a"], ["b"], [helper.make_node("Add", ["a", "a"], ["b"])], [helper.make_opsetid("", 17)])
    g = helper.make_graph(
        [helper.make_node("Twice", ["x"], ["y"], domain="custom")],
        "g",
        [helper.make_tensor_value_info("x", FLOAT, [3])],
        [helper.make_tensor_value_info("y", FLOAT, [3])],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("custom", 1)], functions=[fn], ir_version=8)
    tg = import_model(save(tmp_path, m))
    assert [t.op_type for t in tg.tasks] == ["Add"] and tg.values["y"].kind == "output"


# -- cost ---------------------------------------------------------------------------------------------


def test_cost_estimates(tmp_path):
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["mm"], name="mm"),  # [2,3,8,16] @ [16,32]
        helper.make_node("Reshape", ["mm", "s"], ["img"], name="view"),  # -> [2,3,16,16] alias
        helper.make_node("Conv", ["img", "k"], ["conv"], group=1, pads=[1, 1, 1, 1], name="conv"),  # k [4,3,3,3]
        helper.make_node("Transpose", ["conv"], ["tr"], perm=[0, 1, 3, 2], name="tr"),
        helper.make_node("Exp", ["tr"], ["ex"], name="exp"),
        helper.make_node("ReduceSum", ["ex"], ["y"], keepdims=0, name="sum"),
        helper.make_node("Add", ["mm", "mm"], ["y2"], name="add_self"),
    ]
    inits = [
        numpy_helper.from_array(np.ones((16, 32), np.float32), "w"),
        numpy_helper.from_array(np.array([2, 3, 16, 16], np.int64), "s"),
        numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "k"),
    ]
    m = make_model(
        nodes,
        [helper.make_tensor_value_info("x", FLOAT, [2, 3, 8, 16])],
        [helper.make_tensor_value_info("y", FLOAT, None), helper.make_tensor_value_info("y2", FLOAT, None)],
        inits,
    )
    tg = import_model(save(tmp_path, m))
    t = {x.name: x for x in tg.tasks}
    assert t["mm"].flops == 2 * (2 * 3 * 8) * 32 * 16
    assert t["mm"].bytes_touched == (2 * 3 * 8 * 16 + 16 * 32 + 2 * 3 * 8 * 32) * 4
    assert t["conv"].flops == 2 * (2 * 4 * 16 * 16) * 3 * 3 * 3
    assert t["tr"].flops == 0
    assert t["exp"].flops == 4 * 2 * 4 * 16 * 16
    assert t["sum"].flops == 2 * 4 * 16 * 16
    assert t["add_self"].bytes_touched == 2 * (2 * 3 * 8 * 32) * 4  # mm read once: distinct storages
    assert estimate(t["mm"], tg.values) == (t["mm"].flops, t["mm"].bytes_touched)


# -- real models ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("fname", LIGHT_MODELS)
def test_light_cnns_import_with_static_shapes(fname):
    path = os.path.join(LIGHT_DIR, fname)
    tg = import_model(path)
    check_invariants(tg)
    m = onnx.load(path)
    assert tg.inputs == [i.name for i in m.graph.input if i.name not in {t.name for t in m.graph.initializer}]
    assert len(tg.tasks) < len(m.graph.node)
    ops = {t.op_type for t in tg.tasks}
    assert "Conv" in ops and "Unsqueeze" not in ops and "Reshape" not in ops and "Dropout" not in ops
    assert all(a.nbytes <= folding.FOLD_OUTPUT_MAX_BYTES for a in tg.constants.values())
    assert sum(a.nbytes for a in tg.constants.values()) < 4 << 20
    # every ConstantOfShape still a task makes a tensor too big to inline
    for t in tg.tasks:
        if t.op_type == "ConstantOfShape":
            assert tg.values[t.outputs[0]].nbytes > folding.FOLD_GROWTH_FREE_BYTES
    assert tg.total_flops() > 1e8


FIXTURES = FX.available() if FX is not None else []


@pytest.mark.skipif(not FIXTURES, reason="no fixtures in tests/models")
@pytest.mark.parametrize("fx", FIXTURES, ids=lambda f: f.name)
def test_fixture_imports(fx):
    tg = import_model(fx.path, dims=fx.dims or None)
    check_invariants(tg)
    assert tg.dims == fx.dims
    assert tg.outputs == list(fx.outputs)
    for spec in fx.inputs:
        assert tg.values[spec.name].shape == fx.input_shapes()[spec.name]
    assert not {"Shape", "Size", "Constant", "If", "Loop"} & {t.op_type for t in tg.tasks}
    if fx.external_data:
        assert any(v.kind == "weight" for v in tg.values.values())


HF_FIXTURES = [f for f in FIXTURES if f.kind in ("hf", "demo")]


@pytest.mark.skipif(not HF_FIXTURES, reason="no transformer fixtures in tests/models")
@pytest.mark.parametrize("fx", HF_FIXTURES, ids=lambda f: f.name)
def test_fixture_taskgraph_computes_the_model(fx):
    """Rebuilding an ONNX model from the TASKGRAPH alone (tasks, alias views, constants) gives the
    original model's outputs: folding, aliasing, attributes and optional inputs are all right."""
    dims = {"batch": 3, "seq": 7} if fx.kind == "hf" else fx.dims
    tg = import_model(fx.path, dims=dims)
    weights = {t.name: numpy_helper.to_array(t, base_dir=os.path.dirname(fx.path)) for t in onnx.load(fx.path).graph.initializer}
    feeds = FX.make_inputs(fx, seed=1, dims=dims)
    ref = run_ort(fx.path, feeds)
    got = run_ort(rebuild_onnx(tg, weights), feeds)
    for r, g in zip(ref, got, strict=True):
        assert r.shape == g.shape
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-5)


def test_llama_like_taskgraph_computes_the_model(tmp_path):
    m = build_llama_like(layers=2)
    p = save(tmp_path, m)
    tg = import_model(p, dims={"batch": 2, "seq": 6})
    weights = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    feeds = {"input_ids": np.random.default_rng(0).integers(0, 512, (2, 6), dtype=np.int64)}
    np.testing.assert_allclose(run_ort(rebuild_onnx(tg, weights), feeds)[0], run_ort(p, feeds)[0], rtol=1e-5, atol=1e-5)


def test_dropout_with_used_mask_and_foldable_graph_outputs_stay_tasks(tmp_path):
    nodes = [
        helper.make_node("Dropout", ["x"], ["d", "mask"], name="drop"),  # mask is a graph output: a real task
        helper.make_node("Shape", ["x"], ["shape"], name="shape"),  # foldable, but a graph output: a task
        helper.make_node("Relu", ["d"], ["y"], name="relu"),
    ]
    m = make_model(
        nodes,
        [helper.make_tensor_value_info("x", FLOAT, [2, 3])],
        [helper.make_tensor_value_info(o, t, None) for o, t in (("y", FLOAT), ("mask", TensorProto.BOOL), ("shape", INT64))],
    )
    tg = import_model(save(tmp_path, m))
    assert [(t.name, t.outputs) for t in tg.tasks] == [("drop", ("d", "mask")), ("shape", ("shape",)), ("relu", ("y",))]
    assert tg.values["shape"].shape == (2,) and tg.values["shape"].kind == "output"
    assert tg.values["d"].kind == "activation" and not tg.values["d"].is_alias
    check_invariants(tg)


def test_omitted_middle_outputs(tmp_path):
    """An omitted optional output followed by a used one is a gap (None): nothing is planned for it."""
    nodes = [
        helper.make_node("LayerNormalization", ["x", "g"], ["y", "", "istd"], axis=-1, name="ln"),
        helper.make_node("Neg", ["istd"], ["z"], name="neg"),
    ]
    g = numpy_helper.from_array(np.ones(4, np.float32), "g")
    m = make_model(
        nodes,
        [helper.make_tensor_value_info("x", FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", FLOAT, None), helper.make_tensor_value_info("z", FLOAT, None)],
        [g],
    )
    tg = import_model(save(tmp_path, m))
    ln = tg.tasks[0]
    assert ln.outputs == ("y", None, "istd") and tg.values["istd"].shape == (2, 1)
    assert ln.storages_written(tg) == ["y", "istd"]
    check_invariants(tg)
    att = helper.make_node("Attention", ["q", "k", "v"], ["o", "", "", "qk"], name="att")
    vis = [helper.make_tensor_value_info(n, FLOAT, [1, 2, 4, 8]) for n in ("q", "k", "v")]
    m2 = make_model(
        [att], vis, [helper.make_tensor_value_info("o", FLOAT, None), helper.make_tensor_value_info("qk", FLOAT, None)], opset=23
    )
    tg2 = import_model(save(tmp_path, m2, "att.onnx"))
    assert tg2.tasks[0].outputs == ("o", None, None, "qk") and tg2.values["qk"].shape == (1, 2, 4, 4)
