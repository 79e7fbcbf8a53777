"""Gradient rules: pooling (GlobalAveragePool, GlobalMaxPool, AveragePool, MaxPool).

Windowed pools need static spatial dims; batch and channels stay dynamic (the data is viewed as
(N·C, 1, *spatial) while the gradient is placed). The window geometry (pads, output size, the
divisor of AveragePool) follows ONNX Runtime, which differs from the ONNX spec for SAME_* padding
with dilations: the padding is computed from the undilated kernel.
"""

import itertools
import math

import numpy as np

from onnxcam.autodiff.registry import RuleContext, register
from onnxcam.autodiff.rules.activation import masked
from onnxcam.autodiff.rules.conv import auto_pad, spatial_dims, spread_into


@register("GlobalAveragePool")
def global_average_pool(ctx: RuleContext):
    """dX = dY / (number of spatial elements), broadcast over the spatial axes"""
    e, x = ctx.emit, ctx.inputs[0]
    shape = ctx.shape(x)
    count = e.reduced_count(shape[2:] if shape is not None else [None], x, ctx.outputs[0], ctx.dy)
    rank = ctx.view.rank(x)
    return [e.expand_like(e.div(ctx.dy, count), x, spread_axes=range(2, rank) if rank else ())]


@register("GlobalMaxPool")
def global_max_pool(ctx: RuleContext):
    """dX = dY·(X = Y) / (number of maxima in the channel)"""
    e, x, y = ctx.emit, ctx.inputs[0], ctx.outputs[0]
    hit = e.op("Equal", x, y)
    ties = e.reduce_sum(e.cast_like(hit, ctx.dy), list(range(2, ctx.rank(x))), keepdims=True)
    return [masked(e, hit, e.div(ctx.dy, ties))]


class _Window:
    """The static geometry of one pooling node, per spatial axis, as ONNX Runtime computes it."""

    def __init__(self, ctx: RuleContext):
        self.size = spatial_dims(ctx, ctx.inputs[0])
        n = len(self.size)
        self.kernel = list(ctx.attr("kernel_shape"))
        self.strides = list(ctx.attr("strides", None) or [1] * n)
        self.dilations = list(ctx.attr("dilations", None) or [1] * n)
        ceil = bool(ctx.attr("ceil_mode", 0))
        mode = auto_pad(ctx)
        pads = list(ctx.attr("pads", None) or [0] * (2 * n))
        self.begin, self.end = pads[:n], pads[n:]
        if mode == "VALID":
            self.begin, self.end = [0] * n, [0] * n
        elif mode in ("SAME_UPPER", "SAME_LOWER"):
            totals = [(-(-h // s) - 1) * s + k - h for h, k, s in zip(self.size, self.kernel, self.strides)]
            self.begin = [t // 2 if mode == "SAME_UPPER" else (t + 1) // 2 for t in totals]
            self.end = [t - b for t, b in zip(totals, self.begin)]
        if any(p < 0 for p in self.begin + self.end):
            ctx.fail("SAME padding with a kernel smaller than its stride gives negative pads")
        self.out = [self._out(*a, ceil) for a in zip(self.size, self.kernel, self.strides, self.dilations,
                                                        self.begin, self.end)]
        # padded length that every window fits in, and the ConvTranspose output length in it
        self.span = [s * (o - 1) + (k - 1) * d + 1
                     for o, k, s, d in zip(self.out, self.kernel, self.strides, self.dilations)]

    @staticmethod
    def _out(h, k, s, d, begin, end, ceil):
        room = h + begin + end - (k - 1) * d - 1
        out = (math.ceil(room / s) if ceil else math.trunc(room / s)) + 1
        if ceil and (out - 1) * s >= h + begin:  # the last window must start inside the input
            out -= 1
        return out

    def taps(self):
        """Each kernel offset, in row-major order."""
        return list(itertools.product(*(range(k) for k in self.kernel)))

    def divisor(self, include_pad: bool) -> np.ndarray:
        """Per output position, the number of elements its average divides by: shape (1, 1, *out)."""
        counts = []
        for h, k, s, d, b, p, o in zip(self.size, self.kernel, self.strides, self.dilations,
                                       self.begin, self.end, self.out):
            pos = np.arange(o)[:, None] * s + np.arange(k)[None, :] * d
            inside = (pos < h + b + p) if include_pad else ((pos >= b) & (pos < h + b))
            counts.append(inside.sum(axis=1))
        total = counts[0].astype(np.float64)
        for c in counts[1:]:
            total = np.multiply.outer(total, c)
        return total.reshape(1, 1, *self.out)


def _flat(ctx: RuleContext, t: str, spatial) -> str:
    """View (N, C, *S) as (N·C, 1, *S)."""
    return ctx.emit.reshape(t, ctx.emit.ints([-1, 1, *spatial]))


def _place(ctx: RuleContext, win: _Window, parts: str, weight: np.ndarray) -> str:
    """Add each window's gradient back onto X's positions, given per-tap channels and a 0/1 kernel."""
    e = ctx.emit
    kernel = e.const(weight.astype(e.dtype(ctx.dy)))
    spread = spread_into(e, parts, kernel, win.strides, win.dilations, 1, win.span, win.begin, win.size)
    return e.reshape_like(spread, ctx.inputs[0])


@register("AveragePool")
def average_pool(ctx: RuleContext):
    """dX = Σ over windows of dY / (window's divisor), spread evenly over the window"""
    e, win = ctx.emit, _Window(ctx)
    divisor = win.divisor(bool(ctx.attr("count_include_pad", 0)))
    scale = np.where(divisor > 0, 1.0 / np.maximum(divisor, 1), 0.0).astype(e.dtype(ctx.dy))
    scaled = e.mul(_flat(ctx, ctx.dy, win.out), e.const(scale))
    return [_place(ctx, win, scaled, np.ones((1, 1, *win.kernel)))]


@register("MaxPool")
def max_pool(ctx: RuleContext):
    """dX = dY routed to the first maximum of each window (Indices gets none)"""
    e, win, n = ctx.emit, _Window(ctx), len(ctx.attr("kernel_shape"))
    tails = [max(0, sp - h - b) for sp, h, b in zip(win.span, win.size, win.begin)]
    padded = e.pad(_flat(ctx, ctx.inputs[0], win.size), [0, 0, *win.begin, 0, 0, *tails], value=-math.inf)
    taps, parts = win.taps(), []
    for i, offset in enumerate(taps):
        starts = [t * d for t, d in zip(offset, win.dilations)]
        ends = [st + (o - 1) * s + 1 for st, o, s in zip(starts, win.out, win.strides)]
        tap = e.slice(padded, starts, ends, list(range(2, 2 + n)), win.strides)
        if i == 0:  # Y and dY viewed in the taps' runtime shape, which ONNX shape inference may not know
            like = e.shape(tap)
            y, rest = e.reshape(ctx.outputs[0], like), e.reshape(ctx.dy, like)
        hit = e.op("Equal", tap, y)
        parts.append(masked(e, hit, rest))
        if i + 1 < len(taps):  # a later tie gets nothing: the first maximum took the gradient
            rest = e.sub(rest, parts[-1])
    weight = np.zeros((len(taps), 1, *win.kernel))
    for i, offset in enumerate(taps):
        weight[(i, 0, *offset)] = 1.0
    return [_place(ctx, win, e.op("Concat", *parts, axis=1), weight)]
