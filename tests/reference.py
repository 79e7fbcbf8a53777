"""NumPy/OpenCV references of the CAM recipes, written independently of the graph code."""

import cv2
import numpy as np

EPS = 1e-7


def minmax(x: np.ndarray) -> np.ndarray:
    x = x - x.min()
    return x / (x.max() + EPS)


def finish(raw: np.ndarray, height: int, width: int) -> np.ndarray:
    """pytorch-grad-cam's post-processing of one (h, w) map: ReLU, min-max, resize, min-max."""
    cam = minmax(np.maximum(raw, 0))
    cam = cv2.resize(cam.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    return minmax(cam)


def gradcam(activations: np.ndarray, gradients: np.ndarray, height: int, width: int) -> np.ndarray:
    """Grad-CAM for a batch of NCHW activations and gradients → (N, height, width)."""
    weights = gradients.mean(axis=(2, 3))
    raw = np.einsum("nc,nchw->nhw", weights, activations)
    return np.stack([finish(r, height, width) for r in raw])
