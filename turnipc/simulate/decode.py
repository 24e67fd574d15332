"""Predicted prefill / decode tokens per second of a decoder-only transformer
whose weights and KV cache are offloaded to host memory (FlexGen-style).

WHY: a user wants to know, before buying a GPU, what batch size and what
throughput a model reaches at a given GPU memory. The model is analytic
(a roofline per layer), built from the model's SHAPE only -- no weights
are read, no ONNX graph is planned -- so it answers for OPT-30B or
LLaMA-2-70B in milliseconds.

What it models
--------------
* Every layer is the same: attention (q, o projections ``h x h``, k and v
  ``h x kv_heads*head_dim``), an MLP (two ``h x ffn`` matrices, three when
  gated as in LLaMA), embeddings and the LM head counted as weights too.
* A placement: a fraction ``w`` of the weights and a fraction ``c`` of the
  KV cache stay on the GPU; the rest lives in host memory. Offloaded weights
  are streamed over PCIe once per layer per forward pass (the whole batch
  uses them, as FlexGen's zig-zag block schedule does), into a double
  buffer of two layers. The offloaded part of the cache is read over PCIe
  for each decode step's attention and its new entries written back.
* Per layer: time = max(host-to-device bytes / h2d, device-to-host bytes /
  d2h, compute), i.e. transfers perfectly overlapped with compute (FlexGen's
  cost model assumes the same); compute = max(FLOPs / fp16 peak, bytes the
  layer touches in GPU memory / HBM bandwidth).
* The placement is searched (``w`` on a 1 % grid; ``c`` as large as the
  GPU memory left allows) and the batch is searched over a list; a batch is
  feasible when resident weights + resident cache + streaming buffers +
  activations fit the GPU budget and the offloaded part fits host memory.
  Prefill runs in micro-batches small enough for its activations to fit.

What it ignores (so the figures are upper bounds, usually optimistic)
---------------------------------------------------------------------
* Peak datasheet rates: real PCIe copies reach ~80-90 % and kernels
  60-90 % of peak; decode at small batch is launch- and latency-bound.
* Host-side costs: pinned-memory staging, CPU memcpy, Python overhead,
  the host memory bandwidth itself.
* FlexGen's CPU attention (computing attention on the CPU next to an
  offloaded cache instead of moving the cache), disk offload, weight /
  cache compression (4-bit), and ZeRO-Inference's / accelerate's actual
  schedules: it predicts what an ideal offloading runtime would do with
  this placement on this card, not what a given library does.
* Sampling, tokenizer, padding, and the last token's forward pass.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from .profiles import DeviceProfile, get_profile

GIB = 2**30

#: Batch sizes tried by :func:`best_batch` (FlexGen's OPT-30B T4 policy used 144 = 48 x 3).
BATCHES = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 144, 160, 192, 256, 320, 384, 448, 512)


@dataclass(frozen=True)
class DecoderShape:
    """The dimensions of a decoder-only transformer (weights never read)."""

    name: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    ffn: int
    vocab: int
    gated_mlp: bool  # LLaMA's SwiGLU: three h x ffn matrices, else two
    tied_embeddings: bool = False
    positions: int = 0  # learned position embeddings (OPT), 0 for rotary
    dtype_bytes: int = 2  # fp16

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def layer_params(self) -> int:
        h, kv = self.hidden, self.kv_heads * self.head_dim
        attn = 2 * h * h + 2 * h * kv
        mlp = (3 if self.gated_mlp else 2) * h * self.ffn
        return attn + mlp

    @property
    def embed_params(self) -> int:
        return self.vocab * self.hidden * (1 if self.tied_embeddings else 2) + self.positions * self.hidden

    @property
    def params(self) -> int:
        return self.layers * self.layer_params + self.embed_params

    @property
    def weight_bytes(self) -> int:
        return self.params * self.dtype_bytes

    @property
    def layer_weight_bytes(self) -> int:
        return self.layer_params * self.dtype_bytes

    @property
    def kv_bytes_per_token_layer(self) -> int:
        """Key + value of one token of one sequence in one layer."""
        return 2 * self.kv_heads * self.head_dim * self.dtype_bytes


#: Published architectures (the model cards' configs), built synthetically.
SHAPES: dict[str, DecoderShape] = {
    s.name: s
    for s in (
        # facebook/opt-30b config.json: 48 layers, d_model 7168, 56 heads, ffn 28672, vocab 50272, 2048 positions, tied head
        DecoderShape("opt-30b", 48, 7168, 56, 56, 28672, 50272, gated_mlp=False, tied_embeddings=True, positions=2048),
        # meta-llama/Llama-2-7b-hf: 32 layers, hidden 4096, 32 heads (no GQA), intermediate 11008, vocab 32000
        DecoderShape("llama-2-7b", 32, 4096, 32, 32, 11008, 32000, gated_mlp=True),
        # meta-llama/Llama-2-70b-hf: 80 layers, hidden 8192, 64 heads, 8 KV heads (GQA), intermediate 28672, vocab 32000
        DecoderShape("llama-2-70b", 80, 8192, 64, 8, 28672, 32000, gated_mlp=True),
    )
}


@dataclass(frozen=True)
class Placement:
    weights_on_gpu: float  # fraction of the weights resident on the GPU
    cache_on_gpu: float  # fraction of the KV cache resident on the GPU


@dataclass(frozen=True)
class DecodePrediction:
    shape: str
    device: str
    gpu_mem: int
    host_mem: int | None
    batch: int
    prompt_len: int
    new_tokens: int
    placement: Placement
    prefill_s: float
    decode_s: float
    prefill_micro_batch: int
    h2d_bytes_per_decode_step: float  # averaged over the decode steps
    bound: str  # what limits a decode step: "pcie", "compute" or "memory"

    @property
    def prefill_tokens_per_s(self) -> float:
        return self.batch * self.prompt_len / self.prefill_s

    @property
    def decode_tokens_per_s(self) -> float:
        """Tokens generated per second of decode steps (the first token comes from the prefill)."""
        steps = self.new_tokens - 1
        return self.batch * steps / self.decode_s if steps and self.decode_s > 0 else float("nan")

    @property
    def generation_tokens_per_s(self) -> float:
        """FlexGen's "generation throughput": batch x new tokens / (prefill + decode) time."""
        return self.batch * self.new_tokens / (self.prefill_s + self.decode_s)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(prefill_tokens_per_s=self.prefill_tokens_per_s, decode_tokens_per_s=self.decode_tokens_per_s,
                 generation_tokens_per_s=self.generation_tokens_per_s)
        return d


class InfeasibleError(ValueError):
    """No placement fits the GPU budget and host memory at this batch."""


def _decode_activation_bytes(s: DecoderShape, batch: int, max_len: int) -> int:
    # hidden states, the MLP intermediate, logits (fp32), attention scores over the cache; x2 for in + out
    b = s.dtype_bytes
    return 2 * batch * (4 * s.hidden * b + s.ffn * b * (2 if s.gated_mlp else 1) + s.vocab * 4 + s.heads * max_len * 4)


def _prefill_activation_bytes(s: DecoderShape, micro_batch: int, prompt: int) -> int:
    b = s.dtype_bytes
    per_seq = prompt * (4 * s.hidden * b + s.ffn * b * (2 if s.gated_mlp else 1)) + s.heads * prompt * prompt * b + s.vocab * 4
    return 2 * micro_batch * per_seq


def _compute_s(flops: float, hbm_bytes: float, p: DeviceProfile) -> float:
    return max(flops / p.peak("float16"), hbm_bytes / p.hbm_bw)


def _evaluate(s: DecoderShape, p: DeviceProfile, gpu_mem: int, host_mem: int | None, batch: int, prompt: int,
              new_tokens: int, w: float, offload_cache: bool = True) -> DecodePrediction | None:
    """The prediction for weight fraction ``w`` (cache fraction as large as fits), or None if it doesn't fit."""
    max_len = prompt + new_tokens
    kv_layer_max = batch * max_len * s.kv_bytes_per_token_layer
    kv_total = s.layers * kv_layer_max
    resident_w = w * s.weight_bytes
    w_buffers = 2 * s.layer_weight_bytes if w < 1.0 else 0
    # Activations: decode's, or prefill's (the whole batch's hidden states between
    # layers + one micro-batch's working set), whichever is larger; they never coexist.
    prefill_hidden = batch * prompt * s.hidden * s.dtype_bytes
    act = max(_decode_activation_bytes(s, batch, max_len), prefill_hidden + _prefill_activation_bytes(s, 1, prompt))
    free = gpu_mem - resident_w - w_buffers - act
    if free < 0:
        return None
    if free >= kv_total:
        c = 1.0
    elif not offload_cache:
        return None
    else:
        free -= 2 * kv_layer_max  # double buffer for one layer's offloaded cache
        if free < 0:
            return None
        c = free / kv_total
    if host_mem is not None and (1 - w) * s.weight_bytes + (1 - c) * kv_total > host_mem:
        return None
    micro = batch  # the largest micro-batch whose prefill working set fits the reserved activations
    while micro > 1 and prefill_hidden + _prefill_activation_bytes(s, micro, prompt) > act:
        micro = (micro + 1) // 2

    L, kvt = s.layers, s.kv_bytes_per_token_layer
    streamed_w_layer = (1 - w) * s.weight_bytes / L  # embeddings / head folded into the per-layer share

    # prefill: the whole batch's prompt through each layer; weights streamed once per layer
    flops = 2 * batch * prompt * s.params / L + 2 * batch * prompt * prompt * s.hidden  # causal QK^T + AV
    t_comp = _compute_s(flops, s.weight_bytes / L + batch * prompt * kvt, p)
    t_h2d = streamed_w_layer / p.h2d_bw
    t_d2h = (1 - c) * batch * prompt * kvt / p.d2h_bw
    prefill_s = L * (max(t_comp, t_h2d, t_d2h) + p.copy_latency_s)

    decode_s, h2d_total, bounds = 0.0, 0.0, {"pcie": 0.0, "compute": 0.0, "memory": 0.0}
    for step in range(1, new_tokens):
        ctx = prompt + step  # cache length the new token attends to
        kv_layer = batch * ctx * kvt
        h2d = streamed_w_layer + (1 - c) * kv_layer
        flops = 2 * batch * s.params / L + 4 * batch * ctx * s.hidden
        hbm = s.weight_bytes / L + kv_layer
        t_flops, t_hbm = flops / p.peak("float16"), hbm / p.hbm_bw
        t_h2d, t_d2h = h2d / p.h2d_bw, (1 - c) * batch * kvt / p.d2h_bw
        t = max(t_flops, t_hbm, t_h2d, t_d2h)
        decode_s += L * (t + 8 * p.launch_s)
        h2d_total += L * h2d
        key = "pcie" if t in (t_h2d, t_d2h) else ("compute" if t == t_flops else "memory")
        bounds[key] += t
    bound = max(bounds, key=lambda k: bounds[k]) if new_tokens > 1 else "compute"
    return DecodePrediction(
        s.name, p.name, gpu_mem, host_mem, batch, prompt, new_tokens, Placement(round(w, 4), round(c, 4)),
        prefill_s, decode_s, micro, h2d_total / max(1, new_tokens - 1), bound,
    )


def predict(shape: DecoderShape | str, device: DeviceProfile | str, gpu_mem: int, batch: int, prompt_len: int,
            new_tokens: int, host_mem: int | None = None, weights_on_gpu: float | None = None,
            offload_cache: bool = True) -> DecodePrediction:
    """Best placement at this batch (or the given weight fraction); InfeasibleError if nothing fits.

    ``offload_cache=False`` keeps the whole KV cache on the GPU (as ZeRO-Inference
    and accelerate do): only weights are streamed.
    """
    s = SHAPES[shape] if isinstance(shape, str) else shape
    p = get_profile(device)
    if batch < 1 or prompt_len < 1 or new_tokens < 1:
        raise ValueError(f"batch, prompt_len and new_tokens must be >= 1 (got {batch}, {prompt_len}, {new_tokens})")
    grid = [weights_on_gpu] if weights_on_gpu is not None else [i / 100 for i in range(101)]
    best = None
    for w in grid:
        r = _evaluate(s, p, gpu_mem, host_mem, batch, prompt_len, new_tokens, w, offload_cache)
        if r is not None and (best is None or r.generation_tokens_per_s > best.generation_tokens_per_s):
            best = r
    if best is None:
        raise InfeasibleError(f"{s.name} at batch {batch}{'' if offload_cache else ' (cache on GPU)'} does not fit {gpu_mem / GIB:.1f} GiB of GPU memory"
                              + (f" and {host_mem / GIB:.0f} GiB of host memory" if host_mem else ""))
    return best


def best_batch(shape: DecoderShape | str, device: DeviceProfile | str, gpu_mem: int, prompt_len: int, new_tokens: int,
               host_mem: int | None = None, batches: tuple[int, ...] = BATCHES, offload_cache: bool = True) -> DecodePrediction:
    """The batch (from ``batches``) with the highest generation throughput."""
    best = None
    for b in batches:
        try:
            r = predict(shape, device, gpu_mem, b, prompt_len, new_tokens, host_mem, offload_cache=offload_cache)
        except InfeasibleError:
            continue
        if best is None or r.generation_tokens_per_s > best.generation_tokens_per_s:
            best = r
    if best is None:
        raise InfeasibleError(f"{shape if isinstance(shape, str) else shape.name}: no batch in {list(batches)} fits")
    return best


def with_link_efficiency(device: DeviceProfile | str, efficiency: float) -> DeviceProfile:
    """The profile with PCIe rates scaled (e.g. 0.8 for typical pinned-memory copies)."""
    p = get_profile(device)
    return replace(p, h2d_bw=p.h2d_bw * efficiency, d2h_bw=p.d2h_bw * efficiency, name=f"{p.name}@{efficiency:g}pcie")


class DecodeCliError(ValueError):
    """A bad option of the decode simulator's command line (one line: the problem and the fix)."""


def decode_report(model: str, device: str, gpu_mem: str | None, host_mem: str | None, prompt: int, new_tokens: int,
                  batch: int | None, cache_on_gpu: bool) -> tuple["DecodePrediction", int, int | None]:
    """The prediction the command lines print: ``(prediction, GPU bytes, host bytes)``; DecodeCliError on bad options."""
    from ..units import parse_size
    from .profiles import MEMORY_BYTES, UnknownDeviceError

    if model not in SHAPES:
        raise DecodeCliError(f"unknown model shape {model!r}; use one of {', '.join(SHAPES)}")
    try:
        prof = get_profile(device)
    except UnknownDeviceError as e:
        raise DecodeCliError(str(e)) from None
    try:
        gpu = parse_size(gpu_mem) if gpu_mem else MEMORY_BYTES.get(prof.name)
        host = parse_size(host_mem) if host_mem else None
    except ValueError as e:
        raise DecodeCliError(str(e)) from None
    if gpu is None:
        raise DecodeCliError(f"profile {prof.name!r} has no card memory on record; pass --gpu-mem (e.g. 16G)")
    try:
        if batch:
            r = predict(model, prof, gpu, batch, prompt, new_tokens, host, offload_cache=not cache_on_gpu)
        else:
            r = best_batch(model, prof, gpu, prompt, new_tokens, host, offload_cache=not cache_on_gpu)
    except (InfeasibleError, ValueError) as e:
        raise DecodeCliError(f"{e}; give more --gpu-mem / --host-mem or a smaller --batch") from None
    return r, gpu, host


def decode_lines(r: "DecodePrediction", gpu: int, host: int | None, searched: bool) -> list[str]:
    """The human-readable report of one prediction."""
    p = r.placement
    return [
        f"{r.shape} on {r.device}, {gpu / GIB:.1f} GiB GPU" + (f", {host / GIB:.0f} GiB host" if host else "")
        + f", prompt {r.prompt_len}, {r.new_tokens} new tokens",
        f"  batch {r.batch}{' (best)' if searched else ''}: weights {p.weights_on_gpu:.0%} / cache {p.cache_on_gpu:.1%} on GPU",
        f"  prefill {r.prefill_s:.2f} s ({r.prefill_tokens_per_s:,.0f} tok/s), decode {r.decode_s:.2f} s "
        f"({r.decode_tokens_per_s:.2f} tok/s), generation {r.generation_tokens_per_s:.2f} tok/s",
        f"  {r.h2d_bytes_per_decode_step / 1e9:.2f} GB over PCIe per decode step; decode is {r.bound}-bound "
        "(peak rates: an optimistic bound, see the module docstring)",
    ]


def main(argv: list[str] | None = None) -> int:
    """``python -m turnipc.simulate.decode`` (also ``turnipc simulate --decode``): predicted tokens/s for a model shape, device, memory and batch."""
    import argparse
    import json
    import sys

    ap = argparse.ArgumentParser(prog="python -m turnipc.simulate.decode", description=main.__doc__)
    ap.add_argument("--model", default="opt-30b", help=f"model shape: {', '.join(SHAPES)}")
    ap.add_argument("--device", default="t4", help="device profile (t4, a6000, rtx4090, a100-80gb, h100, ...)")
    ap.add_argument("--gpu-mem", default=None, help="GPU memory for weights + cache + activations (e.g. 16G); default: the card's")
    ap.add_argument("--host-mem", default=None, help="host memory for what is offloaded (e.g. 208G); default: unlimited")
    ap.add_argument("--prompt", type=int, default=512, help="prompt length")
    ap.add_argument("--new-tokens", type=int, default=32, help="tokens generated per sequence")
    ap.add_argument("--batch", type=int, default=None, help="batch size; default: search for the best")
    ap.add_argument("--cache-on-gpu", action="store_true", help="never offload the KV cache (stream weights only)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    a = ap.parse_args(argv)
    try:
        r, gpu, host = decode_report(a.model, a.device, a.gpu_mem, a.host_mem, a.prompt, a.new_tokens, a.batch, a.cache_on_gpu)
    except DecodeCliError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if a.json:
        print(json.dumps(r.to_dict()))
        return 0
    print("\n".join(decode_lines(r, gpu, host, searched=not a.batch)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
