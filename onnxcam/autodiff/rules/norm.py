"""Gradient rules: normalisations (BatchNormalization in inference form, Instance- and
LayerNormalization)."""

from __future__ import annotations

import numpy as np

from onnxcam.autodiff.registry import RuleContext, register


def _no_extra_output_grads(ctx: RuleContext, what: str) -> None:
    if any(g is not None for g in ctx.grads[1:]):
        ctx.fail(f"a gradient reaches its {what} output(s), which this rule does not differentiate")


def _per_channel(ctx: RuleContext, vector: str, rank: int) -> str:
    """A (C,) tensor reshaped to (C, 1, …, 1) so that it broadcasts on axis 1 of a rank-``rank`` tensor."""
    return ctx.emit.unsqueeze(vector, list(range(1, rank - 1)))


def _to_dtype(ctx: RuleContext, tensor: str, like: str) -> str:
    e = ctx.emit
    return tensor if e.dtype(tensor) == e.dtype(like) else e.cast_like(tensor, like)


def _inv_std(ctx: RuleContext, variance: str, epsilon: float) -> str:
    """1/√(variance + ε)."""
    e = ctx.emit
    return e.op("Reciprocal", e.op("Sqrt", e.add(variance, e.scalar(epsilon, variance))))


def _normalize_vjp(ctx: RuleContext, x: str, g: str, axes: list[int], epsilon: float) -> tuple[str, str, str]:
    """(dX, x̂, 1/σ) for x̂ = (X − mean)/σ over ``axes`` and g = ∂/∂x̂.

    dX = (g − mean(g) − x̂·mean(g·x̂))/σ, all means over ``axes``.
    """
    e = ctx.emit
    centred = e.sub(x, e.reduce_mean(x, axes))
    inv_std = _inv_std(ctx, e.reduce_mean(e.mul(centred, centred), axes), epsilon)
    x_hat = e.mul(centred, inv_std)
    inner = e.sub(e.sub(g, e.reduce_mean(g, axes)), e.mul(x_hat, e.reduce_mean(e.mul(g, x_hat), axes)))
    return e.mul(inner, inv_std), x_hat, inv_std


def _element_count(ctx: RuleContext, x: str, axes: list[int]) -> str:
    """The number of elements of ``x`` over ``axes`` as a float scalar (static when the dims are known)."""
    e, shape = ctx.emit, ctx.shape(x)
    if shape is not None and all(shape[a] is not None for a in axes):
        return e.scalar(float(np.prod([shape[a] for a in axes])), x)
    dims = e.op("Gather", e.shape(x), e.ints(axes), axis=0)
    return e.cast_like(e.op("ReduceProd", dims, keepdims=0), x)


def _statistics_vjp(ctx: RuleContext, x: str, x_hat: str, inv_std: str, axes: list[int]) -> str | None:
    """The gradient reaching X through LayerNormalization's Mean and InvStdDev outputs, or None.

    ∂mean/∂xⱼ = 1/N and ∂(1/σ)/∂xⱼ = −x̂ⱼ/(σ²·N), so dX = (dMean − dInvStd·x̂/σ²)/N.
    """
    e = ctx.emit
    d_mean, d_inv = [_to_dtype(ctx, g, x) if g else None for g in (*ctx.grads[1:3], None, None)[:2]]
    if d_mean is None and d_inv is None:
        return None
    terms = [e.expand_like(d_mean, x)] if d_mean else []
    terms += [e.neg(e.mul(e.mul(d_inv, e.mul(inv_std, inv_std)), x_hat))] if d_inv else []
    return e.div(e.sum(terms), _element_count(ctx, x, axes))


@register("BatchNormalization")
def batch_normalization(ctx: RuleContext):
    """dX = dY·scale/√(var + ε) on axis 1 (inference form; opsets 7–8 also spatial=0)

    scale, B, mean and var get gradients too when they need them (non-constant parameters).
    """
    e, x = ctx.emit, ctx.inputs[0]
    if ctx.attr("training_mode", 0):
        ctx.fail("training_mode=1 is not supported (explanations run the model in inference mode)")
    _no_extra_output_grads(ctx, "running-statistics")
    rank, eps = ctx.rank(x), ctx.attr("epsilon", 1e-5)
    scale, var = ctx.const(1), ctx.const(4)
    none = [None] * (len(ctx.inputs) - 1)
    if scale is not None and var is not None and not any(ctx.needs[1:]):  # the usual case: one folded constant
        gain = scale.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps)
        gain = gain if not _spatial(ctx) else gain.reshape((-1,) + (1,) * (rank - 2))
        return [e.mul(ctx.dy, e.const(gain.astype(e.dtype(x)))), *none]
    inv_std = _to_dtype(ctx, _inv_std(ctx, ctx.inputs[4], eps), x)
    gain = e.mul(_to_dtype(ctx, ctx.inputs[1], x), inv_std)
    dx = e.mul(ctx.dy, _bn_parameter_view(ctx, gain, rank)) if ctx.needs[0] else None
    return [dx, *(_batch_norm_parameter_grads(ctx, gain, inv_std) if any(ctx.needs[1:]) else none)]


def _spatial(ctx: RuleContext) -> bool:
    """Opsets 7–8 allow spatial=0: parameters of shape (C, D₁, …) per element instead of per channel."""
    return ctx.opset >= 9 or bool(ctx.attr("spatial", 1))


def _bn_parameter_view(ctx: RuleContext, parameter: str, rank: int) -> str:
    """A BatchNormalization parameter shaped to broadcast against X (N, C, D₁, …)."""
    return _per_channel(ctx, parameter, rank) if _spatial(ctx) else parameter


def _batch_norm_parameter_grads(ctx: RuleContext, gain: str, inv_std: str) -> list[str | None]:
    """Per channel (per element with spatial=0), with gain = scale/σ: dscale = Σ dY·(X − mean)/σ,
    dB = Σ dY, dmean = −Σ dY·gain, dvar = −½·Σ dY·(X − mean)·gain/σ²."""
    e, x = ctx.emit, ctx.inputs[0]
    rank = ctx.rank(x)
    others = [a for a in range(rank) if a != 1] if _spatial(ctx) else [0]
    d_bias = e.reduce_sum(ctx.dy, others, keepdims=False)
    centred = e.sub(x, _bn_parameter_view(ctx, _to_dtype(ctx, ctx.inputs[3], x), rank))
    d_gain = e.reduce_sum(e.mul(ctx.dy, centred), others, keepdims=False)
    grads = [
        lambda: e.mul(d_gain, inv_std),
        lambda: d_bias,
        lambda: e.neg(e.mul(d_bias, gain)),
        lambda: e.mul(e.mul(d_gain, gain), e.mul_scalar(e.mul(inv_std, inv_std), -0.5)),
    ]
    wanted = zip(grads, ctx.inputs[1:5], ctx.needs[1:5])
    return [_to_dtype(ctx, make(), like) if need else None for make, like, need in wanted]


@register("InstanceNormalization")
def instance_normalization(ctx: RuleContext):
    """dX = γ/σ·(dY − mean(dY) − x̂·mean(dY·x̂)) over spatial axes per (n, c); dγ = Σ dY·x̂, dB = Σ dY"""
    e, (x, scale, _) = ctx.emit, ctx.inputs
    rank = ctx.rank(x)
    spatial, others = list(range(2, rank)), [0, *range(2, rank)]
    g = e.mul(ctx.dy, _per_channel(ctx, scale, rank))
    dx, x_hat, _ = _normalize_vjp(ctx, x, g, spatial, ctx.attr("epsilon", 1e-5))
    d_scale = e.reduce_sum(e.mul(ctx.dy, x_hat), others, keepdims=False) if ctx.needs[1] else None
    d_bias = e.reduce_sum(ctx.dy, others, keepdims=False) if ctx.needs[2] else None
    return [dx if ctx.needs[0] else None, d_scale, d_bias]


@register("LayerNormalization")
def layer_normalization(ctx: RuleContext):
    """dX = S/σ·(dY − mean(dY) − x̂·mean(dY·x̂)) over axes ≥ axis; dS = Σ dY·x̂, dB = Σ dY

    Gradients reaching the optional Mean and InvStdDev outputs are passed on to X as well.
    """
    e, x, scale, bias = ctx.emit, ctx.inputs[0], ctx.inputs[1], ctx.input(2)
    rank = ctx.rank(x)
    axes = list(range(ctx.attr("axis", -1) % rank, rank))
    dy = ctx.dy or e.zeros_like(ctx.outputs[0])  # None only when just Mean/InvStdDev are used
    dx, x_hat, inv_std = _normalize_vjp(ctx, x, e.mul(dy, scale), axes, ctx.attr("epsilon", 1e-5))
    extra = _statistics_vjp(ctx, x, x_hat, inv_std, axes) if ctx.needs[0] else None
    dx = e.add(dx, extra) if extra else dx
    y = ctx.outputs[0]  # shaped like X: the broadcast result that Scale and B are reduced back from
    d_scale = e.unbroadcast(e.mul(dy, x_hat), scale, y) if ctx.needs[1] else None
    d_bias = e.unbroadcast(dy, bias, y) if bias and ctx.needs[2] else None
    return [dx if ctx.needs[0] else None, d_scale, d_bias][: len(ctx.inputs)]


@register("RMSNormalization", since=23)
def rms_normalization(ctx: RuleContext):
    """dX = r·(g − x̂·mean(g·x̂)), r = 1/√(mean(X²) + ε), x̂ = X·r, g = dY·S over axes ≥ axis; dS = Σ dY·x̂"""
    e, x, scale = ctx.emit, ctx.inputs[0], ctx.inputs[1]
    rank = ctx.rank(x)
    axes = list(range(ctx.attr("axis", -1) % rank, rank))
    inv_rms = _inv_std(ctx, e.reduce_mean(e.mul(x, x), axes), ctx.attr("epsilon", 1e-5))
    x_hat = e.mul(x, inv_rms)
    g = e.mul(ctx.dy, scale)
    dx = e.mul(e.sub(g, e.mul(x_hat, e.reduce_mean(e.mul(g, x_hat), axes))), inv_rms) if ctx.needs[0] else None
    d_scale = e.unbroadcast(e.mul(ctx.dy, x_hat), scale, ctx.outputs[0]) if ctx.needs[1] else None
    return [dx, d_scale]
