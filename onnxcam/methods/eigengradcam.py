"""Eigen-Grad-CAM: Eigen-CAM's first-principal-direction projection, applied to G ⊙ A.

Weighting the activations by their gradients first makes the projection class-specific; the
projection, its power iteration and its sign convention are those of :mod:`onnxcam.methods.eigencam`.
"""

from onnxcam.autodiff.emitter import Emitter
from onnxcam.methods.eigencam import principal_projection
from onnxcam.methods.context import LayerContext


def build(e: Emitter, activations: str, gradients: str, ctx: LayerContext) -> str:
    """L = M·v₁, M = G ⊙ A as (h·w × C) rows, v₁ its first right singular vector (sign: Σ L > 0)"""
    return principal_projection(e, e.mul(gradients, activations), ctx.layer)
