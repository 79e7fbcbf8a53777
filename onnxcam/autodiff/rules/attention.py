"""Gradient rules: the fused transformer ops of opset 23 (Attention, RotaryEmbedding)."""

import numpy as np

from onnxcam.autodiff.registry import RuleContext, register


@register("RotaryEmbedding", since=23)
def rotary_embedding(ctx: RuleContext):
    """dX = RotaryEmbedding(dY, cos, −sin): the inverse rotation (caches and positions get none)"""
    e = ctx.emit
    sin = ctx.inputs[2]
    attrs = {a.name: ctx.attr(a.name) for a in ctx.node.attribute}
    inputs = [ctx.dy, ctx.inputs[1], e.neg(sin), *ctx.inputs[3:]]
    dx = e.op("RotaryEmbedding", *inputs, dtype_of=ctx.dy, **attrs) if ctx.needs[0] else None
    return [dx, *[None] * (len(ctx.inputs) - 1)]


@register("Attention", since=23)
def attention(ctx: RuleContext):
    """P = softmax(Q·Kᵀ·scale + mask); dV = Pᵀ·dY, dS = P ⊙ (dY·Vᵀ − Σ_j(dY·Vᵀ ⊙ P)), dQ = dS·K·scale, dK = dSᵀ·Q·scale"""
    e, node = ctx.emit, ctx.node
    q, k, v = ctx.inputs[:3]
    mask = ctx.input(3)
    if len(node.input) > 4 and any(node.input[4:]):
        ctx.fail("past key/value inputs (a KV cache) are not supported")
    if any(out for out in node.output[1:]) and any(ctx.grads[1:]):
        ctx.fail("gradients through the present key/value or the QK outputs are not supported")
    if ctx.attr("softcap", 0.0) or ctx.rank(q) != 4 or ctx.rank(k) != 4:
        ctx.fail("only 4-D (batch, heads, sequence, head size) inputs without softcap are supported")
    if (ctx.shape(q)[1] or 0) != (ctx.shape(k)[1] or 0):
        ctx.fail("grouped-query attention (fewer key/value heads than query heads) is not supported")
    head_size = ctx.shape(q)[3]
    if head_size is None and ctx.attr("scale") is None:
        ctx.fail("the head size must be static when no scale is given")
    scale = float(ctx.attr("scale") if ctx.attr("scale") is not None else head_size ** -0.5)
    k_t = e.transpose(k, [0, 1, 3, 2])
    scores = e.mul_scalar(e.op("MatMul", q, k_t), scale)
    scores = _masked(ctx, scores, mask, ctx.shape(q)[2], ctx.shape(k)[2])
    p = e.op("Softmax", scores, axis=-1)
    dy = ctx.dy
    dv = e.op("MatMul", e.transpose(p, [0, 1, 3, 2]), dy) if ctx.needs[2] else None
    dp = e.op("MatMul", dy, e.transpose(v, [0, 1, 3, 2]))
    ds = e.mul(p, e.sub(dp, e.reduce_sum(e.mul(dp, p), [3], keepdims=True)))
    dq = e.mul_scalar(e.op("MatMul", ds, k), scale) if ctx.needs[0] else None
    dk = e.mul_scalar(e.op("MatMul", e.transpose(ds, [0, 1, 3, 2]), q), scale) if ctx.needs[1] else None
    return [dq, dk, dv, *[None] * (len(ctx.inputs) - 3)]


def _masked(ctx: RuleContext, scores: str, mask: str | None, rows, cols) -> str:
    """Scores with the float mask added, the boolean mask's False set to −∞, and the causal mask applied."""
    e = ctx.emit
    if mask is not None:
        if ctx.emit.dtype(mask).kind == "b":
            scores = e.where(mask, scores, e.scalar(float("-inf"), scores))
        else:
            scores = e.add(scores, mask)
    if ctx.attr("is_causal", 0):
        if rows is None or cols is None:
            ctx.fail("a causal mask needs static sequence lengths")
        allowed = np.tril(np.ones((rows, cols), bool))  # upper-left aligned, as the ONNX spec has it
        scores = e.where(e.const(allowed, hint="causal"), scores, e.scalar(float("-inf"), scores))
    return scores
