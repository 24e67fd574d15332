"""Resize (opsets 10-19+: nearest / linear / cubic, antialias, axes, keep_aspect_ratio_policy) and Upsample.

Separable: one axis at a time, as the ONNX reference does. Per axis the source
positions and interpolation weights (a small ``out_len x taps`` table) are
computed on the host; the data is then gathered with ``xp.take`` and weighted
on the device.
"""

from __future__ import annotations

import math

import numpy as np

from . import register, to_str
from ._common import host_ints, norm_axis, up, write

# --- per-position coefficient functions (host side, from the ONNX reference) ---


def _nearest_coeffs(ratio, mode):
    if float(ratio).is_integer():
        return np.array([0, 1])
    if mode == "round_prefer_floor":
        return np.array([ratio <= 0.5, ratio > 0.5])
    if mode == "round_prefer_ceil":
        return np.array([ratio < 0.5, ratio >= 0.5])
    if mode == "floor":
        return np.array([1, 0])
    if mode == "ceil":
        return np.array([0, 1])
    raise ValueError(f"nearest_mode {mode!r}")


def _cubic_coeffs(ratio, scale, A):
    return np.array(
        [
            ((A * (ratio + 1) - 5 * A) * (ratio + 1) + 8 * A) * (ratio + 1) - 4 * A,
            ((A + 2) * ratio - (A + 3)) * ratio * ratio + 1,
            ((A + 2) * (1 - ratio) - (A + 3)) * (1 - ratio) * (1 - ratio) + 1,
            ((A * ((1 - ratio) + 1) - 5 * A) * ((1 - ratio) + 1) + 8 * A) * ((1 - ratio) + 1) - 4 * A,
        ]
    )


def _cubic_coeffs_antialias(ratio, scale, A):
    scale = min(scale, 1.0)

    def c(x):
        x = abs(x)
        if x <= 1:
            return (A + 2) * x**3 - (A + 3) * x**2 + 1
        if x < 2:
            return A * x**3 - 5 * A * x**2 + 8 * A * x - 4 * A
        return 0.0

    i_start = int(np.floor(-2 / scale) + 1)
    i_end = 2 - i_start
    co = np.array([c(scale * (i - ratio)) for i in range(i_start, i_end)])
    return co / co.sum()


def _linear_coeffs(ratio, scale):
    return np.array([1 - ratio, ratio])


def _linear_coeffs_antialias(ratio, scale):
    scale = min(scale, 1.0)
    start = int(np.floor(-1 / scale) + 1)
    footprint = 2 - 2 * start
    args = (np.arange(start, start + footprint) - ratio) * scale
    co = np.clip(1 - np.abs(args), 0, 1)
    return co / co.sum()


def _x_ori(mode, y, scale, in_w, out_w, out_w_int, roi):
    extrap = None
    if mode == "align_corners":
        x = np.zeros(out_w_int) if out_w == 1 else y * (in_w - 1) / (out_w - 1)
    elif mode == "asymmetric":
        x = y / scale
    elif mode == "tf_crop_and_resize":
        if out_w == 1:
            x = np.full(out_w_int, (roi[1] - roi[0]) * (in_w - 1) / 2)
        else:
            x = y * (roi[1] - roi[0]) * (in_w - 1) / (out_w - 1)
        x = x + roi[0] * (in_w - 1)
        extrap = (x < 0) | (x > in_w - 1)
    elif mode == "pytorch_half_pixel":
        x = np.full(out_w_int, -0.5) if out_w == 1 else (y + 0.5) / scale - 0.5
    elif mode == "half_pixel":
        x = (y + 0.5) / scale - 0.5
    elif mode == "half_pixel_symmetric":
        adjustment = out_w_int / out_w
        center = in_w / 2
        x = center * (1 - adjustment) + (y + 0.5) / scale - 0.5
    else:
        raise ValueError(f"coordinate_transformation_mode {mode!r}")
    return x, extrap


def _axis_table(in_w, out_w_int, scale, get_coeffs, coord_mode, roi, exclude_outside):
    """(neighbor indices clamped, weights, extrapolated mask or None) for one axis; all host arrays."""
    out_w = scale * in_w
    y = np.arange(out_w_int, dtype=np.float64)
    x, extrap = _x_ori(coord_mode, y, scale, in_w, out_w, out_w_int, roi)
    xi = np.floor(x).astype(np.int64)
    ratios = np.where(x == xi, 1.0, x - xi)
    coeffs = np.stack([np.asarray(get_coeffs(float(r), scale), dtype=np.float64) for r in ratios])
    n = coeffs.shape[1]
    pad = int(np.ceil(n / 2))
    xp_ = x + pad
    p = np.floor(xp_).astype(np.int64)
    frac = xp_ - p
    if n % 2 == 0:
        off = np.where(frac == 0, -(n // 2), -(n // 2) + 1)
    else:
        base = -((n - 1) // 2)
        off = np.where(frac <= 0.5, base, base + 1)
    idx = (p + off)[:, None] + np.arange(n)[None, :] - pad
    if exclude_outside:
        coeffs = np.where((idx < 0) | (idx >= in_w), 0.0, coeffs)
        s = coeffs.sum(axis=-1, keepdims=True)
        coeffs = coeffs / np.where(s == 0, 1.0, s)
    return np.clip(idx, 0, in_w - 1), coeffs, extrap


def _resize(xp, x, out, scales, axes, get_coeffs, coord_mode, roi, exclude_outside, extrapolation_value, nearest):
    r = x.ndim
    res = x if nearest else up(x).astype(np.float64) if x.dtype != np.float64 else x
    for a in axes:
        in_w, out_w_int = res.shape[a], out.shape[a]
        scale = float(scales[a])
        axis_roi = None if roi is None else (roi[a], roi[a + r])
        if (
            math.isclose(scale, 1.0)
            and out_w_int == in_w
            and (axis_roi is None or (math.isclose(axis_roi[0], 0.0) and math.isclose(axis_roi[1], 1.0)))
        ):
            continue
        idx, co, extrap = _axis_table(in_w, out_w_int, scale, get_coeffs, coord_mode, axis_roi, exclude_outside)
        if nearest:
            # exactly one weight is 1 per output position: pick that neighbour
            pick = idx[np.arange(out_w_int), np.argmax(co, axis=1)]
            res = xp.take(res, xp.asarray(pick), axis=a)
        else:
            g = xp.take(res, xp.asarray(idx.reshape(-1)), axis=a)
            g = g.reshape(res.shape[:a] + idx.shape + res.shape[a + 1 :])
            w = xp.asarray(co).reshape((1,) * a + co.shape + (1,) * (r - a - 1))
            res = xp.sum(g * w, axis=a + 1)
        if extrap is not None and extrap.any():
            m = xp.asarray(extrap).reshape((1,) * a + (out_w_int,) + (1,) * (r - a - 1))
            res = xp.where(m, extrapolation_value, res)
    if np.dtype(out.dtype).kind in "iu" and not nearest:
        info = np.iinfo(out.dtype)
        res = xp.clip(xp.rint(res), info.min, info.max)
    write(out, res)


@register("Resize", host_inputs=(1, 2, 3))
def resize(ctx, inputs, outputs):
    xp = ctx.xp
    x = inputs[0]
    out = outputs[0]
    r = x.ndim
    mode = to_str(ctx.attr("mode", "nearest"))
    if ctx.opset < 11:
        scales_in = np.asarray(ctx.host(inputs[1]), dtype=np.float64).reshape(-1)
        sizes_in = None
        roi = None
        coord_mode = "asymmetric"
        nearest_mode = "floor"  # Resize-10 behaves as Upsample
    else:
        roi_in = inputs[1] if len(inputs) > 1 else None
        s_in = inputs[2] if len(inputs) > 2 else None
        z_in = inputs[3] if len(inputs) > 3 else None
        scales_in = None if s_in is None or s_in.size == 0 else np.asarray(ctx.host(s_in), dtype=np.float64).reshape(-1)
        sizes_in = None if z_in is None or z_in.size == 0 else host_ints(ctx, z_in)
        roi = None if roi_in is None or roi_in.size == 0 else [float(v) for v in np.asarray(ctx.host(roi_in)).reshape(-1)]
        coord_mode = to_str(ctx.attr("coordinate_transformation_mode", "half_pixel"))
        nearest_mode = to_str(ctx.attr("nearest_mode", "round_prefer_floor"))
    axes = ctx.attr("axes", None)
    axes = list(range(r)) if not axes else [norm_axis(a, r) for a in axes]
    policy = to_str(ctx.attr("keep_aspect_ratio_policy", "stretch"))
    antialias = int(ctx.attr("antialias", 0))
    A = float(ctx.attr("cubic_coeff_a", -0.75))
    exclude_outside = int(ctx.attr("exclude_outside", 0))
    extrapolation_value = float(ctx.attr("extrapolation_value", 0.0))

    if roi is not None and len(axes) != r:
        full = [0.0] * r + [1.0] * r
        for i, a in enumerate(axes):
            full[a] = roi[i]
            full[r + a] = roi[len(axes) + i]
        roi = full
    scales = [1.0] * r
    if scales_in is not None:
        for i, a in enumerate(axes if len(scales_in) == len(axes) else range(r)):
            scales[a] = float(scales_in[i])
    else:
        sizes = list(out.shape) if sizes_in is None else None
        if sizes is None:
            sizes = list(x.shape)
            for i, a in enumerate(axes if len(sizes_in) == len(axes) else range(r)):
                sizes[a] = sizes_in[i]
        for a in axes:
            scales[a] = sizes[a] / x.shape[a]
        if policy != "stretch":
            s = min(scales[a] for a in axes) if policy == "not_larger" else max(scales[a] for a in axes)
            for a in axes:
                scales[a] = s

    nearest = mode == "nearest"
    if nearest:

        def get_coeffs(ratio, scale):
            return _nearest_coeffs(ratio, nearest_mode)

    elif mode == "linear":
        get_coeffs = _linear_coeffs_antialias if antialias else _linear_coeffs
    elif mode == "cubic":
        fn = _cubic_coeffs_antialias if antialias else _cubic_coeffs

        def get_coeffs(ratio, scale):
            return fn(ratio, scale, A)

    else:
        raise NotImplementedError(f"Resize mode {mode!r}")
    _resize(xp, x, out, scales, axes, get_coeffs, coord_mode, roi, exclude_outside, extrapolation_value, nearest)


@register("Upsample", host_inputs=(1,))
def upsample(ctx, inputs, outputs):
    xp = ctx.xp
    x = inputs[0]
    out = outputs[0]
    if len(inputs) > 1 and inputs[1] is not None:
        scales = [float(v) for v in np.asarray(ctx.host(inputs[1])).reshape(-1)]
    else:
        scales = [float(v) for v in ctx.attr("scales")]
    mode = to_str(ctx.attr("mode", "nearest"))
    nearest = mode == "nearest"
    if nearest:

        def get_coeffs(ratio, scale):
            return _nearest_coeffs(ratio, "floor")

    else:
        get_coeffs = _linear_coeffs
    _resize(xp, x, out, scales, list(range(x.ndim)), get_coeffs, "asymmetric", None, 0, 0.0, nearest)
