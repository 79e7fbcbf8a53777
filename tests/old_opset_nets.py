"""A small CNN written with onnx.helper at any opset from 7 on, each op in the form that opset
gives it (attributes before inputs, Upsample before Resize, spatial BatchNormalization, Gemm's
required C, IR 3's initializers listed as inputs), with the same weights at every opset."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

INPUT, OUTPUT = "image", "prob"
SHAPE = (3, 16, 16)


class _Builder:
    def __init__(self, opset: int, seed: int):
        self.opset, self.rng = opset, np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []

    def const(self, name: str, value) -> str:
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def weight(self, name: str, *shape, low=-0.5, high=0.5) -> str:
        return self.const(name, self.rng.uniform(low, high, shape).astype(np.float32))

    def node(self, op_type: str, inputs, output: str, **attrs) -> str:
        self.nodes.append(helper.make_node(op_type, inputs, [output], name=output, **attrs))
        return output

    def conv(self, x, name, cin, cout, **attrs):
        return self.node("Conv", [x, self.weight(f"{name}.w", cout, cin, 3, 3), self.weight(f"{name}.b", cout)], name,
                         kernel_shape=[3, 3], **attrs)

    def batch_norm(self, x, name, c):
        params = [self.weight(f"{name}.scale", c, low=0.5, high=1.5), self.weight(f"{name}.bias", c),
                  self.weight(f"{name}.mean", c), self.weight(f"{name}.var", c, low=0.5, high=1.5)]
        spatial = dict(spatial=1) if self.opset < 9 else {}
        return self.node("BatchNormalization", [x, *params], name, epsilon=1e-5, **spatial)

    def relu6(self, x, name):
        if self.opset < 11:
            return self.node("Clip", [x], name, min=0.0, max=6.0)
        return self.node("Clip", [x, self.const(f"{name}.min", np.float32(0)), self.const(f"{name}.max", np.float32(6))],
                         name)

    def upsample2x(self, x, name):
        scales = np.array([1, 1, 2, 2], np.float32)
        if self.opset < 9:
            return self.node("Upsample", [x], name, mode="nearest", scales=scales.tolist())
        if self.opset < 11:
            return self.node("Upsample" if self.opset == 9 else "Resize", [x, self.const(f"{name}.scales", scales)],
                             name, mode="nearest")
        roi = [self.const(f"{name}.roi", np.zeros(0, np.float32))] if self.opset < 13 else [""]
        return self.node("Resize", [x, *roi, self.const(f"{name}.scales", scales)], name, mode="nearest",
                         coordinate_transformation_mode="asymmetric", nearest_mode="floor")

    def first_channel(self, x, name):
        if self.opset < 10:
            return self.node("Slice", [x], name, starts=[0], ends=[1], axes=[1])
        ints = [self.const(f"{name}.{k}", np.array([v], np.int64)) for k, v in (("starts", 0), ("ends", 1), ("axes", 1))]
        return self.node("Slice", [x, *ints], name)

    def pad1(self, x, name):
        pads = [0, 0, 1, 1, 0, 0, 1, 1]
        if self.opset < 11:
            return self.node("Pad", [x], name, pads=pads, mode="constant", value=0.0)
        return self.node("Pad", [x, self.const(f"{name}.pads", np.array(pads, np.int64))], name, mode="constant")

    def dropout(self, x, name):
        return self.node("Dropout", [x], name, **(dict(ratio=0.2) if self.opset < 12 else {}))


def small_cnn(opset: int, seed: int = 0) -> onnx.ModelProto:
    """image (N, 3, 16, 16) → prob (N, 5): Conv-BN-ReLU-MaxPool, Conv-Clip, Upsample, Concat with a
    sliced input channel, Pad, strided Conv, GlobalAveragePool, Flatten, Dropout, Gemm, Softmax."""
    b = _Builder(opset, seed)
    x = b.node("Relu", [b.batch_norm(b.conv(INPUT, "conv1", 3, 8, pads=[1, 1, 1, 1]), "bn1", 8)], "relu1")
    x = b.node("MaxPool", [x], "pool1", kernel_shape=[2, 2], strides=[2, 2])
    x = b.upsample2x(b.relu6(b.conv(x, "conv2", 8, 7, pads=[1, 1, 1, 1]), "clip2"), "up")
    x = b.node("Concat", [x, b.first_channel(INPUT, "channel0")], "concat", axis=1)
    x = b.node("Relu", [b.conv(b.pad1(x, "pad"), "conv3", 8, 8, strides=[2, 2])], "relu3")
    x = b.node("Flatten", [b.node("GlobalAveragePool", [x], "gap")], "flat", axis=1)
    logits = b.node("Gemm", [b.dropout(x, "drop"), b.weight("fc.w", 5, 8, low=-2, high=2), b.weight("fc.b", 5)],
                    "logits", transB=1)
    b.node("Softmax", [logits], OUTPUT, axis=1)
    inputs = [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["batch", *SHAPE])]
    graph = helper.make_graph(b.nodes, "small_cnn", inputs,
                              [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", 5])],
                              initializer=b.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = helper.find_min_ir_version_for(list(model.opset_import))
    if model.ir_version <= 3:  # as exporters of the time wrote IR 3: every initializer is an input too
        model.graph.input.extend(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in b.initializers)
    return model
