"""Gradient rules: ops that move, copy or select elements (reshapes, Transpose, DepthToSpace and
SpaceToDepth, Concat/Split, Slice, Gather, Pad, Expand, Tile)."""

from __future__ import annotations

import numpy as np

from onnxcam.autodiff.registry import RuleContext, register

INT64_MAX = int(np.iinfo(np.int64).max)
_HUGE = 2**31 - 1  # a Slice end at least this large means "to the end of the axis" in practice


# --- helpers ---------------------------------------------------------------------------------------
def _data_only(ctx: RuleContext, dx: str | None) -> list[str | None]:
    """``dx`` for input 0 and ``None`` for the shape/axes/index inputs after it."""
    return [dx if ctx.needs[0] else None] + [None] * (len(ctx.inputs) - 1)


def _static_dim(ctx: RuleContext, tensor: str, axis: int) -> int | None:
    shape = ctx.shape(tensor)
    return None if shape is None else shape[axis]


def _require_dim(ctx: RuleContext, tensor: str, axis: int) -> int:
    size = _static_dim(ctx, tensor, axis)
    if size is None:
        ctx.fail_shape(f"axis {axis} of '{tensor}' needs a static size (it is {ctx.shape(tensor)})")
    return size


def _place_rows(ctx: RuleContext, grad: str, axis: int, rank: int, source: np.ndarray, size: int) -> str:
    """Row i along ``axis`` of the result is row ``source[i]`` of ``grad`` (``size`` rows), or zeros where
    ``source[i]`` < 0: a Pad of one zero slab after the last row, then a Gather with a constant index map."""
    e = ctx.emit
    if source.shape == (size,) and np.array_equal(source, np.arange(size)):
        return grad
    if (source < 0).any():
        grad, source = e.pad(grad, _axis_pads(rank, axis, 0, 1)), np.where(source < 0, size, source)
    return e.op("Gather", grad, e.ints(source), axis=axis)


def _axis_pads(rank: int, axis: int, before: int, after: int) -> list[int]:
    """Pad amounts (all begins, then all ends) that touch only ``axis``."""
    pads = [0] * (2 * rank)
    pads[axis], pads[rank + axis] = before, after
    return pads


def _shape_with_axis(ctx: RuleContext, like: str, axis: int, size: int) -> str:
    """``Shape(like)`` with the dim at ``axis`` replaced by ``size`` (the other dims stay dynamic)."""
    e, rank = ctx.emit, ctx.rank(like)
    shape = e.shape(like)
    parts = [e.slice(shape, [0], [axis], [0])] if axis > 0 else []
    parts.append(e.ints([size]))
    parts += [e.slice(shape, [axis + 1], [INT64_MAX], [0])] if axis + 1 < rank else []
    return parts[0] if len(parts) == 1 else e.op("Concat", *parts, axis=0)


# --- reshapes --------------------------------------------------------------------------------------
@register("Reshape", "Flatten")
def reshape(ctx: RuleContext):
    """dX = Reshape(dY, Shape(X))"""
    return _data_only(ctx, ctx.emit.reshape_like(ctx.dy, ctx.inputs[0]))


def _axes(ctx: RuleContext) -> list[int] | None:
    """Squeeze's or Unsqueeze's axes (attribute before opset 13, constant input from it), if given."""
    axes = ctx.attr("axes") if ctx.opset < 13 else ctx.const(1)
    return None if axes is None else [int(a) for a in np.atleast_1d(axes)]


@register("Unsqueeze")
def unsqueeze(ctx: RuleContext):
    """dX = Squeeze(dY, axes), or Reshape(dY, Shape(X)) when the axes are computed (X itself is not needed)"""
    axes = _axes(ctx)
    dx = ctx.emit.reshape_like(ctx.dy, ctx.inputs[0]) if axes is None else ctx.emit.squeeze(ctx.dy, axes)
    return _data_only(ctx, dx)


@register("Squeeze")
def squeeze(ctx: RuleContext):
    """dX = Unsqueeze(dY, axes) with the axes made positive, else Reshape(dY, Shape(X))"""
    axes, rank = _axes(ctx), ctx.view.rank(ctx.inputs[0])
    if axes is None or rank is None:
        return _data_only(ctx, ctx.emit.reshape_like(ctx.dy, ctx.inputs[0]))
    return _data_only(ctx, ctx.emit.unsqueeze(ctx.dy, sorted(a % rank for a in axes)))


@register("Transpose")
def transpose(ctx: RuleContext):
    """dX = Transpose(dY, perm⁻¹)"""
    perm = ctx.attr("perm") or list(reversed(range(ctx.rank(ctx.inputs[0]))))
    return [ctx.emit.transpose(ctx.dy, np.argsort(perm).tolist())]


@register("DepthToSpace")
def depth_to_space(ctx: RuleContext):
    """dX = SpaceToDepth(dY) in DCR mode (its inverse); in CRD mode dY viewed as (N, C/b², H, b, W, b),
    Transpose(0, 1, 3, 5, 2, 4), Reshape(Shape(X))"""
    e, block = ctx.emit, int(ctx.attr("blocksize"))
    if ctx.attr("mode", "DCR") == "DCR":
        return [e.op("SpaceToDepth", ctx.dy, blocksize=block)]
    x = ctx.inputs[0]
    channels = _require_dim(ctx, x, 1)
    shape = e.shape(x)
    n, h, w = (e.slice(shape, [axis], [axis + 1], [0]) for axis in (0, 2, 3))
    blocks = e.op("Concat", n, e.ints([channels // block ** 2]), h, e.ints([block]), w, e.ints([block]), axis=0)
    return [e.reshape_like(e.transpose(e.reshape(ctx.dy, blocks), [0, 1, 3, 5, 2, 4]), x)]


@register("SpaceToDepth")
def space_to_depth(ctx: RuleContext):
    """dX = DepthToSpace(dY) in DCR mode: its inverse"""
    return [ctx.emit.op("DepthToSpace", ctx.dy, blocksize=int(ctx.attr("blocksize")), mode="DCR")]


@register("Expand")
def expand(ctx: RuleContext):
    """dX = dY summed over the broadcast axes"""
    return _data_only(ctx, ctx.emit.unbroadcast(ctx.dy, ctx.inputs[0], ctx.outputs[0]))


@register("Tile")
def tile(ctx: RuleContext):
    """dX = dY reshaped to (repeat, dim) pairs, summed over the repeats"""
    e, (x, repeats) = ctx.emit, ctx.inputs
    rank = ctx.rank(x)
    pairs = e.op("Concat", e.unsqueeze(repeats, [1]), e.unsqueeze(e.shape(x), [1]), axis=1)  # (rank, 2)
    paired = e.reshape(ctx.dy, e.reshape(pairs, e.ints([-1])))  # r₀, d₀, r₁, d₁, …
    return _data_only(ctx, e.reduce_sum(paired, list(range(0, 2 * rank, 2)), keepdims=False))


# --- joining and splitting ----------------------------------------------------------------------------
@register("Concat")
def concat(ctx: RuleContext):
    """dXᵢ = the part of dY along axis that Xᵢ filled"""
    e, y = ctx.emit, ctx.outputs[0]
    axis = int(ctx.attr("axis")) % ctx.rank(y)
    last = max(i for i, need in enumerate(ctx.needs) if need)
    sizes = [_static_dim(ctx, x, axis) for x in ctx.inputs[: last + 1]]
    static = None not in sizes  # static offsets, else offsets read from the inputs' shapes at run time
    grads, start = [None] * len(ctx.inputs), 0 if static else e.ints([0])
    for i, (x, size) in enumerate(zip(ctx.inputs, sizes)):
        end = start + size if static else e.add(start, e.op("Gather", e.shape(x), e.ints([axis]), axis=0))
        if ctx.needs[i] and static:
            grads[i] = e.slice(ctx.dy, [start], [end], [axis])
        elif ctx.needs[i]:
            grads[i] = e.op("Slice", ctx.dy, start, end, e.ints([axis]))
        start = end
    return grads


@register("Split")
def split(ctx: RuleContext):
    """dX = Concat(dY₀, dY₁, …) along axis (zeros for outputs no gradient reaches)"""
    e = ctx.emit
    pieces = [g if g else e.zeros_like(y) for g, y in zip(ctx.grads, ctx.outputs)]
    return _data_only(ctx, pieces[0] if len(pieces) == 1 else e.op("Concat", *pieces, axis=ctx.attr("axis", 0)))


# --- selecting -------------------------------------------------------------------------------------------
def _slice_params(ctx: RuleContext, rank: int) -> list[tuple[int, int, int, int]]:
    """(axis, start, end, step) per sliced axis, from the inputs (opset 10 on) or the attributes."""
    if ctx.opset >= 10:
        starts, ends = ctx.require_const(1, "starts input"), ctx.require_const(2, "ends input")
        axes = ctx.require_const(3, "axes input") if ctx.input(3) else np.arange(len(starts))
        steps = ctx.require_const(4, "steps input") if ctx.input(4) else np.ones(len(starts), np.int64)
    else:
        starts, ends = ctx.attr("starts"), ctx.attr("ends")
        axes, steps = ctx.attr("axes") or list(range(len(starts))), [1] * len(starts)
    return [(int(a) % rank, int(s), int(t), int(k)) for a, s, t, k in zip(axes, starts, ends, steps)]


@register("Slice")
def slice_(ctx: RuleContext):
    """dX = dY put back at the sliced positions, zeros elsewhere"""
    e, x = ctx.emit, ctx.inputs[0]
    rank, grad = ctx.rank(x), ctx.dy
    for axis, start, end, step in _slice_params(ctx, rank):
        if _static_dim(ctx, x, axis) is None and step == 1 and start >= 0 and end >= _HUGE:
            grad = e.pad(grad, _axis_pads(rank, axis, start, 0))  # x[start:] on an axis of dynamic size
            continue
        size = _require_dim(ctx, x, axis)
        picked = range(size)[slice(start, end, step)]  # ONNX clamps starts and ends as Python does
        if step == 1 and len(picked):  # a contiguous block: pad it back to full size
            grad = e.pad(grad, _axis_pads(rank, axis, picked.start, size - picked.stop))
            continue
        source = np.full(size, -1, dtype=np.int64)
        source[list(picked)] = np.arange(len(picked))
        grad = _place_rows(ctx, grad, axis, rank, source, len(picked))
    return _data_only(ctx, grad)


@register("Gather")
def gather(ctx: RuleContext):
    """dX = dY's rows added back at their indices along axis (repeats add up; indices get none)"""
    e, x = ctx.emit, ctx.inputs[0]
    rank = ctx.rank(x)
    axis = int(ctx.attr("axis", 0)) % rank
    size = _require_dim(ctx, x, axis)
    indices = ctx.require_const(1, "indices").astype(np.int64).ravel() % size
    grad = ctx.dy
    if ctx.require_const(1, "indices").ndim != 1:  # fold the index dims of dY into one axis of length K
        grad = e.reshape(grad, _shape_with_axis(ctx, x, axis, indices.size))
    if len(np.unique(indices)) == indices.size:
        source = np.full(size, -1, dtype=np.int64)
        source[indices] = np.arange(indices.size)
        return _data_only(ctx, _place_rows(ctx, grad, axis, rank, source, indices.size))
    one_hot = np.zeros((indices.size, size), dtype=e.dtype(x))
    one_hot[np.arange(indices.size), indices] = 1  # rows differ, so repeated indices sum in the MatMul
    last = [a for a in range(rank) if a != axis] + [axis]  # move axis last, contract it with the one-hot map
    summed = e.op("MatMul", e.transpose(grad, last), e.const(one_hot))
    return _data_only(ctx, e.transpose(summed, np.argsort(last).tolist()))


@register("Pad")
def pad(ctx: RuleContext):
    """dX = Pad(dY, −pads) (crops what was padded, zero-fills what was cropped); dvalue = Σ dY − Σ dX"""
    e = ctx.emit
    mode = ctx.attr("mode", "constant")
    if mode != "constant":
        ctx.fail(f"only mode 'constant' is supported, not '{mode}' (the others copy input values into the padding)")
    if ctx.opset < 11:  # pads as an attribute
        return [e.op("Pad", ctx.dy, pads=[-int(p) for p in ctx.attr("pads")], mode="constant")]
    pads = ctx.const(1)
    negated = e.ints(-pads.astype(np.int64)) if pads is not None else e.op("Neg", ctx.inputs[1])
    inputs = [ctx.dy, negated] + ([None, ctx.input(3)] if ctx.input(3) else [])
    dx = e.op("Pad", *inputs, mode="constant", dtype_of=ctx.dy)
    grads = [dx if ctx.needs[0] else None] + [None] * (len(ctx.inputs) - 1)
    if len(ctx.inputs) > 2 and ctx.needs[2]:  # a differentiable padding value collects what fell on the padding
        total = [e.op("ReduceSum", t, keepdims=0) for t in (ctx.dy, dx)]
        grads[2] = e.reshape_like(e.sub(*total), ctx.inputs[2])
    return grads


@register("GatherElements", since=16)
def gather_elements(ctx: RuleContext):
    """dX = ScatterElements(0, indices, dY, reduction=add) along axis (repeats add up; indices get none)"""
    e, x, indices = ctx.emit, ctx.inputs[0], ctx.inputs[1]
    dx = e.op("ScatterElements", e.zeros_like(x), indices, ctx.dy, axis=int(ctx.attr("axis", 0)), reduction="add",
              dtype_of=ctx.dy)
    return [dx, None]


@register("ScatterND", since=11)
def scatter_nd(ctx: RuleContext):
    """dData = dY with the written positions zeroed (kept for reduction=add); dUpdates = GatherND(dY, indices)"""
    e, (indices, updates) = ctx.emit, ctx.inputs[1:3]
    reduction = ctx.attr("reduction", "none")
    if reduction not in ("none", "add"):
        ctx.fail(f"reduction '{reduction}' is not supported (only none and add)")
    d_data = None
    if ctx.needs[0]:
        d_data = ctx.dy if reduction == "add" else e.op("ScatterND", ctx.dy, indices, e.zeros_like(updates),
                                                         dtype_of=ctx.dy)
    d_updates = e.op("GatherND", ctx.dy, indices, dtype_of=ctx.dy) if ctx.needs[2] else None
    return [d_data, None, d_updates]


@register("ReverseSequence", since=10)
def reverse_sequence(ctx: RuleContext):
    """dX = ReverseSequence(dY) with the same lengths (the reversal is its own inverse)"""
    attrs = {name: ctx.attr(name) for name in ("batch_axis", "time_axis") if ctx.attr(name) is not None}
    return _data_only(ctx, ctx.emit.op("ReverseSequence", ctx.dy, ctx.inputs[1], **attrs))
