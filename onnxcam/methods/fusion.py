"""Several target layers at once: each layer's finished map, then one fused map (as graph nodes).

``mean``: the mean of the per-layer maps (each already ReLU'd, normalised and resized to the
input), then per image (x − min)/(max − min + ε) — how pytorch-grad-cam aggregates layers.
``max``: the element-wise maximum of the per-layer maps, as torch-cam fuses them; each map is in
[0, 1] with maximum 1 (or all zero), so the maximum is too and is not normalised again.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from onnxcam.autodiff.emitter import Emitter
from onnxcam.errors import OnnxCamError
from onnxcam.methods.head import EPSILON

__all__ = ["FUSE_CHOICES", "fuse_maps", "fuse_alone", "normalize_maps", "check_fuse"]

FUSE_CHOICES = ("mean", "max")


def check_fuse(fuse: str) -> None:
    if fuse not in FUSE_CHOICES:
        raise OnnxCamError(f"unknown fuse '{fuse}'; choose one of {', '.join(FUSE_CHOICES)}")


def normalize_maps(e: Emitter, x: str) -> str:
    """Per image (x − min)/(max − min + ε) over a (N, H, W) tensor."""
    shifted = e.sub(x, e.reduce("ReduceMin", x, [1, 2]))
    return e.div(shifted, e.add(e.reduce("ReduceMax", shifted, [1, 2]), e.scalar(EPSILON, x)))


def fuse_maps(e: Emitter, maps: Sequence[str], fuse: str) -> str:
    """One (N, H, W) map from the per-layer (N, H, W) maps."""
    check_fuse(fuse)
    if len(maps) == 1:
        return maps[0]
    if fuse == "max":
        return e.op("Max", *maps)
    return normalize_maps(e, e.mul_scalar(e.sum(list(maps)), 1.0 / len(maps)))


def fuse_alone(maps: np.ndarray, layers: int, fuse: str) -> np.ndarray:
    """What :func:`fuse_maps` gives (NumPy) when one layer's (N, H, W) ``maps`` come with ``layers`` − 1
    all-zero maps: a detector box, whose score reads one level only."""
    if layers == 1 or fuse == "max":
        return maps
    low = maps.min(axis=(1, 2), keepdims=True)  # normalise(maps / L), as two passes over the maps
    scale = np.float32(1.0 / layers) / ((maps.max(axis=(1, 2), keepdims=True) - low) * np.float32(1.0 / layers)
                                        + np.float32(EPSILON))
    fused = maps - low
    fused *= scale
    return fused
