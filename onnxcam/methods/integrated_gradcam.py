"""Integrated Grad-CAM (Sattarzadeh et al., ICASSP 2021): Grad-CAM with its gradient term
replaced by that term's path integral along the straight line from a baseline image x' to the
image x, as Integrated Gradients (Sundararajan et al., 2017) integrates input gradients.

With x_m = x' + (m/M)·(x − x'), m = 1..M (a right Riemann sum of M ``steps``),
w̄_k = (1/M)·Σ_m (1/Z)·Σ_ij ∂y_c/∂A_k,ij(x_m) and L = Σ_k w̄_k·A_k(x). Every path point is
explained for the class explained on the image; x_M = x is the pass already made, the other
M − 1 points run ``passes_batch`` at a time (M = 1 is Grad-CAM). The baseline is a black image
put through the model's pre-processing, or the zero tensor (``baseline``).

This follows the paper's abstract ("the path integral of the gradient-based terms in
Grad-CAM"); a variant that also measures the activations from the baseline's, Σ_k w̄_k·(A_k(x) −
A_k(x')), localised far worse on the demo task (pointing game 0.76 against 0.995).
"""

from __future__ import annotations

import numpy as np

from onnxcam.multipass import RunContext, explain_copies

__all__ = ["build", "path_weights"]


def path_weights(ctx: RunContext) -> np.ndarray:
    """(N, C): Grad-CAM's channel weights averaged over the M points of the path."""
    steps = ctx.options.steps
    baseline = ctx.baseline_image()
    weight_sum = ctx.gradients.astype(np.float64).mean(axis=(2, 3))  # m = M: the image itself

    def path_point(i: int, j: int) -> np.ndarray:  # j = 0..M−2 is m = 1..M−1
        return baseline + ((j + 1) / steps) * (ctx.batch[i:i + 1] - baseline)

    for rows, _, outputs in explain_copies(ctx, steps - 1, path_point):
        np.add.at(weight_sum, rows, outputs["gradients"].astype(np.float64).mean(axis=(2, 3)))
    return weight_sum / steps


def build(ctx: RunContext) -> np.ndarray:
    """L = Σ_k w̄_k·A_k,  w̄_k = (1/M)·Σ_{m=1..M} mean_ij ∂y_c/∂A_k,ij(x' + (m/M)(x − x'))"""
    return np.einsum("nc,nchw->nhw", path_weights(ctx), ctx.activations.astype(np.float64))
