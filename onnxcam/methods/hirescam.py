"""HiResCAM (Draelos & Carin, 2020): the gradient times the activation, element by element.

Unlike Grad-CAM it does not average the gradient over space first, so for a model whose score is
a linear function of the layer after it, the map sums exactly to the score's dependence on the layer.
"""

from onnxcam.autodiff.emitter import Emitter
from onnxcam.methods.context import LayerContext


def build(e: Emitter, activations: str, gradients: str, ctx: LayerContext) -> str:
    """L = Σ_k G_k ⊙ A_k"""
    return e.reduce_sum(e.mul(gradients, activations), [1], keepdims=True)
