"""Small ONNX models with a fault built in, written with onnx.helper."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def classifier(*, batch=None, extra_input: bool = False, loop_iterations: int = 0, nan: bool = False,
               int_input: bool = False, custom_op: bool = False, channels: int = 3) -> onnx.ModelProto:
    """image (N, C, 16, 16) → Conv(4) → Relu → GlobalAveragePool → Flatten → Gemm → logits (N, 3).

    ``loop_iterations`` adds a long ``Loop`` whose (zero) result is added to the logits;
    ``nan`` multiplies the logits by NaN; the others break the interface in their named way.
    """
    rng = np.random.default_rng(0)
    dims = [batch if batch is not None else "N", channels, 16, 16]
    inputs = [helper.make_tensor_value_info("image", TensorProto.INT64 if int_input else TensorProto.FLOAT, dims)]
    nodes = [helper.make_node("Cast", ["image"], ["image_f"], to=TensorProto.FLOAT)] if int_input else []
    source = "image_f" if int_input else "image"
    init = [numpy_helper.from_array(rng.standard_normal((4, channels, 3, 3)).astype(np.float32), "w"),
            numpy_helper.from_array(rng.standard_normal((3, 4)).astype(np.float32), "fc")]
    nodes += [helper.make_node("Conv", [source, "w"], ["conv"], pads=[1, 1, 1, 1]),
              helper.make_node("Relu", ["conv"], ["relu"]),
              helper.make_node("GlobalAveragePool", ["relu"], ["pooled"]),
              helper.make_node("Flatten", ["pooled"], ["flat"]),
              helper.make_node("Gemm", ["flat", "fc"], ["raw"], transB=1)]
    last = "raw"
    if extra_input:
        inputs.append(helper.make_tensor_value_info("scale", TensorProto.FLOAT, [1]))
        nodes.append(helper.make_node("Mul", [last, "scale"], ["scaled"]))
        last = "scaled"
    if nan:
        init.append(numpy_helper.from_array(np.array([np.nan], np.float32), "nan"))
        nodes.append(helper.make_node("Mul", [last, "nan"], ["nanned"]))
        last = "nanned"
    if custom_op:
        nodes.append(helper.make_node("Mystery", [last], ["mystery"], domain="com.example"))
        last = "mystery"
    if loop_iterations:
        nodes.extend(_long_loop(init, loop_iterations))
        nodes.append(helper.make_node("Add", [last, "loop_value"], ["looped"]))
        last = "looped"
    nodes.append(helper.make_node("Identity", [last], ["logits"]))
    graph = helper.make_graph(nodes, "faulty", inputs,
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [dims[0], 3])], init)
    if loop_iterations:  # ONNX shape inference does not see through Loop
        graph.value_info.append(helper.make_tensor_value_info("loop_value", TensorProto.FLOAT, [1]))
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid("com.example", 1)] if custom_op else [])
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    return model


def _long_loop(init, iterations: int) -> list[onnx.NodeProto]:
    """A Loop of ``iterations`` steps adding 0 to a scalar: slow, and its value is 0."""
    init.append(numpy_helper.from_array(np.array(iterations, np.int64), "trips"))
    init.append(numpy_helper.from_array(np.array(True), "keep_going"))
    init.append(numpy_helper.from_array(np.zeros(1, np.float32), "start"))
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Sin", ["v_in"], ["sin"]),
         helper.make_node("Mul", ["sin", "zero"], ["zeroed"]),
         helper.make_node("Add", ["v_in", "zeroed"], ["v_out"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_in", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_out", TensorProto.FLOAT, [1])],
        [numpy_helper.from_array(np.zeros(1, np.float32), "zero")])
    return [helper.make_node("Loop", ["trips", "keep_going", "start"], ["loop_value"], body=body)]
