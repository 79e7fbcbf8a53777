"""Score-CAM (Wang et al., CVPR Workshops 2020): a channel's weight is the target's softmax
probability on the input masked by that channel's upsampled, min-max normalised map.

M_k = norm(up(A_k)), up = bilinear to the input size (half-pixel centres, as the head's resize),
norm = (x − min)/(max − min) (0 where the map is constant); w_k = softmax(f(X ⊙ M_k))_c, as the
authors' code and pytorch-grad-cam compute it: no baseline score is subtracted (the paper's
"increase of confidence" f(X ⊙ M_k) − f(X_b), with X_b the fully masked input, would shift every
weight by one constant per image). When the model is explained on its probability output
(``score="probability"``) that output is used as it is instead of a softmax over it.
``scorecam_topk`` K keeps only the K channels whose maps vary most (highest variance over the
map, the Faster Score-CAM shortcut) per image; the others get weight 0. Masked images run
``passes_batch`` at a time. For tasks other than classification the weight is the target's score
Σ w ⊙ S on the masked input itself (no softmax over classes applies).

The softmax saturates on confident models: when the masked images all fall into one class (the
demo model calls a blank, mid-grey input a "square" with p ≈ 1), every weight of another class
is ≈ 0 and the map is noise. The README's methods table shows this on the demo task.
"""

from __future__ import annotations

import cv2
import numpy as np

from onnxcam.methods.multipass import RunContext, chunks, softmax

__all__ = ["build", "channel_masks", "selected_channels"]


def channel_masks(activations: np.ndarray, height: int, width: int) -> np.ndarray:
    """(C, H, W) masks in [0, 1] from one image's (C, h, w) activations (0 where a map is constant)."""
    masks = np.empty((activations.shape[0], height, width), np.float32)
    for k, channel in enumerate(activations.astype(np.float32)):  # per channel: faster than one (C, H, W) pass
        up = cv2.resize(channel, (width, height), interpolation=cv2.INTER_LINEAR)
        low, high = up.min(), up.max()
        masks[k] = (up - low) / (high - low) if high > low else 0.0
    return masks


def selected_channels(activations: np.ndarray, topk: int | None) -> np.ndarray:
    """Indices of the channels to score for one image's (C, h, w) activations."""
    c = activations.shape[0]
    if topk is None or topk >= c:
        return np.arange(c)
    variances = activations.reshape(c, -1).astype(np.float64).var(axis=1)
    return np.sort(np.argsort(-variances, kind="stable")[:topk])


def build(ctx: RunContext) -> np.ndarray:
    """L = Σ_k softmax(f(X ⊙ norm(up(A_k))))_c · A_k"""
    a = ctx.activations
    height, width = ctx.image_size
    weights = np.zeros(a.shape[:2], np.float64)
    for i in range(a.shape[0]):
        channels = selected_channels(a[i], ctx.options.scorecam_topk)
        masks = channel_masks(a[i][channels], height, width)
        # A constant map's mask is 0: all of them score the same blacked-out input, so it runs once.
        blank = ~masks.reshape(len(channels), -1).any(axis=1)
        if blank.any():
            keep = ~blank
            keep[np.argmax(blank)] = True
            masks, shared = masks[keep], channels[blank]
            channels = channels[keep]
        masks = masks[:, None] if ctx.layout == "NCHW" else masks[..., None]
        for first, last in chunks(len(channels), ctx.options.passes_batch):
            scores = ctx.forward((ctx.batch[i:i + 1] * masks[first:last]).astype(ctx.batch.dtype))
            if ctx.task == "classification" and ctx.score_kind != "probability":
                scores = softmax(scores.astype(np.float64))
            weights[i, channels[first:last]] = ctx.weighted(scores, np.full(last - first, i))
        if blank.any():
            weights[i, shared] = weights[i, shared[0]]
    return np.einsum("nc,nchw->nhw", weights, a.astype(np.float64))
