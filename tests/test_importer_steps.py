"""Each step of the importer (``turnipc.importer``) on its own, on tiny hand-built models, with exact results.

The pipeline as a whole is tested in test_importer.py (and byte-identical
golden plans); here a failing step fails its own test.
"""

from __future__ import annotations

import collections

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from turnipc import folding
from turnipc.errors import ModelError, UnboundDimError
from turnipc.importer import import_model
from turnipc.importer.alias import count_uses, is_alias, resolve_aliases
from turnipc.importer.bind import Bound, bind_inputs, graph_outputs
from turnipc.importer.read import domain, opsets, reject_structure
from turnipc.importer.rewrite import OMITTED_TAG, make_inference_model, name_nodes, name_omitted_outputs
from turnipc.importer.tasks import attr_value, check_supported, kept_outputs, task_io
from turnipc.importer.values import Kinds
from turnipc.importer.weights import Weights, collect_weights

FLOAT, INT64 = TensorProto.FLOAT, TensorProto.INT64


def _vi(name, shape, et=FLOAT):
    return helper.make_tensor_value_info(name, et, shape)


def _model(nodes, inputs, outputs, inits=(), opset=17):
    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def _external(name, shape):
    t = TensorProto(name=name, data_type=FLOAT, dims=shape, data_location=TensorProto.EXTERNAL)
    t.external_data.add(key="location", value="nowhere.bin")  # never opened: the step reads metadata only
    return t


# -- read -----------------------------------------------------------------------------------------


def test_read_names_the_default_domain_one_way_and_refuses_control_flow():
    assert domain("ai.onnx") == "" and domain("") == "" and domain("com.microsoft") == "com.microsoft"
    m = _model([], [], [])
    del m.opset_import[:]
    m.opset_import.extend([helper.make_opsetid("ai.onnx", 17), helper.make_opsetid("com.microsoft", 1)])
    assert opsets(m) == {"": 17, "com.microsoft": 1}
    then = helper.make_graph([], "then", [], [_vi("c", [1])])
    m = _model([helper.make_node("If", ["x"], ["y"], then_branch=then, else_branch=then)], [_vi("x", [], TensorProto.BOOL)], [_vi("y", [1])])
    with pytest.raises(ModelError, match=r"uses subgraphs \(If x1\)"):
        reject_structure(m, "m.onnx")


# -- weights --------------------------------------------------------------------------------------


def test_weights_keep_metadata_of_all_and_arrays_of_small_inline_ones_only():
    small = numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(2, 3), "small")
    big = numpy_helper.from_array(np.zeros(folding.FOLD_INPUT_MAX_BYTES // 4 + 1, np.float32), "big")
    g = helper.make_graph([], "g", [], [], [small, big, _external("ext", [4, 5])])
    w = collect_weights(g)
    assert w.meta == {"small": (FLOAT, (2, 3)), "big": (FLOAT, (folding.FOLD_INPUT_MAX_BYTES // 4 + 1,)), "ext": (FLOAT, (4, 5))}
    assert list(w.consts) == ["small"] and [p.name for p in w.protos] == ["small"]
    np.testing.assert_array_equal(w.consts["small"], np.arange(6, dtype=np.float32).reshape(2, 3))


# -- bind -----------------------------------------------------------------------------------------


def test_bind_gives_every_input_a_static_shape_and_orders_dims_by_first_use():
    g = helper.make_graph([], "g", [_vi("ids", ["batch", "seq"], INT64), _vi("mask", ["seq", 4]), _vi("w", [3])], [_vi("y", [1])])
    b = bind_inputs(g, {"w": (FLOAT, (3,))}, {"seq": 16}, {"ids": (2, 16)})
    assert b == Bound(["ids", "mask"], {"ids": INT64, "mask": FLOAT}, {"batch": 2, "seq": 16}, {"ids": (2, 16), "mask": (16, 4)})
    with pytest.raises(UnboundDimError, match=r"unbound dynamic dims: batch \(in ids\), seq \(in ids, mask\)"):
        bind_inputs(g, {"w": (FLOAT, (3,))}, {}, {})
    with pytest.raises(ModelError, match="graph output w is a weight itself"):
        graph_outputs(helper.make_graph([], "g", [], [_vi("w", [3])]), {"w": (FLOAT, (3,))}, {}, "m.onnx")


# -- rewrite --------------------------------------------------------------------------------------


def test_rewrite_names_nodes_uniquely_and_names_omitted_middle_outputs():
    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Relu", ["a"], ["b"], name="r"),
             helper.make_node("Relu", ["b"], ["c"], name="r"), helper.make_node("Split", ["c"], ["", "d"])]
    name_nodes(nodes)
    assert [n.name for n in nodes] == ["Relu_0", "r", "r_1", "Split_3"]
    name_omitted_outputs(nodes)
    assert list(nodes[3].output) == [f"Split_3{OMITTED_TAG}0", "d"]


def test_rewrite_makes_big_weights_typed_inputs_and_keeps_small_ones_as_initializers():
    small = numpy_helper.from_array(np.ones(2, np.float32), "small")
    m = _model([helper.make_node("Add", ["x", "small"], ["y"])], [_vi("x", ["n"])], [_vi("y", ["n"])], [small, _external("ext", [7])])
    w = Weights({"small": (FLOAT, (2,)), "ext": (FLOAT, (7,))}, {"small": np.ones(2, np.float32)}, [small])
    make_inference_model(m, Bound(["x"], {"x": FLOAT}, {"n": 2}, {"x": (2,)}), w)
    g = m.graph
    assert [(i.name, [d.dim_value for d in i.type.tensor_type.shape.dim]) for i in g.input] == [("x", [2]), ("ext", [7])]
    assert [t.name for t in g.initializer] == ["small"]
    assert not g.output[0].type.tensor_type.HasField("shape") and g.node[0].name == "Add_0"


# -- alias ----------------------------------------------------------------------------------------


def _alias_case(output_is_view):
    """x -> Relu -> r -> Reshape -> v1 -> Identity -> v2 -> Relu -> y (v2 also a graph output when asked)."""
    shape = numpy_helper.from_array(np.array([6], np.int64), "shape")
    outs = [_vi("y", [6])] + ([_vi("v2", [6])] if output_is_view else [])
    m = _model(
        [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Reshape", ["r", "shape"], ["v1"]),
         helper.make_node("Identity", ["v1"], ["v2"]), helper.make_node("Relu", ["v2"], ["y"])],
        [_vi("x", [2, 3])], outs, [shape],
    )
    res = folding.fold_to_fixpoint(m, {"shape": np.array([6], np.int64)}, {"": 17}, {o.name for o in outs})
    out_names = [o.name for o in outs]
    uses = count_uses(res.nodes, out_names)
    kinds = Kinds({"x": (2, 3)}, {}, {}, res.folded)
    return resolve_aliases(res.nodes, lambda n: is_alias(n, uses, res.constants, res.types), set(out_names), kinds.root_kind)


def test_alias_chains_resolve_to_their_root():
    a = _alias_case(output_is_view=False)
    assert a.storage == {"v1": "r", "v2": "r"}
    assert [n.op_type for n in a.nodes] == ["Relu", "Relu"] and a.claimed == {"y"}


def test_alias_of_an_activation_may_be_a_graph_output_and_claims_its_root():
    a = _alias_case(output_is_view=True)
    assert a.storage == {"v1": "r", "v2": "r"} and a.claimed == {"y", "r"}


def test_dropout_is_an_alias_only_in_inference_mode_with_its_mask_unused():
    types = {"x": (FLOAT, (4,)), "y": (FLOAT, (4,)), "mask": (TensorProto.BOOL, (4,))}
    n = helper.make_node("Dropout", ["x", "", "t"], ["y", "mask"])
    assert is_alias(n, collections.Counter(), {"t": np.array(False)}, types)
    assert not is_alias(n, collections.Counter({"mask": 1}), {"t": np.array(False)}, types)
    assert not is_alias(n, collections.Counter(), {"t": np.array(True)}, types)


# -- tasks ----------------------------------------------------------------------------------------


def test_tasks_drop_unused_trailing_optional_outputs_and_trailing_omitted_inputs():
    ln = helper.make_node("LayerNormalization", ["x", "s", "", ""], ["y", "mean", "inv"], name="ln")
    assert kept_outputs(ln, collections.Counter({"y": 1}), {"": 17}) == ("y",)
    assert kept_outputs(ln, collections.Counter({"y": 1, "inv": 1}), {"": 17}) == ("y", "mean", "inv")
    ins, outs = task_io([ln], collections.Counter({"y": 1}), {"": 17})
    assert ins == [("x", "s")] and outs == [("y",)]
    split = helper.make_node("Split", ["c"], [f"sp{OMITTED_TAG}0", "d"], name="sp")
    assert kept_outputs(split, collections.Counter({"d": 1}), {"": 17}) == (None, "d")


def test_tasks_decode_attributes_to_plain_values_and_list_unsupported_ops():
    n = helper.make_node("ConstantOfShape", ["s"], ["y"], value=numpy_helper.from_array(np.array([1.5], np.float32)))
    n2 = helper.make_node("Transpose", ["x"], ["t"], perm=[1, 0])
    v = attr_value(n.attribute[0], n)
    assert isinstance(v, np.ndarray) and v.tolist() == [1.5] and attr_value(n2.attribute[0], n2) == [1, 0]
    with pytest.raises(ModelError, match=r"unsupported ops: Transpose x2, ConstantOfShape x1;"):
        check_supported([n2, n, n2], {("", "Relu")})
    check_supported([n2], None)  # no list: nothing checked


# -- values ---------------------------------------------------------------------------------------


def test_kinds_follow_the_root_and_graph_outputs_make_written_storages_outputs():
    k = Kinds({"x": (2,)}, {"w": (FLOAT, (2,))}, {}, {"c"}, storage={"xa": "x", "ya": "y", "za": "z"}, claimed={"y"})
    assert [k.kind_of(n) for n in ("x", "xa", "w", "c", "y", "ya", "z", "za")] == [
        "input", "input", "weight", "constant", "output", "output", "activation", "activation"]


def test_values_come_in_a_fixed_order_with_aliases_after_their_storage(tmp_path):
    shape = numpy_helper.from_array(np.array([4], np.int64), "shape")
    w = numpy_helper.from_array(np.ones((2, 2), np.float32), "w")
    m = _model(
        [helper.make_node("MatMul", ["x", "w"], ["mm"]), helper.make_node("Reshape", ["mm", "shape"], ["flat"]),
         helper.make_node("Relu", ["flat"], ["y"])],
        [_vi("x", [2, 2])], [_vi("y", [4])], [w, shape],
    )
    p = str(tmp_path / "m.onnx")
    onnx.save_model(m, p)
    tg = import_model(p)
    assert [(v.name, v.kind, v.storage, v.shape) for v in tg.values.values()] == [
        ("x", "input", "x", (2, 2)), ("w", "weight", "w", (2, 2)), ("mm", "activation", "mm", (2, 2)),
        ("flat", "activation", "mm", (4,)), ("y", "output", "y", (4,))]
    assert [(t.op_type, t.inputs, t.outputs) for t in tg.tasks] == [("MatMul", ("x", "w"), ("mm",)), ("Relu", ("flat",), ("y",))]
