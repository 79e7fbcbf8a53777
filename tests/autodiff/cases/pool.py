"""Finite-difference cases for onnxcam/autodiff/rules/pool.py."""

import math

import numpy as np

from tests.autodiff.harness import Case, X

# Max pooling is piecewise linear: samples are a shuffled grid with spacing 0.1 so that the
# finite-difference step (h·|v| < 0.05) never swaps which element of a window is the maximum.
MAX_H = 5e-3


def spread(*shape, seed=0):
    """A differentiable input whose values are distinct and at least 0.1 apart."""
    n = math.prod(shape)
    values = (np.random.default_rng(seed).permutation(n) - n / 2) * 0.1
    return X(shape, values=values.reshape(shape).astype(np.float32))


def max_case(shape, attrs, id, opsets=(13,), **kw):
    return Case("MaxPool", [spread(*shape)], attrs=attrs, id=id, opsets=opsets, h=MAX_H, **kw)


def avg_case(shape, attrs, id, opsets=(13,)):
    return Case("AveragePool", [X(shape)], attrs=attrs, id=id, opsets=opsets)


CASES = [
    Case("GlobalAveragePool", [X((2, 3, 4, 5))], opsets=(11, 13, 21)),
    Case("GlobalAveragePool", [X((2, 3, 7))], id="1d"),
    Case("GlobalAveragePool", [X((1, 2, 3, 4, 2))], id="3d"),
    Case("GlobalMaxPool", [spread(2, 3, 4, 5)], h=MAX_H, opsets=(11, 13, 21)),
    Case("GlobalMaxPool", [spread(2, 3, 6)], h=MAX_H, id="1d"),
    Case("GlobalMaxPool", [spread(1, 2, 3, 3, 2)], h=MAX_H, id="3d"),
    # MaxPool
    max_case((2, 3, 8, 8), dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]), "k3-s2-p1",
             opsets=(11, 12, 21)),
    max_case((2, 3, 6, 6), dict(kernel_shape=[2, 2], strides=[2, 2]), "k2-s2"),
    max_case((2, 3, 8, 8), dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]), "with-indices",
             opsets=(11, 13, 21), outputs=2),
    max_case((1, 2, 5, 6), dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1]), "k3-s1-overlap"),
    max_case((1, 2, 7, 7), dict(kernel_shape=[2, 2], strides=[3, 3]), "stride-past-kernel"),
    max_case((1, 2, 8, 7), dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1), "ceil"),
    max_case((1, 2, 9, 9), dict(kernel_shape=[3, 3], dilations=[2, 2], pads=[1, 2, 1, 2]), "dilation2",
             opsets=(11, 21)),
    max_case((1, 2, 9, 8), dict(kernel_shape=[2, 3], strides=[2, 2], dilations=[2, 1], ceil_mode=1),
             "dilation-ceil"),
    max_case((1, 2, 7, 6), dict(kernel_shape=[3, 2], strides=[2, 2], auto_pad="SAME_UPPER"), "same-upper"),
    max_case((1, 2, 7, 6), dict(kernel_shape=[2, 3], strides=[2, 2], auto_pad="SAME_LOWER"), "same-lower"),
    max_case((1, 2, 7, 6), dict(kernel_shape=[3, 2], strides=[2, 1], auto_pad="VALID"), "valid"),
    max_case((2, 3, 9), dict(kernel_shape=[3], strides=[2], pads=[1, 1]), "1d"),
    max_case((1, 2, 4, 5, 5), dict(kernel_shape=[2, 3, 3], strides=[2, 2, 2], pads=[0, 1, 1, 0, 1, 1]), "3d"),
    # AveragePool: the divisor with and without padding counted, ceil_mode windows past the end
    avg_case((2, 3, 7, 7), dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]), "k3-s2-p1-exclude-pad",
             opsets=(11, 19, 21)),
    avg_case((2, 3, 7, 7), dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], count_include_pad=1),
             "k3-s2-p1-include-pad", opsets=(11, 19, 21)),
    avg_case((1, 2, 6, 6), dict(kernel_shape=[2, 2], strides=[2, 2]), "k2-s2"),
    avg_case((1, 2, 5, 6), dict(kernel_shape=[3, 2], pads=[1, 0, 1, 1]), "overlap"),
    avg_case((1, 2, 8, 7), dict(kernel_shape=[2, 2], strides=[3, 3]), "stride-past-kernel"),
    avg_case((1, 2, 8, 7), dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1),
             "ceil-exclude-pad"),
    avg_case((1, 2, 8, 7), dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1,
                                count_include_pad=1), "ceil-include-pad"),
    avg_case((1, 2, 9, 9), dict(kernel_shape=[3, 3], dilations=[2, 2], pads=[2, 1, 2, 1], count_include_pad=1),
             "dilation2", opsets=(19, 21)),
    avg_case((1, 2, 9, 8), dict(kernel_shape=[2, 3], strides=[2, 2], dilations=[2, 1], ceil_mode=1),
             "dilation-ceil", opsets=(19,)),
    avg_case((1, 2, 7, 6), dict(kernel_shape=[3, 2], strides=[2, 2], auto_pad="SAME_UPPER", count_include_pad=1),
             "same-upper"),
    avg_case((1, 2, 7, 6), dict(kernel_shape=[2, 3], strides=[2, 2], auto_pad="SAME_LOWER"), "same-lower"),
    avg_case((1, 2, 7, 6), dict(kernel_shape=[3, 2], strides=[2, 1], auto_pad="VALID"), "valid"),
    avg_case((2, 3, 9), dict(kernel_shape=[3], strides=[2], pads=[1, 1], count_include_pad=1), "1d"),
    avg_case((1, 2, 4, 5, 5), dict(kernel_shape=[2, 3, 3], strides=[2, 2, 2], pads=[0, 1, 1, 0, 1, 1]), "3d"),
    avg_case((1, 2, 4, 5, 5), dict(kernel_shape=[2, 3, 3], strides=[1, 2, 2], pads=[1, 1, 1, 1, 1, 1], ceil_mode=1,
                                   count_include_pad=1), "3d-ceil-include-pad"),
]
