"""Sequences, ``(N, T, C)`` or ``(T, N, C)``: CTC text recognisers.

Recognised as a 3-D output that ends in a Softmax, or raw logits of a per-step classifier
(detector heads, from convolutions and concatenations, are not). The default score is the greedy path: Σ_t S[t, argmax_t] over the steps whose arg-max is not
the blank (``TaskOptions.blank``, 0 by default) — the characters the model reads. An all-blank
path counts every step. ``target`` = t explains the character at time step t alone.
"""

from __future__ import annotations

from onnxcam.targets.base import Task
from onnxcam.targets.ops import float_type, non_negative, one_hot, per_sample
from onnxcam.targets.score import Seed, SeedContext


def weights(ctx: SeedContext) -> Seed:
    """w[n, t] = one-hot(argmax_c S[n, t]) on the non-blank steps, or on step t = target[n] alone"""
    e = ctx.emit
    best = e.op("ArgMax", ctx.s, axis=2, keepdims=0)  # (N, T)
    shape = e.shape(ctx.s)
    characters = one_hot(e, best, e.slice(shape, [2], [3], [0]), ctx.s)  # (N, T, C)
    blank = e.op("Equal", best, e.const(ctx.options.blank, dtype="int64"))
    read = e.op("Cast", e.op("Not", blank), to=float_type(e, ctx.s), dtype_of=ctx.s)  # (N, T)
    any_read = e.op("Greater", e.reduce("ReduceMax", read, [1]), e.scalar(0.0, ctx.s))
    path = e.where(any_read, read, e.scalar(1.0, ctx.s))
    steps = per_sample(ctx, ctx.target)  # (N,)
    chosen = one_hot(e, non_negative(e, steps), e.slice(shape, [1], [2], [0]), ctx.s)
    whole = e.unsqueeze(e.op("Less", steps, e.const(0, dtype="int64")), [1])
    step_weights = e.where(whole, path, chosen)  # (N, T)
    index = e.where(e.op("Less", steps, e.const(0, dtype="int64")), e.const(-1, dtype="int64"), steps)
    return Seed(e.mul(characters, e.unsqueeze(step_weights, [2])), index)


_REARRANGING = ("Identity", "Transpose", "Reshape", "Squeeze", "Unsqueeze", "Cast")
_PER_STEP = ("MatMul", "Gemm", "LSTM", "GRU", "RNN")
_CONSTANT_OPERAND = ("Add", "Mul")  # a bias; a scale (a quantised model's float twin rescales its MatMul)


def detect(view, score) -> bool:
    """A 3-D output ending in a Softmax/LogSoftmax, or raw logits of a per-step classifier (a
    MatMul/Gemm, or a recurrent layer, behind a bias, a constant scale, casts and reshapes).

    Raw detector heads are 3-D too — (N, 4+C, A) or (N, A, 5+C) — but come from convolutions,
    Sigmoids and concatenations of box and score branches; they are not sequences.
    """
    if score.rank != 3:
        return False
    if score.activation:
        return score.activation in ("Softmax", "LogSoftmax")
    node = view.producers.get(score.tensor)
    while node is not None and (node.op_type in _REARRANGING or
                                (node.op_type in _CONSTANT_OPERAND and any(view.is_const(i) for i in node.input))):
        node = view.producers.get(next(i for i in node.input if not view.is_const(i)))
    return node is not None and node.op_type in _PER_STEP


TASK = Task(
    name="sequence",
    shapes="(N, T, C) or (T, N, C)",
    default="the greedy path: the arg-max character of every non-blank step",
    target_means="the time step",
    detect=detect,
    weights=weights,
)
