"""Finite-difference cases for onnxcam/autodiff/rules/conv.py."""

import numpy as np

from tests.autodiff.harness import C, Case, X


def _w(*shape, seed=0):
    """A constant weight (initializer) with a fixed seed."""
    return C(np.random.default_rng(seed).uniform(-1, 1, size=shape).astype(np.float32))


def _b(n):
    return C(np.linspace(-0.5, 0.5, n, dtype=np.float32))


CASES = [
    # Conv: 2-D basics and every attribute.
    Case("Conv", [X((2, 3, 6, 6)), _w(4, 3, 3, 3), _b(4)], attrs=dict(pads=[1, 1, 1, 1]), id="k3-p1",
         opsets=(11, 13, 21)),
    Case("Conv", [X((2, 3, 7, 7)), _w(4, 3, 3, 3)], attrs=dict(strides=[2, 2], pads=[1, 1, 1, 1]), id="k3-s2-p1"),
    Case("Conv", [X((1, 3, 8, 8)), _w(4, 3, 3, 3)], attrs=dict(strides=[2, 2]), id="s2-uncovered-tail"),
    Case("Conv", [X((1, 2, 7, 6)), _w(3, 2, 3, 2)], attrs=dict(strides=[2, 1], pads=[0, 1, 2, 0]),
         id="asymmetric-pads"),
    Case("Conv", [X((1, 2, 5, 5)), _w(3, 2, 1, 1)], attrs=dict(strides=[2, 2]), id="k1-s2"),
    Case("Conv", [X((1, 2, 6, 6)), _w(3, 2, 1, 1)], attrs=dict(strides=[2, 2]), id="k1-s2-even"),
    Case("Conv", [X((1, 2, 9, 9)), _w(3, 2, 3, 3)], attrs=dict(dilations=[2, 2], pads=[2, 2, 2, 2]),
         id="dilation2"),
    Case("Conv", [X((1, 2, 9, 8)), _w(3, 2, 2, 3)], attrs=dict(dilations=[2, 3], strides=[2, 1]),
         id="dilation-stride"),
    Case("Conv", [X((2, 4, 5, 5)), _w(6, 2, 3, 3)], attrs=dict(group=2, pads=[1, 1, 1, 1]), id="group2"),
    Case("Conv", [X((2, 4, 6, 6)), _w(4, 1, 3, 3)], attrs=dict(group=4, strides=[2, 2], pads=[1, 1, 1, 1]),
         id="depthwise"),
    Case("Conv", [X((2, 4, 6, 6)), _w(4, 1, 3, 3)], attrs=dict(group=4, pads=[1, 1, 1, 1]), id="depthwise-s1"),
    Case("Conv", [X((1, 2, 6, 7)), _w(6, 1, 5, 3)], attrs=dict(group=2, pads=[2, 0, 1, 2], dilations=[1, 2]),
         id="depthwise-multiplier-s1"),
    Case("Conv", [X((1, 2, 5, 5)), _w(3, 2, 3, 3)], attrs=dict(pads=[3, 0, 1, 2]), id="pads-beyond-kernel"),
    Case("Conv", [X((1, 2, 5, 5)), _w(3, 2, 1, 1)], attrs=dict(pads=[1, 0, 0, 1]), id="k1-padded"),
    Case("Conv", [X((1, 2, 7, 7)), _w(3, 2, 3, 3)], attrs=dict(auto_pad="SAME_UPPER", strides=[2, 2]),
         id="same-upper"),
    Case("Conv", [X((1, 2, 6, 6)), _w(3, 2, 4, 4)], attrs=dict(auto_pad="SAME_LOWER", strides=[2, 2]),
         id="same-lower"),
    Case("Conv", [X((1, 2, 6, 6)), _w(3, 2, 4, 2)], attrs=dict(auto_pad="SAME_UPPER"), id="same-upper-even"),
    Case("Conv", [X((1, 2, 7, 6)), _w(3, 2, 3, 3)], attrs=dict(auto_pad="VALID", strides=[2, 2]), id="valid"),
    Case("Conv", [X((2, 3, 6, 6)), _w(4, 3, 3, 3), X((4,))], attrs=dict(pads=[1, 1, 1, 1]), id="bias-input"),
    Case("Conv", [X((2, 3, 9)), _w(4, 3, 3), _b(4)], attrs=dict(strides=[2], pads=[1, 0]), id="1d"),
    Case("Conv", [X((1, 2, 4, 5, 5)), _w(3, 2, 2, 3, 3)], attrs=dict(strides=[1, 2, 2], pads=[0, 1, 1, 1, 0, 1]),
         id="3d"),
    # ConvTranspose: forward pads, strides, output_padding, output_shape and auto_pad.
    Case("ConvTranspose", [X((2, 3, 4, 4)), _w(3, 2, 3, 3), _b(2)], id="k3", opsets=(11, 13, 21)),
    Case("ConvTranspose", [X((1, 3, 4, 5)), _w(3, 2, 3, 3)],
         attrs=dict(strides=[2, 2], pads=[1, 1, 1, 1], output_padding=[1, 1]), id="s2-p1-outpad1"),
    Case("ConvTranspose", [X((1, 2, 4, 4)), _w(2, 3, 4, 4)], attrs=dict(strides=[2, 2], pads=[1, 1, 1, 1]),
         id="k4-s2-p1"),
    Case("ConvTranspose", [X((1, 2, 4, 4)), _w(2, 3, 3, 2)], attrs=dict(dilations=[2, 2], pads=[1, 0, 2, 1]),
         id="dilation2"),
    Case("ConvTranspose", [X((2, 4, 3, 3)), _w(4, 3, 3, 3)], attrs=dict(group=2, strides=[2, 2]), id="group2"),
    Case("ConvTranspose", [X((1, 4, 3, 3)), _w(4, 1, 3, 3)], attrs=dict(group=4, strides=[2, 2], pads=[1, 1, 1, 1]),
         id="depthwise"),
    Case("ConvTranspose", [X((1, 2, 3, 4)), _w(2, 3, 3, 3)], attrs=dict(strides=[2, 2], output_shape=[6, 8]),
         id="output-shape"),
    Case("ConvTranspose", [X((1, 2, 3, 4)), _w(2, 3, 3, 3)],
         attrs=dict(strides=[2, 2], output_shape=[5, 7], auto_pad="SAME_UPPER"), id="output-shape-same-upper"),
    Case("ConvTranspose", [X((1, 2, 3, 4)), _w(2, 3, 3, 3)], attrs=dict(strides=[2, 2], auto_pad="SAME_UPPER"),
         id="same-upper"),
    Case("ConvTranspose", [X((1, 2, 3, 4)), _w(2, 3, 4, 3)], attrs=dict(strides=[3, 2], auto_pad="SAME_LOWER"),
         id="same-lower"),
    Case("ConvTranspose", [X((1, 2, 3, 4)), _w(2, 3, 1, 1)], attrs=dict(strides=[3, 2], auto_pad="SAME_UPPER"),
         id="same-k1-past-full"),
    Case("ConvTranspose", [X((1, 2, 3, 4)), _w(2, 3, 3, 2)], attrs=dict(strides=[2, 2], auto_pad="VALID"),
         id="valid"),
    Case("ConvTranspose", [X((2, 3, 4, 4)), _w(3, 2, 3, 3), X((2,))], attrs=dict(strides=[2, 2]), id="bias-input"),
    Case("ConvTranspose", [X((2, 3, 5)), _w(3, 2, 3), _b(2)], attrs=dict(strides=[2], pads=[1, 1], output_padding=[1]),
         id="1d"),
    Case("ConvTranspose", [X((1, 2, 2, 3, 3)), _w(2, 2, 2, 3, 3)], attrs=dict(strides=[2, 2, 2], pads=[0, 1, 1, 1, 0, 1]),
         id="3d"),
]
