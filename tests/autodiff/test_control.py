"""The Scan rule's refusals (its finite-difference cases are in tests/autodiff/cases/control.py)."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxcam.autodiff import backward
from onnxcam.errors import ModelError


def _scan_reading(outer: str, **attrs) -> onnx.ModelProto:
    """s' = s + x·outer over 3 steps, the body reading ``outer`` from the enclosing graph."""
    body = helper.make_graph(
        [helper.make_node("Mul", ["x_t", outer], ["scaled"]), helper.make_node("Add", ["s", "scaled"], ["s_next"]),
         helper.make_node("Identity", ["s_next"], ["y_t"])], "body",
        [helper.make_tensor_value_info("s", TensorProto.FLOAT, [2]), helper.make_tensor_value_info("x_t", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("s_next", TensorProto.FLOAT, [2]), helper.make_tensor_value_info("y_t", TensorProto.FLOAT, [2])])
    nodes = [helper.make_node("Relu", ["a"], ["scale"]),
             helper.make_node("Scan", ["s0", "xs"], ["s_last", "ys"], name="scan", body=body, num_scan_inputs=1, **attrs)]
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in (("s0", [2]), ("xs", [3, 2]), ("a", [2]),
                                                                                  ("dy", [3, 2]))]
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("ys", TensorProto.FLOAT, [3, 2])],
                              initializer=[numpy_helper.from_array(np.ones(2, np.float32), "constant_scale")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 16)], ir_version=8)


@pytest.mark.parametrize("wrt", [["xs", "a"], ["a"]])
def test_a_body_reading_a_tensor_the_score_depends_on_is_refused_naming_it(wrt):
    with pytest.raises(ModelError, match="cannot differentiate Scan node 'scan'.*its body reads 'scale' from the "
                                         "enclosing graph, which the score depends on.*pass it to the Scan as a state"):
        backward(_scan_reading("scale"), {"ys": "dy"}, wrt)


def test_a_body_reading_a_constant_from_outside_is_differentiated():
    result = backward(_scan_reading("constant_scale"), {"ys": "dy"}, ["xs"])
    assert "xs" in result.names


def test_scanning_along_another_axis_is_refused():
    with pytest.raises(ModelError, match="scanning along an axis other than 0 is not supported"):
        backward(_scan_reading("constant_scale", scan_input_axes=[1]), {"ys": "dy"}, ["xs"])
