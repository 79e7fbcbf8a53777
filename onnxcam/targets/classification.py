"""Classification, ``(N, C)`` scores: the class's logit (pytorch-grad-cam's ``ClassifierOutputTarget``).

w = the one-hot row of the class: ``target`` where given, else each sample's top-1 class.
"""

from __future__ import annotations

from onnxcam.targets.base import Task
from onnxcam.targets.ops import one_hot, pick
from onnxcam.targets.score import Seed, SeedContext


def weights(ctx: SeedContext) -> Seed:
    """w[n] = one-hot(c_n) over the classes, c_n = target[n], or the top-1 class where target[n] < 0"""
    e = ctx.emit
    classes = pick(ctx, e.op("ArgMax", ctx.s, axis=1, keepdims=0))
    depth = e.slice(e.shape(ctx.s), [1], [2], [0])
    return Seed(one_hot(e, classes, depth, ctx.s), classes)


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
