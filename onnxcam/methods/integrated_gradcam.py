"""Integrated Grad-CAM (Sattarzadeh et al., ICASSP 2021): Grad-CAM's maps integrated along the
straight path from a baseline image x' to the image x, as Integrated Gradients (Sundararajan et
al., 2017) integrates input gradients.

With x_m = x' + (m/M)·(x − x'), m = 1..M (M ``steps``): L = Σ_m ReLU(Σ_k w_k(x_m)·A_k(x_m)),
w_k(x_m) = (1/Z)·Σ_ij ∂y_c/∂A_k,ij(x_m): the Grad-CAM map of every path point, with its own
activations and gradients, summed — what the authors' notebook (github.com/smstrzd/
IntegratedGradCAM) computes, there over m = 0..M−1 (the baseline in, the image out); here
the right Riemann sum, so that the image's own pass is one of the points and M = 1 is Grad-CAM.
Every point is explained for the class explained on the image; the M − 1 points besides the
image run ``passes_batch`` at a time. The baseline is a black image put through the model's
pre-processing (the notebook's baseline is the black image), or the zero tensor (``baseline``).
"""

from __future__ import annotations

import numpy as np

from onnxcam.methods.multipass import RunContext, explain_copies

__all__ = ["build", "gradcam_maps"]


def gradcam_maps(activations: np.ndarray, gradients: np.ndarray) -> np.ndarray:
    """ReLU(Σ_k mean_ij(G_k)·A_k) for (M, C, h, w) activations and gradients: (M, h, w)."""
    weights = gradients.astype(np.float64).mean(axis=(2, 3))
    return np.maximum(np.einsum("mc,mchw->mhw", weights, activations.astype(np.float64)), 0)


def build(ctx: RunContext) -> np.ndarray:
    """L = Σ_{m=1..M} ReLU(Σ_k w_k(x_m)·A_k(x_m)),  x_m = x' + (m/M)(x − x'),  w_k = mean_ij ∂y_c/∂A_k,ij"""
    steps = ctx.options.steps
    baseline = ctx.baseline_image()
    total = gradcam_maps(ctx.activations, ctx.gradients)  # m = M: the image itself

    def path_point(i: int, j: int) -> np.ndarray:  # j = 0..M−2 is m = 1..M−1
        return baseline + ((j + 1) / steps) * (ctx.batch[i:i + 1] - baseline)

    for rows, _, outputs in explain_copies(ctx, steps - 1, path_point):
        np.add.at(total, rows, gradcam_maps(outputs["activations"], outputs["gradients"]))
    return total
