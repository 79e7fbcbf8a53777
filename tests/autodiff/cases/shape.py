"""Finite-difference cases for onnxcam/autodiff/rules/shape.py."""

import numpy as np

from tests.autodiff.harness import C, Case, X

INT64_MAX = np.iinfo(np.int64).max
BOTH = (11, 13)


def i64(*values):
    return C(np.array(values, dtype=np.int64))


CASES = [
    # Reshapes.
    Case("Reshape", [X((2, 3, 4)), i64(6, 4)], id="merge", opsets=BOTH),
    Case("Reshape", [X((2, 3, 4)), i64(0, -1, 2)], id="zero-and-minus-one", opsets=BOTH),
    Case("Flatten", [X((2, 3, 4, 5))], id="default-axis", opsets=BOTH),
    Case("Flatten", [X((2, 3, 4, 5))], attrs=dict(axis=0), id="axis0", opsets=BOTH),
    Case("Flatten", [X((2, 3, 4, 5))], attrs=dict(axis=2), id="axis2", opsets=BOTH),
    Case("Flatten", [X((2, 3, 4, 5))], attrs=dict(axis=-1), id="negative-axis", opsets=BOTH),
    Case("Transpose", [X((2, 3, 4, 5))], attrs=dict(perm=[0, 2, 3, 1]), id="nhwc", opsets=BOTH),
    Case("Transpose", [X((2, 3, 4))], id="default-perm", opsets=BOTH),
    Case("DepthToSpace", [X((2, 8, 3, 2))], attrs=dict(blocksize=2), id="dcr-default", opsets=BOTH),
    Case("DepthToSpace", [X((2, 8, 3, 2))], attrs=dict(blocksize=2, mode="CRD"), id="crd", opsets=BOTH),
    Case("DepthToSpace", [X((1, 18, 2, 3))], attrs=dict(blocksize=3, mode="DCR"), id="dcr-b3", opsets=(13,)),
    Case("SpaceToDepth", [X((2, 3, 4, 6))], attrs=dict(blocksize=2), id="b2", opsets=BOTH),
    Case("Squeeze", [X((2, 1, 3, 1))], attrs=dict(axes=[1, -1]), id="attr-axes", opsets=(11,)),
    Case("Squeeze", [X((2, 1, 3, 1)), i64(-1, 1)], id="input-axes", opsets=(13, 18)),
    Case("Squeeze", [X((1, 3, 1, 4))], id="no-axes", opsets=(11, 13)),
    Case("Unsqueeze", [X((2, 3))], attrs=dict(axes=[0, -1]), id="attr-axes", opsets=(11,)),
    Case("Unsqueeze", [X((2, 3)), i64(1, 3)], id="input-axes", opsets=(13, 18)),
    Case("Unsqueeze", [X((2, 3)), i64(-1)], id="input-negative", opsets=(13,)),
    Case("Expand", [X((3, 1)), i64(2, 3, 4)], id="new-axes", opsets=BOTH),
    Case("Expand", [X((2, 1, 4)), i64(1, 3, 1)], id="same-rank", opsets=BOTH),
    Case("Tile", [X((2, 3)), i64(2, 3)], id="2d", opsets=BOTH),
    Case("Tile", [X((2, 3, 4)), i64(1, 2, 1)], id="3d-one-axis", opsets=BOTH),
    # Joining and splitting.
    Case("Concat", [X((2, 3, 4)), X((2, 2, 4))], attrs=dict(axis=1), id="axis1", opsets=BOTH),
    Case("Concat", [X((2, 3, 1)), X((2, 3, 2)), X((2, 3, 4))], attrs=dict(axis=-1), id="three-negative-axis",
         opsets=BOTH),
    Case("Concat", [X((2, 3)), C(np.ones((1, 3), np.float32)), X((3, 3))], attrs=dict(axis=0), id="const-middle",
         opsets=BOTH),
    Case("Split", [X((2, 6, 3))], attrs=dict(axis=1, split=[1, 2, 3]), outputs=3, id="attr-split", opsets=(11,)),
    Case("Split", [X((2, 6, 3)), i64(4, 2)], attrs=dict(axis=1), outputs=2, id="input-split", opsets=(13, 18)),
    Case("Split", [X((6, 4))], outputs=3, id="equal", opsets=(11, 13)),
    Case("Split", [X((2, 3, 4))], attrs=dict(axis=-1), outputs=2, id="equal-negative-axis", opsets=(11, 13)),
    Case("Split", [X((2, 5))], attrs=dict(axis=1, num_outputs=3), outputs=3, id="num-outputs-uneven", opsets=(18,)),
    # Slice (inputs from opset 10).
    Case("Slice", [X((4, 6)), i64(1), i64(3), i64(0)], id="contiguous", opsets=BOTH),
    Case("Slice", [X((2, 6, 5)), i64(1, -4), i64(INT64_MAX, -1), i64(1, 2)], id="huge-and-negative-ends",
         opsets=BOTH),
    Case("Slice", [X((2, 7)), i64(0), i64(7), i64(-1), i64(2)], id="step2", opsets=BOTH),
    Case("Slice", [X((2, 6)), i64(-1), i64(-INT64_MAX), i64(1), i64(-1)], id="reverse", opsets=BOTH),
    Case("Slice", [X((2, 7, 5)), i64(5, 4), i64(0, -INT64_MAX), i64(1, 2), i64(-2, -3)], id="negative-steps",
         opsets=BOTH),
    Case("Slice", [X((3, 4)), i64(1, 1), i64(3, 100)], id="axes-omitted", opsets=BOTH),
    Case("Slice", [X((3, 8)), i64(-10), i64(10), C(None), i64(3)], attrs={}, id="clamped-starts", opsets=(13,)),
    # Gather with constant indices.
    Case("Gather", [X((5, 3)), i64(4, 0, 2)], id="axis0-unique", opsets=BOTH),
    Case("Gather", [X((2, 5, 3)), C(np.int64(-2))], attrs=dict(axis=1), id="scalar-negative-index", opsets=BOTH),
    Case("Gather", [X((2, 3, 5)), C(np.array([[0, 4], [3, 1]], np.int64))], attrs=dict(axis=-1), id="2d-indices",
         opsets=BOTH),
    Case("Gather", [X((2, 5, 3)), i64(1, 3, 1, -4, 0)], attrs=dict(axis=1), id="repeated", opsets=BOTH),
    Case("Gather", [X((4, 3)), C(np.array([[2, 2], [0, 2]], np.int32))], id="repeated-2d-int32", opsets=(13,)),
    # Pad, mode constant.
    Case("Pad", [X((2, 3, 4)), i64(0, 1, 2, 0, 2, 1)], id="positive", opsets=BOTH),
    Case("Pad", [X((2, 3, 5)), i64(0, -1, 2, 0, 1, -2), C(np.float32(0.5))], id="crop-and-pad", opsets=BOTH),
    Case("Pad", [X((2, 3)), i64(1, 1, 1, 1), X(())], id="value-input", opsets=BOTH),
    Case("Pad", [X((2, 3, 4)), i64(1, -1, 2, 0), C(np.float32(0)), i64(-1, 1)], id="axes-input", opsets=(18,)),
    Case("Pad", [X((2, 3, 4)), i64(0, 0, 1, 0, 0, 2)], attrs=dict(mode="constant"), id="explicit-mode",
         opsets=(13, 18)),
]

# Gathers and scatters (window partitioning, relative-position tables).
CASES += [
    Case("GatherElements", [X((3, 4)), C(np.array([[0, 2, 1, 0], [2, 2, 1, 0], [0, 1, 2, 1]], np.int64))],
         attrs=dict(axis=0), id="axis0-repeats", opsets=(16, 18)),
    Case("GatherElements", [X((3, 4)), C(np.array([[3, 0], [1, 1], [2, 0]], np.int64))], attrs=dict(axis=1),
         id="axis1", opsets=(16,)),
    Case("ScatterND", [X((4, 3)), C(np.array([[1], [3]], np.int64)), X((2, 3))], id="rows", opsets=(11, 13, 16)),
    Case("ScatterND", [X((2, 3, 4)), C(np.array([[0, 1], [1, 2]], np.int64)), X((2, 4))], id="inner",
         opsets=(13, 16)),
    Case("ScatterND", [X((4, 3)), C(np.array([[1], [3]], np.int64)), X((2, 3))], attrs=dict(reduction="add"),
         id="add", opsets=(16,)),
]

# Per-sequence reversal (the reverse direction of recurrent layers with sequence_lens).
CASES += [
    Case("ReverseSequence", [X((4, 3, 2)), C(np.array([4, 1, 3], np.int64))], id="time-major", opsets=(10, 13)),
    Case("ReverseSequence", [X((3, 4, 2)), C(np.array([2, 4, 0], np.int64))], attrs=dict(batch_axis=0, time_axis=1),
         id="batch-major", opsets=(13,)),
]
