"""onnxcam.layers: which tensors are eligible layers, and why the others are not."""

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxcam import export


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
    graph = helper.make_graph(nodes, "line", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 1, "W"])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 5])], weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_layer_one_pixel_high_and_of_unknown_width_is_eligible():
    plan = export(_line_recogniser()).plan
    why = {c.layer.tensor: c.why_not for c in plan.considered}
    assert why == {"features": "", "relu": ""} and plan.layer.tensor == "relu"
