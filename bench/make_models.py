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
import functools
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = os.path.join(os.path.dirname(HERE), "tests", "models")
sys.path.insert(0, MODELS)

import fixtures as FX  # noqa: E402
import make_fixtures as MF  # noqa: E402


def _gpt2(layers: int, hidden: int, heads: int, ffn: int, vocab: int, positions: int) -> dict:
    return dict(n_layer=layers, n_embd=hidden, n_head=heads, n_inner=ffn, vocab_size=vocab, n_positions=positions)


def _llama(layers: int, hidden: int, heads: int, kv_heads: int, ffn: int, vocab: int, positions: int) -> dict:
    return dict(num_hidden_layers=layers, hidden_size=hidden, num_attention_heads=heads, num_key_value_heads=kv_heads,
                intermediate_size=ffn, vocab_size=vocab, max_position_embeddings=positions)


def _bert(layers: int, hidden: int, heads: int, ffn: int, vocab: int, positions: int) -> dict:
    return dict(num_hidden_layers=layers, hidden_size=hidden, num_attention_heads=heads, intermediate_size=ffn,
                vocab_size=vocab, max_position_embeddings=positions)


#: Config overrides per size, in each transformers config class's own key names
#: (the helpers above name them once per family).
SIZES: dict[str, dict[str, dict]] = {
    "small": {
        "gpt2": _gpt2(layers=2, hidden=128, heads=4, ffn=512, vocab=1000, positions=128),
        "llama": _llama(layers=2, hidden=128, heads=4, kv_heads=2, ffn=512, vocab=1000, positions=128),
        "bert": _bert(layers=2, hidden=128, heads=4, ffn=512, vocab=1000, positions=128),
    },
    "real": {
        "gpt2": _gpt2(layers=12, hidden=768, heads=12, ffn=3072, vocab=50257, positions=1024),
        "llama": _llama(layers=16, hidden=1024, heads=16, kv_heads=4, ffn=2816, vocab=32000, positions=4096),
        "bert": _bert(layers=12, hidden=768, heads=12, ffn=3072, vocab=30522, positions=512),
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


def export(size: str, model: str, fx: FX.Fixture) -> dict:
    """The fixtures' export (``make_fixtures.make_hf``) with this size's config in place of the fixture's."""
    saved = copy.deepcopy(FX.HF_CONFIGS[model])
    cfg = FX.HF_CONFIGS[model]
    cfg["config"].update(SIZES[size][model])
    cfg["vocab_size"] = cfg["config"]["vocab_size"]
    cfg["max_seq"] = _max_seq(cfg["config"])
    try:
        return MF.make_hf(fx)
    finally:
        FX.HF_CONFIGS[model] = saved


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
    jobs = []
    for model in models:
        for variant in variants:
            fx = fixture_for(args.size, model, variant, args.out)
            if os.path.exists(fx.path) and not args.force:
                print(f"{fx.path}: present, skipped")
                continue
            jobs.append((fx.path, functools.partial(export, args.size, model, fx)))
    return MF.make_each(jobs)[1]

if __name__ == "__main__":
    sys.exit(main())
