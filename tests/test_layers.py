"""onnxcam.layers: which tensors are eligible layers, and why the others are not."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxcam import export
from onnxcam.errors import UnsupportedOpError
from tests.exporter_quirk_nets import outer_scope_matmul_loop


def _line_recogniser() -> onnx.ModelProto:
    """An OCR-style net on (N, 3, 1, W) text lines of any width: Conv → Relu → global average → Gemm."""
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)
               for name, shape in (("w", (8, 3, 1, 3)), ("fc", (5, 8)))]
    nodes = [helper.make_node("Conv", ["image", "w"], ["features"], pads=[0, 1, 0, 1], name="conv"),
             helper.make_node("Relu", ["features"], ["relu"], name="relu"),
             helper.make_node("GlobalAveragePool", ["relu"], ["pooled"], name="pool"),
             helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten"),
             helper.make_node("Gemm", ["flat", "fc"], ["logits"], transB=1, name="head")]
    graph = helper.make_graph(nodes, "line",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 1, "W"])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 5])], weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_layer_one_pixel_high_and_of_unknown_width_is_eligible():
    plan = export(_line_recogniser()).plan
    why = {c.layer.tensor: c.why_not for c in plan.considered}
    assert why == {"features": "", "relu": ""} and plan.layer.tensor == "relu"


def _classifier_with_a_loop_reading_its_features_by_name() -> onnx.ModelProto:
    """Conv → Relu → global average → Flatten, then a one-trip Loop whose body reads the pooled features
    from the outer scope, as tf2onnx's LSTMs do, and applies the classifier's MatMul."""
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)
               for name, shape in (("w", (8, 3, 3, 3)), ("fc", (8, 5)))]
    weights += [numpy_helper.from_array(np.array(1, np.int64), "trips"),
                numpy_helper.from_array(np.array([0], np.int64), "axis0")]
    nodes = [helper.make_node("Conv", ["image", "w"], ["features"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Relu", ["features"], ["relu"], name="relu"),
             helper.make_node("GlobalAveragePool", ["relu"], ["pooled"], name="pool"),
             helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten"),
             outer_scope_matmul_loop("flat", "fc", "stacked", "loop"),
             helper.make_node("Squeeze", ["stacked", "axis0"], ["logits"], name="squeeze")]
    graph = helper.make_graph(nodes, "looped",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 5])], weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_features_a_loop_body_reads_by_name_are_candidates_for_gradient_free_methods():
    model = _classifier_with_a_loop_reading_its_features_by_name()
    plan = export(model, method="eigencam").plan
    assert plan.layer.tensor == "relu"
    assert {c.layer.tensor: c.gradient_blocked_by for c in plan.considered} == {
        "features": "Loop node 'loop'", "relu": "Loop node 'loop'"}
    with pytest.raises(UnsupportedOpError, match="no gradient rule for Loop node 'loop'"):
        export(model, method="gradcam")
