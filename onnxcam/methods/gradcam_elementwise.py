"""Element-wise Grad-CAM: HiResCAM with the ReLU moved inside the channel sum.

Each channel contributes only where gradient and activation agree in sign, so channels that
would cancel each other in HiResCAM's sum no longer do.
"""

from onnxcam.autodiff.emitter import Emitter
from onnxcam.methods.context import LayerContext


def build(e: Emitter, activations: str, gradients: str, ctx: LayerContext) -> str:
    """L = Σ_k ReLU(G_k ⊙ A_k)"""
    return e.reduce_sum(e.op("Relu", e.mul(gradients, activations)), [1], keepdims=True)
