"""Finite-difference cases for onnxcam/autodiff/rules/control.py (Scan)."""

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tests.autodiff.harness import C, Case, X

_RNG = np.random.default_rng(5)
_A = numpy_helper.from_array(_RNG.uniform(-0.8, 0.8, (3, 3)).astype(np.float32), "A")


def _float(name, shape=None):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _recurrent_body() -> onnx.GraphProto:
    """s' = tanh(s·A + x), y = s'·x, with A a constant of the body."""
    nodes = [helper.make_node("MatMul", ["s", "A"], ["sa"]), helper.make_node("Add", ["sa", "x"], ["pre"]),
             helper.make_node("Tanh", ["pre"], ["s_next"]), helper.make_node("Mul", ["s_next", "x"], ["y"])]
    return helper.make_graph(nodes, "recurrent", [_float("s", [2, 3]), _float("x", [2, 3])],
                             [_float("s_next"), _float("y")], initializer=[_A])


def _invariant_and_counter_body() -> onnx.GraphProto:
    """States: s, a weight V passed through unchanged, an int64 step counter k; scanned x and z.
    s' = tanh(s·V + x)·(1 + k/10), y = s' + z·s, and s' is also a scan output (through an Identity: ONNX
    Runtime 1.31 scans wrong values when a body lists one tensor as two outputs)."""
    one = numpy_helper.from_array(np.array(1, np.int64), "one")
    tenth = numpy_helper.from_array(np.array(0.1, np.float32), "tenth")
    nodes = [helper.make_node("MatMul", ["s", "V"], ["sv"]), helper.make_node("Add", ["sv", "x"], ["pre"]),
             helper.make_node("Tanh", ["pre"], ["t"]), helper.make_node("Cast", ["k"], ["kf"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["kf", "tenth"], ["kt"]), helper.make_node("Add", ["kt", "one_f"], ["gain"]),
             helper.make_node("Mul", ["t", "gain"], ["s_next"]), helper.make_node("Identity", ["V"], ["V_next"]),
             helper.make_node("Add", ["k", "one"], ["k_next"]), helper.make_node("Mul", ["z", "s"], ["zs"]),
             helper.make_node("Add", ["s_next", "zs"], ["y"]), helper.make_node("Identity", ["s_next"], ["s_scanned"])]
    return helper.make_graph(
        nodes, "invariant", [_float("s", [2, 3]), _float("V", [3, 3]), helper.make_tensor_value_info("k", TensorProto.INT64, []),
                             _float("x", [2, 3]), _float("z", [2, 3])],
        [_float("s_next"), _float("V_next"), helper.make_tensor_value_info("k_next", TensorProto.INT64, None), _float("y"),
         _float("s_scanned")],
        initializer=[one, tenth, numpy_helper.from_array(np.array(1.0, np.float32), "one_f")])


CASES = [
    Case("Scan", [X((2, 3)), X((4, 2, 3))], attrs=dict(body=_recurrent_body(), num_scan_inputs=1), outputs=2,
         id="forward", opsets=(9, 16)),
    Case("Scan", [X((2, 3)), X((4, 2, 3))], attrs=dict(body=_recurrent_body(), num_scan_inputs=1,
                                                       scan_input_directions=[1]), outputs=2, id="reverse-input"),
    Case("Scan", [X((2, 3)), X((4, 2, 3))], attrs=dict(body=_recurrent_body(), num_scan_inputs=1,
                                                       scan_output_directions=[1]), outputs=2, id="reverse-output"),
    Case("Scan", [X((2, 3)), X((3, 3), low=-0.5, high=0.5), C(np.array(0, np.int64)), X((4, 2, 3)), X((4, 2, 3))],
         attrs=dict(body=_invariant_and_counter_body(), num_scan_inputs=2, scan_input_directions=[0, 1]), outputs=5,
         id="invariant-state-counter-two-outputs"),
    Case("Scan", [C(np.zeros((2, 3), np.float32)), C(_RNG.uniform(-0.5, 0.5, (3, 3)).astype(np.float32)),
                  C(np.array(0, np.int64)), X((4, 2, 3)), C(_RNG.uniform(-1, 1, (4, 2, 3)).astype(np.float32))],
         attrs=dict(body=_invariant_and_counter_body(), num_scan_inputs=2), outputs=5, id="constant-states"),
]
