"""Planning: --input-shape on models exported at a fixed size."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxcam import ModelError, export
from onnxcam.graph import GraphView
from onnxcam.plan import fix_input_shape


def _fixed_conv_model(reshape_to_old_size: bool = False) -> onnx.ModelProto:
    """image fixed at 2x3x8x8 → Conv → Relu → (optionally a Reshape to 2x4x8x8) → GAP → Flatten → Gemm."""
    nodes = [helper.make_node("Conv", ["image", "w"], ["conv"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["conv"], ["relu"])]
    init = [numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32) * 0.1, "w")]
    last = "relu"
    if reshape_to_old_size:
        init.append(numpy_helper.from_array(np.array([2, 4, 8, 8], np.int64), "old_shape"))
        nodes.append(helper.make_node("Reshape", [last, "old_shape"], ["reshaped"], name="fixed_reshape"))
        last = "reshaped"
    init.append(numpy_helper.from_array(np.eye(4, dtype=np.float32), "fc"))
    nodes += [helper.make_node("GlobalAveragePool", [last], ["pooled"]),
              helper.make_node("Flatten", ["pooled"], ["flat"]),
              helper.make_node("Gemm", ["flat", "fc"], ["logits"])]
    graph = helper.make_graph(nodes, "fixed", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [2, 3, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [2, 4])], init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_a_fixed_size_is_replaced_when_the_graph_does_not_depend_on_it():
    model = fix_input_shape(_fixed_conv_model(), [1, 3, 32, 32])
    view = GraphView(model)
    assert view.shape("image") == (None, 3, 32, 32) and view.shape("relu") == (None, 4, 32, 32)
    result = export(_fixed_conv_model(), input_shape="1x3x32x32")
    assert result.plan.layer.shape == (None, 4, 32, 32)


def test_a_size_built_into_a_reshape_is_refused_naming_the_node():
    with pytest.raises(ModelError, match="Reshape node 'fixed_reshape' has that size built in"):
        fix_input_shape(_fixed_conv_model(reshape_to_old_size=True), [1, 3, 32, 32])
