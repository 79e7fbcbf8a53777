"""The metrics' formulas on plain arrays: curves, confidences, maps and object masks.

* Deletion / insertion AUC (Petsiuk et al., RISE, BMVC 2018): the target's probability as the
  map's most salient pixels are removed (inserted), a fraction k/K at a time, k = 0..K; the area
  under that curve over the fraction 0..1 (trapezoids). Deletion: lower is better; insertion: higher.
* Average Drop and Increase in Confidence (Chattopadhyay et al., Grad-CAM++, WACV 2018), with Y
  the probability on the image and O on the image multiplied by the map:
  AD = 100 · mean(max(0, Y − O) / Y), IC = 100 · mean(O > Y).
* Pointing game (Zhang et al., ECCV 2016; no tolerance margin): the map's maximum lies on the
  object. Energy-based pointing game (Wang et al., Score-CAM): the map's share inside the object.
"""

from __future__ import annotations

import numpy as np

__all__ = ["curve_auc", "average_drop", "increase_in_confidence", "pointing_hit", "energy_share", "spearman"]


def curve_auc(curve: np.ndarray) -> np.ndarray:
    """Area under curves (..., K+1) sampled at fractions 0, 1/K, ..., 1 (trapezoids)."""
    curve = np.asarray(curve, np.float64)
    return (curve[..., 1:] + curve[..., :-1]).sum(axis=-1) / (2 * (curve.shape[-1] - 1))


def average_drop(full: np.ndarray, masked: np.ndarray) -> float:
    full, masked = np.asarray(full, np.float64), np.asarray(masked, np.float64)
    return float(100 * np.mean(np.maximum(0.0, full - masked) / np.maximum(full, 1e-12)))


def increase_in_confidence(full: np.ndarray, masked: np.ndarray) -> float:
    return float(100 * np.mean(np.asarray(masked) > np.asarray(full)))


def pointing_hit(cam: np.ndarray, mask: np.ndarray) -> bool:
    """The map's (first) maximum lies inside the boolean object mask."""
    return bool(mask.ravel()[int(np.argmax(cam))])


def energy_share(cam: np.ndarray, mask: np.ndarray) -> float:
    """Σ cam inside the mask / Σ cam (0 for an all-zero map)."""
    total = float(np.sum(cam, dtype=np.float64))
    return float(np.sum(cam[mask], dtype=np.float64)) / total if total > 0 else 0.0


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their mean rank (as Spearman's ρ needs)."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return ((ends - counts + 1 + ends) / 2.0)[inverse.ravel()]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two maps; 0 when either is constant (no ranking to agree with)."""
    ra, rb = _average_ranks(np.ravel(a)), _average_ranks(np.ravel(b))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = np.sqrt((ra * ra).sum() * (rb * rb).sum())
    return float((ra * rb).sum() / denominator) if denominator > 0 else 0.0
