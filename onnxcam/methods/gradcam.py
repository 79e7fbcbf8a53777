"""Grad-CAM (Selvaraju et al., 2017): channel weights are the spatially averaged gradients."""

from onnxcam.autodiff.emitter import Emitter
from onnxcam.methods.context import LayerContext


def build(e: Emitter, activations: str, gradients: str, ctx: LayerContext) -> str:
    """L = Σ_k (mean_ij ∂y/∂A_k,ij) · A_k"""
    weights = e.reduce_mean(gradients, [2, 3], keepdims=True)
    return e.reduce_sum(e.mul(weights, activations), [1], keepdims=True)
