"""Finite-difference cases for the forms that opsets 7–10 give ops (attributes where later opsets
take inputs, spatial BatchNormalization, Dropout's ratio, Gemm's required C, ...), as exporters of
that time wrote them. The other tables test the same rules in their modern forms; opset 7 is the
oldest that ONNX Runtime runs, and each case also runs at the last opset before its form changed."""

import numpy as np

from tests.autodiff.cases.pool import spread
from tests.autodiff.harness import C, Case, X

RNG = np.random.default_rng(7)
KINK = dict(away=0.05)
POSITIVE = dict(low=0.5, high=2.0)


def _w(*shape):
    return C(RNG.uniform(-1, 1, size=shape).astype(np.float32))


CASES = [
    # The usual CNN of the time: Conv, pooling, Gemm with its then required C, Softmax over the rest.
    Case("Conv", [X((2, 3, 6, 6)), _w(4, 3, 3, 3), _w(4)], attrs=dict(pads=[1, 1, 1, 1], strides=[2, 2]),
         id="k3-s2", opsets=(7, 10)),
    Case("ConvTranspose", [X((1, 2, 3, 3)), _w(2, 3, 3, 3)], attrs=dict(strides=[2, 2]), id="s2", opsets=(7,)),
    Case("MaxPool", [spread(2, 3, 6, 6)], attrs=dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
         id="k3-s2-p1", opsets=(7, 9), h=5e-3),
    Case("AveragePool", [X((2, 3, 6, 6))], attrs=dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
                                                      count_include_pad=1), id="include-pad", opsets=(7, 9)),
    Case("GlobalAveragePool", [X((2, 3, 4, 5))], opsets=(7,)),
    Case("GlobalMaxPool", [spread(2, 3, 4, 5)], opsets=(7,), h=5e-3),
    Case("Gemm", [X((3, 4)), X((4, 5)), X((5,))], attrs=dict(alpha=0.5, beta=2.0), id="C-required", opsets=(7, 10)),
    Case("Gemm", [X((2, 6)), _w(4, 6), _w(4)], attrs=dict(transB=1), id="head", opsets=(7,)),
    Case("MatMul", [X((2, 3, 4)), X((4, 5))], id="batched", opsets=(7, 8)),
    Case("Softmax", [X((2, 3, 4), low=-2.0, high=2.0)], attrs=dict(axis=1), id="flattened-axis1", opsets=(7, 12)),
    Case("LogSoftmax", [X((2, 3, 4), low=-2.0, high=2.0)], id="default-axis", opsets=(7,)),
    Case("InstanceNormalization", [X((2, 3, 4, 5)), _w(3), _w(3)], opsets=(7,)),
    Case("Dropout", [X((2, 3))], attrs=dict(ratio=0.3), id="ratio-attr", opsets=(7, 10)),
    Case("Dropout", [X((2, 3))], attrs=dict(ratio=0.3), id="mask-output", outputs=2, opsets=(10,)),
    # Activations of opsets 6–9.
    Case("Relu", [X((2, 3, 4), **KINK)], opsets=(7,)),
    Case("LeakyRelu", [X((2, 3, 4), **KINK)], attrs=dict(alpha=0.2), opsets=(7,)),
    Case("PRelu", [X((2, 3, 4, 4), **KINK), C(np.full((3, 1, 1), 0.25, np.float32))], id="per-channel",
         opsets=(7, 9)),
    Case("Elu", [X((2, 3), **KINK)], opsets=(7,)),
    Case("Sigmoid", [X((2, 3))], opsets=(7,)),
    Case("HardSigmoid", [X((2, 3), low=-3.0, high=3.0, away=0.05, kinks=(-2.5, 2.5))], opsets=(7,)),
    Case("Tanh", [X((2, 3))], opsets=(7,)),
    Case("Clip", [X((2, 3, 4), low=-2.0, high=8.0, away=0.05, kinks=(0.0, 6.0))], attrs=dict(min=0.0, max=6.0),
         id="attr-relu6", opsets=(7,)),
    Case("Clip", [X((2, 3, 4), low=-1.0, high=1.0, away=0.05, kinks=(0.4,))], attrs=dict(max=0.4),
         id="attr-max-only", opsets=(7, 10)),
    # Elementwise ops with opset 7's broadcasting; Sum broadcasts from opset 8 only.
    Case("Add", [X((2, 3, 4)), X((3, 1))], id="broadcast", opsets=(7,)),
    Case("Sub", [X((2, 3, 4)), X((4,))], id="broadcast", opsets=(7,)),
    Case("Mul", [X((2, 3, 4, 4)), X((1, 3, 1, 1))], id="broadcast", opsets=(7,)),
    Case("Div", [X((2, 3)), X((3,), **POSITIVE)], id="broadcast", opsets=(7,)),
    Case("Pow", [X((2, 3), **POSITIVE), C(np.float32(2.5))], id="const-exponent", opsets=(7,)),
    Case("Sum", [X((2, 3)), X((2, 3)), X((2, 3))], id="same-shape", opsets=(7,)),
    Case("Sum", [X((2, 3)), X((3,)), X((2, 1))], id="broadcast", opsets=(8,)),
    Case("Abs", [X((2, 3), away=0.1)], opsets=(7, 8)),
    Case("Sqrt", [X((2, 3), **POSITIVE)], opsets=(7,)),
    Case("Exp", [X((2, 3))], opsets=(7,)),
    Case("Log", [X((2, 3), **POSITIVE)], opsets=(7,)),
    Case("Reciprocal", [X((2, 3), **POSITIVE)], opsets=(7,)),
    Case("Neg", [X((2, 3))], opsets=(7,)),
    Case("Identity", [X((2, 3))], opsets=(7,)),
    Case("Cast", [X((2, 3))], attrs=dict(to=11), id="to-double", opsets=(7,)),
    Case("Where", [C(np.array([[True, False, True]])), X((2, 3)), X((2, 1))], id="broadcast", opsets=(9,)),
    # Shapes and reductions with axes as attributes (non-negative before opset 11).
    Case("Reshape", [X((2, 3, 4)), C(np.array([0, -1], np.int64))], id="zero-and-minus-one", opsets=(7,)),
    Case("Flatten", [X((2, 3, 4, 5))], attrs=dict(axis=2), id="axis2", opsets=(7, 9)),
    Case("Transpose", [X((2, 3, 4, 5))], attrs=dict(perm=[0, 2, 3, 1]), id="nhwc", opsets=(7,)),
    Case("Squeeze", [X((2, 1, 3, 1))], attrs=dict(axes=[1, 3]), id="attr-axes", opsets=(7, 10)),
    Case("Unsqueeze", [X((2, 3))], attrs=dict(axes=[0, 3]), id="attr-axes", opsets=(7, 10)),
    Case("Concat", [X((2, 3, 4)), X((2, 2, 4))], attrs=dict(axis=1), id="axis1", opsets=(7,)),
    Case("Split", [X((2, 6, 3))], attrs=dict(axis=1, split=[1, 2, 3]), outputs=3, id="attr-split", opsets=(7,)),
    Case("Split", [X((6, 4))], outputs=2, id="equal", opsets=(7,)),
    Case("Slice", [X((4, 6))], attrs=dict(starts=[1], ends=[3], axes=[0]), id="attr", opsets=(7, 9)),
    Case("Slice", [X((3, 6, 5))], attrs=dict(starts=[1, -4], ends=[1000, -1], axes=[1, 2]),
         id="attr-negative-and-huge", opsets=(7, 9)),
    Case("Slice", [X((3, 4))], attrs=dict(starts=[1, 0], ends=[3, 2]), id="attr-axes-omitted", opsets=(9,)),
    Case("Pad", [X((2, 3, 4))], attrs=dict(pads=[0, 1, 2, 0, 2, 1]), id="attr", opsets=(7, 10)),
    Case("Pad", [X((2, 3, 5))], attrs=dict(pads=[0, -1, 2, 0, 1, -2], value=0.5), id="attr-crop-and-pad",
         opsets=(7,)),
    Case("Gather", [X((5, 3)), C(np.array([4, 0, 2], np.int64))], id="axis0", opsets=(7,)),
    Case("Gather", [X((2, 5, 3)), C(np.array([1, 3, 1], np.int64))], attrs=dict(axis=1), id="repeated",
         opsets=(7,)),
    Case("Tile", [X((2, 3)), C(np.array([2, 3], np.int64))], id="2d", opsets=(7,)),
    Case("Expand", [X((3, 1)), C(np.array([2, 3, 4], np.int64))], id="new-axes", opsets=(8,)),
    Case("ReduceSum", [X((2, 3, 4))], attrs=dict(axes=[1], keepdims=0), id="attr", opsets=(7, 12)),
    Case("ReduceMean", [X((2, 3, 4, 5))], attrs=dict(axes=[2, 3]), id="attr-spatial", opsets=(7, 17)),
    Case("ReduceMax", [spread(2, 3, 4)], attrs=dict(axes=[2], keepdims=0), id="attr", opsets=(7, 10), h=5e-3),
    Case("ReduceL2", [X((2, 3, 4))], attrs=dict(axes=[1]), id="attr", opsets=(7,)),
    Case("ReduceSumSquare", [X((2, 3, 4))], attrs=dict(axes=[0, 2]), id="attr", opsets=(7,)),
]
