"""The long-sequence variant of the synthetic LLaMA (in-graph causal mask, last-position logits) computes the same model."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from synthetic import llama_shaped_model, write_random_weights

ort = pytest.importorskip("onnxruntime")


def _logits(tmp_path, name: str, **kw) -> np.ndarray:
    d = tmp_path / name
    d.mkdir()
    m = llama_shaped_model(layers=1, hidden=32, heads=2, ffn=48, vocab=50, batch=1, seq=8, fp16=False, **kw)
    write_random_weights(m, str(d), seed=3)
    path = os.path.join(d, "m.onnx")
    onnx.save(m, path)
    ids = np.array([[1, 7, 3, 9, 2, 4, 8, 5]], np.int64)
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"input_ids": ids})[0]


def test_in_graph_mask_and_last_logits_match_the_constant_mask(tmp_path):
    ref = _logits(tmp_path, "const")
    masked = _logits(tmp_path, "graph", mask_in_graph=True)
    last = _logits(tmp_path, "last", mask_in_graph=True, last_logits=True)
    np.testing.assert_allclose(masked, ref, rtol=1e-5, atol=1e-6)
    assert last.shape == (1, 1, 50)
    np.testing.assert_allclose(last[:, 0], ref[:, -1], rtol=1e-5, atol=1e-6)


def test_in_graph_mask_adds_no_seq_by_seq_constant():
    m = llama_shaped_model(layers=1, hidden=32, heads=2, ffn=48, vocab=50, seq=4096, mask_in_graph=True, last_logits=True)
    assert max(int(np.prod(t.dims)) for t in m.graph.initializer if t.data_location != onnx.TensorProto.EXTERNAL) < 4096 * 4
    assert [n.op_type for n in m.graph.node[:4]] == ["Range", "Unsqueeze", "Greater", "Where"]
