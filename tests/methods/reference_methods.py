"""NumPy references of the CAM methods, written from the papers' formulas, independently of the graph code.

Each ``raw_*`` takes one batch of NCHW activations A and gradients G (as the explain model exposes
them) and returns the raw maps (N, h, w) in float64; :func:`cams` applies the shared
post-processing of ``tests.reference.finish`` per image.
"""

from __future__ import annotations

import numpy as np

from tests.reference import finish

XGRADCAM_EPS = 1e-7


def _f64(*arrays):
    return [np.asarray(a, dtype=np.float64) for a in arrays]


def raw_gradcam(a, g):
    a, g = _f64(a, g)
    return np.einsum("nc,nchw->nhw", g.mean(axis=(2, 3)), a)


def raw_gradcampp(a, g):
    """α = G² / (2G² + G³·Σ_ab A_ab) (0 where the denominator is 0), w = Σ_ij α·ReLU(G)."""
    a, g = _f64(a, g)
    numerator = g**2
    denominator = 2 * g**2 + a.sum(axis=(2, 3), keepdims=True) * g**3
    alpha = np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator != 0)
    weights = (alpha * np.maximum(g, 0)).sum(axis=(2, 3))
    return np.einsum("nc,nchw->nhw", weights, a)


def raw_xgradcam(a, g):
    a, g = _f64(a, g)
    weights = (a * g).sum(axis=(2, 3)) / (a.sum(axis=(2, 3)) + XGRADCAM_EPS)
    return np.einsum("nc,nchw->nhw", weights, a)


def raw_layercam(a, g):
    a, g = _f64(a, g)
    return (np.maximum(g, 0) * a).sum(axis=1)


def raw_hirescam(a, g):
    a, g = _f64(a, g)
    return (g * a).sum(axis=1)


def raw_gradcam_elementwise(a, g):
    a, g = _f64(a, g)
    return np.maximum(g * a, 0).sum(axis=1)


def first_component_projection(x):
    """Per image: M = x as (h·w, C) rows (not centred), M·v₁ with v₁ = SVD's first right singular vector,
    signed so that the map sums to a positive number."""
    (x,) = _f64(x)
    n, c, h, w = x.shape
    maps = []
    for image in x:
        m = image.reshape(c, h * w).T
        _, _, vt = np.linalg.svd(m, full_matrices=False)
        projection = m @ vt[0]
        if projection.sum() < 0:
            projection = -projection
        maps.append(projection.reshape(h, w))
    return np.stack(maps)


def spectral_gap(x):
    """Per image: σ₂/σ₁ of the (h·w, C) matrix, which bounds how fast power iteration converges."""
    (x,) = _f64(x)
    n, c = x.shape[:2]
    ratios = []
    for image in x:
        s = np.linalg.svd(image.reshape(c, -1).T, compute_uv=False)
        ratios.append(s[1] / s[0] if s[0] > 0 else 0.0)
    return np.array(ratios)


def raw_eigencam(a, g):
    return first_component_projection(a)


def raw_eigengradcam(a, g):
    a, g = _f64(a, g)
    return first_component_projection(g * a)


def raw_cam(a, weight, targets):
    """Σ_k W[c, k]·A_k with W (classes, C) the linear layer's weights and c the target per image."""
    (a,) = _f64(a)
    w = np.asarray(weight, dtype=np.float64)[np.asarray(targets)]
    return np.einsum("nc,nchw->nhw", w, a)


RAW = {
    "gradcam": raw_gradcam,
    "gradcampp": raw_gradcampp,
    "xgradcam": raw_xgradcam,
    "layercam": raw_layercam,
    "hirescam": raw_hirescam,
    "gradcam-elementwise": raw_gradcam_elementwise,
    "eigencam": raw_eigencam,
    "eigengradcam": raw_eigengradcam,
}


def cams(raw: np.ndarray, height: int, width: int) -> np.ndarray:
    """The shared post-processing per image → (N, height, width)."""
    return np.stack([finish(r, height, width) for r in raw])
