"""Finite-difference cases for onnxcam/autodiff/rules/elementwise.py."""

import numpy as np

from tests.autodiff.harness import C, Case, X

POSITIVE = dict(low=0.5, high=2.0)

CASES = [
    Case("Add", [X((2, 3, 4)), X((3, 1))], id="broadcast", opsets=(11, 13)),
    Case("Add", [X((2, 3)), X((2, 3))], id="same"),
    Case("Add", [X((2, 3, 4)), C(np.ones((4,), np.float32))], id="const"),
    Case("Sub", [X((2, 3, 4)), X((1, 4))], id="broadcast"),
    Case("Mul", [X((2, 3, 4, 4)), X((1, 3, 1, 1))], id="broadcast"),
    Case("Mul", [X((2, 3)), X(())], id="scalar"),
    Case("Div", [X((2, 3, 4)), X((3, 1), **POSITIVE)], id="broadcast"),
    Case("Sum", [X((2, 3)), X((3,)), X((2, 1))], id="three"),
    Case("Neg", [X((2, 3))]),
    Case("Abs", [X((2, 3), away=0.1)]),
    Case("Pow", [X((2, 3), **POSITIVE), C(np.float32(2.5))], id="const-exponent"),
    Case("Pow", [X((2, 3), **POSITIVE), C(np.int64(3))], id="int-exponent", opsets=(13, 15)),
    Case("Pow", [X((2, 3), **POSITIVE), X((3,))], id="both"),
    Case("Sqrt", [X((2, 3), **POSITIVE)]),
    Case("Reciprocal", [X((2, 3), **POSITIVE)]),
    Case("Exp", [X((2, 3))]),
    Case("Log", [X((2, 3), **POSITIVE)]),
    Case("Erf", [X((2, 3))]),
    Case("Identity", [X((2, 3))]),
    Case("Dropout", [X((2, 3))], opsets=(11,)),
    Case("Dropout", [X((2, 3)), C(np.float32(0.5))], id="ratio", opsets=(13,)),
    Case("Dropout", [X((2, 3)), C(np.float32(0.5)), C(np.bool_(False))], id="training-false", opsets=(13,)),
    Case("Cast", [X((2, 3))], attrs=dict(to=11), id="to-double", tol=1e-2),
    Case("Where", [C(np.array([[True, False, True]])), X((2, 3)), X((2, 1))], id="broadcast"),
]

# Mod of floats (ONNX requires fmod=1 for them: C's fmod): values kept away from the jumps.
_MOD_A = np.array([[1.3, -2.6, 3.7], [4.1, -0.4, 2.2]], np.float32)
_MOD_B = np.array([[0.7, 0.9, -1.1], [1.5, 0.6, -0.8]], np.float32)
CASES += [
    Case("Mod", [X((2, 3), values=_MOD_A), X((2, 3), values=_MOD_B)], attrs=dict(fmod=1), id="fmod", opsets=(13,)),
    Case("Mod", [X((2, 3), values=_MOD_A), C(np.array([0.7], np.float32))], attrs=dict(fmod=1), id="fmod-broadcast",
         opsets=(13,)),
]
