"""Gradient rules: convolution (Conv, ConvTranspose) with constant weights.

Both rules need the spatial dims of the data static (batch and channels may stay dynamic); the
padding each op applied is recomputed here from those static shapes, following ONNX Runtime.
"""

from onnxcam.autodiff.registry import RuleContext, register


def spatial_dims(ctx: RuleContext, name: str) -> list[int]:
    """The static spatial dims (axes 2..) of ``name``; fails clearly when any is unknown."""
    shape = ctx.shape(name)
    if shape is None or len(shape) < 3 or any(d is None for d in shape[2:]):
        ctx.fail(f"the spatial dims of '{name}' must be static (its shape is {shape})")
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


@register("Conv")
def conv(ctx: RuleContext):
    """dX = ConvTranspose(dY, W) cropped to X; dB = ΣdY (W must be constant)"""
    e, w = ctx.emit, ctx.inputs[1]
    size, kernel, strides, dilations = _geometry(ctx)
    n = len(size)
    begin, end = conv_pads(ctx, size, kernel, strides, dilations)
    dx = None
    if ctx.needs[0]:
        out = [(h + b + p - (k - 1) * d - 1) // s + 1
               for h, b, p, k, s, d in zip(size, begin, end, kernel, strides, dilations)]
        full = [s * (o - 1) + (k - 1) * d + 1 for o, k, s, d in zip(out, kernel, strides, dilations)]
        spread = e.op("ConvTranspose", ctx.dy, w, strides=strides, dilations=dilations,
                      group=int(ctx.attr("group", 1)), dtype_of=ctx.dy)
        dx = fit(e, spread, full, begin, size)
    return [dx, None, *_bias_grad(ctx, n)]


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
