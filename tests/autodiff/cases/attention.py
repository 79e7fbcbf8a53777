"""Finite-difference cases for onnxcam/autodiff/rules/attention.py (and RMSNormalization, opset 23)."""

import numpy as np

from tests.autodiff.harness import C, Case, X

_RNG = np.random.default_rng(11)
OPSET = (23,)


def _cache(positions: int, half: int):
    """cos and sin caches of a rotary embedding: (positions, rotary_dim / 2)."""
    angles = _RNG.uniform(0, np.pi, size=(positions, half)).astype(np.float32)
    return C(np.cos(angles)), C(np.sin(angles))


_COS, _SIN = _cache(5, 4)
_MASK = C(np.where(_RNG.uniform(size=(5, 5)) < 0.3, -1e4, 0.0).astype(np.float32))
_BOOL_MASK = C(np.tril(np.ones((5, 5), bool)) | np.eye(5, k=1, dtype=bool))

CASES = [
    Case("Attention", [X((2, 2, 5, 4)), X((2, 2, 5, 4)), X((2, 2, 5, 3))], id="plain", opsets=OPSET),
    Case("Attention", [X((2, 2, 5, 4)), X((2, 2, 6, 4)), X((2, 2, 6, 3))], attrs=dict(scale=0.3), id="cross-scale",
         opsets=OPSET),
    Case("Attention", [X((1, 2, 5, 4)), X((1, 2, 5, 4)), X((1, 2, 5, 4)), _MASK], id="float-mask", opsets=OPSET),
    Case("Attention", [X((1, 2, 5, 4)), X((1, 2, 5, 4)), X((1, 2, 5, 4)), _BOOL_MASK], id="bool-mask", opsets=OPSET),
    Case("Attention", [X((1, 2, 5, 4)), X((1, 2, 5, 4)), X((1, 2, 5, 4))], attrs=dict(is_causal=1), id="causal",
         opsets=OPSET),
    Case("RotaryEmbedding", [X((2, 3, 5, 8)), _COS, _SIN, C(np.tile(np.arange(5, dtype=np.int64), (2, 1)))],
         id="4d-positions", opsets=OPSET),
    Case("RotaryEmbedding", [X((2, 3, 5, 8)), _COS, _SIN, C(np.tile(np.arange(5, dtype=np.int64), (2, 1)))],
         attrs=dict(interleaved=1), id="interleaved", opsets=OPSET),
    Case("RMSNormalization", [X((2, 3, 8)), X((8,), low=0.5, high=2.0)], id="last-axis", opsets=OPSET),
    Case("RMSNormalization", [X((2, 3, 4)), C(_RNG.uniform(0.5, 2, (3, 4)).astype(np.float32))],
         attrs=dict(axis=1, epsilon=1e-3), id="axis1-const-scale", opsets=OPSET),
]
