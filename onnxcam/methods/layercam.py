"""LayerCAM (Jiang et al., 2021): every position weighted by its own positive gradient."""

from onnxcam.autodiff.emitter import Emitter
from onnxcam.plan import Plan


def build(e: Emitter, activations: str, gradients: str, plan: Plan) -> str:
    """L = Σ_k ReLU(G_k) ⊙ A_k"""
    return e.reduce_sum(e.mul(e.op("Relu", gradients), activations), [1], keepdims=True)
