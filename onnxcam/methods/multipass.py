"""Multi-pass CAM methods, run by the :class:`onnxcam.Explainer` around ONNX Runtime sessions.

The explain model (exported with ``for_runtime=True``) gives each image's target, score and the
layer's activations (and gradients); a method then runs more passes — the *head* model (the
layer's tensor → the score) for Ablation-CAM, the plain model on masked images for Score-CAM,
the explain model itself on noisy copies (Smooth Grad-CAM++) or on points of the path from a
baseline image (Integrated Grad-CAM) — in batches of ``passes_batch`` and returns raw maps,
which :func:`finish_maps` post-processes exactly as the in-graph head does
(:mod:`onnxcam.methods.head`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import numpy as np

from onnxcam.errors import OnnxCamError
from onnxcam.methods.head import EPSILON

__all__ = ["RunOptions", "RunContext", "BASELINES", "finish_maps", "minmax", "softmax", "chunks", "padded_chunks",
           "variant_batches", "explain_copies", "auto_passes_batch"]

BASELINES = ("black", "zero")
# More images per call were no faster on the CPU (demo, Smooth Grad-CAM++: 64 → 101, 256 → 126 ms/image).
MAX_PASSES_BATCH = 64
FALLBACK_PASSES_BATCH = 32  # when the model's tensor sizes are unknown (dynamic spatial dims)


@dataclass(frozen=True)
class RunOptions:
    """Options of the multi-pass methods (each reads the ones it uses)."""

    passes_batch: int = 32  # images (ablated copies, masked inputs, noisy copies) per ORT call
    scorecam_topk: int | None = None  # Score-CAM: keep the K channels of highest variance
    samples: int = 50  # Smooth Grad-CAM++: noisy copies per image (SmoothGrad's n)
    noise: float = 0.15  # Smooth Grad-CAM++: σ as a fraction of each image's value range (max − min)
    seed: int = 0  # Smooth Grad-CAM++: the noise generator's seed (the same for every image)
    steps: int = 50  # Integrated Grad-CAM: path points from the baseline to the image (M; the authors' default)
    baseline: str = "black"  # Integrated Grad-CAM: "black" (a pre-processed black image) or "zero"

    def __post_init__(self):
        for name in ("passes_batch", "samples", "steps"):
            if int(getattr(self, name)) < 1:
                raise OnnxCamError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.scorecam_topk is not None and int(self.scorecam_topk) < 1:
            raise OnnxCamError(f"scorecam_topk must be at least 1, got {self.scorecam_topk}")
        if not float(self.noise) >= 0:
            raise OnnxCamError(f"noise must be 0 or more (a fraction of the input's value range), got {self.noise}")
        if self.baseline not in BASELINES:
            raise OnnxCamError(f"unknown baseline '{self.baseline}'; choose one of: {', '.join(BASELINES)}")


@dataclass
class RunContext:
    """One batch as a multi-pass method sees it. Activations and gradients are NCHW."""

    batch: np.ndarray  # the model input as fed (NCHW or NHWC images)
    layout: str  # the image layout
    targets: np.ndarray  # (N,) the task's index explained (the class), -1 where none
    scores: np.ndarray  # (N,) the differentiated scores, Σ w ⊙ S
    weights: np.ndarray  # (N, ...) w, the target's weighting of the batch-first score tensor S
    task: str  # the task's name ("classification", "dense", ...)
    activations: np.ndarray  # (N, C, h, w)
    gradients: np.ndarray | None
    score_kind: str  # "logit" or "probability"
    options: RunOptions
    head: Callable[[np.ndarray, np.ndarray], np.ndarray]  # (A (M, C, h, w), image rows (M,)) → S (M, ...)
    forward: Callable[[np.ndarray], np.ndarray]  # images (M, ...) → S (M, ...), batch first
    # (images (M, ...), targets (M,), weights (M, ...)) → the explain model's outputs: cam_score,
    # activations, gradients (NCHW)
    explain: Callable[[np.ndarray, np.ndarray, np.ndarray], dict[str, np.ndarray]] = field(repr=False, default=None)
    black: Callable[[], np.ndarray] = field(repr=False, default=None)  # a black image, pre-processed: (1, ...)

    def baseline_image(self) -> np.ndarray:
        """The baseline input ``options.baseline`` names, as one (1, ...) image."""
        if self.options.baseline == "zero":
            return np.zeros_like(self.batch[:1])
        return self.black().astype(self.batch.dtype)

    def weighted(self, scores: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """(M,) Σ w ⊙ S for score tensors S (M, ...) computed for the images ``rows``."""
        products = scores.astype(np.float64) * self.weights[rows].astype(np.float64)
        return products.reshape(len(rows), -1).sum(axis=1)

    @property
    def image_size(self) -> tuple[int, int]:
        shape = self.batch.shape
        return (shape[2], shape[3]) if self.layout == "NCHW" else (shape[1], shape[2])


def auto_passes_batch(bytes_per_image: int, budget_bytes: int) -> int:
    """Images per ORT call so that ``bytes_per_image`` each fit in ``budget_bytes`` (1..MAX_PASSES_BATCH)."""
    if bytes_per_image <= 0:
        return FALLBACK_PASSES_BATCH
    return int(max(1, min(MAX_PASSES_BATCH, budget_bytes // bytes_per_image)))


def chunks(total: int, size: int):
    for first in range(0, total, size):
        yield first, min(total, first + size)


def padded_chunks(total: int, size: int):
    """(first, last, rows) per call of exactly ``size`` rows: the last call's rows padded with copies of
    row total − 1 (for models whose batch size is fixed at ``size``)."""
    for first, last in chunks(total, size):
        yield first, last, np.minimum(np.arange(first, first + size), total - 1)


def variant_batches(images: int, count: int, size: int):
    """(image rows, variant indices) of the images × count variants, image by image, ``size`` at a time."""
    for first, last in chunks(images * count, size):
        yield np.divmod(np.arange(first, last), count)


def explain_copies(ctx: RunContext, count: int, make: Callable[[int, int], np.ndarray]):
    """Run the explain model on ``count`` variants of every image, ``passes_batch`` per ORT call.

    ``make(i, j)`` returns variant j of image i as a (1, ...) input; variants are made in the
    order j = 0, 1, ... for each image. Each variant is explained for its image's target (its
    weighting w, so a variant's own default target does not replace the image's). Yields
    (image rows (M,), variant indices (M,), the explain model's outputs for the M variants).
    """
    for rows, variants in variant_batches(ctx.batch.shape[0], count, ctx.options.passes_batch):
        images = np.concatenate([make(i, j) for i, j in zip(rows, variants)]).astype(ctx.batch.dtype, copy=False)
        yield rows, variants, ctx.explain(images, ctx.targets[rows], ctx.weights[rows])


def minmax(x: np.ndarray) -> np.ndarray:
    """(x − min)/(max − min + ε) of one map (an all-zero map stays zero)."""
    x = x - x.min()
    return x / (x.max() + EPSILON)


def softmax(scores: np.ndarray) -> np.ndarray:
    shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def finish_maps(raw: np.ndarray, height: int, width: int) -> np.ndarray:
    """The shared post-processing of raw (N, h, w) maps: ReLU, min-max, bilinear resize, min-max."""
    out = np.empty((raw.shape[0], height, width), np.float32)
    for i, cam in enumerate(np.asarray(raw, dtype=np.float32)):
        cam = minmax(np.maximum(cam, 0))
        out[i] = minmax(cv2.resize(cam, (width, height), interpolation=cv2.INTER_LINEAR))
    return out
