"""Regression, ``(N, K)`` outputs with no final activation: an output unit itself.

MATLAB's ``gradCAM`` sums a regression network's outputs by default; so does this task when
no unit is named. Detected for ``(N, 1)`` outputs without a final activation; ``--task
regression`` for wider ones (they look like class logits otherwise).
"""

from __future__ import annotations

from onnxcam.targets.base import Task
from onnxcam.targets.ops import no_index, non_negative, one_hot, pick
from onnxcam.targets.score import Seed, SeedContext


def weights(ctx: SeedContext) -> Seed:
    """w[n] = one-hot(k) for unit k = target[n]; all ones (the sum of the outputs) where target[n] < 0"""
    e = ctx.emit
    units = pick(ctx, no_index(ctx))
    depth = e.slice(e.shape(ctx.s), [1], [2], [0])
    chosen = one_hot(e, non_negative(e, units), depth, ctx.s)
    everything = e.expand_like(e.scalar(1.0, ctx.s), ctx.s)
    summed = e.unsqueeze(e.op("Less", units, e.const(0, dtype="int64")), [1])
    return Seed(e.where(summed, everything, chosen), units)


def detect(view, score) -> bool:
    return score.rank == 2 and score.shape[1] == 1 and not score.activation


TASK = Task(
    name="regression",
    shapes="(N, K)",
    default="the sum of the outputs (one output: itself)",
    target_means="the output unit",
    detect=detect,
    fits_when_asked=lambda view, score: score.rank == 2,
    weights=weights,
)
