"""Finite-difference cases for onnxcam/autodiff/rules/quantize.py.

Rounding has a zero derivative almost everywhere, so the finite differences run on the function
the straight-through estimator differentiates instead: the fake-quantisation pair
``QuantizeLinear → DequantizeLinear`` with the rounding removed, ``Clip(x, (qmin − zp)·s,
(qmax − zp)·s)``. The inputs straddle the clipping bounds (kept away from them), so a rule that
forgot the saturation mask, the scale or the per-axis broadcast fails.
"""

import numpy as np
import onnx
from onnx import helper, numpy_helper

from tests.autodiff.harness import Case, X

_SHAPE = (2, 3, 4)


def _pair_graph(scale, zero_point, axis=None):
    """The Q → DQ pair on x0 (or, with ``reference``, the Clip it approximates), at an opset."""
    scale = np.asarray(scale, np.float32)
    zero_point = np.asarray(zero_point)
    bounds = np.iinfo(zero_point.dtype)

    def build(opset, reference=False):
        attrs = {} if axis is None else {"axis": axis}
        initializers = [numpy_helper.from_array(scale, "s"), numpy_helper.from_array(zero_point, "zp")]
        if reference:
            per_axis = [-1 if k == axis else 1 for k in range(len(_SHAPE))] if axis is not None else []
            low = ((bounds.min - zero_point.astype(np.float32)) * scale).reshape(per_axis)
            high = ((bounds.max - zero_point.astype(np.float32)) * scale).reshape(per_axis)
            initializers += [numpy_helper.from_array(low, "low"), numpy_helper.from_array(high, "high")]
            nodes = [helper.make_node("Max", ["x0", "low"], ["clipped_low"]),
                     helper.make_node("Min", ["clipped_low", "high"], ["y0"])]
        else:
            nodes = [helper.make_node("QuantizeLinear", ["x0", "s", "zp"], ["q"], **attrs),
                     helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["y0"], **attrs)]
        graph = helper.make_graph(nodes, "fake_quant", [helper.make_tensor_value_info("x0", 1, list(_SHAPE))],
                                  [helper.make_tensor_value_info("y0", 1, list(_SHAPE))], initializer=initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        model.ir_version = helper.find_min_ir_version_for([helper.make_opsetid("", opset)])
        return model

    return build


def _straddling(bounds, seed):
    """Values across [low·1.5, high·1.5], at least 0.05 away from the clipping bounds."""
    rng = np.random.default_rng(seed)
    low, high = bounds
    x = rng.uniform(1.5 * low, 1.5 * high, size=_SHAPE)
    for edge in (low, high):
        near = np.abs(x - edge) < 0.05
        x[near] = edge + np.where(x[near] >= edge, 0.1, -0.1)
    return x.astype(np.float32)


_UINT8 = _pair_graph(0.02, np.uint8(128))  # range [-2.56, 2.54]
_INT8_AXIS = _pair_graph([0.01, 0.02, 0.03], np.array([0, 10, -5], np.int8), axis=1)  # ±1.3, [-2.76, 2.34], ...
_AXIS_VALUES = np.concatenate([_straddling((-1.28, 1.27), 1)[:, :1], _straddling((-2.76, 2.34), 2)[:, 1:2],
                               _straddling((-3.69, 3.96), 3)[:, 2:]], axis=1)

CASES = [
    Case("QuantizeLinear", [X(_SHAPE, values=_straddling((-2.56, 2.54), 0))], id="uint8-pair", opsets=(10, 13, 19),
         graph=_UINT8, reference=lambda opset: _UINT8(opset, reference=True), covers=("DequantizeLinear",)),
    Case("QuantizeLinear", [X(_SHAPE, values=_AXIS_VALUES)], id="int8-per-axis-pair", opsets=(13, 21),
         graph=_INT8_AXIS, reference=lambda opset: _INT8_AXIS(opset, reference=True), covers=("DequantizeLinear",)),
]
