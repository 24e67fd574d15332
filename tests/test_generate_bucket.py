"""The past-length bucket rewrite (turnip/generate_bucket.py) on its own: the masked graph against onnxruntime on the original.

The end-to-end ids (32 tokens, both models, 100% / 25%, random orders) are in
tests/test_generate_past.py.
"""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from turnip.generate import DecoderSignature, GenerateError
from turnip.generate_bucket import ATTENTION_BIAS, PAST_LENGTH, attention_bias, bucket_of, default_buckets, mask_past

ort = pytest.importorskip("onnxruntime")

DEC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "models", "decoders")


def _session(model: onnx.ModelProto):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("model", ["gpt2", "llama"])
@pytest.mark.parametrize("past, capacity", [(11, 16), (16, 16), (1, 32)])
def test_masked_graph_on_a_padded_past_equals_the_original(model, past, capacity):
    path = os.path.join(DEC, f"{model}_past.onnx")
    sig = DecoderSignature.from_onnx(path)
    original = onnx.load(path)
    masked = mask_past(original, sig)
    onnx.checker.check_model(masked)
    names = [i.name for i in masked.graph.input]
    assert names[-2:] == [PAST_LENGTH, ATTENTION_BIAS]
    assert len(masked.graph.node) < len(original.graph.node)  # the shape-built mask is gone
    rng = np.random.default_rng(past)
    ids = rng.integers(0, 256, (2, 1))
    pasts = {s.past: rng.standard_normal((2, s.kv_heads, past, s.head_dim)).astype(np.float32) for s in sig.slots}
    # padding of any finite value: masked to weight exactly 0
    padded = {k: np.concatenate([v, rng.standard_normal((2, v.shape[1], capacity - past, v.shape[3])).astype(np.float32)], axis=2)
              for k, v in pasts.items()}
    want = _session(original).run(None, {"input_ids": ids, **pasts})
    got = _session(masked).run(None, {"input_ids": ids, **padded, PAST_LENGTH: np.array(past, dtype=np.int64),
                                      ATTENTION_BIAS: attention_bias(2, past, capacity, 1)})
    np.testing.assert_allclose(got[0], want[0], rtol=1e-4, atol=1e-4)
    for w, g in zip(want[1:], got[1:]):
        np.testing.assert_array_equal(g[:, :, :past], w[:, :, :past])  # the past passes through
        np.testing.assert_allclose(g[:, :, capacity], w[:, :, past], rtol=1e-5, atol=1e-5)  # the new position, at the end


def test_attention_bias_and_buckets():
    b = attention_bias(1, 2, 4, 2)
    assert b.shape == (1, 1, 2, 6)
    assert (b[0, 0] == 0).tolist() == [[True, True, False, False, True, False], [True, True, False, False, True, True]]
    assert np.isneginf(b[0, 0, 0, 2]) and np.isneginf(b[0, 0, 0, 5])
    # prompt 8, 32 new tokens: pasts 8 .. 38, each with room for the new position
    assert default_buckets(8, 38) == [16, 32, 64]
    assert default_buckets(3, 6) == [8]
    assert default_buckets(7, 7) == [8]
    assert default_buckets(8, 8) == [16]
    assert bucket_of(9, [16, 8, 64]) == 16 and bucket_of(8, [16, 8]) == 8
    with pytest.raises(GenerateError, match="beyond the largest bucket 16"):
        bucket_of(17, [8, 16])


def _tiny_decoder(with_softmax_mask: bool) -> onnx.ModelProto:
    """input_ids [1, 1] and one past [1, 1, P, 2]: scores q.k^T (+ a shape-built mask), softmax, logits; present = concat."""
    f = TensorProto.FLOAT
    nodes = [
        helper.make_node("Shape", ["past_key_values.0.key"], ["plen1"], start=2, end=3),
        helper.make_node("Squeeze", ["plen1"], ["plen"]),
        helper.make_node("Range", ["zero", "one", "one"], ["ar"]),
        helper.make_node("Add", ["ar", "plen"], ["pos"]),
        helper.make_node("Cast", ["pos"], ["posf"], to=f),
        helper.make_node("Cast", ["input_ids"], ["idf"], to=f),
        helper.make_node("Mul", ["idf", "posf"], ["q0"]),
        helper.make_node("Unsqueeze", ["q0", "ax"], ["q1"]),
        helper.make_node("Expand", ["q1", "qshape"], ["new"]),
        helper.make_node("Concat", ["past_key_values.0.key", "new"], ["present.0.key"], axis=2),
        helper.make_node("Transpose", ["present.0.key"], ["kt"], perm=[0, 1, 3, 2]),
        helper.make_node("MatMul", ["new", "kt"], ["scores"]),
    ]
    if with_softmax_mask:
        nodes += [
            helper.make_node("Shape", ["present.0.key"], ["kvlen"], start=2, end=3),
            helper.make_node("ConstantOfShape", ["kvlen"], ["mask1"], value=helper.make_tensor("v", f, [1], [0.0])),
            helper.make_node("Add", ["scores", "mask1"], ["masked"]),
            helper.make_node("Softmax", ["masked"], ["logits"], axis=-1),
        ]
    else:
        nodes.append(helper.make_node("Softmax", ["scores"], ["logits"], axis=-1))
    inits = [helper.make_tensor("zero", TensorProto.INT64, [], [0]), helper.make_tensor("one", TensorProto.INT64, [], [1]),
             helper.make_tensor("ax", TensorProto.INT64, [3], [0, 1, 3]), helper.make_tensor("qshape", TensorProto.INT64, [4], [1, 1, 1, 2])]
    g = helper.make_graph(nodes, "tiny", [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
        helper.make_tensor_value_info("past_key_values.0.key", f, ["batch", 1, "past", 2]),
    ], [helper.make_tensor_value_info("logits", f, None), helper.make_tensor_value_info("present.0.key", f, None)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])


def test_rewrite_refuses_a_graph_without_an_additive_mask():
    m = _tiny_decoder(with_softmax_mask=False)
    sig = DecoderSignature.from_io({"input_ids": ([1, 1], np.int64), "past_key_values.0.key": ([1, 1, "past", 2], np.float32)},
                                   ["logits", "present.0.key"])
    with pytest.raises(GenerateError, match="not fed by an Add of scores and a mask"):
        mask_past(m, sig)
    masked = mask_past(_tiny_decoder(with_softmax_mask=True), sig)  # the mask found, the positions fed
    ops = [n.op_type for n in masked.graph.node]
    assert "ConstantOfShape" not in ops and PAST_LENGTH in [x for n in masked.graph.node for x in n.input]
