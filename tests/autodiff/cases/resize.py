"""Finite-difference cases for onnxcam/autodiff/rules/resize.py.

Resize is linear in X, so the finite difference compares the rule's interpolation matrix with
ONNX Runtime's own resize exactly (up to rounding): every coordinate mode, rounding mode and
border clamp below is checked against the runtime.
"""

import numpy as np

from tests.autodiff.harness import C, Case, X

NONE = C(None)
EMPTY = C(np.zeros((0,), np.float32))  # opset 11 needs roi and scales present, possibly empty


def scales(*values):
    return C(np.array(values, np.float32))


def sizes(*values):
    return C(np.array(values, np.int64))


def resize(shape, attrs, id, scale=None, size=None, opsets=(13,)):
    """A Resize case at each opset, with the inputs each opset's form wants."""
    cases = []
    for opset in opsets:
        roi, sc = (EMPTY, EMPTY) if opset < 13 else (NONE, NONE)
        inputs = [X(shape), roi, scales(*scale) if scale else sc] + ([sizes(*size)] if size else [])
        cases.append(Case("Resize", inputs, attrs=attrs, id=id, opsets=(opset,)))
    return cases


NEAREST = dict(mode="nearest")
LINEAR = dict(mode="linear")

CASES = [
    *resize((2, 3, 4, 5), NEAREST, "nearest-2x", scale=(1, 1, 2, 2), opsets=(11, 13, 19)),
    *resize((2, 3, 4, 5), dict(NEAREST, coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
            "nearest-asymmetric-floor-2x", scale=(1, 1, 2, 2), opsets=(11, 13)),
    *resize((1, 2, 5, 5), dict(NEAREST, nearest_mode="round_prefer_ceil"), "nearest-ceil-5to8", size=(1, 2, 8, 8)),
    *resize((1, 2, 5, 6), dict(NEAREST, nearest_mode="round_prefer_floor"), "nearest-floor-5to8",
            size=(1, 2, 8, 9)),
    *resize((1, 2, 8, 7), dict(NEAREST, nearest_mode="ceil", coordinate_transformation_mode="align_corners"),
            "nearest-ceil-align-corners-down", size=(1, 2, 5, 3)),
    *resize((1, 2, 6, 5), dict(NEAREST, nearest_mode="floor", coordinate_transformation_mode="pytorch_half_pixel"),
            "nearest-pytorch-half-pixel", scale=(1, 1, 1.5, 0.6)),
    *resize((1, 2, 4, 5), dict(NEAREST, coordinate_transformation_mode="tf_half_pixel_for_nn"),
            "nearest-tf-half-pixel", scale=(1, 1, 1.5, 2), opsets=(11,)),
    # ORT copies X when no size changes, and maps an axis of scale 1 straight through
    *resize((1, 2, 2, 3), dict(NEAREST, coordinate_transformation_mode="asymmetric"), "same-size-no-op",
            scale=(1, 1, 1.25, 1.25)),
    *resize((1, 2, 3, 4), dict(NEAREST, coordinate_transformation_mode="tf_half_pixel_for_nn",
                               nearest_mode="round_prefer_ceil"), "scale-1-axis-identity",
            scale=(1, 1, 1, 2), opsets=(11,)),
    *resize((2, 3, 4, 5), LINEAR, "linear-half-pixel-2x", scale=(1, 1, 2, 2), opsets=(11, 13, 19)),
    *resize((1, 2, 5, 5), LINEAR, "linear-5to8", size=(1, 2, 8, 8)),
    *resize((1, 2, 8, 8), LINEAR, "linear-8to5", size=(1, 2, 5, 5)),
    *resize((1, 2, 5, 6), LINEAR, "linear-scale-1.7", scale=(1, 1, 1.7, 0.75)),
    *resize((1, 2, 5, 4), dict(LINEAR, coordinate_transformation_mode="align_corners"), "linear-align-corners",
            size=(1, 2, 9, 7), opsets=(11, 13)),
    *resize((1, 2, 5, 4), dict(LINEAR, coordinate_transformation_mode="asymmetric"), "linear-asymmetric",
            scale=(1, 1, 2.5, 1.5)),
    *resize((1, 2, 5, 4), dict(LINEAR, coordinate_transformation_mode="pytorch_half_pixel"),
            "linear-pytorch-half-pixel", size=(1, 2, 1, 7)),
    *resize((1, 2, 5, 4), dict(LINEAR, coordinate_transformation_mode="half_pixel_symmetric"),
            "linear-half-pixel-symmetric", scale=(1, 1, 1.7, 2.2), opsets=(19,)),
    *resize((2, 4, 5, 3), LINEAR, "linear-nhwc", scale=(1, 2, 2, 1)),
    *resize((2, 4, 5, 3), NEAREST, "nearest-nhwc", size=(2, 8, 10, 3)),
    *resize((1, 2, 3, 4, 5), LINEAR, "trilinear", scale=(1, 1, 2, 1.5, 0.8)),
    *resize((2, 3, 7), LINEAR, "1d", size=(2, 3, 11)),
    Case("Resize", [X((2, 3, 4, 5)), NONE, scales(2, 1.5)], attrs=dict(LINEAR, axes=[2, 3]), id="axes-scales",
         opsets=(18, 21)),
    Case("Resize", [X((2, 4, 5, 3)), NONE, NONE, sizes(9, 7)], attrs=dict(NEAREST, axes=[-3, -2]), id="axes-sizes",
         opsets=(18,)),
    Case("Resize", [X((2, 3, 4, 5)), NONE, NONE, sizes(7, 9)],
         attrs=dict(LINEAR, axes=[2, 3], keep_aspect_ratio_policy="stretch"), id="stretch", opsets=(18,)),
]

# Upsample (opsets 7–9; scales an attribute until 9, an input from 9) and Resize-10 (Upsample-9's form).
def upsample(shape, mode, scale, id):
    return [Case("Upsample", [X(shape)], attrs=dict(mode=mode, scales=[float(s) for s in scale]), id=id, opsets=(7, 8)),
            Case("Upsample", [X(shape), scales(*scale)], attrs=dict(mode=mode), id=id, opsets=(9,)),
            Case("Resize", [X(shape), scales(*scale)], attrs=dict(mode=mode), id=f"opset10-{id}", opsets=(10,))]


CASES += [
    *upsample((2, 3, 4, 5), "nearest", (1, 1, 2, 2), "nearest-2x"),
    *upsample((1, 2, 3, 5), "nearest", (1, 1, 1.5, 2.5), "nearest-fractional"),
    *upsample((2, 3, 4, 5), "linear", (1, 1, 2, 2), "linear-2x"),
    *upsample((1, 2, 3, 5), "linear", (1, 1, 2.5, 1.5), "linear-fractional"),
    *upsample((2, 6), "nearest", (1, 3), "nearest-2d"),
]
