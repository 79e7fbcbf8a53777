"""Score-CAM (Wang et al., CVPR Workshops 2020): a channel's weight is the target's softmax
probability on the input masked by that channel's upsampled, min-max normalised map.

M_k = norm(up(A_k)), up = bilinear to the input size (half-pixel centres, as the head's resize),
norm = (x − min)/(max − min) (0 where the map is constant); w_k = softmax(f(X ⊙ M_k))_c, as the
authors' code computes it: no baseline score is subtracted (the paper's "increase of confidence"
f(X ⊙ M_k) − f(X_b), with X_b the fully masked input, would shift every weight by one constant per
image). pytorch-grad-cam (1.5) weights by a softmax over the channels of the target's logit
f(X ⊙ M_k)_c instead, with masks upsampled at aligned corners (scripts/bench_scorecam.py compares).
When the model is explained on its probability output (``score="probability"``) that output is
used as it is instead of a softmax over it.
``scorecam_topk`` K keeps only the K channels whose maps vary most (highest variance over the
map, the Faster Score-CAM shortcut) per image; the others get weight 0. Masked images run
``passes_batch`` at a time. For tasks other than classification the weight is the target's score
Σ w ⊙ S on the masked input itself (no softmax over classes applies).

The softmax saturates on confident models: when the masked images all fall into one class (the
demo model calls a blank, mid-grey input a "square" with p ≈ 1), every weight of another class
is ≈ 0 and the map is noise. The README's methods table shows this on the demo task.
"""

from __future__ import annotations

import numpy as np

from onnxcam.autodiff.rules.resize import bilinear_matrix
from onnxcam.methods.multipass import RunContext, chunks, softmax

__all__ = ["build", "channel_masks", "selected_channels"]


def constant_maps(activations: np.ndarray) -> np.ndarray:
    """(C,) bool: which of one image's (C, h, w) channel maps are constant (their masks are 0)."""
    flat = activations.reshape(activations.shape[0], -1)
    return flat.max(axis=1) == flat.min(axis=1)


def channel_masks(activations: np.ndarray, height: int, width: int) -> np.ndarray:
    """(C, H, W) masks in [0, 1] from one image's (C, h, w) activations (0 where a map is constant)."""
    maps = activations.astype(np.float32)
    rows, columns = (bilinear_matrix(n, size).astype(np.float32) for n, size in zip(maps.shape[1:], (height, width)))
    masks = np.matmul(np.matmul(rows, maps), columns.T)
    low = masks.min(axis=(1, 2), keepdims=True)
    span = masks.max(axis=(1, 2), keepdims=True) - low
    masks -= low
    varying = ~constant_maps(maps)[:, None, None] & (span > 0)
    np.divide(masks, span, out=masks, where=varying)
    masks[~varying[:, 0, 0]] = 0.0
    return masks


def selected_channels(activations: np.ndarray, topk: int | None) -> np.ndarray:
    """Indices of the channels to score for one image's (C, h, w) activations."""
    c = activations.shape[0]
    if topk is None or topk >= c:
        return np.arange(c)
    variances = activations.reshape(c, -1).astype(np.float64).var(axis=1)
    return np.sort(np.argsort(-variances, kind="stable")[:topk])


def scored_channels(activations: np.ndarray, channels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The channels that get a masked pass, and the constant ones sharing the first constant one's:
    a constant map's mask is 0, so all of them score the same blacked-out input."""
    constant = constant_maps(activations[channels])
    keep = ~constant
    if constant.any():
        keep[np.argmax(constant)] = True
    return channels[keep], channels[constant]


def masked_images(image: np.ndarray, masks: np.ndarray, layout: str, out: np.ndarray) -> np.ndarray:
    """``image`` (C, H, W) or (H, W, C) times each (H, W) mask, written into ``out`` (no new buffer per call)."""
    images = out[:len(masks)]
    np.multiply(image[None], masks[:, None] if layout == "NCHW" else masks[..., None], out=images)
    return images


def build(ctx: RunContext) -> np.ndarray:
    """L = Σ_k softmax(f(X ⊙ norm(up(A_k))))_c · A_k"""
    a = ctx.activations
    height, width = ctx.image_size
    weights = np.zeros(a.shape[:2], np.float64)
    buffer = np.empty((min(ctx.options.passes_batch, a.shape[1]), *ctx.batch.shape[1:]), ctx.batch.dtype)
    for i in range(a.shape[0]):
        channels, shared = scored_channels(a[i], selected_channels(a[i], ctx.options.scorecam_topk))
        for first, last in chunks(len(channels), ctx.options.passes_batch):
            masks = channel_masks(a[i][channels[first:last]], height, width)  # a chunk at a time: bounded memory
            scores = ctx.forward(masked_images(ctx.batch[i], masks, ctx.layout, buffer))
            if ctx.task == "classification" and ctx.score_kind != "probability":
                scores = softmax(scores.astype(np.float64))
            weights[i, channels[first:last]] = ctx.weighted(scores, np.full(last - first, i))
        if shared.size:
            weights[i, shared] = weights[i, shared[0]]
    return np.einsum("nc,nchw->nhw", weights, a.astype(np.float64))
