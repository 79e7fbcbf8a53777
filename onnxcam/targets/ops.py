"""Small graph idioms the tasks' default weightings share (int64 index handling, one-hot rows)."""

from __future__ import annotations

import numpy as np
from onnx import helper

from onnxcam.autodiff.emitter import Emitter
from onnxcam.targets.score import SeedContext

__all__ = ["pick", "non_negative", "one_hot", "batch_size", "no_index", "per_sample", "float_type"]


def pick(ctx: SeedContext, default: str) -> str:
    """int64 (N,): the ``target`` input where it is ≥ 0, else ``default``."""
    e = ctx.emit
    negative = e.op("Less", ctx.target, e.const(0, dtype="int64"))
    return e.op("Where", negative, default, ctx.target, dtype_of=default)


def non_negative(e: Emitter, indices: str) -> str:
    """int64 indices with negatives replaced by 0 (Where: Max takes integers only from opset 12)."""
    zero = e.const(0, dtype="int64")
    return e.op("Where", e.op("Less", indices, zero), zero, indices, dtype_of=indices)


def one_hot(e: Emitter, indices: str, depth: str, like: str) -> str:
    """One-hot rows of ``like``'s float type along a new last axis."""
    on_off = e.const(np.array([0, 1], dtype=e.dtype(like)), hint="on_off")
    return e.op("OneHot", indices, depth, on_off, axis=-1, dtype_of=like)


def batch_size(e: Emitter, tensor: str) -> str:
    """int64 [N]: the batch size of ``tensor`` (batch first), as a shape for Expand."""
    return e.slice(e.shape(tensor), [0], [1], [0])


def per_sample(ctx: SeedContext, value: str) -> str:
    """An int64 [1] or [N] tensor broadcast to (N,)."""
    return ctx.emit.op("Expand", value, batch_size(ctx.emit, ctx.s), dtype_of=ctx.target)


def no_index(ctx: SeedContext) -> str:
    """int64 (N,) of -1: the task explains no index."""
    return per_sample(ctx, ctx.emit.const(-1, dtype="int64"))


def float_type(e: Emitter, like: str) -> int:
    """The ONNX element type of ``like`` (for Cast's ``to``)."""
    return int(helper.np_dtype_to_tensor_dtype(e.dtype(like)))
