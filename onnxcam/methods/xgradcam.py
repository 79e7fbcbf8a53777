"""XGrad-CAM (Fu et al., 2020): gradients averaged with the activations' own spatial distribution as weights.

The weight of channel k is the gradient's mean under the distribution A_k / Σ A_k, the choice
the paper derives from its sensitivity and conservation axioms. ε (1e-7) keeps channels whose
activations sum to zero finite.
"""

from onnxcam.autodiff.emitter import Emitter
from onnxcam.methods.context import LayerContext

EPSILON = 1e-7


def build(e: Emitter, activations: str, gradients: str, ctx: LayerContext) -> str:
    """L = Σ_k (Σ_ij A_k,ij·G_k,ij / (Σ_ij A_k,ij + ε)) · A_k"""
    weighted = e.reduce_sum(e.mul(activations, gradients), [2, 3], keepdims=True)
    total = e.add(e.reduce_sum(activations, [2, 3], keepdims=True), e.scalar(EPSILON, activations))
    return e.reduce_sum(e.mul(e.div(weighted, total), activations), [1], keepdims=True)
