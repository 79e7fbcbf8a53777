"""Gradient rules: Resize ("nearest" and "linear" modes) and the older Upsample.

Resize is linear in X and separable: along each resized axis, Y = R·X for an (out × in)
interpolation matrix R built here in numpy, so dX applies Rᵀ axis by axis. R follows ONNX
Runtime's float32 coordinate mapping, rounding and border clamping. The resized axes need static
sizes; axes that keep their size with scale 1 (such as the batch) are left alone. Upsample (opsets
7–9) and Resize-10 have only scales and the asymmetric mapping (nearest rounds down).
"""

import numpy as np

from onnxcam.autodiff.registry import RuleContext, register

_F = np.float32
_MODES = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric",
          "tf_half_pixel_for_nn")


def _source(j: np.ndarray, mode: str, scale, n_in: int, n_out: int) -> np.ndarray:
    """Input coordinate of each output index ``j``, in float32 as ONNX Runtime computes it."""
    j, scale = j.astype(_F), _F(scale)
    if mode == "asymmetric":
        return j / scale
    if mode == "tf_half_pixel_for_nn":
        return (j + _F(0.5)) / scale
    if mode == "align_corners":
        return np.zeros_like(j) if n_out == 1 else j * _F(n_in - 1) / _F(n_out - 1)
    if mode == "pytorch_half_pixel" and n_out == 1:
        return np.zeros_like(j)
    if mode == "half_pixel_symmetric":  # ORT mixes float and double here
        adjustment = _F(n_out) / (scale * _F(n_in))
        offset = _F(n_in) / _F(2) * (_F(1) - adjustment)
        return (np.float64(offset) + (j.astype(np.float64) + 0.5) / np.float64(scale) - 0.5).astype(_F)
    return (j + _F(0.5)) / scale - _F(0.5)


def _nearest(x: np.ndarray, rounding: str) -> np.ndarray:
    if rounding == "floor":
        return np.floor(x)
    if rounding == "ceil":
        return np.ceil(x)
    away = np.sign(x) * np.floor(np.abs(x.astype(np.float64)) + 0.5)  # std::round: ties away from zero
    if rounding == "round_prefer_floor":
        return np.where(x == np.trunc(x) + _F(0.5), np.floor(x), away)
    return away


def interpolation_matrix(n_in: int, n_out: int, scale, mode: str, coord: str, rounding: str) -> np.ndarray:
    """The (n_out × n_in) matrix R with Y = R·X along one axis."""
    x = _source(np.arange(n_out), coord, scale, n_in, n_out)
    r = np.zeros((n_out, n_in), dtype=np.float64)
    rows = np.arange(n_out)
    if mode == "nearest":
        r[rows, np.clip(_nearest(x, rounding), 0, n_in - 1).astype(np.int64)] = 1.0
        return r
    x = np.clip(x, _F(0), _F(n_in - 1))
    low = np.minimum(np.floor(x).astype(np.int64), n_in - 1)
    high = np.minimum(low + 1, n_in - 1)
    frac = (x - low.astype(_F)).astype(np.float64)
    np.add.at(r, (rows, low), 1.0 - frac)
    np.add.at(r, (rows, high), frac)
    return r


def bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """:func:`interpolation_matrix` of the maps' resize: linear, half-pixel centres (OpenCV's INTER_LINEAR)."""
    return interpolation_matrix(n_in, n_out, n_out / n_in, "linear", "half_pixel", "round_prefer_floor")


def _check_attrs(ctx: RuleContext, mode: str, coord: str):
    if mode not in ("nearest", "linear"):
        ctx.fail(f"mode '{mode}' is not supported (only 'nearest' and 'linear')")
    if ctx.attr("antialias", 0):
        ctx.fail("antialias=1 is not supported")
    if coord not in _MODES:
        ctx.fail(f"coordinate_transformation_mode '{coord}' is not supported")
    if coord == "tf_half_pixel_for_nn" and mode != "nearest":
        ctx.fail("coordinate_transformation_mode 'tf_half_pixel_for_nn' applies to mode 'nearest' only")
    if ctx.attr("keep_aspect_ratio_policy", "stretch") != "stretch" and ctx.input(3):
        ctx.fail("keep_aspect_ratio_policy must be 'stretch'")


def _scales_and_sizes(ctx: RuleContext, rank: int, axes: list[int]):
    """Per axis of X: (input size, output size, scale); sizes may be None on untouched axes."""
    x_shape, y_shape = ctx.shape(ctx.inputs[0]), ctx.shape(ctx.outputs[0]) or (None,) * rank
    scales = ctx.const(2) if ctx.input(2) else None
    if ctx.input(2) and scales is None and ctx.shape(ctx.input(2)) != (0,):
        ctx.fail("its scales must be a constant (initializer or Constant node)")
    scales = None if scales is None or scales.size == 0 else [_F(s) for s in scales.reshape(-1)]
    sizes = ctx.const(3) if ctx.input(3) else None
    sizes = None if sizes is None or sizes.size == 0 else [int(s) for s in sizes.reshape(-1)]
    result = [(x_shape[a], x_shape[a], _F(1)) for a in range(rank)]
    for i, a in enumerate(axes):
        n_in, scale = x_shape[a], scales[i] if scales is not None else None
        if n_in is None and (scale == 1 or (a == 0 and scale is None)):
            continue  # a dynamic axis left as it is (with sizes, the batch is taken to be unchanged)
        if scales is not None:
            n_out = None if n_in is None else int(_F(n_in) * scale)
        else:
            n_out = sizes[i] if sizes is not None else y_shape[a]
        if n_in is None or n_out is None:
            ctx.fail_shape(f"the size of axis {a}, which scales or sizes name, must be static in input and output "
                     f"(they are {n_in} and {n_out})")
        result[a] = (n_in, n_out, scale if scales is not None else _F(n_out) / _F(n_in))
    return result


@register("Resize", since=11)
def resize(ctx: RuleContext):
    """dX = Rᵀ·dY along each resized axis (R the interpolation matrix; roi, scales, sizes get none)"""
    x = ctx.inputs[0]
    mode, coord = ctx.attr("mode", "nearest"), ctx.attr("coordinate_transformation_mode", "half_pixel")
    rounding = ctx.attr("nearest_mode", "round_prefer_floor")
    _check_attrs(ctx, mode, coord)
    rank = ctx.rank(x)
    axes = [a % rank for a in ctx.attr("axes", None) or range(rank)]
    return _transposed_interpolation(ctx, _scales_and_sizes(ctx, rank, axes), mode, coord, rounding)


@register("Upsample", since=7)
@register("Resize", since=10)
def upsample(ctx: RuleContext):
    """dX = Rᵀ·dY along each scaled axis (asymmetric coordinates, floor for nearest; scales get none)"""
    mode = ctx.attr("mode", "nearest")
    _check_attrs(ctx, mode, "asymmetric")
    scales = ctx.attr("scales") if ctx.node.op_type == "Upsample" and ctx.opset < 9 else ctx.require_const(1, "scales")
    ctx.rank(ctx.inputs[0])
    x_shape = ctx.shape(ctx.inputs[0])
    plan = []
    for a, scale in enumerate(_F(s) for s in np.reshape(scales, -1)):
        n_in = x_shape[a] if scale == 1 else _static_axis(ctx, x_shape, a)
        plan.append((n_in, None if n_in is None else int(_F(n_in) * scale), scale))
    return _transposed_interpolation(ctx, plan, mode, "asymmetric", "floor")


def _static_axis(ctx: RuleContext, shape, axis: int) -> int:
    if shape[axis] is None:
        ctx.fail_shape(f"the size of axis {axis}, which it scales, must be static (the input is {shape})")
    return shape[axis]


def _transposed_interpolation(ctx: RuleContext, plan, mode: str, coord: str, rounding: str):
    """dY through Rᵀ on every axis of ``plan`` ((input size, output size, scale) per axis) that changes size."""
    e, grad, rank = ctx.emit, ctx.dy, len(plan)
    if all(n_in == n_out for n_in, n_out, _ in plan):  # ORT copies X when no size changes
        return [grad] + [None] * (len(ctx.inputs) - 1)
    for a, (n_in, n_out, scale) in enumerate(plan):
        if scale == 1:  # ORT maps an axis of scale 1 straight through, whatever the mode
            continue
        r = interpolation_matrix(n_in, n_out, scale, mode, coord, rounding)
        grad = _apply_transpose(e, grad, r.astype(e.dtype(ctx.dy)), a, rank)
    return [grad] + [None] * (len(ctx.inputs) - 1)


def _apply_transpose(e, grad: str, r: np.ndarray, axis: int, rank: int) -> str:
    """Contract ``grad``'s ``axis`` (length out) with R (out × in), leaving length in there."""
    if axis == rank - 1:
        return e.op("MatMul", grad, e.const(r))
    if axis == rank - 2:
        return e.op("MatMul", e.const(np.ascontiguousarray(r.T)), grad, dtype_of=grad)
    perm = list(range(rank))
    perm[axis], perm[-1] = perm[-1], perm[axis]
    return e.transpose(e.op("MatMul", e.transpose(grad, perm), e.const(r)), perm)
