"""Grad-CAM++ (Chattopadhyay et al., 2018): positive gradients weighted per position by α.

The paper's closed form for α (its eq. 19, derived for an exponential score, where the second
and third derivatives are powers of the first) needs only the first-order gradient G:
α_ij = G_ij² / (2·G_ij² + G_ij³·Σ_ab A_ab), per channel. Where G_ij ≠ 0 this is
1 / (2 + G_ij·Σ_ab A_ab), the form computed here: it cannot underflow the way G² and G³ do in
float32. α is 0 where the denominator is 0 (it is for every G_ij = 0, where ReLU(G) is 0 anyway).
No ε is added, so small gradients keep α close to ½ instead of being pulled towards 0.
"""

from onnxcam.autodiff.emitter import Emitter
from onnxcam.methods.context import LayerContext


def build(e: Emitter, activations: str, gradients: str, ctx: LayerContext) -> str:
    """L = Σ_k (Σ_ij α_k,ij·ReLU(G_k,ij)) · A_k,  α = G² / (2G² + G³·Σ_ab A_k,ab)  (0 where that is 0/0)"""
    channel_sums = e.reduce_sum(activations, [2, 3], keepdims=True)
    denominator = e.add(e.scalar(2.0, gradients), e.mul(gradients, channel_sums))
    zero = e.op("Equal", denominator, e.scalar(0.0, denominator))
    safe = e.where(zero, e.scalar(1.0, denominator), denominator)
    alpha = e.where(zero, e.scalar(0.0, safe), e.div(e.scalar(1.0, safe), safe))
    weights = e.reduce_sum(e.mul(alpha, e.op("Relu", gradients)), [2, 3], keepdims=True)
    return e.reduce_sum(e.mul(weights, activations), [1], keepdims=True)
