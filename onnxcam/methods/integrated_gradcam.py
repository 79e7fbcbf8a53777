"""Integrated Grad-CAM (Sattarzadeh et al., ICASSP 2021): Grad-CAM's gradient term integrated
along the straight path from a baseline image x' to the image x, as Integrated Gradients
(Sundararajan et al., 2017) does for input gradients, and applied to the activations' change
from the baseline.

With x_m = x' + (m/M)·(x − x'), m = 1..M (a right Riemann sum of M ``steps``):
w̄_k = (1/M)·Σ_m (1/Z)·Σ_ij ∂y_c/∂A_k,ij(x_m), and L = Σ_k w̄_k·(A_k(x) − A_k(x')). Every path
point is explained for the class explained on the image. x_M = x is the pass already made;
the other M − 1 points and the baseline (for A(x')) run ``passes_batch`` at a time. The baseline
is a black image put through the model's pre-processing, or the zero tensor (``baseline``).
"""

from __future__ import annotations

import numpy as np

from onnxcam.multipass import RunContext, explain_copies

__all__ = ["build", "path_weights"]


def path_weights(ctx: RunContext) -> tuple[np.ndarray, np.ndarray]:
    """(w̄ (N, C): Grad-CAM weights averaged over the path, A(x') (N, C, h, w))."""
    steps = ctx.options.steps
    baseline = ctx.baseline_image()
    weight_sum = ctx.gradients.astype(np.float64).mean(axis=(2, 3))  # m = M: the image itself
    baseline_activations = np.empty(ctx.activations.shape, np.float64)

    def path_point(i: int, m: int) -> np.ndarray:  # m = 0 is the baseline, 1..M−1 the inner points
        return baseline + (m / steps) * (ctx.batch[i:i + 1] - baseline)

    for rows, points, outputs in explain_copies(ctx, steps, path_point):
        weights = outputs["gradients"].astype(np.float64).mean(axis=(2, 3))
        inner = points > 0
        np.add.at(weight_sum, rows[inner], weights[inner])
        baseline_activations[rows[~inner]] = outputs["activations"][~inner]
    return weight_sum / steps, baseline_activations


def build(ctx: RunContext) -> np.ndarray:
    """L = Σ_k w̄_k·(A_k(x) − A_k(x')),  w̄_k = (1/M)·Σ_{m=1..M} mean_ij ∂y_c/∂A_k,ij(x' + (m/M)(x − x'))"""
    weights, baseline_activations = path_weights(ctx)
    return np.einsum("nc,nchw->nhw", weights, ctx.activations.astype(np.float64) - baseline_activations)
