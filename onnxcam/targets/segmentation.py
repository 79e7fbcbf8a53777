"""Semantic segmentation, ``(N, C, H, W)`` class maps: the class's score over its predicted pixels.

As pytorch-grad-cam's ``SemanticSegmentationTarget``: w[c] = 1 on the pixels predicted as class
c (the arg-max over classes), 0 elsewhere. The default class is the one covering most pixels
other than the background class (``TaskOptions.background``, 0 by default; the background only
when nothing else is predicted). A region or mask narrows the pixels further.
"""

from __future__ import annotations

import numpy as np

from onnxcam.errors import ModelError
from onnxcam.targets.base import Task
from onnxcam.targets.ops import float_type, one_hot, pick
from onnxcam.targets.score import Seed, SeedContext


def weights(ctx: SeedContext) -> Seed:
    """w[n, c] = (arg-max class = c) for c = target[n], else the largest non-background class"""
    e, classes = ctx.emit, ctx.score.shape[1]
    if classes is None:
        raise ModelError(f"the number of classes of '{ctx.score.tensor}' is unknown; {e.view.unknown_shape_fix()}")
    predicted = e.op("ArgMax", ctx.s, axis=1, keepdims=1)  # (N, 1, H, W)
    every_class = e.const(np.arange(classes, dtype=np.int64).reshape(1, classes, 1, 1), hint="classes")
    masks = e.op("Cast", e.op("Equal", predicted, every_class), to=float_type(e, ctx.s), dtype_of=ctx.s)
    areas = e.reduce_sum(masks, [2, 3], keepdims=False)  # (N, C) predicted pixels per class
    largest = e.op("ArgMax", e.op("Min", areas, _background_cap(e, ctx, classes)), axis=1, keepdims=0)
    chosen = pick(ctx, largest)
    rows = e.unsqueeze(one_hot(e, chosen, e.ints([classes]), ctx.s), [2, 3])  # (N, C, 1, 1)
    return Seed(e.mul(rows, masks), chosen)


def _background_cap(e, ctx: SeedContext, classes: int) -> str:
    """Areas are capped at 0.5 pixel for the background: any other predicted class wins over it."""
    cap = np.full(classes, np.inf, dtype=e.dtype(ctx.s))
    if 0 <= ctx.options.background < classes:
        cap[ctx.options.background] = 0.5
    return e.const(cap, hint="background_cap")


def detect(view, score) -> bool:
    return score.rank == 4 and score.shape[1] != 1


TASK = Task(
    name="segmentation",
    shapes="(N, C, H, W), C > 1",
    default="the largest non-background class, over the pixels predicted as it",
    target_means="the class",
    detect=detect,
    weights=weights,
)
