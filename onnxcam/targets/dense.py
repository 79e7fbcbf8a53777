"""Dense one-channel maps, ``(N, 1, H, W)``: text detection (DB), saliency, heat-map detectors.

The score is the map's logit summed over the pixels where the model fires: those whose
activation (the output after its final Sigmoid; the output itself without one) exceeds
``TaskOptions.threshold`` (0.5). Where no pixel does, every pixel counts, so that the map
still says what the model looked at. A region or mask replaces the threshold.
"""

from __future__ import annotations

from onnxcam.targets.base import Task
from onnxcam.targets.ops import float_type, no_index
from onnxcam.targets.score import Seed, SeedContext


def weights(ctx: SeedContext) -> Seed:
    """w = (activation > threshold) per pixel; all pixels where none is above it"""
    e = ctx.emit
    firing = e.op("Cast", e.op("Greater", ctx.p, e.scalar(ctx.options.threshold, ctx.p)), to=float_type(e, ctx.s),
                  dtype_of=ctx.s)
    fires = e.op("Greater", e.reduce("ReduceMax", firing, [1, 2, 3]), e.scalar(0.0, ctx.s))  # (N, 1, 1, 1)
    mask = e.where(fires, firing, e.scalar(1.0, ctx.s))
    return Seed(mask, no_index(ctx))


def detect(view, score) -> bool:
    return score.rank == 4 and score.shape[1] == 1


TASK = Task(
    name="dense",
    shapes="(N, 1, H, W)",
    default="the logit summed over the pixels whose activation exceeds the threshold (0.5)",
    target_means="",
    detect=detect,
    weights=weights,
)
