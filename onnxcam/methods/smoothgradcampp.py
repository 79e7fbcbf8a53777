"""Smooth Grad-CAM++ (Omeiza et al., 2019): Grad-CAM++ with its gradient terms averaged over
noisy copies of the input, as SmoothGrad (Smilkov et al., 2017) averages input gradients.

For n copies x + ε_s, ε_s ~ N(0, σ²) with σ = ``noise``·(max(x) − min(x)) (SmoothGrad's noise
level), D1, D2 and D3 are the means over the copies of G, G² and G³, G = ∂y_c/∂A at that copy
(the 2nd and 3rd derivatives being powers of G under Grad-CAM++'s exponential score). Then
α = D2 / (2·D2 + D3·Σ_ab A_ab) per channel (0 where that is 0/0), w_k = Σ_ij α_k,ij·ReLU(D1_k,ij)
and L = Σ_k w_k·A_k, with A the activations of the image itself. Every copy is explained for
the class explained on the image. The noise generator restarts from ``seed`` for every image,
so an image's map does not depend on the batch it came in. Copies run ``passes_batch`` at a time.
"""

from __future__ import annotations

import numpy as np

from onnxcam.methods.multipass import RunContext, explain_copies

__all__ = ["build", "smoothed_gradient_powers", "gradcampp_map"]


def smoothed_gradient_powers(ctx: RunContext) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(D1, D2, D3): the means of G, G², G³ over ``samples`` noisy copies of each image."""
    options = ctx.options
    generators = [np.random.default_rng(options.seed) for _ in range(ctx.batch.shape[0])]
    flat = ctx.batch.reshape(ctx.batch.shape[0], -1)
    sigmas = options.noise * (flat.max(axis=1) - flat.min(axis=1))

    def noisy_copy(i: int, _sample: int) -> np.ndarray:
        noise = generators[i].standard_normal(ctx.batch.shape[1:]) * sigmas[i]
        return (ctx.batch[i] + noise)[None]

    powers = [np.zeros(ctx.activations.shape, np.float64) for _ in range(3)]
    for rows, _, outputs in explain_copies(ctx, options.samples, noisy_copy):
        g = outputs["gradients"].astype(np.float64)
        for power, total in enumerate(powers, start=1):
            np.add.at(total, rows, g ** power)
    return tuple(total / options.samples for total in powers)


def gradcampp_map(activations: np.ndarray, d1: np.ndarray, d2: np.ndarray, d3: np.ndarray) -> np.ndarray:
    """Σ_k w_k·A_k with Grad-CAM++'s α from the (averaged) gradient powers: (N, h, w)."""
    a = activations.astype(np.float64)
    denominator = 2 * d2 + d3 * a.sum(axis=(2, 3), keepdims=True)
    zero = denominator == 0
    alpha = np.where(zero, 0.0, d2 / np.where(zero, 1.0, denominator))
    weights = (alpha * np.maximum(d1, 0)).sum(axis=(2, 3))
    return np.einsum("nc,nchw->nhw", weights, a)


def build(ctx: RunContext) -> np.ndarray:
    """L = Σ_k (Σ_ij α_k,ij·ReLU(D1_k,ij))·A_k,  α = D2 / (2·D2 + D3·Σ_ab A_k,ab),  Dp = mean over noisy copies of Gᵖ"""
    return gradcampp_map(ctx.activations, *smoothed_gradient_powers(ctx))
