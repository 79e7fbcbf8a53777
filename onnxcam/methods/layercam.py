"""LayerCAM (Jiang et al., 2021): every position weighted by its own positive gradient."""

from onnxcam.autodiff.emitter import Emitter
from onnxcam.methods.context import LayerContext


def build(e: Emitter, activations: str, gradients: str, ctx: LayerContext) -> str:
    """L = Σ_k ReLU(G_k) ⊙ A_k"""
    return e.reduce_sum(e.mul(e.op("Relu", gradients), activations), [1], keepdims=True)
