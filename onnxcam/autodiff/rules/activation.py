"""Gradient rules: activations (ReLU family, Clip, sigmoid/tanh family, GELU) and (Log)Softmax."""

import math

import numpy as np

from onnxcam.autodiff.registry import RuleContext, register


def masked(e, mask: str, grad: str) -> str:
    """``grad`` where the boolean ``mask`` holds, else 0, as ``grad·Cast(mask)``.

    ONNX Runtime runs Cast + Mul up to 1.7× faster than Where with a broadcast zero
    (scripts/bench_conv_forms.py). Only where ``grad`` is ±inf and the mask is off does it differ
    (NaN instead of 0), and an infinite gradient has already overflowed the map.
    """
    return e.mul(grad, e.cast_like(mask, grad))


def _positive(ctx: RuleContext, x: str) -> str:
    """The boolean mask ``x > 0``."""
    return ctx.emit.op("Greater", x, ctx.emit.scalar(0.0, x))


def _between(ctx: RuleContext, x: str, low: str | None, high: str | None) -> str | None:
    """The boolean mask ``low < x < high`` (a missing bound is no condition); None if both miss."""
    e = ctx.emit
    masks = ([e.op("Greater", x, low)] if low else []) + ([e.op("Less", x, high)] if high else [])
    if not masks:
        return None
    return masks[0] if len(masks) == 1 else e.op("And", *masks)


def _sum_to_scalar(ctx: RuleContext, grad: str, like: str) -> str:
    """Sum every element of ``grad`` and shape the total like the scalar (or 1-element) ``like``."""
    e = ctx.emit
    return e.reshape_like(e.op("ReduceSum", grad, keepdims=0), like)


@register("Relu")
def relu(ctx: RuleContext):
    """dX = dY·(X > 0)"""
    # Y > 0 exactly where X > 0; reading Y leaves X to the forward, so ONNX Runtime still fuses
    # the Conv before it with the activation
    return [masked(ctx.emit, _positive(ctx, ctx.outputs[0]), ctx.dy)]


@register("LeakyRelu")
def leaky_relu(ctx: RuleContext):
    """dX = dY·(1 if X > 0 else α)"""
    e, x = ctx.emit, ctx.inputs[0]
    return [e.where(_positive(ctx, x), ctx.dy, e.mul_scalar(ctx.dy, ctx.attr("alpha", 0.01)))]


@register("PRelu")
def prelu(ctx: RuleContext):
    """dX = dY·(1 if X > 0 else S), dS = Σ dY·X·(X ≤ 0) over S's broadcast axes"""
    e, (x, slope) = ctx.emit, ctx.inputs
    positive = _positive(ctx, x)
    dx = e.where(positive, ctx.dy, e.mul(ctx.dy, slope)) if ctx.needs[0] else None
    ds = None
    if ctx.needs[1]:
        ds = e.where(positive, e.scalar(0.0, ctx.dy), e.mul(ctx.dy, x))
        ds = e.unbroadcast(ds, slope, x)  # Y has X's shape (the slope broadcasts one way)
    return [dx, ds]


@register("Elu")
def elu(ctx: RuleContext):
    """dX = dY·(1 if X > 0 else Y + α)"""
    e, x, y = ctx.emit, ctx.inputs[0], ctx.outputs[0]
    slope = e.add(y, e.scalar(ctx.attr("alpha", 1.0), y))
    return [e.where(_positive(ctx, x), ctx.dy, e.mul(ctx.dy, slope))]


@register("Clip")
def clip(ctx: RuleContext):
    """dX = dY·(min < X < max); dmin = Σ dY·(X < min), dmax = Σ dY·(X > max)"""
    e, x = ctx.emit, ctx.inputs[0]
    low, high = _clip_bounds(ctx)
    inside = _between(ctx, ctx.outputs[0], low, high)  # as for Relu: min < Y < max exactly where min < X < max
    grads = [(ctx.dy if inside is None else masked(e, inside, ctx.dy)) if ctx.needs[0] else None]
    for i, outside in ((1, "Less"), (2, "Greater")):  # bounds given as inputs (opset >= 11)
        if i < len(ctx.inputs):
            bound = ctx.inputs[i]
            beyond = _sum_to_scalar(ctx, e.zero_where(e.op(outside, x, bound), ctx.dy), bound) if ctx.needs[i] else None
            grads.append(beyond)
    return grads


def _clip_bounds(ctx: RuleContext) -> tuple[str | None, str | None]:
    """Clip's bound tensors (None where absent): inputs from opset 11, attributes before."""
    if ctx.opset >= 11:
        return ctx.input(1), ctx.input(2)
    limit = float(np.finfo(np.float32).max)  # the attributes' defaults mean "no bound"
    low, high = ctx.attr("min", -limit), ctx.attr("max", limit)
    x = ctx.inputs[0]
    return (None if low <= -limit else ctx.emit.scalar(low, x)), (None if high >= limit else ctx.emit.scalar(high, x))


@register("Sigmoid")
def sigmoid(ctx: RuleContext):
    """dX = dY·Y·(1 − Y)"""
    e, y = ctx.emit, ctx.outputs[0]
    return [e.mul(ctx.dy, e.mul(y, e.sub(e.scalar(1.0, y), y)))]


@register("HardSigmoid")
def hard_sigmoid(ctx: RuleContext):
    """dX = dY·α·(0 < Y < 1)"""
    e, y = ctx.emit, ctx.outputs[0]
    inside = _between(ctx, y, e.scalar(0.0, y), e.scalar(1.0, y))
    return [masked(e, inside, e.mul_scalar(ctx.dy, ctx.attr("alpha", 0.2)))]


@register("HardSwish")
def hard_swish(ctx: RuleContext):
    """dX = dY·(HardSigmoid(X) + X/6·(−3 < X < 3))"""
    e, x = ctx.emit, ctx.inputs[0]
    gate = e.op("HardSigmoid", x, alpha=1.0 / 6.0, beta=0.5)
    inside = _between(ctx, x, e.scalar(-3.0, x), e.scalar(3.0, x))
    return [e.mul(ctx.dy, e.add(gate, masked(e, inside, e.mul_scalar(x, 1.0 / 6.0))))]


@register("Tanh")
def tanh(ctx: RuleContext):
    """dX = dY·(1 − Y²)"""
    e, y = ctx.emit, ctx.outputs[0]
    return [e.mul(ctx.dy, e.sub(e.scalar(1.0, y), e.mul(y, y)))]


@register("Softplus")
def softplus(ctx: RuleContext):
    """dX = dY·Sigmoid(X)"""
    e = ctx.emit
    return [e.mul(ctx.dy, e.op("Sigmoid", ctx.inputs[0]))]


@register("Gelu")
def gelu(ctx: RuleContext):
    """dX = dY·(Φ(X) + X·φ(X)); approximate="tanh": derivative of ½X(1 + tanh(√(2/π)(X + 0.044715X³)))"""
    e, x = ctx.emit, ctx.inputs[0]
    x2 = e.mul(x, x)
    if ctx.attr("approximate", "none") == "tanh":
        c, k = math.sqrt(2.0 / math.pi), 0.044715
        t = e.op("Tanh", e.mul_scalar(e.mul(x, e.add(e.scalar(1.0, x), e.mul_scalar(x2, k))), c))
        half_one_plus_t = e.mul_scalar(e.add(e.scalar(1.0, t), t), 0.5)
        du = e.mul_scalar(e.add(e.scalar(1.0, x), e.mul_scalar(x2, 3 * k)), c)  # du/dX
        sech2 = e.sub(e.scalar(1.0, t), e.mul(t, t))
        slope = e.add(half_one_plus_t, e.mul(e.mul_scalar(x, 0.5), e.mul(sech2, du)))
    else:
        cdf = e.mul_scalar(e.add(e.scalar(1.0, x), e.op("Erf", e.mul_scalar(x, 1.0 / math.sqrt(2.0)))), 0.5)
        pdf = e.mul_scalar(e.op("Exp", e.mul_scalar(x2, -0.5)), 1.0 / math.sqrt(2.0 * math.pi))
        slope = e.add(cdf, e.mul(x, pdf))
    return [e.mul(ctx.dy, slope)]


def _softmax_axes(ctx: RuleContext) -> list[int]:
    """The axes a (Log)Softmax normalises over: before opset 13 all from ``axis`` on, then one."""
    if ctx.opset >= 13:
        return [ctx.attr("axis", -1)]
    rank = ctx.rank(ctx.inputs[0])
    return list(range(ctx.attr("axis", 1) % rank, rank))


@register("Softmax")
def softmax(ctx: RuleContext):
    """dX = Y·(dY − Σ_axis dY·Y)"""
    e, y = ctx.emit, ctx.outputs[0]
    total = e.reduce_sum(e.mul(ctx.dy, y), _softmax_axes(ctx), keepdims=True)
    return [e.mul(y, e.sub(ctx.dy, total))]


@register("LogSoftmax")
def log_softmax(ctx: RuleContext):
    """dX = dY − exp(Y)·Σ_axis dY"""
    e, y = ctx.emit, ctx.outputs[0]
    total = e.reduce_sum(ctx.dy, _softmax_axes(ctx), keepdims=True)
    return [e.sub(ctx.dy, e.mul(e.op("Exp", y), total))]
