"""Guided backpropagation (Springenberg et al., 2015) and Guided Grad-CAM (Selvaraju et al., 2017).

Guided backpropagation differentiates the score with respect to the *input image*, with the
ReLU's rule replaced by dX = ReLU(dY)·(X > 0): only positive gradients pass, and only through
positive activations. ReLU6 (``Clip`` with min 0) gets the same treatment: dX = ReLU(dY)·(0 < X < max).
Every other op keeps its ordinary rule. The per-pixel map is the largest absolute value over
the image's channels, min-max normalised per image (a heatmap, like the other methods' ``cam``).

Guided Grad-CAM multiplies the guided gradient, per pixel and channel, with the Grad-CAM map
upsampled to the input (the finished Grad-CAM ``cam``, which is ≥ 0); its map is reduced over
channels the same way, then min-max normalised.
"""

from __future__ import annotations

from onnxcam.autodiff.emitter import Emitter
from onnxcam.autodiff.engine import emit_backward
from onnxcam.autodiff.registry import RuleContext
from onnxcam.autodiff.rules.activation import _between, _clip_bounds
from onnxcam.methods.fusion import normalize_maps

__all__ = ["GUIDED_RULES", "guided_relu", "guided_clip", "guided_input_gradient", "channel_saliency"]


def guided_relu(ctx: RuleContext):
    """dX = ReLU(dY)·(X > 0)"""
    e, x = ctx.emit, ctx.inputs[0]
    return [e.zero_where(e.op("Greater", x, e.scalar(0.0, x)), e.op("Relu", ctx.dy))]


def guided_clip(ctx: RuleContext):
    """dX = ReLU(dY)·(0 < X < max) for a ReLU-like Clip (min = 0); other Clips keep their rule."""
    e, x = ctx.emit, ctx.inputs[0]
    low, high = _clip_bounds(ctx)
    if low is None:
        return None
    low_value = e.view.const_value(low)
    if low_value is None:
        low_value = _emitted_value(e, low)
    if low_value is None or low_value.size != 1 or float(low_value.reshape(-1)[0]) != 0.0:
        return None
    inside = _between(ctx, x, low, high)
    return [e.zero_where(inside, e.op("Relu", ctx.dy)), *([None] * (len(ctx.inputs) - 1))]


def _emitted_value(e: Emitter, name: str):
    from onnx import numpy_helper

    for tensor in e.initializers:
        if tensor.name == name:
            return numpy_helper.to_array(tensor)
    return None


GUIDED_RULES = {"Relu": guided_relu, "Clip": guided_clip}


def guided_input_gradient(e: Emitter, seeds: dict[str, str], image: str) -> str:
    """∂score/∂image with the guided rules."""
    return emit_backward(e, seeds, [image], overrides=GUIDED_RULES)[image]


def channel_saliency(e: Emitter, gradient: str, layout: str) -> str:
    """(N, H, W) in [0, 1]: max over channels of |gradient|, then per image (x − min)/(max − min + ε)."""
    channel_axis = 1 if layout == "NCHW" else 3
    reduced = e.reduce("ReduceMax", e.op("Abs", gradient), [channel_axis], keepdims=False)
    return normalize_maps(e, reduced)


def build_guided_backprop(e: Emitter, ctx) -> str:
    """L = max_c |∂ᵍy/∂X_c|  (guided ReLU: dX = ReLU(dY)·(X > 0)), min-max normalised"""
    gradient = guided_input_gradient(e, ctx.seeds, ctx.plan.image)
    return channel_saliency(e, gradient, ctx.plan.layout)


def build_guided_gradcam(e: Emitter, ctx) -> str:
    """L = max_c |∂ᵍy/∂X_c| · Grad-CAM↑  (Grad-CAM upsampled to the input), min-max normalised"""
    gradient = guided_input_gradient(e, ctx.seeds, ctx.plan.image)
    cam = e.unsqueeze(ctx.gradcam(), [1 if ctx.plan.layout == "NCHW" else 3])
    return channel_saliency(e, e.mul(gradient, cam), ctx.plan.layout)
