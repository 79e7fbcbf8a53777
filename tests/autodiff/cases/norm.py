"""Finite-difference cases for onnxcam/autodiff/rules/norm.py."""

import numpy as np

from tests.autodiff.harness import C, Case, X

RNG = np.random.default_rng(3)
POSITIVE = dict(low=0.5, high=2.0)


def _vec(n, low=-1.0, high=1.0):
    return C(RNG.uniform(low, high, size=(n,)).astype(np.float32))


def _bn_consts(c):
    """Constant scale, B, mean and var for C channels."""
    return [_vec(c, 0.5, 2.0), _vec(c), _vec(c), _vec(c, 0.5, 2.0)]


CASES = [
    # BatchNormalization, inference form: the folded-constant path and the in-graph path.
    Case("BatchNormalization", [X((2, 3, 4, 5)), *_bn_consts(3)], id="4d-const", opsets=(11, 13, 15)),
    Case("BatchNormalization", [X((4, 3)), *_bn_consts(3)], id="2d-const", attrs=dict(epsilon=1e-3), opsets=(11, 15)),
    Case("BatchNormalization", [X((2, 3, 6)), *_bn_consts(3)], id="3d-const", opsets=(13,)),
    Case("BatchNormalization", [X((2, 3, 4, 5)), *_bn_consts(3)], id="training-mode-0",
         attrs=dict(training_mode=0), opsets=(15,)),
    Case("BatchNormalization", [X((2, 3, 4, 5)), X((3,), **POSITIVE), _vec(3), _vec(3), _vec(3, 0.5, 2.0)],
         id="4d-scale-input", opsets=(11, 15)),
    Case("BatchNormalization", [X((2, 3, 4)), X((3,), **POSITIVE), X((3,)), X((3,)), X((3,), **POSITIVE)],
         id="3d-all-inputs", opsets=(13, 15)),
    Case("BatchNormalization", [X((4, 3)), X((3,), **POSITIVE), X((3,)), X((3,)), X((3,), **POSITIVE)],
         id="2d-all-inputs", opsets=(11,)),
    # Opsets 7–8: spatial=1 (the default) per channel, spatial=0 per element of (C, D₁, …).
    Case("BatchNormalization", [X((2, 3, 4, 5)), *_bn_consts(3)], id="4d-const-old", opsets=(7, 8, 9)),
    Case("BatchNormalization", [X((2, 3, 4, 5)), *_bn_consts(3)], id="spatial-1", attrs=dict(spatial=1),
         opsets=(7, 8)),
    Case("BatchNormalization", [X((2, 3, 2, 4)), C(RNG.uniform(0.5, 2, (3, 2, 4)).astype(np.float32)),
                                C(RNG.uniform(-1, 1, (3, 2, 4)).astype(np.float32)),
                                C(RNG.uniform(-1, 1, (3, 2, 4)).astype(np.float32)),
                                C(RNG.uniform(0.5, 2, (3, 2, 4)).astype(np.float32))],
         id="spatial-0-const", attrs=dict(spatial=0), opsets=(7, 8)),
    Case("BatchNormalization", [X((2, 3, 2, 4)), X((3, 2, 4), **POSITIVE), X((3, 2, 4)), X((3, 2, 4)),
                                X((3, 2, 4), **POSITIVE)], id="spatial-0-all-inputs", attrs=dict(spatial=0),
         opsets=(7,)),
    Case("BatchNormalization", [X((2, 3, 4, 5)), X((3,), **POSITIVE), X((3,)), X((3,)), X((3,), **POSITIVE)],
         id="4d-all-inputs-old", opsets=(7, 9)),
    # InstanceNormalization: per (n, c) over the spatial axes.
    Case("InstanceNormalization", [X((2, 3, 4, 5)), _vec(3, 0.5, 2.0), _vec(3)], id="4d-const", opsets=(11, 13)),
    Case("InstanceNormalization", [X((2, 3, 7)), _vec(3, 0.5, 2.0), _vec(3)], id="3d-const",
         attrs=dict(epsilon=1e-2), opsets=(11,)),
    Case("InstanceNormalization", [X((2, 3, 4, 5)), X((3,), **POSITIVE), X((3,))], id="4d-all-inputs", opsets=(13,)),
    # LayerNormalization (opset 17 on).
    Case("LayerNormalization", [X((2, 3, 8)), _vec(8, 0.5, 2.0), _vec(8)], id="3d-last-axis", opsets=(17, 18)),
    Case("LayerNormalization", [X((4, 6)), _vec(6, 0.5, 2.0)], id="2d-no-bias", attrs=dict(epsilon=1e-3), opsets=(17,)),
    Case("LayerNormalization", [X((2, 3, 4)), C(RNG.uniform(0.5, 2, (3, 4)).astype(np.float32)), _vec(4)],
         id="3d-axis1", attrs=dict(axis=1), opsets=(17,)),
    Case("LayerNormalization", [X((2, 3, 4, 5)), X((3, 4, 5), **POSITIVE), X((3, 4, 5))],
         id="4d-axis1-all-inputs", attrs=dict(axis=1), opsets=(17,)),
    Case("LayerNormalization", [X((2, 3, 4, 5)), X((4, 5), **POSITIVE), X((5,))],
         id="4d-axis-2-all-inputs", attrs=dict(axis=-2), opsets=(17,)),
    Case("LayerNormalization", [X((2, 3, 8)), X((8,), **POSITIVE), X((8,))], id="3d-stash-type",
         attrs=dict(stash_type=1), opsets=(17,)),
    Case("LayerNormalization", [X((2, 3, 8)), _vec(8, 0.5, 2.0), _vec(8)], id="mean-invstd-outputs", outputs=3,
         opsets=(17,)),
    Case("LayerNormalization", [X((2, 3, 4)), _vec(4, 0.5, 2.0)], id="mean-output-axis1", attrs=dict(axis=1),
         outputs=2, opsets=(17,)),
]
