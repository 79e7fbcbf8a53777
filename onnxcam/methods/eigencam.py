"""Eigen-CAM (Muhammad & Yeasin, 2020): the activations projected on their first principal direction.

Per image, M is the (h·w × C) matrix whose rows are the positions' channel vectors, and the map
is M·v₁ with v₁ M's first right singular vector (the paper's O = A·V₁). Choices made here:

* M is not centred: the paper projects the activations themselves, and for the non-negative
  activations after a ReLU, v₁ then has entries of one sign and M·v₁ is the activations' main
  "mass". (pytorch-grad-cam subtracts each channel's spatial mean first; its maps differ.)
* A singular vector's sign is arbitrary; the map's sign is fixed so that its sum is positive.

ONNX has no SVD, so v₁ comes from the Gram matrix by power iteration, all as MatMul nodes: the
Gram matrix K is formed on the smaller side — MᵀM (C × C), or MMᵀ (h·w × h·w), whose first
eigenvector u₁ = M·v₁/σ₁ is the map itself up to a positive factor — then squared
``SQUARINGS`` times (K^65536: the second eigen-direction shrinks by (λ₂/λ₁)^65536, so even
singular values 0.01 % apart separate), the column of that power with the largest diagonal entry
is taken as the start, and ``REFINEMENTS`` plain steps v ← K·v/‖K·v‖ remove the rounding the
squarings left. Every step is rescaled by its largest entry, so nothing overflows, also in
float16. The cost is about ``SQUARINGS``·d³ multiply-adds per image with d = min(C, h·w) — 2 M
for a 7×7 layer, 120 M for a 14×14 one: small beside the network's own forward pass.
"""

from __future__ import annotations

import numpy as np

from onnxcam.autodiff.emitter import Emitter
from onnxcam.layers import Layer
from onnxcam.methods.context import LayerContext

SQUARINGS = 16
REFINEMENTS = 6


def build(e: Emitter, activations: str, gradients: str | None, ctx: LayerContext) -> str:
    """L = M·v₁, M = A as (h·w × C) rows, v₁ its first right singular vector (sign: Σ L > 0)"""
    return principal_projection(e, activations, ctx.layer)


def principal_projection(e: Emitter, x: str, layer: Layer) -> str:
    """(N, 1, h, w): each image of the NCHW tensor ``x`` projected on its first principal direction."""
    channels, pixels = _sides(layer)
    flat = e.reshape(x, e.ints([0, 0, -1]))  # (N, C, P): M transposed
    scaled = e.div(flat, _largest(e, e.op("Abs", flat), [1, 2]))  # the Gram matrix cannot overflow
    scaled_t = e.transpose(scaled, [0, 2, 1])
    if pixels is not None and channels is not None and pixels < channels:
        gram = e.op("MatMul", scaled_t, scaled)  # (N, P, P) = M·Mᵀ
        projection = _dominant_eigenvector(e, gram)  # (N, P, 1) ∝ M·v₁
        projection = e.transpose(projection, [0, 2, 1])  # (N, 1, P)
    else:
        gram = e.op("MatMul", scaled, scaled_t)  # (N, C, C) = Mᵀ·M
        v1 = _dominant_eigenvector(e, gram)  # (N, C, 1)
        projection = e.op("MatMul", e.transpose(v1, [0, 2, 1]), flat)  # (N, 1, P) = (M·v₁)ᵀ
    shape = e.op("Concat", e.slice(e.shape(x), [0], [1], [0]), e.ints([1]), e.slice(e.shape(x), [2], [4], [0]),
                 axis=0)
    cam = e.reshape(projection, shape)
    total = e.reduce_sum(cam, [1, 2, 3], keepdims=True)
    return e.where(e.op("Less", total, e.scalar(0.0, total)), e.neg(cam), cam)


def _sides(layer: Layer) -> tuple[int | None, int | None]:
    height, width = layer.spatial
    pixels = height * width if height is not None and width is not None else None
    return layer.channels, pixels


def _largest(e: Emitter, x: str, axes) -> str:
    """The largest entry of non-negative ``x`` over ``axes`` (kept), at least the dtype's tiniest normal."""
    return e.op("Max", e.reduce("ReduceMax", x, axes), e.scalar(_tiny(e, x), x))


def _dominant_eigenvector(e: Emitter, gram: str) -> str:
    """(N, d, 1): the unit eigenvector of the largest eigenvalue of each symmetric PSD (d, d) matrix.

    For a PSD matrix the largest entry is on the diagonal, so dividing by it bounds every entry by 1.
    """
    base = e.div(gram, _largest(e, gram, [1, 2]))
    power = base
    for _ in range(SQUARINGS):
        power = e.op("MatMul", power, power)
        power = e.div(power, _largest(e, power, [1, 2]))
    # Start from the column of K^p whose diagonal entry is largest: ≈ λ₁^p·v₁·v₁[j] with |v₁[j]| maximal.
    eye = e.op("EyeLike", e.op("Gather", power, e.const(np.int64(0)), axis=0))
    diagonal = e.reduce_sum(e.mul(power, eye), [2], keepdims=False)  # (N, d)
    column = e.op("ArgMax", diagonal, axis=1, keepdims=0)
    depth = e.slice(e.shape(diagonal), [1], [2], [0])
    pick = e.op("OneHot", column, depth, e.const(np.array([0, 1], dtype=e.dtype(gram))), axis=-1,
                dtype_of=gram)
    vector = e.op("MatMul", power, e.unsqueeze(pick, [2]))
    for _ in range(REFINEMENTS):
        vector = e.op("MatMul", base, vector)
        vector = e.div(vector, _largest(e, e.op("Abs", vector), [1, 2]))
    norm = e.op("Sqrt", e.reduce_sum(e.mul(vector, vector), [1, 2], keepdims=True))
    return e.div(vector, e.op("Max", norm, e.scalar(_tiny(e, norm), norm)))


def _tiny(e: Emitter, x: str) -> float:
    """The smallest normal number of ``x``'s float type (bfloat16, which NumPy cannot describe, has float32's)."""
    try:
        return float(np.finfo(e.dtype(x)).tiny)
    except (TypeError, ValueError):
        return float(np.finfo(np.float32).tiny)
