"""Dense maps, ``(N, 1, H, W)``: text detection (DB), saliency, heat-map detectors — and, asked for
with ``--task dense``, maps of several independent channels ``(N, C, H, W)`` (CRAFT's region and
affinity maps), one channel explained at a time.

The score is the map's logit summed over the pixels where the model fires: those whose
activation (the output after its final Sigmoid; the output itself without one) exceeds
``TaskOptions.threshold`` (0.5). Where no pixel does, every pixel counts, so that the map
still says what the model looked at. A region or mask replaces the threshold on a one-channel
map, and narrows the channel's firing pixels on a several-channel one. ``target`` = c explains
channel c (default 0).
"""

from __future__ import annotations

from onnxcam.errors import ModelError
from onnxcam.targets.base import Task
from onnxcam.targets.ops import float_type, no_index, one_hot, per_sample, pick
from onnxcam.targets.score import Seed, SeedContext


def weights(ctx: SeedContext) -> Seed:
    """w = (activation > threshold) per pixel of channel target (0); all its pixels where none is above it"""
    e, channels = ctx.emit, ctx.score.shape[1]
    if channels is None:
        raise ModelError(f"the number of channels of '{ctx.score.tensor}' is unknown; {e.view.unknown_shape_fix()}")
    firing = e.op("Cast", e.op("Greater", ctx.p, e.scalar(ctx.options.threshold, ctx.p)), to=float_type(e, ctx.s),
                  dtype_of=ctx.s)
    fires = e.op("Greater", e.reduce("ReduceMax", firing, [2, 3]), e.scalar(0.0, ctx.s))  # (N, C, 1, 1), per channel
    mask = e.where(fires, firing, e.scalar(1.0, ctx.s))
    if channels == 1:
        return Seed(mask, no_index(ctx))
    chosen = pick(ctx, per_sample(ctx, e.const(0, dtype="int64")))  # channel 0 by default
    rows = e.unsqueeze(one_hot(e, chosen, e.ints([channels]), ctx.s), [2, 3])  # (N, C, 1, 1)
    return Seed(e.mul(rows, mask), chosen)


def detect(view, score) -> bool:
    return score.rank == 4 and score.shape[1] == 1


TASK = Task(
    name="dense",
    shapes="(N, 1, H, W); with --task dense, (N, C, H, W) of independent channels",
    default="the logit summed over the pixels whose activation exceeds the threshold (0.5)",
    target_means="the channel (several-channel maps)",
    detect=detect,
    weights=weights,
    fits_when_asked=lambda view, score: score.rank == 4,
)
