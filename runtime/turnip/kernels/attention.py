"""ONNX Attention (opset 23+; nonpad_kv_seqlen from 24, sliding windows from 25) and RotaryEmbedding.

Semantics follow the ONNX spec and reference implementation
(onnx/reference/ops/op_attention.py): 3-D or 4-D Q/K/V, boolean or additive
masks (padded with "masked" up to the total key length), bottom-right aligned
causal masking, KV cache (past_key/past_value -> present_key/present_value),
grouped-query attention (KV heads repeated interleaved), softcap, and the
fully-masked-row guard (such a row yields zeros). Everything is computed in
float32 (float64 for float64 inputs) and cast at the end.
"""

from __future__ import annotations

import math

import numpy as np

from . import has_output, opt_input, register
from ._common import compute_dtype, up, write
from .matmul import matmul


def _to_heads(xp, x, heads):
    b, s, hidden = x.shape
    return xp.transpose(x.reshape(b, s, heads, hidden // heads), (0, 2, 1, 3))


def _softmax_lastaxis(xp, x):
    m = xp.max(x, axis=-1, keepdims=True)
    m = xp.where(m == -np.inf, 0, m)
    e = xp.exp(x - m)
    s = xp.sum(e, axis=-1, keepdims=True)
    return e / xp.where(s == 0, 1, s)


@register("Attention")
def attention(ctx, inputs, outputs):
    xp = ctx.xp
    Q, K, V = inputs[0], inputs[1], inputs[2]
    mask = opt_input(inputs, 3)
    past_k = opt_input(inputs, 4)
    past_v = opt_input(inputs, 5)
    nonpad = opt_input(inputs, 6)
    is_causal = int(ctx.attr("is_causal", 0))
    scale = ctx.attr("scale", None)
    q_heads = ctx.attr("q_num_heads", None)
    kv_heads = ctx.attr("kv_num_heads", None)
    softcap = float(ctx.attr("softcap", 0.0) or 0.0)
    mode = int(ctx.attr("qk_matmul_output_mode", 0))
    lw = int(ctx.attr("left_window_size", -1))
    rw = int(ctx.attr("right_window_size", -1))
    sp = ctx.attr("softmax_precision", None)
    cd = compute_dtype(Q.dtype)
    if sp is not None and int(sp) == 11:  # DOUBLE
        cd = np.dtype(np.float64)

    in3 = Q.ndim == 3
    if in3:
        Q = _to_heads(xp, Q, int(q_heads))
        K = _to_heads(xp, K, int(kv_heads))
        V = _to_heads(xp, V, int(kv_heads))
    if past_k is not None:
        K = xp.concatenate([past_k, K], axis=2)
        V = xp.concatenate([past_v, V], axis=2)
    if has_output(outputs, 1):
        write(outputs[1], K)
    if has_output(outputs, 2):
        write(outputs[2], V)

    B, Hq, Sq, D = Q.shape
    Hkv, Skv = K.shape[1], K.shape[2]
    if scale is None:
        scale = 1.0 / math.sqrt(D)
    scale = float(scale)

    # additive bias (broadcastable to (B, Hq, Sq, Skv)), or None
    bias = None
    if mask is not None:
        padw = Skv - mask.shape[-1]
        if padw > 0:
            fill = xp.zeros(mask.shape[:-1] + (padw,), dtype=mask.dtype)
            if mask.dtype != np.bool_:
                fill = fill - np.inf
            mask = xp.concatenate([mask, fill], axis=-1)
        if mask.dtype == np.bool_:
            bias = xp.where(mask, cd.type(0), cd.type(-np.inf))
        else:
            bias = mask.astype(cd)
    if nonpad is not None and past_k is None:
        offset = nonpad.astype(np.int64).reshape(-1, 1, 1, 1) - Sq  # (B,1,1,1)
    else:
        offset = past_k.shape[2] if past_k is not None else 0
    i_idx = xp.arange(Sq).reshape(Sq, 1)
    j_idx = xp.arange(Skv).reshape(1, Skv)
    if is_causal:
        allowed = j_idx <= i_idx + offset
        causal = xp.where(allowed, cd.type(0), cd.type(-np.inf))
        bias = causal if bias is None else bias + causal
    if lw >= 0 or rw >= 0:
        diff = (i_idx + offset) - j_idx
        allowed = xp.ones(diff.shape, dtype=bool)
        if lw >= 0:
            allowed = allowed & (diff <= lw)
        if rw >= 0:
            allowed = allowed & (-diff <= rw)
        win = xp.where(allowed, cd.type(0), cd.type(-np.inf))
        bias = win if bias is None else bias + win
    if nonpad is not None:
        pm = xp.arange(Skv).reshape(1, 1, 1, Skv) < nonpad.astype(np.int64).reshape(-1, 1, 1, 1)
        pmb = xp.where(pm, cd.type(0), cd.type(-np.inf))
        bias = pmb if bias is None else bias + pmb

    Qc, Kc, Vc = Q.astype(cd), K.astype(cd), V.astype(cd)
    if Hq != Hkv:
        reps = Hq // Hkv
        Kc = xp.repeat(Kc, reps, axis=1)
        Vc = xp.repeat(Vc, reps, axis=1)
    s = math.sqrt(scale)
    logits = matmul(xp, Qc * cd.type(s), xp.swapaxes(Kc * cd.type(s), -1, -2))
    qk_out = logits if mode == 0 else None
    if softcap > 0:
        logits = softcap * xp.tanh(logits / softcap)
    if mode == 1:
        qk_out = logits
    if bias is not None:
        logits = logits + bias
    if mode == 2:
        qk_out = logits
    probs = _softmax_lastaxis(xp, logits)
    if bias is not None:
        full_masked = xp.max(bias, axis=-1, keepdims=True) == -np.inf
        probs = xp.where(full_masked, cd.type(0), probs)
    if mode == 3:
        qk_out = probs
    y = matmul(xp, probs.astype(compute_dtype(Q.dtype)), Vc.astype(compute_dtype(Q.dtype)))
    if in3:
        y = xp.transpose(y, (0, 2, 1, 3)).reshape(B, Sq, -1)
    write(outputs[0], y)
    if has_output(outputs, 3):
        write(outputs[3], xp.broadcast_to(qk_out, outputs[3].shape))


@register("RotaryEmbedding")
def rotary_embedding(ctx, inputs, outputs):
    """RotaryEmbedding (opset 23): X (B,S,H*D) or (B,H,S,D)... per the ONNX reference."""
    xp = ctx.xp
    X, cos_cache, sin_cache = inputs[0], inputs[1], inputs[2]
    pos = opt_input(inputs, 3)
    interleaved = int(ctx.attr("interleaved", 0))
    num_heads = int(ctx.attr("num_heads", 0))
    rot_dim = int(ctx.attr("rotary_embedding_dim", 0))
    x = up(X)
    orig_shape = x.shape
    if x.ndim == 4:
        # (B, H, S, D) -> (B, S, H, D)
        x = xp.transpose(x, (0, 2, 1, 3))
    else:
        b, s, hidden = x.shape
        x = x.reshape(b, s, num_heads, hidden // num_heads)
    B, S, H, D = x.shape
    if rot_dim == 0:
        rot_dim = D
    x_rot, x_pass = x[..., :rot_dim], x[..., rot_dim:]
    cosc, sinc = up(cos_cache), up(sin_cache)
    if pos is not None:
        cosv = xp.take(cosc, pos.astype(np.int64), axis=0)  # (B, S, rot/2)
        sinv = xp.take(sinc, pos.astype(np.int64), axis=0)
    else:
        cosv, sinv = cosc, sinc  # (B, S, rot/2)
    cosv = cosv[..., : rot_dim // 2].reshape(B, S, 1, rot_dim // 2)
    sinv = sinv[..., : rot_dim // 2].reshape(B, S, 1, rot_dim // 2)
    if interleaved:
        x1, x2 = x_rot[..., 0::2], x_rot[..., 1::2]
    else:
        x1, x2 = x_rot[..., : rot_dim // 2], x_rot[..., rot_dim // 2 :]
    r1 = cosv * x1 - sinv * x2
    r2 = sinv * x1 + cosv * x2
    if interleaved:
        rot = xp.stack([r1, r2], axis=-1).reshape(B, S, H, rot_dim)
    else:
        rot = xp.concatenate([r1, r2], axis=-1)
    y = xp.concatenate([rot, x_pass], axis=-1)
    if len(orig_shape) == 4:
        y = xp.transpose(y, (0, 2, 1, 3))
    write(outputs[0], y.reshape(orig_shape))
