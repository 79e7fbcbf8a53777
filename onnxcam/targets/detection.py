"""Object detectors' raw heads (see :mod:`onnxcam.detection.head` for the layouts).

A box is one anchor a of the score tensor S and its class c. Its score is the class's logit at
the anchor — plus the objectness logit where the head has objectness (YOLOv5/YOLOX: the
confidence obj·cls in log-odds terms) — so w is one at (a, c) (and at (a, obj)). Where the graph
ends in a Sigmoid that the heads' layout ops merely rearrange, S holds probabilities P, and the
score is Σ w ⊙ logit(P) on the class and objectness columns: its seed w / (P(1 − P)) becomes w
itself after the Sigmoid's backward, exactly the logit's gradient. With ``--score probability``
the score is the probabilities' weighted sum instead.

The default target (in the graph, for the explain model on its own) is the most confident
anchor; ``target`` = a explains anchor a with its best class. ``onnxcam run`` and
:meth:`onnxcam.Explainer.explain_boxes` explain every box the model detects instead, one
weighting per box.
"""

from __future__ import annotations

from dataclasses import replace

from onnxcam.detection.head import Head, find_head
from onnxcam.targets.base import Task
from onnxcam.targets.ops import non_negative, one_hot, pick
from onnxcam.targets.score import ScoreTensor, Seed, SeedContext

__all__ = ["TASK", "head_for"]

_EPSILON = 1e-6  # probabilities are clamped to [ε, 1 − ε] before their logit is taken


def head_for(view, score: ScoreTensor) -> Head:
    """The head of the output ``score`` reads, as that score reads it (``--score probability``: the
    output's probabilities, no logits)."""
    head = find_head(view, score.output)
    if score.kind == "probability" and head.score_tensor != head.output:
        return replace(head, score_tensor=head.output, first_class=4)  # yolov8: the output's probabilities
    if score.kind == "probability":
        return replace(head, sigmoid=False)
    return head


def locate(view, score: ScoreTensor) -> ScoreTensor:
    """S: the class logits where the head has them as one tensor (yolov8), else the output."""
    head = head_for(view, score)
    if head.score_tensor == score.tensor:
        return replace(score, activation="Sigmoid") if head.sigmoid else score
    tensor = head.score_tensor
    return replace(score, tensor=tensor, activation="Sigmoid", activation_output=tensor, shape=view.shape(tensor))


def _anchors_last(e, head: Head, x: str) -> str:
    """(N, A, K) from S's batch-first layout."""
    return e.transpose(x, [0, 2, 1]) if head.class_axis == 1 else x


def weights(ctx: SeedContext) -> Seed:
    """w = one-hot at the box's anchor and class (and its objectness), the most confident anchor by default"""
    e = ctx.emit
    head = head_for(e.view, ctx.score)
    s = _anchors_last(e, head, ctx.s)  # (N, A, K)
    classes = e.slice(s, [head.first_class], [head.first_class + head.classes], [2])
    confidence = e.reduce("ReduceMax", classes, [2], keepdims=False)  # (N, A)
    if head.objectness >= 0:
        objectness = e.squeeze(e.slice(s, [head.objectness], [head.objectness + 1], [2]), [2])
        confidence = e.mul(confidence, objectness) if head.sigmoid else e.add(confidence, objectness)
    anchors = e.slice(e.shape(s), [1], [2], [0])
    anchor = non_negative(e, pick(ctx, e.op("ArgMax", confidence, axis=1, keepdims=0)))  # (N,)
    at_anchor = one_hot(e, anchor, anchors, s)  # (N, A)
    row = e.reduce_sum(e.mul(classes, e.unsqueeze(at_anchor, [2])), [1], keepdims=False)  # (N, C): S at the anchor
    best = one_hot(e, e.op("ArgMax", row, axis=1, keepdims=0), e.const([head.classes], dtype="int64"), s)
    columns = e.op("Concat", *_column_parts(e, head, best, s), axis=1)  # (N, K)
    w = e.mul(e.unsqueeze(at_anchor, [2]), e.unsqueeze(columns, [1]))  # (N, A, K)
    return Seed(_anchors_last(e, head, w), anchor)


def _column_parts(e, head: Head, best: str, like: str) -> list[str]:
    """The per-box column weighting: zeros for the box columns, 1 at the objectness, the class one-hot."""
    zeros = e.slice(e.mul_scalar(best, 0.0), [0], [1], [1])  # (N, 1)
    parts = [zeros] * head.first_class
    if head.objectness >= 0:
        parts[head.objectness] = e.add(zeros, e.scalar(1.0, like))
    return [*parts, best, *[zeros] * (head.columns - head.first_class - head.classes)]  # nanodet: the box bins


def score(ctx: SeedContext, w: str) -> tuple[str, str]:
    """(seed, score) for Σ w ⊙ logit(P) on the Sigmoid columns (Σ w ⊙ S elsewhere)."""
    e = ctx.emit
    head = head_for(e.view, ctx.score)
    axes = list(range(1, ctx.score.rank))
    if not head.sigmoid:
        return w, e.reduce_sum(e.mul(ctx.s, w), axes, keepdims=False)
    p = e.op("Clip", ctx.s, e.scalar(_EPSILON, ctx.s), e.scalar(1 - _EPSILON, ctx.s)) if e.opset >= 11 else \
        e.op("Clip", ctx.s, min=_EPSILON, max=1 - _EPSILON)
    slope = e.mul(p, e.sub(e.scalar(1.0, ctx.s), p))  # dP/dlogit
    logit = e.op("Log", e.div(p, e.sub(e.scalar(1.0, ctx.s), p)))
    mask = e.const(head.logit_mask(ctx.score.rank), hint="logit_columns")
    seed = e.where(mask, e.div(w, slope), w)
    value = e.where(mask, logit, ctx.s)
    return seed, e.reduce_sum(e.mul(value, w), axes, keepdims=False)


def detect(view, score: ScoreTensor) -> bool:
    return score.rank == 3 and find_head(view, score.output) is not None


TASK = Task(
    name="detection",
    shapes="(N, 4+C, A), (N, A, 5+C), per level (N, Aₗ, C) + boxes, or (N, K, 6) end-to-end rows",
    default="the most confident anchor's class logit (run: every detected box)",
    target_means="the anchor",
    detect=detect,
    weights=weights,
    score=score,
    locate=locate,
)
