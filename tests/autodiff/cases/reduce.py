"""Finite-difference cases for onnxcam/autodiff/rules/reduce.py.

Each reduction is checked in its three forms: axes as an attribute (ReduceSum before opset 13,
ReduceMean/ReduceMax before 18), axes as a constant input, and the input omitted (all axes, or
the identity with noop_with_empty_axes=1).
"""

import numpy as np

from tests.autodiff.harness import C, Case, X

ATTR_OPSETS = {"ReduceSum": (11,), "ReduceMean": (11, 13), "ReduceMax": (11, 13), "ReduceL2": (9, 13),
               "ReduceSumSquare": (11, 13)}
INPUT_OPSETS = {"ReduceSum": (13, 18), "ReduceMean": (18,), "ReduceMax": (18,), "ReduceL2": (18,),
                "ReduceSumSquare": (18,)}


def _axes(*axes):
    return C(np.array(axes, dtype=np.int64))


def _distinct(shape) -> np.ndarray:
    """Values 0.2 apart in shuffled order, so that no finite-difference step crosses a tie of ReduceMax."""
    count = int(np.prod(shape))
    return (np.random.default_rng(7).permutation(count) * 0.2 - 0.1 * count).reshape(shape).astype(np.float32)


def _distinct_x(shape) -> X:
    return X(shape, values=_distinct(shape))


def _cases(op: str, X=X) -> list[Case]:  # noqa: N803  (X: how the differentiable input is made)
    attr, given = ATTR_OPSETS[op], INPUT_OPSETS[op]
    shape = (2, 3, 4, 5)
    return [
        Case(op, [X(shape)], attrs=dict(axes=[1]), id="attr-axis1", opsets=attr),
        Case(op, [X(shape)], attrs=dict(axes=[2, 3], keepdims=0), id="attr-spatial-nokeep", opsets=attr),
        Case(op, [X(shape)], attrs=dict(axes=[-1, 1], keepdims=0), id="attr-negative-nokeep", opsets=attr),
        Case(op, [X(shape)], attrs=dict(axes=[-3]), id="attr-negative-keep", opsets=attr),
        Case(op, [X((3, 4))], id="attr-all-keep", opsets=attr),
        Case(op, [X((3, 4))], attrs=dict(keepdims=0), id="attr-all-nokeep", opsets=attr),
        Case(op, [X(shape), _axes(1)], id="input-axis1", opsets=given),
        Case(op, [X(shape), _axes(2, 3)], attrs=dict(keepdims=0), id="input-spatial-nokeep", opsets=given),
        Case(op, [X(shape), _axes(-1, 0)], attrs=dict(keepdims=0), id="input-negative-nokeep", opsets=given),
        Case(op, [X(shape), _axes(-2)], id="input-negative-keep", opsets=given),
        Case(op, [X((3, 4))], attrs=dict(keepdims=0), id="input-absent-all", opsets=given),
        Case(op, [X((3, 4)), C(None)], id="input-omitted-all-keep", opsets=given),
        Case(op, [X((3, 4)), _axes()], attrs=dict(keepdims=0), id="input-empty-all", opsets=given),
        Case(op, [X((3, 4))], attrs=dict(noop_with_empty_axes=1), id="input-noop", opsets=given),
        Case(op, [X((3, 4)), _axes()], attrs=dict(noop_with_empty_axes=1, keepdims=0), id="input-empty-noop",
             opsets=given),
    ]


CASES = [
    *_cases("ReduceSum"),
    *_cases("ReduceMean"),
    *_cases("ReduceMax", X=_distinct_x),  # ties are not differentiable: keep the maxima apart
    *_cases("ReduceL2"),
    *_cases("ReduceSumSquare"),
]
