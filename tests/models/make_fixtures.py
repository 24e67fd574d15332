#!/usr/bin/env python3
"""Regenerate the ONNX fixtures in tests/models/.

    python tests/models/make_fixtures.py               # everything
    python tests/models/make_fixtures.py --only demo_mlp   # no torch needed
    python tests/models/make_fixtures.py --only gpt2       # all gpt2_* variants
    python tests/models/make_fixtures.py --only llama_dynamo23

The transformer fixtures need torch (CPU wheel, 2.13.0) and transformers in the
running interpreter; see README.md. Everything is seeded (torch.manual_seed(0),
numpy seeds) so reruns produce the same weights.

Each exported model is checked with onnxruntime (CPU) at batch=2, seq=16 against
torch (max abs diff <= 1e-4), and again at batch=3, seq=7 to make sure the
symbolic dims really are dynamic. Op-type counts are printed per model.
"""

from __future__ import annotations

import argparse
import collections
import functools
import os
import sys
import time
import warnings

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import fixtures as FX  # noqa: E402

ATOL = 1e-4


# --------------------------------------------------------------------------- demo

def build_demo_mlp(path: str | None = None, seed: int = 0):
    """6-layer fp32 MLP, x[batch,256] -> y[batch,256], weights inside the .onnx.

    Needs only numpy + onnx. Returns the ModelProto (and saves it if path given).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    h, n = FX.DEMO_HIDDEN, FX.DEMO_LAYERS
    inits, nodes = [], []
    cur = "x"
    for i in range(n):
        w = (rng.standard_normal((h, h)) * np.sqrt(2.0 / h)).astype(np.float32)
        b = (rng.standard_normal((h,)) * 0.01).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"fc{i}.weight"),
                  numpy_helper.from_array(b, f"fc{i}.bias")]
        last = i == n - 1
        mm, add = f"fc{i}.mm", ("y" if last else f"fc{i}.out")
        nodes.append(helper.make_node("MatMul", [cur, f"fc{i}.weight"], [mm], name=f"fc{i}/MatMul"))
        nodes.append(helper.make_node("Add", [mm, f"fc{i}.bias"], [add], name=f"fc{i}/Add"))
        if not last:
            nodes.append(helper.make_node("Relu", [add], [f"act{i}"], name=f"act{i}/Relu"))
            cur = f"act{i}"
    graph = helper.make_graph(
        nodes, "demo_mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", h])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", h])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", FX.DEMO_OPSET)],
                              producer_name="turnip-make_fixtures")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    if path:
        onnx.save(model, path)
    return model


def demo_reference(model, x):
    from onnx import numpy_helper
    w = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for i in range(FX.DEMO_LAYERS):
        x = x @ w[f"fc{i}.weight"] + w[f"fc{i}.bias"]
        if i != FX.DEMO_LAYERS - 1:
            x = np.maximum(x, 0)
    return x


def make_demo():
    import onnxruntime as ort
    fx = FX.get("demo_mlp")
    model = build_demo_mlp(fx.path)
    sess = ort.InferenceSession(fx.path, providers=["CPUExecutionProvider"])
    for dims in (fx.dims, {"batch": 3}):
        feeds = FX.make_inputs(fx, seed=0, dims=dims)
        got = sess.run(None, feeds)[0]
        ref = demo_reference(model, feeds["x"])
        err = float(np.abs(got - ref).max())
        assert err <= ATOL, f"demo_mlp mismatch {err}"
    nbytes = sum(t.ByteSize() for t in model.graph.initializer)
    print(f"demo_mlp: ok, {nbytes/1e6:.2f} MB of weights, max err {err:.2e}")
    return report(fx, "onnx.helper")


# --------------------------------------------------------------------------- HF



# Per-(model, exporter, opset) export workarounds; see README.md "Exporter quirks".
#  ones_mask:      causal LMs get attention_mask=ones_like(input_ids) built inside the
#                  wrapper. Without a mask, transformers' packed-sequence detection
#                  calls torch.diff, which the TorchScript exporter can't export.
#  expand_pos:     position_ids=arange(seq) expanded to [batch, seq] inside the wrapper.
#                  Without it the dynamo exporter's opset-23 RotaryEmbedding gets
#                  cos/sin caches of shape [1, seq, d], which onnxruntime rejects
#                  (the spec wants [batch, seq, d] when position_ids is absent).
def workarounds(model_name: str, exporter: str, opset: int) -> set:
    w = set()
    causal = FX.HF_CONFIGS[model_name]["inputs"] == ["input_ids"]
    if causal and exporter == "torchscript":
        w.add("ones_mask")
    if model_name == "llama" and exporter == "dynamo" and opset >= 23:
        w.add("expand_pos")
    return w


def _build_hf(model_name: str, attn: str, fixes=frozenset()):
    import torch
    import transformers

    cfg = FX.HF_CONFIGS[model_name]
    config = getattr(transformers, cfg["config_class"])(**cfg["config"])
    assert config.vocab_size == cfg["vocab_size"], (model_name, config.vocab_size, cfg["vocab_size"])
    config._attn_implementation = attn
    torch.manual_seed(0)
    hf = getattr(transformers, cfg["model_class"])(config)
    hf.eval()
    # Norm weights/biases start as exact ones/zeros; perturb every constant-filled
    # parameter so an importer that mixes up weights can't pass by accident.
    with torch.no_grad():
        for _, p in sorted(hf.named_parameters()):
            flat = p.reshape(-1)
            if flat.numel() > 1 and bool((flat == flat[0]).all()):
                p.add_(torch.randn_like(p) * 0.1)
    out_key, in_names = cfg["output"], cfg["inputs"]
    ones_mask, expand_pos = "ones_mask" in fixes, "expand_pos" in fixes

    class Wrap(torch.nn.Module):
        """Returns a single tensor (logits / last_hidden_state), no KV cache."""

        def __init__(self, m):
            super().__init__()
            self.m = m

        if in_names == ["input_ids"]:
            def forward(self, input_ids):
                kw = {}
                if ones_mask:
                    kw["attention_mask"] = torch.ones_like(input_ids)
                if expand_pos:
                    b, s = input_ids.shape
                    kw["position_ids"] = torch.arange(s, dtype=torch.int64).unsqueeze(0).expand(b, s)
                return getattr(self.m(input_ids=input_ids, use_cache=False, **kw), out_key)
        else:
            def forward(self, input_ids, attention_mask, token_type_ids):
                o = self.m(input_ids=input_ids, attention_mask=attention_mask,
                           token_type_ids=token_type_ids, use_cache=False)
                return getattr(o, out_key)

    return Wrap(hf).eval(), cfg


def _torch_inputs(fx, dims, seed=0, pad=False):
    import torch
    feeds = FX.make_inputs(fx, seed=seed, dims=dims)
    if pad and "attention_mask" in feeds:  # exercise the mask: pad the tail of row 0
        feeds["attention_mask"][0, -3:] = 0
    return feeds, tuple(torch.from_numpy(feeds[i.name]) for i in fx.inputs)


def _export(wrapped, fx, cfg, exporter, opset, path):
    import torch
    names = [i.name for i in fx.inputs]
    _, example = _torch_inputs(fx, FX.DEFAULT_DIMS)
    out_name = cfg["output"]
    for p in (path, path + ".data"):
        if os.path.exists(p):
            os.remove(p)
    if exporter == "dynamo":
        B = torch.export.Dim("batch", min=1, max=64)
        S = torch.export.Dim("seq", min=1, max=cfg["max_seq"])
        dyn = {n: {0: B, 1: S} for n in names}
        torch.onnx.export(
            wrapped, example, path, dynamo=True, opset_version=opset,
            input_names=names, output_names=[out_name], dynamic_shapes=dyn,
            external_data=True, optimize=True, verbose=False,
        )
    else:
        dyn = {n: {0: "batch", 1: "seq"} for n in names}
        dyn[out_name] = {0: "batch", 1: "seq"}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                wrapped, example, path, dynamo=False, opset_version=opset,
                input_names=names, output_names=[out_name], dynamic_axes=dyn,
                do_constant_folding=True,
            )


def _fix_external_data_location(path):
    """Make sure every external tensor points at the bare relative file name."""
    import onnx
    m = onnx.load(path, load_external_data=False)
    want = os.path.basename(path) + ".data"
    bad = []
    for t in m.graph.initializer:
        for kv in t.external_data:
            if kv.key == "location" and kv.value != want:
                bad.append(kv.value)
                kv.value = want
    if bad:
        print(f"  fixed external data location(s) {set(bad)} -> {want}")
        onnx.save(m, path)
    return m


def _verify(fx, wrapped, path):
    import onnxruntime as ort
    import torch
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    errs = []
    for dims, pad in ((FX.DEFAULT_DIMS, False), ({"batch": 3, "seq": 7}, True)):
        feeds, targs = _torch_inputs(fx, dims, seed=1, pad=pad)
        with torch.no_grad():
            ref = wrapped(*targs).numpy()
        got = sess.run(None, feeds)[0]
        assert got.shape == ref.shape, (got.shape, ref.shape)
        err = float(np.abs(got - ref).max())
        errs.append(err)
        if not err <= ATOL:
            raise AssertionError(f"{fx.name}: ORT vs torch max abs diff {err} at {dims}")
    return errs


def make_hf(fx):
    model_name = fx.tags[0]
    exporter, opset = fx.exporter, fx.opset
    fixes = workarounds(model_name, exporter, opset)
    last_exc = None
    for attn in ("sdpa", "eager"):
        try:
            wrapped, cfg = _build_hf(model_name, attn, frozenset(fixes))
            t0 = time.time()
            _export(wrapped, fx, cfg, exporter, opset, fx.path)
            if exporter == "dynamo":
                _fix_external_data_location(fx.path)
            errs = _verify(fx, wrapped, fx.path)
            print(f"{fx.name}: ok attn={attn} export {time.time()-t0:.1f}s, "
                  f"max err b2s16={errs[0]:.1e} b3s7(pad)={errs[1]:.1e}")
            how = f"{exporter}, attn={attn}" + (f", {'+'.join(sorted(fixes))}" if fixes else "")
            return report(fx, how)
        except Exception as e:  # try the next attention implementation
            last_exc = e
            print(f"{fx.name}: attn={attn} FAILED: {type(e).__name__}: {str(e)[:300]}")
    raise RuntimeError(f"{fx.name}: all attention implementations failed") from last_exc


# --------------------------------------------------------------------------- report

def report(fx, how):
    import onnx
    m = onnx.load(fx.path, load_external_data=False)
    ops = collections.Counter(
        (n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}::{n.op_type}")
        for n in m.graph.node)
    opsets = {o.domain or "ai.onnx": o.version for o in m.opset_import}
    inits = {t.name for t in m.graph.initializer}
    ins = []
    for i in m.graph.input:
        if i.name in inits:
            continue
        dims = [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
        ins.append(f"{i.name}:{onnx.helper.tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type).name}{dims}")
    size = os.path.getsize(fx.path)
    data = fx.path + ".data"
    dsize = os.path.getsize(data) if os.path.exists(data) else 0
    print(f"  opsets={opsets} ir={m.ir_version} nodes={len(m.graph.node)} "
          f"size={size}+{dsize} inputs={ins}")
    print(f"  ops: {dict(sorted(ops.items()))}")
    return dict(name=fx.name, how=how, opset=opsets.get("ai.onnx"), size=size, data=dsize,
                ops=ops, inputs=ins, nodes=len(m.graph.node),
                external=os.path.basename(data) if dsize else "")


def markdown_table(rows):
    lines = ["| file | exporter | opset | size (.onnx + .data) | nodes | inputs | op types |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        size = f"{r['size']/1024:.0f} KiB" + (f" + {r['data']/1024:.0f} KiB" if r["data"] else "")
        ops = ", ".join(f"{k}×{v}" for k, v in sorted(r["ops"].items()))
        lines.append(f"| {r['name']}.onnx | {r['how']} | {r['opset']} | {size} | {r['nodes']} | "
                     f"{'<br>'.join(r['inputs'])} | {ops} |")
    return "\n".join(lines)


def make_each(jobs):
    """Run each ``(name, make)`` in turn: a failure is reported and the next export still runs.

    Returns the results of those that worked and the exit code (1 when any
    failed). Shared with bench/make_models.py, which exports other sizes.
    """
    rows, failed = [], []
    for name, make in jobs:
        try:
            rows.append(make())
        except Exception as e:  # report and go on with the next export
            failed.append(name)
            print(f"!! {name}: {e}")
    if failed:
        print("FAILED:", failed)
    return rows, 1 if failed else 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", action="append", default=[],
                    help="fixture name (gpt2_dynamo18), model (gpt2), variant (dynamo23) "
                         "or 'demo_mlp'; repeatable")
    ap.add_argument("--table", action="store_true", help="print a markdown table at the end")
    args = ap.parse_args(argv)

    todo = [f for f in FX.FIXTURES if f.kind in ("hf", "demo")]
    if args.only:
        todo = [f for f in todo if f.name in args.only or any(t in args.only for t in f.tags)]
        if not todo:
            ap.error(f"--only {args.only}: no such fixture; known: {FX.names('hf') + FX.names('demo')}")

    rows, rc = make_each((fx.name, make_demo if fx.kind == "demo" else functools.partial(make_hf, fx)) for fx in todo)
    if args.table:
        print(markdown_table(rows))
    union = collections.Counter()
    for r in rows:
        union.update(r["ops"])
    print("union of op types:", sorted(union))
    return rc


if __name__ == "__main__":
    sys.exit(main())
