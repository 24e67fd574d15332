"""Test fixtures (ONNX models) as plain data.

Importable without torch: needs only numpy (and onnx, only to locate and read
the ``light_*`` models that ship inside the onnx wheel).

    from tests.models import fixtures          # or: import fixtures
    fx = fixtures.get("gpt2_dynamo23")
    feeds = fixtures.make_inputs(fx, seed=0)     # {"input_ids": int64[2, 16]}
    # run fx.path with feeds, binding fx.dims ({"batch": 2, "seq": 16})

Kinds of fixture:

* ``hf``    tiny HuggingFace transformers (random weights), exported by
            tests/models/make_fixtures.py with the dynamo exporter (opset 18 and
            23, weights in an external ``<file>.onnx.data``) and the legacy
            TorchScript exporter (opset 17, weights inside the .onnx). Symbolic
            dims ``batch`` and ``seq`` on every input.
* ``demo``  a 6-layer fp32 MLP built with onnx.helper (symbolic ``batch``).
* ``light`` the light CNNs from onnx/backend/test/data/light (static shapes,
            opset 9, weights made at run time by ConstantOfShape). Input is
            ``np.arange(n).reshape(shape) / n``; the expected output is the
            ``light_*_output_0.pb`` beside the model.

The model configs (``HF_CONFIGS``) are the single source of truth:
make_fixtures.py imports them from here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

MODELS_DIR = os.path.dirname(os.path.abspath(__file__))

# Default values bound to the symbolic dims of the transformer fixtures.
DEFAULT_DIMS = {"batch": 2, "seq": 16}

# Tiny configs (random weights, torch.manual_seed(0)). Keys are passed as-is
# to the transformers config class named in "config_class". 6 layers so that no
# single op (lm_head MatMul, embedding Gather, MLP up-projection) needs more than
# ~10% of the model's no-offload peak at batch=2, seq=16: every fixture must plan
# at a 25% GPU budget. "vocab_size" must match config["vocab_size"] (make_inputs
# draws token ids below it); "max_seq" is the dynamo exporter's upper bound for
# the seq dim (= max positions).
HF_CONFIGS: Dict[str, dict] = {
    "gpt2": {
        "config_class": "GPT2Config",
        "model_class": "GPT2LMHeadModel",
        "output": "logits",
        "inputs": ["input_ids"],
        "config": dict(
            n_layer=6, n_embd=64, n_head=4, n_inner=256, vocab_size=256,
            n_positions=64, bos_token_id=0, eos_token_id=0, use_cache=False,
        ),
        "vocab_size": 256,
        "max_seq": 64,
    },
    "llama": {
        "config_class": "LlamaConfig",
        "model_class": "LlamaForCausalLM",
        "output": "logits",
        "inputs": ["input_ids"],
        "config": dict(
            num_hidden_layers=6, hidden_size=64, num_attention_heads=4,
            num_key_value_heads=2, intermediate_size=256, vocab_size=256,
            max_position_embeddings=64, bos_token_id=0, eos_token_id=0,
            pad_token_id=None, use_cache=False,
        ),
        "vocab_size": 256,
        "max_seq": 64,
    },
    "bert": {
        "config_class": "BertConfig",
        "model_class": "BertModel",
        "output": "last_hidden_state",
        "inputs": ["input_ids", "attention_mask", "token_type_ids"],
        "config": dict(
            num_hidden_layers=6, hidden_size=64, num_attention_heads=4,
            intermediate_size=256, vocab_size=256, max_position_embeddings=64,
            type_vocab_size=2, pad_token_id=0, hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0, use_cache=False,
        ),
        "vocab_size": 256,
        "max_seq": 64,
    },
}

# (suffix, exporter, opset). make_fixtures.py writes {model}_{suffix}.onnx.
HF_VARIANTS: List[Tuple[str, str, int]] = [
    ("dynamo18", "dynamo", 18),
    ("dynamo23", "dynamo", 23),
    ("legacy17", "torchscript", 17),
]


@dataclass(frozen=True)
class InputSpec:
    name: str
    dtype: str                      # numpy dtype name, e.g. "int64", "float32"
    shape: Tuple                    # ints and/or dim names (str)
    kind: str = "random"            # "token_ids" | "ones" | "zeros" | "random" | "arange"
    high: Optional[int] = None      # exclusive upper bound for token_ids


@dataclass(frozen=True)
class Fixture:
    name: str
    path: str                       # absolute path of the .onnx
    kind: str                       # "hf" | "demo" | "light"
    dims: Dict[str, int]            # values to bind to symbolic dims
    inputs: Tuple[InputSpec, ...]
    outputs: Tuple[str, ...]
    exporter: Optional[str] = None  # "dynamo" | "torchscript" | "onnx.helper" | None
    opset: Optional[int] = None
    external_data: Optional[str] = None   # absolute path of the .onnx.data, if any
    expected_output: Optional[str] = None  # .pb with the expected output 0 (light)
    notes: str = ""
    tags: Tuple[str, ...] = field(default_factory=tuple)

    def exists(self) -> bool:
        return os.path.exists(self.path)

    def input_shapes(self, dims: Optional[Dict[str, int]] = None) -> Dict[str, Tuple[int, ...]]:
        d = dict(self.dims)
        if dims:
            d.update(dims)
        return {i.name: tuple(d[s] if isinstance(s, str) else s for s in i.shape)
                for i in self.inputs}


def _hf_fixtures() -> List[Fixture]:
    out = []
    for model, cfg in HF_CONFIGS.items():
        for suffix, exporter, opset in HF_VARIANTS:
            name = f"{model}_{suffix}"
            path = os.path.join(MODELS_DIR, name + ".onnx")
            ext = path + ".data" if exporter == "dynamo" else None
            specs = []
            for inp in cfg["inputs"]:
                if inp == "input_ids":
                    specs.append(InputSpec(inp, "int64", ("batch", "seq"), "token_ids", cfg["vocab_size"]))
                elif inp == "attention_mask":
                    specs.append(InputSpec(inp, "int64", ("batch", "seq"), "ones"))
                elif inp == "token_type_ids":
                    specs.append(InputSpec(inp, "int64", ("batch", "seq"), "zeros"))
                else:  # pragma: no cover
                    raise ValueError(inp)
            out.append(Fixture(
                name=name, path=path, kind="hf", dims=dict(DEFAULT_DIMS),
                inputs=tuple(specs), outputs=(cfg["output"],), exporter=exporter,
                opset=opset, external_data=ext, tags=(model, suffix, exporter),
            ))
    return out


def _demo_fixtures() -> List[Fixture]:
    return [Fixture(
        name="demo_mlp", path=os.path.join(MODELS_DIR, "demo_mlp.onnx"), kind="demo",
        dims={"batch": 8},
        inputs=(InputSpec("x", "float32", ("batch", DEMO_HIDDEN), "random"),),
        outputs=("y",), exporter="onnx.helper", opset=DEMO_OPSET, tags=("demo",),
    )]


# demo_mlp shape: DEMO_LAYERS x (MatMul[256x256] + Add[bias] + Relu), last without Relu.
DEMO_LAYERS = 6
DEMO_HIDDEN = 256
DEMO_OPSET = 18


def light_dir() -> Optional[str]:
    try:
        import onnx  # noqa: F401  (light models ship inside the onnx wheel)
    except ImportError:  # pragma: no cover
        return None
    d = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")
    return d if os.path.isdir(d) else None


# name -> (input name, output name, output shape); all inputs are float32 [1,3,224,224].
LIGHT_MODELS = {
    "light_bvlc_alexnet": ("data_0", "prob_1", (1, 1000)),
    "light_densenet121": ("data_0", "fc6_1", (1, 1000, 1, 1)),
    "light_inception_v1": ("data_0", "prob_1", (1, 1000)),
    "light_inception_v2": ("data_0", "prob_1", (1, 1000)),
    "light_resnet50": ("gpu_0/data_0", "gpu_0/softmax_1", (1, 1000)),
    "light_shufflenet": ("gpu_0/data_0", "gpu_0/softmax_1", (1, 1000)),
    "light_squeezenet": ("data_0", "softmaxout_1", (1, 1000, 1, 1)),
    "light_vgg19": ("data_0", "prob_1", (1, 1000)),
    "light_zfnet512": ("gpu_0/data_0", "gpu_0/softmax_1", (1, 1000)),
}


def _light_fixtures() -> List[Fixture]:
    d = light_dir()
    if d is None:  # pragma: no cover
        return []
    out = []
    for name, (inp, outp, _shape) in LIGHT_MODELS.items():
        path = os.path.join(d, name + ".onnx")
        if not os.path.exists(path):  # pragma: no cover
            continue
        out.append(Fixture(
            name=name, path=path, kind="light", dims={},
            inputs=(InputSpec(inp, "float32", (1, 3, 224, 224), "arange"),),
            outputs=(outp,), opset=9,
            expected_output=os.path.join(d, name + "_output_0.pb"),
            notes="IR 3: every initializer is also listed in graph.input (only the "
                  "input named here is a real input); weights are ConstantOfShape "
                  "outputs; light_resnet50/zfnet512 carry one unused initializer",
            tags=("light", "cnn", "static"),
        ))
    return out


FIXTURES: List[Fixture] = _hf_fixtures() + _demo_fixtures() + _light_fixtures()
BY_NAME: Dict[str, Fixture] = {f.name: f for f in FIXTURES}


def get(name: str) -> Fixture:
    return BY_NAME[name]


def names(kind: Optional[str] = None) -> List[str]:
    return [f.name for f in FIXTURES if kind is None or f.kind == kind]


def available(kind: Optional[str] = None) -> List[Fixture]:
    """Fixtures whose .onnx is present on disk."""
    return [f for f in FIXTURES if (kind is None or f.kind == kind) and f.exists()]


def make_inputs(fixture, seed: int = 0, dims: Optional[Dict[str, int]] = None) -> Dict[str, np.ndarray]:
    """Valid random NumPy inputs for ``fixture`` (a Fixture or its name).

    ``dims`` overrides the fixture's default symbolic-dim values.
    token ids are uniform in [0, vocab); attention_mask is all ones;
    token_type_ids all zeros; float inputs are standard normal (float32);
    light models get the deterministic ``np.arange(n).reshape(shape) / n``.
    """
    if isinstance(fixture, str):
        fixture = get(fixture)
    rng = np.random.default_rng(seed)
    shapes = fixture.input_shapes(dims)
    feeds = {}
    for spec in fixture.inputs:
        shape = shapes[spec.name]
        dt = np.dtype(spec.dtype)
        if spec.kind == "token_ids":
            a = rng.integers(0, spec.high, size=shape, dtype=np.int64).astype(dt)
        elif spec.kind == "ones":
            a = np.ones(shape, dtype=dt)
        elif spec.kind == "zeros":
            a = np.zeros(shape, dtype=dt)
        elif spec.kind == "arange":
            n = int(np.prod(shape))
            a = (np.arange(n).reshape(shape) / n).astype(dt)
        else:
            a = rng.standard_normal(size=shape).astype(dt)
        feeds[spec.name] = a
    return feeds


def expected_outputs(fixture) -> Optional[Dict[str, np.ndarray]]:
    """Reference outputs shipped with the fixture (light models only), else None."""
    if isinstance(fixture, str):
        fixture = get(fixture)
    if not fixture.expected_output:
        return None
    import onnx
    from onnx import numpy_helper
    t = onnx.TensorProto()
    with open(fixture.expected_output, "rb") as fh:
        t.ParseFromString(fh.read())
    return {fixture.outputs[0]: numpy_helper.to_array(t)}


if __name__ == "__main__":  # quick listing
    for f in FIXTURES:
        print(f"{f.name:24s} {f.kind:6s} {'ok' if f.exists() else 'MISSING':8s} "
              f"{f.exporter or '-':12s} opset={f.opset} dims={f.dims} "
              f"inputs={[(i.name, i.dtype, i.shape) for i in f.inputs]}")
