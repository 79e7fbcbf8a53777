"""Gradient rules: reductions (ReduceSum, ReduceMean, ReduceMax, ReduceL2, ReduceSumSquare) in their
attribute and input forms."""

from __future__ import annotations


from onnxcam.autodiff.registry import RuleContext, register

# Opset from which each reduction takes its axes as an optional second input.
_AXES_INPUT_SINCE = {"ReduceSum": 13, "ReduceMean": 18, "ReduceMax": 18, "ReduceL2": 18, "ReduceSumSquare": 18}


def _reduced_axes(ctx: RuleContext) -> list[int] | None:
    """The sorted, non-negative reduced axes of input 0, or ``None`` when the op is the identity."""
    rank = ctx.rank(ctx.inputs[0])
    if ctx.opset >= _AXES_INPUT_SINCE[ctx.node.op_type]:
        axes = [] if ctx.input(1) is None else ctx.require_const(1, "axes input").ravel().tolist()
        if not axes and ctx.attr("noop_with_empty_axes", 0):
            return None
    else:
        axes = list(ctx.attr("axes", []) or [])
    if not axes:
        return list(range(rank))
    return sorted({int(a) % rank for a in axes})


def _spread(ctx: RuleContext, tensor: str, axes: list[int]) -> str:
    """``tensor`` (shaped like Y) with the reduced axes kept as size-1 dims."""
    return tensor if ctx.attr("keepdims", 1) else ctx.emit.unsqueeze(tensor, axes)


def _grads(ctx: RuleContext, dx: str) -> list[str | None]:
    return [dx] + [None] * (len(ctx.inputs) - 1)


@register("ReduceSum")
def reduce_sum(ctx: RuleContext):
    """dX = dY expanded over the reduced axes"""
    axes = _reduced_axes(ctx)
    if axes is None:
        return _grads(ctx, ctx.dy)
    return _grads(ctx, ctx.emit.expand_like(_spread(ctx, ctx.dy, axes), ctx.inputs[0], spread_axes=axes))


@register("ReduceMean")
def reduce_mean(ctx: RuleContext):
    """dX = dY expanded over the reduced axes / (number of reduced elements)"""
    e, x = ctx.emit, ctx.inputs[0]
    axes = _reduced_axes(ctx)
    if axes is None:
        return _grads(ctx, ctx.dy)
    shape = ctx.shape(x)
    dims = [shape[a] for a in axes] if shape is not None else [None]
    count = e.reduced_count(dims, x, ctx.outputs[0], ctx.dy)
    return _grads(ctx, e.expand_like(e.div(_spread(ctx, ctx.dy, axes), count), x, spread_axes=axes))


@register("ReduceMax")
def reduce_max(ctx: RuleContext):
    """dX = dY at the maxima (X = Y), shared equally among ties"""
    e, x = ctx.emit, ctx.inputs[0]
    axes = _reduced_axes(ctx)
    if axes is None:
        return _grads(ctx, ctx.dy)
    at_max = e.cast_like(e.op("Equal", x, _spread(ctx, ctx.outputs[0], axes)), x)
    ties = e.reduce_sum(at_max, axes, keepdims=True)
    return _grads(ctx, e.mul(at_max, e.div(_spread(ctx, ctx.dy, axes), ties)))


@register("ReduceL2")
def reduce_l2(ctx: RuleContext):
    """dX = dY·X / Y (0 where Y = 0: the norm of zeros has no direction)"""
    e, x = ctx.emit, ctx.inputs[0]
    axes = _reduced_axes(ctx)
    if axes is None:
        return _grads(ctx, e.mul(ctx.dy, e.op("Sign", x)))
    norm = _spread(ctx, ctx.outputs[0], axes)
    safe = e.where(e.op("Greater", norm, e.scalar(0.0, norm)), norm, e.scalar(1.0, norm))
    return _grads(ctx, e.mul(e.div(x, safe), _spread(ctx, ctx.dy, axes)))


@register("ReduceSumSquare")
def reduce_sum_square(ctx: RuleContext):
    """dX = 2·dY·X"""
    e, x = ctx.emit, ctx.inputs[0]
    axes = _reduced_axes(ctx)
    if axes is None:
        return _grads(ctx, e.mul(e.mul_scalar(ctx.dy, 2.0), x))
    return _grads(ctx, e.mul(e.mul_scalar(_spread(ctx, ctx.dy, axes), 2.0), x))
