"""Gradient rules for fake quantisation (QDQ graphs): the straight-through estimator.

``QuantizeLinear`` rounds, so its true derivative is zero almost everywhere. Quantisation-aware
training (and every QDQ explainer) treats the rounding as the identity inside the representable
range and as a cut outside it, where the value saturates: a ``QuantizeLinear → DequantizeLinear``
pair then has the gradient of ``Clip(x, (qmin − zp)·s, (qmax − zp)·s)``. Each op gets its own
rule through the integer tensor between them, whose gradient is that of its value as a number.
"""

from __future__ import annotations

import onnx

from onnxcam.autodiff.registry import RuleContext, register

__all__ = ["INTEGER_RANGES"]

# The integer types QuantizeLinear writes, with their ranges (int4/uint4 have no NumPy type).
INTEGER_RANGES = {onnx.TensorProto.UINT8: (0, 255), onnx.TensorProto.INT8: (-128, 127),
           onnx.TensorProto.UINT16: (0, 65535), onnx.TensorProto.INT16: (-32768, 32767),
           onnx.TensorProto.UINT4: (0, 15), onnx.TensorProto.INT4: (-8, 7)}


def _per_axis(ctx: RuleContext, param: str, like: str) -> str:
    """A scale or zero point (scalar, or 1-D along ``axis``) reshaped to broadcast against ``like``."""
    e, rank = ctx.emit, ctx.rank(like)
    if ctx.attr("block_size", 0):
        ctx.fail("blocked quantisation (block_size) has no gradient rule yet")
    if ctx.view.rank(param) in (None, 0) or rank <= 1:
        return param
    axis = ctx.attr("axis", 1) % rank
    return e.reshape(param, e.ints([-1 if k == axis else 1 for k in range(rank)]))


def _as_float(ctx: RuleContext, tensor: str, like: str) -> str:
    return tensor if ctx.emit.dtype(tensor) == ctx.emit.dtype(like) else ctx.emit.cast_like(tensor, like)


@register("DequantizeLinear", since=10)
def dequantize_linear(ctx: RuleContext):
    """dQ = dY·scale (Y = (Q − zero_point)·scale)"""
    scale = _per_axis(ctx, ctx.inputs[1], ctx.inputs[0])
    return [ctx.emit.mul(ctx.dy, scale), None, None][:len(ctx.inputs)]


@register("QuantizeLinear", since=10, straight_through=True)
def quantize_linear(ctx: RuleContext):
    """dX = dQ/scale where X/scale + zero_point lies in the integer range, else 0 (straight-through)"""
    e, x, q = ctx.emit, ctx.inputs[0], ctx.outputs[0]
    bounds = INTEGER_RANGES.get(ctx.view.elem_type(q))
    if bounds is None:
        ctx.fail(f"its output type ({ctx.view.elem_type(q)}) is not an integer type with a known range")
    scale = _per_axis(ctx, ctx.inputs[1], x)
    stored = e.div(x, scale)
    if ctx.input(2):
        stored = e.add(stored, _as_float(ctx, _per_axis(ctx, ctx.inputs[2], x), x))
    low, high = (e.scalar(float(b), x) for b in bounds)
    inside = e.op("Not", e.op("Or", e.op("Less", stored, low), e.op("Greater", stored, high)))
    dx = e.zero_where(inside, e.div(ctx.dy, scale))
    return [dx, None, None][:len(ctx.inputs)]

