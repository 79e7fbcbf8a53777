"""Ablation-CAM (Desai & Ramaswamy, WACV 2020): a channel's weight is the score's relative drop
when that channel of the layer is set to zero.

w_k = (y_c − y_c^k) / y_c, with y_c the class score and y_c^k the score with channel k of A zeroed.
The ablated scores come from the *head model* (the layer's tensor → the score), run on N·C
ablated copies of A, ``passes_batch`` copies per ORT call. Where y_c = 0 the weights are 0.
"""

from __future__ import annotations

import numpy as np

from onnxcam.methods.multipass import RunContext, variant_batches

__all__ = ["build", "ablation_weights"]


def ablation_weights(ctx: RunContext) -> np.ndarray:
    """(N, C): (y_c − y_c^k) / y_c per image and channel."""
    a = ctx.activations
    n, c = a.shape[:2]
    ablated_scores = np.empty((n, c), np.float64)
    for images, channels in variant_batches(n, c, ctx.options.passes_batch):
        copies = a[images].copy()
        copies[np.arange(len(images)), channels] = 0
        scores = ctx.head(copies, images)
        ablated_scores[images, channels] = ctx.weighted(scores, images)
    y = ctx.scores.astype(np.float64)[:, None]
    safe = np.where(y == 0, 1.0, y)
    return np.where(y == 0, 0.0, (y - ablated_scores) / safe)


def build(ctx: RunContext) -> np.ndarray:
    """L = Σ_k ((y_c − y_c^k) / y_c)·A_k,  y_c^k = the score with channel k of A set to 0"""
    weights = ablation_weights(ctx)
    return np.einsum("nc,nchw->nhw", weights, ctx.activations.astype(np.float64))
