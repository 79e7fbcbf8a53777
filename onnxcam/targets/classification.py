"""Classification, ``(N, C)`` scores: the class's logit (pytorch-grad-cam's ``ClassifierOutputTarget``).

w = the one-hot row of the class: ``target`` where given, else each sample's top-1 class.
"""

from __future__ import annotations

from onnxcam.targets.base import Task
from onnxcam.targets.score import Seed, SeedContext


def weights(ctx: SeedContext) -> Seed:
    """w[n] = one-hot(c_n) over the classes, c_n = target[n], or the top-1 class where target[n] < 0"""
    e = ctx.emit
    classes = pick(ctx, e.op("ArgMax", ctx.s, axis=1, keepdims=0))
    depth = e.slice(e.shape(ctx.s), [1], [2], [0])
    return Seed(one_hot(e, classes, depth, ctx.s), classes)


def pick(ctx: SeedContext, default: str) -> str:
    """int64 (N,): ``target`` where it is ≥ 0, else ``default``."""
    e = ctx.emit
    negative = e.op("Less", ctx.target, e.const(0, dtype="int64"))
    return e.op("Where", negative, default, ctx.target, dtype_of=default)


def non_negative(e, indices: str) -> str:
    """int64 indices with negatives replaced by 0 (Where: Max takes integers only from opset 12)."""
    zero = e.const(0, dtype="int64")
    return e.op("Where", e.op("Less", indices, zero), zero, indices, dtype_of=indices)


def one_hot(e, indices: str, depth: str, like: str) -> str:
    """One-hot rows of ``like``'s float type along a new last axis."""
    import numpy as np

    on_off = e.const(np.array([0, 1], dtype=e.dtype(like)), hint="on_off")
    return e.op("OneHot", indices, depth, on_off, axis=-1, dtype_of=like)


def detect(view, score) -> bool:
    return score.rank == 2


TASK = Task(
    name="classification",
    shapes="(N, C)",
    default="the top-1 class's score",
    target_means="the class",
    detect=detect,
    weights=weights,
)
