"""Weights transformed once (issue 11): weight-only Transpose / Cast chains become derived weights.

The derive step (``turnipc.importer.derive``) on hand-built node lists, the importer's
TASKGRAPH, the plan field (``TensorInfo.derive``) and the runtime that makes
the bytes at load, checked end to end against onnxruntime on hand-built
models, untiled and tiled.
"""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from turnip.check import compare, reference_outputs
from turnip.errors import PlanError, PlanFormatError
from turnip.plan import DeriveOp, DeriveStep, TensorInfo, WeightRecipe, decode_plan, encode_plan, write_plan
from turnip.run import run_plan
from turnip.weights import derive_weight

from turnipc.importer import import_model
from turnipc.importer.derive import derive_weights
from turnipc.planner import PlanOptions, build_plan
from turnipc.units import Budget
from turnipc.verify import verify_plan

FLOAT, FLOAT16, INT64 = TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.INT64
T, C, R = DeriveOp.TRANSPOSE, DeriveOp.CAST, DeriveOp.RESHAPE


def _model(nodes, inputs, outputs, inits, opset=17):
    g = helper.make_graph(nodes, "g", inputs, outputs, inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def _save(tmp_path, m, name="m.onnx", external=True):
    """Weights over 128 bytes external by default (small inline weights fold at plan time: a constant, not a weight)."""
    p = str(tmp_path / name)
    if external:
        onnx.save_model(m, p, save_as_external_data=True, all_tensors_to_one_file=True, location=name + ".data", size_threshold=128)
    else:
        onnx.save_model(m, p)
    return p


def _w(name, shape, seed, dtype=np.float32):
    return numpy_helper.from_array(np.random.default_rng(seed).standard_normal(shape).astype(dtype), name)


def transpose_matmul(big=False):
    """x[4, 16] @ Transpose(w[32, 16]) -> y[4, 32]: GPT-2's tied LM head in small."""
    n, k = (2048, 256) if big else (32, 16)
    return _model(
        [helper.make_node("Transpose", ["w"], ["wt"], perm=[1, 0]), helper.make_node("MatMul", ["x", "wt"], ["y"])],
        [helper.make_tensor_value_info("x", FLOAT, [4, k])],
        [helper.make_tensor_value_info("y", FLOAT, [4, n])],
        [_w("w", (n, k), 1)],
    )


def cast_chain():
    """A float16 weight -> Reshape -> Transpose -> Cast(float32) -> MatMul: views and transforms in one chain."""
    shape = numpy_helper.from_array(np.array([8, 12], np.int64), "shape")
    return _model(
        [
            helper.make_node("Reshape", ["w16", "shape"], ["wr"]),
            helper.make_node("Transpose", ["wr"], ["wt"]),
            helper.make_node("Cast", ["wt"], ["w32"], to=FLOAT),
            helper.make_node("MatMul", ["x", "w32"], ["y"]),
        ],
        [helper.make_tensor_value_info("x", FLOAT, [3, 12])],
        [helper.make_tensor_value_info("y", FLOAT, [3, 8])],
        [_w("w16", (4, 2, 12), 2, np.float16), shape],
    )


def tied_embedding():
    """One table read raw (Gather) and transposed (MatMul), as GPT-2's dynamo export ties wte and lm_head."""
    return _model(
        [
            helper.make_node("Gather", ["table", "ids"], ["emb"]),
            helper.make_node("Transpose", ["table"], ["tt"], perm=[1, 0]),
            helper.make_node("MatMul", ["emb", "tt"], ["logits"]),
        ],
        [helper.make_tensor_value_info("ids", INT64, [2, 5])],
        [helper.make_tensor_value_info("logits", FLOAT, [2, 5, 40])],
        [_w("table", (40, 16), 3)],
    )


# -- the derive step, on node lists -------------------------------------------------------------


def _types(m):
    from turnipc import folding

    return folding.collect_types(folding.infer(m))


def _is_view(n):
    return n.op_type in ("Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity")


def test_derive_step_takes_out_transpose_and_records_its_recipe():
    m = transpose_matmul()
    kept, recipes = derive_weights(list(m.graph.node), {"w": (FLOAT, (32, 16))}, _types(m), {"y"}, _is_view)
    assert [n.op_type for n in kept] == ["MatMul"]
    assert recipes == {"wt": WeightRecipe("w", "float32", (32, 16), (DeriveStep(T, (1, 0)),))}


def test_derive_step_folds_views_into_reshape_steps_and_keeps_the_view_nodes():
    m = cast_chain()
    kept, recipes = derive_weights(list(m.graph.node), {"w16": (FLOAT16, (4, 2, 12))}, _types(m), {"y"}, _is_view)
    assert [n.op_type for n in kept] == ["Reshape", "MatMul"]  # the view stays (an alias); Transpose and Cast go
    wt = WeightRecipe("w16", "float16", (4, 2, 12), (DeriveStep(R, (8, 12)), DeriveStep(T, (1, 0))))
    assert recipes == {"wt": wt, "w32": WeightRecipe("w16", "float16", (4, 2, 12), (*wt.steps, DeriveStep(C, "float32")))}


def test_derive_step_leaves_graph_outputs_and_activations_alone():
    m = _model(
        [
            helper.make_node("Transpose", ["w"], ["wt"]),  # a graph output: stays a task
            helper.make_node("Transpose", ["x"], ["xt"]),  # not a weight
            helper.make_node("Cast", ["xt"], ["xc"], to=TensorProto.DOUBLE),
        ],
        [helper.make_tensor_value_info("x", FLOAT, [2, 3])],
        [helper.make_tensor_value_info("wt", FLOAT, [3, 2]), helper.make_tensor_value_info("xc", TensorProto.DOUBLE, [3, 2])],
        [_w("w", (2, 3), 4)],
    )
    kept, recipes = derive_weights(list(m.graph.node), {"w": (FLOAT, (2, 3))}, _types(m), {"wt", "xc"}, _is_view)
    assert [n.op_type for n in kept] == ["Transpose", "Transpose", "Cast"] and recipes == {}


# -- the importer ---------------------------------------------------------------------------------


def test_import_makes_the_transposed_weight_a_weight_and_drops_the_unused_source(tmp_path):
    tg = import_model(_save(tmp_path, transpose_matmul()))
    assert [t.op_type for t in tg.tasks] == ["MatMul"]
    assert tg.tasks[0].inputs == ("x", "wt")
    assert "w" not in tg.values  # nothing reads the source any more: not a plan tensor
    v = tg.values["wt"]
    assert (v.kind, v.dtype, v.shape, v.storage) == ("weight", "float32", (16, 32), "wt")
    assert tg.derived == {"wt": WeightRecipe("w", "float32", (32, 16), (DeriveStep(T, (1, 0)),))}


def test_import_keeps_a_weight_read_raw_beside_its_derived_copy(tmp_path):
    tg = import_model(_save(tmp_path, tied_embedding()))
    assert [t.op_type for t in tg.tasks] == ["Gather", "MatMul"]
    assert tg.values["table"].kind == "weight" and tg.values["tt"].kind == "weight"
    assert set(tg.derived) == {"tt"}


def test_import_keeps_a_weight_transpose_that_is_a_graph_output(tmp_path):
    m = _model(
        [helper.make_node("Transpose", ["w"], ["wt"]), helper.make_node("Relu", ["x"], ["r"])],
        [helper.make_tensor_value_info("x", FLOAT, [2])],
        [helper.make_tensor_value_info("wt", FLOAT, [3, 2]), helper.make_tensor_value_info("r", FLOAT, [2])],
        [_w("w", (2, 3), 5)],
    )
    tg = import_model(_save(tmp_path, m))
    assert [t.op_type for t in tg.tasks] == ["Transpose", "Relu"] and tg.derived == {}
    assert tg.values["wt"].kind == "output"


def test_an_alias_of_a_derived_weight_that_is_a_graph_output_is_copied(tmp_path):
    """Transpose(w) -> Reshape -> graph output: the Transpose is derived, the Reshape a copy task (outputs are never weights)."""
    shape = numpy_helper.from_array(np.array([600], np.int64), "shape")
    m = _model(
        [helper.make_node("Transpose", ["w"], ["wt"]), helper.make_node("Reshape", ["wt", "shape"], ["flat"])],
        [],
        [helper.make_tensor_value_info("flat", FLOAT, [600])],
        [_w("w", (20, 30), 6), shape],
    )
    tg = import_model(_save(tmp_path, m))
    assert [t.op_type for t in tg.tasks] == ["Reshape"]
    assert tg.values["wt"].kind == "weight" and tg.values["flat"].kind == "output"


# -- plan format and runtime --------------------------------------------------------------------


def test_recipe_round_trips_and_plans_without_recipes_have_no_derive_field():
    r = WeightRecipe("w", "float16", (4, 6), (DeriveStep(R, (6, 4)), DeriveStep(T, (1, 0)), DeriveStep(C, "float32")))
    t = TensorInfo("wt", "float32", (4, 6), 96, "weight", 0, None, r)
    assert TensorInfo.from_obj(t.to_obj()) == t
    assert t.to_obj()["derive"] == {"source": "w", "dtype": "float16", "shape": [4, 6], "steps": [
        {"op": "reshape", "arg": [6, 4]}, {"op": "transpose", "arg": [1, 0]}, {"op": "cast", "arg": "float32"}]}
    assert "derive" not in TensorInfo("w", "float32", (4,), 16, "weight", 0).to_obj()


def test_derive_weight_applies_steps_like_the_kernels_and_refuses_a_wrong_result():
    src = np.arange(24, dtype=np.float16).reshape(4, 6)
    r = WeightRecipe("w", "float16", (4, 6), (DeriveStep(R, (6, 4)), DeriveStep(T, (1, 0)), DeriveStep(C, "float32")))
    got = derive_weight(TensorInfo("wt", "float32", (4, 6), 96, "weight", 0, None, r), src.reshape(-1).view(np.uint8))
    np.testing.assert_array_equal(got.view(np.float32).reshape(4, 6), src.reshape(6, 4).T.astype(np.float32))
    with pytest.raises(PlanError, match="comes out float32"):
        derive_weight(TensorInfo("wt", "float32", (6, 4), 96, "weight", 0, None, r), src.reshape(-1).view(np.uint8))
    bad = WeightRecipe("w", "float16", (4, 6), (DeriveStep(T, (0, 0)),))
    with pytest.raises(PlanError, match="cannot apply"):
        derive_weight(TensorInfo("wt", "float16", (4, 6), 48, "weight", 0, None, bad), src.reshape(-1).view(np.uint8))


def test_plan_reader_refuses_a_recipe_on_a_non_weight():
    r = WeightRecipe("w", "float32", (2,), (DeriveStep(C, "float16"),))
    t = TensorInfo("a", "float16", (2,), 4, "activation", 0, None, r)
    from turnip.plan import Plan

    plan = Plan("m.onnx", "0" * 64, {"": 17}, {}, [t], [], [], [], [], [])
    with pytest.raises(PlanFormatError, match="derive"):
        decode_plan(encode_plan(plan))


MODELS = {"transpose_matmul": transpose_matmul, "cast_chain": cast_chain, "tied_embedding": tied_embedding}


def _feeds(model):
    rng = np.random.default_rng(0)
    out = {}
    for vi in model.graph.input:
        shape = [d.dim_value for d in vi.type.tensor_type.shape.dim]
        if vi.type.tensor_type.elem_type == INT64:
            out[vi.name] = rng.integers(0, 40, size=shape).astype(np.int64)
        else:
            out[vi.name] = rng.standard_normal(shape).astype(np.float32)
    return out


def _plan_run_check(path, model, opts):
    tg = import_model(path)
    plan = build_plan(tg, opts, plan_dir=os.path.dirname(path))
    verify_plan(plan)
    plan_path = path + ".plan"
    write_plan(plan, plan_path)
    feeds = _feeds(model)
    got = run_plan(plan_path, feeds, backend="numpy", order="dynamic").outputs
    for c in compare(got, reference_outputs(path, feeds), atol=1e-4, rtol=1e-3):
        assert c.ok, f"{c.name}: max abs {c.max_abs:g}"
    return plan


def test_small_inline_weight_chains_still_fold_into_constants(tmp_path):
    tg = import_model(_save(tmp_path, transpose_matmul(), external=False))
    assert tg.values["wt"].kind == "constant" and tg.derived == {}


@pytest.mark.parametrize("name", [*sorted(MODELS), "inline_big"])
def test_derived_weights_plan_verify_and_match_onnxruntime(tmp_path, name):
    """External weights, and an inline one too big to fold (read from the model file itself)."""
    model = transpose_matmul(big=True) if name == "inline_big" else MODELS[name]()
    path = _save(tmp_path, model, external=name != "inline_big")
    for budget in (Budget(fraction=1.0), Budget(minimum=True)):
        plan = _plan_run_check(path, model, PlanOptions(budget))
        derived = [t for t in plan.tensors if t.derive is not None]
        assert derived and all(t.kind == "weight" for t in derived)
        assert not any(n.op in ("Transpose", "Cast") for n in plan.nodes)


def test_a_derived_weight_cut_into_blocks_matches_onnxruntime(tmp_path):
    """A tiled plan reads column blocks of the transposed weight: the runtime derives it once, then cuts the blocks."""
    model = transpose_matmul(big=True)
    path = _save(tmp_path, model, external=True)
    plan = _plan_run_check(path, model, PlanOptions(Budget(fraction=0.5), max_task_bytes=1 << 20))
    blocks = [t for t in plan.tensors if t.block is not None]
    assert blocks and all(plan.tensors[plan.tensors[t.block[0]].storage].derive is not None for t in blocks)
