"""Targets asked for in Python (a region, a mask, a reference), as ``target_weights`` arrays.

What the graph cannot know at export time comes in through the one ``target_weights`` input:
these helpers turn the API's and CLI's options into that array and check what users give.
NaN entries keep the task's default weighting there; 0 removes a position from the score.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from onnxcam.contract import format_shape
from onnxcam.errors import TargetError

__all__ = ["check_weights", "region_mask", "resize_mask", "region_weights", "reference_weights", "REGION_TASKS"]

# Tasks whose score is a sum over pixels: what a region or mask means for each.
REGION_TASKS = {
    "dense": "the logit summed over the region's pixels (instead of those above the threshold; on a map of several "
             "channels, the channel's pixels above it inside the region)",
    "segmentation": "the class's predicted pixels inside the region",
}


def check_weights(weights, score_shape: Sequence[int | None], samples: int, dtype) -> np.ndarray:
    """``weights`` as an array of the score tensor's rank that broadcasts to (samples, *score_shape[1:])."""
    array = np.asarray(weights, dtype=dtype)
    full = (samples, *score_shape[1:])
    if array.ndim == len(full) - 1:
        array = array[None]
    if array.ndim != len(full) or any(
            a != 1 and d is not None and a != d for a, d in zip(array.shape, full)):
        raise TargetError(f"target_weights has shape {array.shape}, which does not broadcast to the score tensor's "
                          f"{format_shape(full)} (batch first; use 1 for a dim to broadcast over)")
    return np.ascontiguousarray(array)


def region_mask(region, input_hw: tuple[int, int]) -> np.ndarray:
    """A boolean (H, W) mask of the model input from a box (x0, y0, x1, y1) in input pixels."""
    try:
        x0, y0, x1, y1 = (float(v) for v in region)
    except (TypeError, ValueError):
        raise TargetError(f"region {region!r} is not four numbers x0,y0,x1,y1 (input pixels)") from None
    height, width = input_hw
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise TargetError(f"region ({x0:g},{y0:g},{x1:g},{y1:g}) is not inside the {width}x{height} input with "
                          "x0 < x1 and y0 < y1; give it in the model input's pixels")
    mask = np.zeros((height, width), bool)
    mask[int(y0):int(np.ceil(y1)), int(x0):int(np.ceil(x1))] = True
    return mask


def resize_mask(mask: np.ndarray, input_hw: tuple[int, int], grid_hw: tuple[int, int]) -> np.ndarray:
    """A mask of the model input brought to the score tensor's grid (a cell counts if any pixel in it does)."""
    import cv2

    mask = np.asarray(mask)
    if mask.ndim == 3:
        mask = mask.max(axis=2)
    if mask.shape != tuple(input_hw):
        raise TargetError(f"mask is {mask.shape[1]}x{mask.shape[0]} but the model input is "
                          f"{input_hw[1]}x{input_hw[0]}; give a mask of the input's size")
    if tuple(grid_hw) == tuple(input_hw):
        return mask > 0
    area = cv2.resize((mask > 0).astype(np.float32), (grid_hw[1], grid_hw[0]), interpolation=cv2.INTER_AREA)
    return area > 0


def region_weights(task: str, grid_mask: np.ndarray, samples: int, dtype, channels: int | None = 1) -> np.ndarray:
    """(samples, 1, h, w) weights restricting a dense or segmentation score to the mask's cells."""
    if task not in REGION_TASKS:
        raise TargetError(f"a region or mask narrows dense and segmentation targets, not task {task}")
    if not grid_mask.any():
        raise TargetError("the region or mask covers no cell of the model's output grid; make it larger")
    # a one-channel dense map: every cell inside; segmentation and several-channel dense maps: the
    # default weighting's cells inside (NaN), i.e. the class's or channel's own pixels
    inside = 1.0 if task == "dense" and channels == 1 else np.nan
    weights = np.where(grid_mask, inside, 0.0).astype(dtype)
    return np.broadcast_to(weights, (samples, 1, *grid_mask.shape)).copy()


def reference_weights(reference: np.ndarray, dims: int, samples: int, dtype) -> np.ndarray:
    """(samples, D) rows of the reference embedding, checked against the model's dimension."""
    vector = np.asarray(reference, dtype=np.float64).reshape(-1)
    if vector.size != dims:
        raise TargetError(f"the reference has {vector.size} values but the model's embeddings have {dims}; "
                          "give a reference from the same model")
    if not np.all(np.isfinite(vector)) or not np.any(vector):
        raise TargetError("the reference embedding is zero or not finite; give another reference")
    return np.broadcast_to(vector.astype(dtype), (samples, dims)).copy()
