"""Gradient rules: convolution (Conv, ConvTranspose) with constant weights.

Both rules need the spatial dims of the data static (batch and channels may stay dynamic); the
padding each op applied is recomputed here from those static shapes, following ONNX Runtime.
"""

import numpy as np

from onnxcam.autodiff.registry import RuleContext, register


def spatial_dims(ctx: RuleContext, name: str) -> list[int]:
    """The static spatial dims (axes 2..) of ``name``; fails clearly when any is unknown."""
    shape = ctx.shape(name)
    if shape is None or len(shape) < 3 or any(d is None for d in shape[2:]):
        ctx.fail_shape(f"the spatial dims of '{name}' must be static (its shape is {shape})")
    return [int(d) for d in shape[2:]]


def auto_pad(ctx: RuleContext) -> str:
    value = ctx.attr("auto_pad", "NOTSET")
    value = value.decode() if isinstance(value, bytes) else value
    return value or "NOTSET"


def fit(e, t: str, full, begin, size) -> str:
    """Crop the spatial axes of ``t`` (lengths ``full``) to ``[begin, begin + size)``, zero-filling the tail."""
    n = len(full)
    ends = [min(f, b + s) for f, b, s in zip(full, begin, size)]
    if any(begin) or ends != list(full):
        t = e.slice(t, list(begin), ends, list(range(2, 2 + n)))
    tails = [s - max(0, end - b) for s, end, b in zip(size, ends, begin)]
    return e.pad(t, [0] * (n + 2) + [0, 0] + tails)


def _geometry(ctx: RuleContext) -> tuple[list[int], list[int], list[int], list[int]]:
    """(X's spatial size, kernel, strides, dilations) of a Conv or ConvTranspose, whose W must be constant."""
    if ctx.needs[1]:
        ctx.fail("its weight W depends on the tensor being explained; only constant weights are supported")
    size = spatial_dims(ctx, ctx.inputs[0])
    n = len(size)
    kernel = list(ctx.attr("kernel_shape", None) or ctx.static_shape(ctx.inputs[1])[2:2 + n])
    strides = list(ctx.attr("strides", None) or [1] * n)
    dilations = list(ctx.attr("dilations", None) or [1] * n)
    return size, kernel, strides, dilations


def _bias_grad(ctx: RuleContext, n: int):
    """dB = ΣdY over batch and spatial axes, when B is an input that needs a gradient."""
    if len(ctx.inputs) < 3:
        return []
    if not ctx.needs[2]:
        return [None]
    return [ctx.emit.reduce_sum(ctx.dy, [0, *range(2, 2 + n)], keepdims=False)]


def conv_pads(ctx: RuleContext, size, kernel, strides, dilations) -> tuple[list[int], list[int]]:
    """(begin pads, end pads) of a Conv: explicit, VALID, or SAME_UPPER/SAME_LOWER from static sizes."""
    n, mode = len(size), auto_pad(ctx)
    if mode in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = [], []
        for h, k, s, d in zip(size, kernel, strides, dilations):
            total = max(0, (-(-h // s) - 1) * s + (k - 1) * d + 1 - h)
            small = total // 2
            begin.append(small if mode == "SAME_UPPER" else total - small)
            end.append(total - begin[-1])
        return begin, end
    if mode == "VALID":
        return [0] * n, [0] * n
    pads = list(ctx.attr("pads", None) or [0] * (2 * n))
    return pads[:n], pads[n:]


def flipped_kernel(w: np.ndarray, group: int) -> np.ndarray:
    """The kernel of the Conv that equals ``ConvTranspose(·, w)`` at stride 1: each group's input and
    output channels swapped, the taps reversed."""
    cout, cin_per_group, *kernel = w.shape
    per_group = w.reshape(group, cout // group, cin_per_group, *kernel).swapaxes(1, 2)
    flipped = per_group[(..., *[slice(None, None, -1)] * len(kernel))]
    return np.ascontiguousarray(flipped.reshape(group * cin_per_group, cout // group, *kernel))


def _conv_input_grad(ctx: RuleContext, size, kernel, strides, dilations, begin, end) -> str:
    """dX of a Conv: a Conv on the flipped kernel where that is exact and faster, else a ConvTranspose.

    ONNX Runtime runs a stride-1 ConvTranspose (with the Slice cropping it) 1.3–4× slower than the
    equivalent Conv when it is depthwise, and 1.4–1.7× when dense (scripts/bench_conv_forms.py).
    1×1 kernels too: alone the two forms are GEMMs of like cost, but a backward chain of Convs stays
    in ONNX Runtime's blocked layout (middle layers' explain models 3–8 % faster,
    scripts/bench_explain.py). Strided ones have no cheaper Conv form (zero insertion and polyphase
    were measured slower), so those stay ConvTranspose.
    """
    e, w, group = ctx.emit, ctx.inputs[1], int(ctx.attr("group", 1))
    reach = [(k - 1) * d for k, d in zip(kernel, dilations)]
    pads = [r - p for r, p in zip(reach + reach, begin + end)]
    weights = ctx.const(1)
    if weights is not None and all(s == 1 for s in strides) and min(pads) >= 0:
        return e.op("Conv", ctx.dy, e.const(flipped_kernel(weights, group), hint="flipped_kernel"),
                    dilations=dilations, group=group, pads=pads, dtype_of=ctx.dy)
    out = [(h + b + p - r - 1) // s + 1 for h, b, p, r, s in zip(size, begin, end, reach, strides)]
    full = [s * (o - 1) + r + 1 for o, r, s in zip(out, reach, strides)]
    return spread_into(e, ctx.dy, w, strides, dilations, group, full, begin, size)


def spread_into(e, dy: str, w: str, strides, dilations, group: int, full, begin, size) -> str:
    """``ConvTranspose(dy, w)``, whose uncropped output spans ``full``, cropped to ``[begin, begin + size)``.

    The ConvTranspose's own pads do the crop (10–20 % faster than a Slice of its full output), and
    its output_padding the zeros of a tail it does not reach when that is shorter than the stride
    (a strided 1×1 Conv on an even size: ResNet-50's downsampling), else a Pad adds them.
    """
    if any(b >= f for b, f in zip(begin, full)):
        spread = e.op("ConvTranspose", dy, w, strides=strides, dilations=dilations, group=group, dtype_of=dy)
        return fit(e, spread, full, begin, size)
    ends = [max(0, f - b - h) for f, b, h in zip(full, begin, size)]
    reached = [f - b - p for f, b, p in zip(full, begin, ends)]
    tails = [h - r for h, r in zip(size, reached)]
    padding = {"output_padding": tails} if any(tails) and all(t < s for t, s in zip(tails, strides)) else {}
    spread = e.op("ConvTranspose", dy, w, strides=strides, dilations=dilations, group=group,
                  pads=list(begin) + ends, dtype_of=dy, **padding)
    return spread if padding else fit(e, spread, reached, [0] * len(size), size)


@register("Conv")
def conv(ctx: RuleContext):
    """dX = ConvTranspose(dY, W) cropped to X; dB = ΣdY (W must be constant)"""
    size, kernel, strides, dilations = _geometry(ctx)
    begin, end = conv_pads(ctx, size, kernel, strides, dilations)
    dx = _conv_input_grad(ctx, size, kernel, strides, dilations, begin, end) if ctx.needs[0] else None
    return [dx, None, *_bias_grad(ctx, len(size))]


def conv_transpose_pads(ctx: RuleContext, size, kernel, strides, dilations, adjust):
    """(begin pads, output size) of a ConvTranspose, resolving output_shape and auto_pad as ONNX Runtime does."""
    n, mode = len(size), auto_pad(ctx)
    full = [s * (h - 1) + a + (k - 1) * d + 1 for h, k, s, d, a in zip(size, kernel, strides, dilations, adjust)]
    output_shape = list(ctx.attr("output_shape", None) or [])
    if output_shape or mode in ("SAME_UPPER", "SAME_LOWER"):
        out = output_shape[-n:] if output_shape else [h * s for h, s in zip(size, strides)]
        totals = [max(0, f - o) for f, o in zip(full, out)]
        begin = [t // 2 if mode == "SAME_UPPER" else t - t // 2 for t in totals]
        return begin, out, full
    if mode == "VALID":
        return [0] * n, full, full
    pads = list(ctx.attr("pads", None) or [0] * (2 * n))
    return pads[:n], [f - b - p for f, b, p in zip(full, pads[:n], pads[n:])], full


@register("ConvTranspose")
def conv_transpose(ctx: RuleContext):
    """dX = Conv(dY, W) with the forward's pads; dB = ΣdY (W must be constant)"""
    e, w = ctx.emit, ctx.inputs[1]
    size, kernel, strides, dilations = _geometry(ctx)
    n = len(size)
    adjust = list(ctx.attr("output_padding", None) or [0] * n)
    begin, out, full = conv_transpose_pads(ctx, size, kernel, strides, dilations, adjust)
    dx = None
    if ctx.needs[0]:
        end = [f - b - o for f, b, o in zip(full, begin, out)]
        dy = ctx.dy
        if any(p < 0 for p in end):  # output rows past the full size hold no X contribution
            dy = e.slice(dy, [0] * n, [o + min(p, 0) for o, p in zip(out, end)], list(range(2, 2 + n)))
        dx = e.op("Conv", dy, w, strides=strides, dilations=dilations, group=int(ctx.attr("group", 1)),
                  pads=begin + [max(p, 0) for p in end], dtype_of=ctx.dy)
        got = [h + a // s for h, a, s in zip(size, adjust, strides)]
        dx = fit(e, dx, got, [0] * n, size)
    return [dx, None, *_bias_grad(ctx, n)]
