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
