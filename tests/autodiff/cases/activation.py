"""Finite-difference cases for onnxcam/autodiff/rules/activation.py."""

import numpy as np

from tests.autodiff.harness import C, Case, X

KINK = dict(low=-2.0, high=2.0, away=0.05)  # a kink at 0, samples kept 0.05 away from it
F = np.float32

CASES = [
    Case("Relu", [X((2, 3, 4), **KINK)], opsets=(11, 13, 14)),
    Case("LeakyRelu", [X((2, 3, 4), **KINK)], id="default-alpha", opsets=(11, 16)),
    Case("LeakyRelu", [X((2, 3, 4), **KINK)], attrs=dict(alpha=0.2), id="alpha0.2"),
    Case("PRelu", [X((2, 3, 4, 4), **KINK), C(np.array([0.1, 0.25, -0.3], F).reshape(3, 1, 1))],
         id="per-channel-const", opsets=(11, 16)),
    Case("PRelu", [X((2, 3, 4, 4), **KINK), X((3, 1, 1), low=0.05, high=0.5)], id="per-channel-slope-grad"),
    Case("PRelu", [X((2, 5), **KINK), X((5,), low=0.05, high=0.5)], id="trailing-slope-grad"),
    Case("PRelu", [X((2, 5), **KINK), X((1,), low=0.05, high=0.5)], id="shared-slope-grad"),
    Case("Elu", [X((2, 3, 4), **KINK)], id="default-alpha"),
    Case("Elu", [X((2, 3, 4), **KINK)], attrs=dict(alpha=0.5), id="alpha0.5", opsets=(11,)),
    # ReLU6: kinks at 0 and 6.
    Case("Clip", [X((2, 3, 4), low=-2.0, high=8.0, away=0.05, kinks=(0.0, 6.0)), C(F(0.0)), C(F(6.0))],
         id="relu6", opsets=(11, 12, 13)),
    Case("Clip", [X((2, 3, 4), low=-1.0, high=1.0, away=0.05, kinks=(-0.3,)), C(F(-0.3))], id="min-only",
         opsets=(11, 13)),
    Case("Clip", [X((2, 3, 4), low=-1.0, high=1.0, away=0.05, kinks=(0.4,)), C(None), C(F(0.4))], id="max-only",
         opsets=(11, 13)),
    Case("Clip", [X((2, 3, 4))], id="no-bounds", opsets=(11, 13)),
    # Differentiable bounds: fixed values keep the input away from them.
    Case("Clip", [X((2, 3), values=np.array([[-0.9, -0.4, 0.1], [0.45, 0.7, 0.95]])),
                  X((), values=np.array(-0.5)), X((), values=np.array(0.6))], id="bound-grads", opsets=(11, 13)),
    Case("Clip", [X((2, 3, 4), low=-2.0, high=8.0, away=0.05, kinks=(0.0, 6.0))],
         attrs=dict(min=0.0, max=6.0), id="attr-relu6", opsets=(10,)),
    Case("Clip", [X((2, 3, 4), low=-1.0, high=1.0, away=0.05, kinks=(-0.3,))],
         attrs=dict(min=-0.3), id="attr-min-only", opsets=(10,)),
    Case("Sigmoid", [X((2, 3, 4), low=-4.0, high=4.0)], opsets=(11, 13)),
    # HardSigmoid saturates where α·x + β leaves [0, 1]: kinks at (0 − β)/α and (1 − β)/α.
    Case("HardSigmoid", [X((2, 3, 4), low=-4.0, high=4.0, away=0.05, kinks=(-2.5, 2.5))],
         id="default", opsets=(11, 13)),
    Case("HardSigmoid", [X((2, 3, 4), low=-2.0, high=2.0, away=0.05, kinks=(-1.2, 0.8))],
         attrs=dict(alpha=0.5, beta=0.6), id="alpha0.5-beta0.6"),
    Case("HardSwish", [X((2, 3, 4), low=-5.0, high=5.0, away=0.05, kinks=(-3.0, 3.0))], opsets=(14, 18)),
    Case("Tanh", [X((2, 3, 4), low=-3.0, high=3.0)], opsets=(11, 13)),
    Case("Softplus", [X((2, 3, 4), low=-4.0, high=4.0)], opsets=(11, 13)),
    # GELU is smooth, so a tighter tolerance resolves the small cubic term of the tanh form.
    Case("Gelu", [X((2, 3, 4), low=-3.0, high=3.0)], id="erf", opsets=(20, 21), tol=1e-3),
    Case("Gelu", [X((2, 3, 4), low=-3.0, high=3.0)], attrs=dict(approximate="tanh"), id="tanh", opsets=(20,),
         tol=1e-3),
    # Before opset 13 (Log)Softmax normalises over every axis from `axis` on; from 13 over one axis.
    Case("Softmax", [X((2, 3, 4), low=-2.0, high=2.0)], id="default-axis", opsets=(11, 13)),
    Case("Softmax", [X((2, 3, 4, 2), low=-2.0, high=2.0)], attrs=dict(axis=1), id="axis1", opsets=(11, 13)),
    Case("Softmax", [X((2, 3, 4, 2), low=-2.0, high=2.0)], attrs=dict(axis=-2), id="axis-2", opsets=(11, 13)),
    Case("Softmax", [X((2, 5), low=-2.0, high=2.0)], attrs=dict(axis=-1), id="2d"),
    Case("LogSoftmax", [X((2, 3, 4), low=-2.0, high=2.0)], id="default-axis", opsets=(11, 13)),
    Case("LogSoftmax", [X((2, 3, 4, 2), low=-2.0, high=2.0)], attrs=dict(axis=1), id="axis1", opsets=(11, 13)),
    Case("LogSoftmax", [X((2, 3, 4, 2), low=-2.0, high=2.0)], attrs=dict(axis=-3), id="axis-3", opsets=(11, 13)),
]
