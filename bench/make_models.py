#!/usr/bin/env python3
"""Export transformers models (random weights, offline) that are NOT in the repository.

    python bench/make_models.py --size small --out build/models      # 2 layers, hidden 128, vocab 1000
    python bench/make_models.py --size real  --out build/models      # GPT-2 small, LLaMA-246M, BERT-base
    python bench/make_models.py --size real --only llama --variant dynamo18

Needs the ``bench`` extra (``pip install -e '.[cpu,bench]'``: torch 2.13.0 CPU
and transformers). The export code is the fixtures' own
(``tests/models/make_fixtures.py``): the same wrapper, exporter settings and
onnxruntime-vs-torch check, with other configs. Files are written as
``OUT/{size}/{model}_{variant}.onnx`` (+ ``.onnx.data`` for dynamo exports)
and skipped when present (``--force`` re-exports). Every model takes the
symbolic dims ``batch`` and ``seq`` (bind them with ``--dim``).

Real sizes (fp32): GPT-2 small (12 layers, hidden 768, vocab 50,257, up to
1,024 positions), a LLaMA with 16 layers, hidden 1,024, intermediate 2,816,
16 heads / 4 KV heads, vocab 32,000 (246M parameters), and BERT-base. Each
takes 1-3 minutes to export on 2 cores; keep them out of the repository.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = os.path.join(os.path.dirname(HERE), "tests", "models")
sys.path.insert(0, MODELS)

import fixtures as FX  # noqa: E402
import make_fixtures as MF  # noqa: E402

#: Config overrides per size; keys go to the transformers config class as-is.
SIZES: dict[str, dict[str, dict]] = {
    "small": {
        "gpt2": dict(n_layer=2, n_embd=128, n_head=4, n_inner=512, vocab_size=1000, n_positions=128),
        "llama": dict(num_hidden_layers=2, hidden_size=128, num_attention_heads=4, num_key_value_heads=2,
                      intermediate_size=512, vocab_size=1000, max_position_embeddings=128),
        "bert": dict(num_hidden_layers=2, hidden_size=128, num_attention_heads=4, intermediate_size=512,
                     vocab_size=1000, max_position_embeddings=128),
    },
    "real": {
        "gpt2": dict(n_layer=12, n_embd=768, n_head=12, n_inner=3072, vocab_size=50257, n_positions=1024),
        "llama": dict(num_hidden_layers=16, hidden_size=1024, num_attention_heads=16, num_key_value_heads=4,
                      intermediate_size=2816, vocab_size=32000, max_position_embeddings=4096),
        "bert": dict(num_hidden_layers=12, hidden_size=768, num_attention_heads=12, intermediate_size=3072,
                     vocab_size=30522, max_position_embeddings=512),
    },
}

#: Which exports each size makes by default.
DEFAULT_VARIANTS = {"small": ("dynamo18", "dynamo23", "legacy17"), "real": ("dynamo18",)}


def _max_seq(cfg: dict) -> int:
    for key in ("n_positions", "max_position_embeddings"):
        if key in cfg:
            return int(cfg[key])
    raise KeyError("no position limit in config")


def fixture_for(size: str, model: str, variant: str, out: str) -> FX.Fixture:
    """A Fixture like the repository's, pointing at OUT/size/ with the size's config."""
    base = FX.get(f"{model}_{variant}")
    path = os.path.join(out, size, f"{model}_{variant}.onnx")
    return dataclasses.replace(
        base, name=f"{model}_{variant}", path=path,
        external_data=path + ".data" if base.exporter == "dynamo" else None,
        inputs=tuple(dataclasses.replace(i, high=SIZES[size][model]["vocab_size"]) if i.kind == "token_ids" else i
                     for i in base.inputs),
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=sorted(SIZES), required=True)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(HERE), "build", "models"))
    ap.add_argument("--only", action="append", default=[], help="gpt2, llama or bert; repeatable")
    ap.add_argument("--variant", action="append", default=[], help="dynamo18, dynamo23 or legacy17; repeatable")
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args(argv)

    models = args.only or list(SIZES[args.size])
    variants = args.variant or list(DEFAULT_VARIANTS[args.size])
    os.makedirs(os.path.join(args.out, args.size), exist_ok=True)
    failed = []
    for model in models:
        saved = copy.deepcopy(FX.HF_CONFIGS[model])
        cfg = FX.HF_CONFIGS[model]
        cfg["config"].update(SIZES[args.size][model])
        cfg["vocab_size"] = cfg["config"]["vocab_size"]
        cfg["max_seq"] = _max_seq(cfg["config"])
        try:
            for variant in variants:
                fx = fixture_for(args.size, model, variant, args.out)
                if os.path.exists(fx.path) and not args.force:
                    print(f"{fx.path}: present, skipped")
                    continue
                try:
                    MF.make_hf(fx)
                except Exception as e:  # report and go on with the next export
                    failed.append(fx.path)
                    print(f"!! {fx.path}: {e}")
        finally:
            FX.HF_CONFIGS[model] = saved
    if failed:
        print("FAILED:", failed)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
