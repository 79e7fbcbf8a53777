"""LSTM, GRU and RNN written out as standard ops: the recurrence unrolled over its static time steps.

The gradient rules of these ops differentiate this form with the engine itself, so the forward
states the backward needs are recomputed in the graph, and each step's backward is made of the
MatMul/Add/Mul/Sigmoid/Tanh rules the engine already checks. The input projection X·Wᵀ + B is
one MatMul over all steps; only the recurrent product runs per step. Time-major throughout
(``layout=0``); ``layout=1`` tensors are transposed at the edges. Equations: the ONNX spec.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from onnx import TensorProto

from onnxcam.autodiff.emitter import Emitter

__all__ = ["Recurrence", "RecurrentInputs", "unroll", "GATES", "DEFAULT_ACTIVATIONS", "ACTIVATIONS"]

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
DEFAULT_ACTIVATIONS = {"LSTM": ("Sigmoid", "Tanh", "Tanh"), "GRU": ("Sigmoid", "Tanh"), "RNN": ("Tanh",)}
ACTIVATIONS = {"sigmoid": "Sigmoid", "tanh": "Tanh", "relu": "Relu"}  # spec name (any case) → op


@dataclass(frozen=True)
class Recurrence:
    """What the unrolled form needs of a recurrent node: its attributes and static sizes."""

    op: str  # LSTM, GRU or RNN
    hidden: int
    steps: int
    directions: tuple[str, ...]  # "forward" or "reverse", one per direction of the node
    activations: tuple[tuple[str, ...], ...]  # ONNX op names (f, g, h), one tuple per direction
    layout: int = 0
    clip: float | None = None
    linear_before_reset: bool = False


@dataclass(frozen=True)
class RecurrentInputs:
    """The node's inputs in ONNX order; ``None`` where omitted (GRU and RNN have no c0, P)."""

    x: str
    w: str
    r: str
    b: str | None = None
    lens: str | None = None
    h0: str | None = None
    c0: str | None = None
    p: str | None = None


@dataclass(frozen=True)
class _Weights:
    """One direction's per-step operands, prepared once before the steps."""

    recurrent: list[str]  # Rᵀ (H, G·H); for GRU split into the z, r part and the candidate's part
    activations: tuple[str, ...]
    peepholes: list[str] | None = None  # P's input, output and forget parts (H each)
    late_bias: str | None = None  # GRU with linear_before_reset: Rbh, added inside r ⊙ (·)


def unroll(e: Emitter, spec: Recurrence, inputs: RecurrentInputs) -> list[str]:
    """Emit the op as standard ops; returns [Y, Y_h] (and Y_c for LSTM) in the node's layout."""
    batch_first = spec.layout == 1
    x = e.transpose(inputs.x, [1, 0, 2]) if batch_first else inputs.x
    h0, c0 = (e.transpose(s, [1, 0, 2]) if batch_first and s else s for s in (inputs.h0, inputs.c0))
    lens = e.op("Cast", inputs.lens, to=TensorProto.INT64) if inputs.lens else None
    results = [_direction(e, spec, d, x, inputs, h0, c0, lens) for d in range(len(spec.directions))]
    y = _stack(e, [ys for ys, _ in results], axis=1)  # (T, D, N, H)
    finals = [_stack(e, [states[k] for _, states in results], axis=0) for k in range(len(results[0][1]))]
    if batch_first:
        return [e.transpose(y, [2, 0, 1, 3]), *[e.transpose(f, [1, 0, 2]) for f in finals]]
    return [y, *finals]


def _direction(e: Emitter, spec: Recurrence, d: int, x: str, inputs: RecurrentInputs, h0, c0, lens):
    """One direction's outputs Y (T, N, H) and final states [h] or [h, c] (N, H)."""
    reverse = spec.directions[d] == "reverse"
    if reverse and lens is not None:  # each sequence reversed within its own length, as ONNX Runtime does
        x = e.op("ReverseSequence", x, lens, batch_axis=1, time_axis=0)
    projected, weights = _prepare(e, spec, d, x, inputs)
    h, c = _pick(e, h0, d), _pick(e, c0, d)
    step = _CELLS[spec.op]
    ys = {}
    order = range(spec.steps - 1, -1, -1) if reverse and lens is None else range(spec.steps)
    for t in order:
        new_h, new_c = step(e, spec, weights, e.op("Gather", projected, e.const(t, dtype=np.int64), axis=0), h, c)
        if lens is not None:  # past a sequence's end: Y is 0 and the state is held
            valid = e.unsqueeze(e.op("Less", e.const(t, dtype=np.int64), lens), [1])  # (N, 1)
            ys[t] = e.zero_where(valid, new_h)
            new_h = ys[t] if h is None else e.where(valid, new_h, h)
            if new_c is not None:
                new_c = e.zero_where(valid, new_c) if c is None else e.where(valid, new_c, c)
        else:
            ys[t] = new_h
        h, c = new_h, new_c
    y = _stack(e, [ys[t] for t in range(spec.steps)], axis=0)
    if reverse and lens is not None:
        y = e.op("ReverseSequence", y, lens, batch_axis=1, time_axis=0)
    return y, [h] if c is None else [h, c]


def _prepare(e: Emitter, spec: Recurrence, d: int, x: str, inputs: RecurrentInputs) -> tuple[str, _Weights]:
    """X·Wᵀ plus the biases that sit outside the recurrence (T, N, G·H), and the per-step operands."""
    hidden, gates = spec.hidden, GATES[spec.op]
    projected = e.op("MatMul", x, e.transpose(_pick(e, inputs.w, d), [1, 0]))
    recurrent = e.transpose(_pick(e, inputs.r, d), [1, 0])
    late_bias = None
    if inputs.b:
        input_bias, recurrent_bias = e.split(_pick(e, inputs.b, d), [gates * hidden] * 2, axis=0)
        if spec.op == "GRU" and spec.linear_before_reset:
            late_bias = e.slice(recurrent_bias, [2 * hidden], [3 * hidden], [0])
            outside = np.repeat(np.array([1, 1, 0], dtype=e.dtype(recurrent_bias)), hidden)
            recurrent_bias = e.mul(recurrent_bias, e.const(outside, hint="outside_reset"))
        projected = e.add(projected, e.add(input_bias, recurrent_bias))
    parts = e.split(recurrent, [2 * hidden, hidden], axis=1) if spec.op == "GRU" else [recurrent]
    peepholes = e.split(_pick(e, inputs.p, d), [hidden] * 3, axis=0) if inputs.p else None
    return projected, _Weights(parts, spec.activations[d], peepholes, late_bias)


def _lstm(e: Emitter, spec: Recurrence, weights: _Weights, step_in: str, h, c):
    f, g, h_act = weights.activations
    gates = step_in if h is None else e.add(step_in, e.op("MatMul", h, weights.recurrent[0]))
    i, o, forget, candidate = e.split(gates, [spec.hidden] * 4, axis=1)
    if weights.peepholes and c is not None:
        i = e.add(i, e.mul(weights.peepholes[0], c))
        forget = e.add(forget, e.mul(weights.peepholes[2], c))
    i, candidate = _act(e, spec, f, i), _act(e, spec, g, candidate)
    new_c = e.mul(i, candidate) if c is None else e.add(e.mul(_act(e, spec, f, forget), c), e.mul(i, candidate))
    if weights.peepholes:
        o = e.add(o, e.mul(weights.peepholes[1], new_c))
    return e.mul(_act(e, spec, f, o), _act(e, spec, h_act, new_c)), new_c


def _gru(e: Emitter, spec: Recurrence, weights: _Weights, step_in: str, h, c):
    f, g = weights.activations
    hidden = spec.hidden
    r_zr, r_h = weights.recurrent
    x_zr, x_h = e.split(step_in, [2 * hidden, hidden], axis=1)
    zr = x_zr if h is None else e.add(x_zr, e.op("MatMul", h, r_zr))
    z, reset = e.split(_act(e, spec, f, zr), [hidden, hidden], axis=1)
    if h is None:  # H₀ = 0: only the bias inside r ⊙ (H·Rhᵀ + Rbh) is left
        inner = None if weights.late_bias is None else e.mul(reset, weights.late_bias)
    elif spec.linear_before_reset:
        product = e.op("MatMul", h, r_h)
        inner = e.mul(reset, product if weights.late_bias is None else e.add(product, weights.late_bias))
    else:
        inner = e.op("MatMul", e.mul(reset, h), r_h)
    candidate = _act(e, spec, g, x_h if inner is None else e.add(x_h, inner))
    if h is None:
        return e.sub(candidate, e.mul(z, candidate)), None
    return e.add(candidate, e.mul(z, e.sub(h, candidate))), None  # (1 − z) ⊙ h̃ + z ⊙ H


def _rnn(e: Emitter, spec: Recurrence, weights: _Weights, step_in: str, h, c):
    pre = step_in if h is None else e.add(step_in, e.op("MatMul", h, weights.recurrent[0]))
    return _act(e, spec, weights.activations[0], pre), None


_CELLS = {"LSTM": _lstm, "GRU": _gru, "RNN": _rnn}


def _act(e: Emitter, spec: Recurrence, op_type: str, x: str) -> str:
    """An activation, its input clipped to [−clip, clip] when the node has ``clip``."""
    return e.op(op_type, x if spec.clip is None else e.clip(x, -spec.clip, spec.clip))


def _pick(e: Emitter, tensor: str | None, direction: int) -> str | None:
    """One direction's slice of a (D, ...) tensor."""
    return None if tensor is None else e.op("Gather", tensor, e.const(direction, dtype=np.int64), axis=0)


def _stack(e: Emitter, tensors: list[str], axis: int) -> str:
    parts = [e.unsqueeze(t, [axis]) for t in tensors]
    return parts[0] if len(parts) == 1 else e.op("Concat", *parts, axis=axis)
