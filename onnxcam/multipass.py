"""Multi-pass CAM methods, run by the :class:`onnxcam.Explainer` around ONNX Runtime sessions.

The explain model (exported with ``for_runtime=True``) gives each image's target, score and the
layer's activations (and gradients); a method then runs more passes — the *head* model (the
layer's tensor → the score) for Ablation-CAM, the plain model on masked or perturbed images for
Score-CAM — in batches of ``passes_batch`` and returns raw maps, which :func:`finish_maps`
post-processes exactly as the in-graph head does (:mod:`onnxcam.methods.head`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import numpy as np

from onnxcam.errors import OnnxCamError
from onnxcam.methods.head import EPSILON

__all__ = ["RunOptions", "RunContext", "finish_maps", "minmax", "softmax", "chunks"]


@dataclass(frozen=True)
class RunOptions:
    """Options of the multi-pass methods (each reads the ones it uses)."""

    passes_batch: int = 32  # images (ablated copies, masked inputs, noisy copies) per ORT call
    scorecam_topk: int | None = None  # Score-CAM: keep the K channels of highest variance

    def __post_init__(self):
        if int(self.passes_batch) < 1:
            raise OnnxCamError(f"passes_batch must be at least 1, got {self.passes_batch}")
        if self.scorecam_topk is not None and int(self.scorecam_topk) < 1:
            raise OnnxCamError(f"scorecam_topk must be at least 1, got {self.scorecam_topk}")


@dataclass
class RunContext:
    """One batch as a multi-pass method sees it. Activations and gradients are NCHW."""

    batch: np.ndarray  # the model input as fed (NCHW or NHWC images)
    layout: str  # the image layout
    targets: np.ndarray  # (N,) the classes explained
    scores: np.ndarray  # (N,) their scores (the differentiated score tensor's entries)
    activations: np.ndarray  # (N, C, h, w)
    gradients: np.ndarray | None
    score_kind: str  # "logit" or "probability"
    options: RunOptions
    head: Callable[[np.ndarray, np.ndarray], np.ndarray]  # (A (M, C, h, w), image rows (M,)) → scores (M, classes)
    forward: Callable[[np.ndarray], np.ndarray]  # images (M, ...) → scores (M, classes)
    explain: Callable[[np.ndarray, np.ndarray], dict[str, np.ndarray]] = field(repr=False, default=None)

    @property
    def image_size(self) -> tuple[int, int]:
        shape = self.batch.shape
        return (shape[2], shape[3]) if self.layout == "NCHW" else (shape[1], shape[2])


def chunks(total: int, size: int):
    for first in range(0, total, size):
        yield first, min(total, first + size)


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
