"""The part every CAM shares, as graph nodes: ReLU, normalise, resize to the input, normalise.

It follows pytorch-grad-cam's recipe so that users moving from it see the same maps: ReLU;
per image x −= min, x /= (max + 1e-7) at feature resolution; bilinear resize to the input
size (ONNX Resize, linear, half_pixel — what OpenCV's ``cv2.resize`` INTER_LINEAR computes);
per image min-max once more. An all-zero map stays all zero.
"""

from __future__ import annotations

import numpy as np

from onnxcam.autodiff.emitter import Emitter
from onnxcam.autodiff.rules.resize import bilinear_matrix
from onnxcam.errors import ModelError

__all__ = ["finish_cam", "EPSILON"]

EPSILON = 1e-7
MATRIX_CELLS = 64  # maps up to 64×64 are resized by two MatMuls (56×56 → 224×224, batch 8: 0.26 against 0.55 ms)
MATRIX_PIXELS = 16384  # ... to inputs up to 16384 a side (matrices of at most 4 MiB each)


def normalize_per_image(e: Emitter, x: str) -> str:
    """(x − min) / (max − min + ε) per image over axes 1.. of a (N, 1, h, w) tensor."""
    axes = [1, 2, 3]
    shifted = e.sub(x, e.reduce("ReduceMin", x, axes))
    return e.div(shifted, e.add(e.reduce("ReduceMax", shifted, axes), e.scalar(EPSILON, x)))


def resize_to(e: Emitter, x: str, image: str, layout: str, source_hw=None) -> str:
    """Bilinear resize of (N, 1, h, w) to the spatial size of ``image`` (NCHW or NHWC).

    Where ``source_hw`` (the map's (h, w)) and the image's size are static and the map is small, the
    same interpolation is two MatMuls by constant matrices: at 7×7 → 224×224, batch 8, ONNX Runtime
    takes 0.18 ms for them against 0.56 ms for its Resize, OpenVINO 0.45 against 3.4 ms (maps equal to
    2e-7). Before opset 11 Resize has no half-pixel mode, so it is the only form (sizes must be static).
    """
    if e.opset < 11 or _small_and_static(e, image, layout, source_hw):
        return _resize_by_matrices(e, x, image, layout, source_hw)
    image_shape = e.shape(image)
    hw = e.slice(image_shape, [2] if layout == "NCHW" else [1], [4] if layout == "NCHW" else [3], [0])
    sizes = e.op("Concat", e.slice(e.shape(x), [0], [2], [0]), hw, axis=0)
    if e.opset >= 13:
        roi, scales = None, None
    else:  # opset 11 wants roi and scales present, if empty
        roi = e.const(np.zeros(0, np.float32), hint="roi")
        scales = e.const(np.zeros(0, np.float32), hint="scales")
    return e.op("Resize", x, roi, scales, sizes, mode="linear", coordinate_transformation_mode="half_pixel",
                dtype_of=x)


def _target_hw(e: Emitter, image: str, layout: str) -> tuple:
    shape = e.view.shape(image)
    if shape is None:
        return (None, None)
    return tuple(shape[2:4] if layout == "NCHW" else shape[1:3])


def _small_and_static(e: Emitter, image: str, layout: str, source_hw) -> bool:
    """Static sizes, a map of at most MATRIX_CELLS a side (the MatMuls' work grows with h·w·W) and an
    image of at most MATRIX_PIXELS a side (the matrices' size grows with it)."""
    target_hw = _target_hw(e, image, layout)
    known = source_hw is not None and None not in (*source_hw, *target_hw)
    return known and max(source_hw) <= MATRIX_CELLS and max(target_hw) <= MATRIX_PIXELS


def _resize_by_matrices(e: Emitter, x: str, image: str, layout: str, source_hw) -> str:
    target_hw = _target_hw(e, image, layout)
    if source_hw is None or None in tuple(source_hw) + tuple(target_hw):
        raise ModelError(f"resizing the map to the input needs static sizes before opset 11 (this model has opset "
                         f"{e.opset}); {e.view.unknown_shape_fix()}")
    if max(target_hw) > MATRIX_PIXELS or max(source_hw) > MATRIX_PIXELS:
        raise ModelError(f"the input's size {tuple(target_hw)} is too large to resize the map to before opset 11 "
                         f"(at most {MATRIX_PIXELS} a side); re-export the model at opset 11 or later")
    (h, w), (height, width) = source_hw, target_hw
    rows, cols = bilinear_matrix(h, height), bilinear_matrix(w, width)
    dtype = e.dtype(x)
    tall = e.op("MatMul", e.const(rows.astype(dtype), hint="resize_rows"), x)  # (N, 1, H, w)
    return e.op("MatMul", tall, e.const(cols.T.astype(dtype), hint="resize_cols"))  # (N, 1, H, W)


def finish_cam(e: Emitter, raw: str, image: str, layout: str, source_hw=None) -> str:
    """The final (N, H, W) map in [0, 1] from a raw (N, 1, h, w) map (of spatial size ``source_hw``)."""
    cam = normalize_per_image(e, e.op("Relu", raw))
    cam = normalize_per_image(e, resize_to(e, cam, image, layout, source_hw))
    return e.squeeze(cam, [1])
