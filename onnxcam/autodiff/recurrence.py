"""LSTM, GRU and RNN written out as standard ops: one ``Scan`` over the time steps per direction.

The gradient rules of these ops differentiate this form with the engine itself (the Scan rule for
the recurrence), so the backward recomputes the forward states it needs, and each step's backward
is made of the MatMul/Add/Mul/Sigmoid/Tanh rules the engine already checks. The input projection
X·Wᵀ + B is one MatMul over all steps; only the recurrent product runs per step. Time-major
throughout (``layout=0``); ``layout=1`` tensors are transposed at the edges. Equations: the ONNX spec.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from onnx import TensorProto, helper

from onnxcam.autodiff.emitter import Emitter
from onnxcam.graph import GraphView

__all__ = ["Recurrence", "RecurrentInputs", "StepWeights", "expand", "CELLS", "GATES", "DEFAULT_ACTIVATIONS",
           "ACTIVATIONS"]

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
DEFAULT_ACTIVATIONS = {"LSTM": ("Sigmoid", "Tanh", "Tanh"), "GRU": ("Sigmoid", "Tanh"), "RNN": ("Tanh",)}
ACTIVATIONS = {"sigmoid": "Sigmoid", "tanh": "Tanh", "relu": "Relu"}  # spec name (any case) → op


@dataclass(frozen=True)
class Recurrence:
    """What the written-out form needs of a recurrent node: its attributes and sizes."""

    op: str  # LSTM, GRU or RNN
    hidden: int
    directions: tuple[str, ...]  # "forward" or "reverse", one per direction of the node
    activations: tuple[tuple[str, ...], ...]  # ONNX op names (f, g, h), one tuple per direction
    layout: int = 0
    clip: float | None = None
    linear_before_reset: bool = False
    weights_as_states: bool = False  # W, R, B or P need gradients (they are activations, not constants)


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
class StepWeights:
    """One direction's per-step operands, prepared once before the steps."""

    recurrent: list[str]  # Rᵀ (H, G·H); for GRU split into the z, r part and the candidate's part
    activations: tuple[str, ...]
    peepholes: list[str] | None = None  # P's input, output and forget parts (H each)
    late_bias: str | None = None  # GRU with linear_before_reset: Rbh, added inside r ⊙ (·)


def expand(e: Emitter, spec: Recurrence, inputs: RecurrentInputs) -> list[str]:
    """Emit the op as standard ops; returns [Y, Y_h] (and Y_c for LSTM) in the node's layout."""
    batch_first = spec.layout == 1
    x = e.transpose(inputs.x, [1, 0, 2]) if batch_first else inputs.x
    h0, c0 = (e.transpose(s, [1, 0, 2]) if batch_first and s else s for s in (inputs.h0, inputs.c0))
    lens = e.op("Cast", inputs.lens, to=TensorProto.INT64) if inputs.lens else None
    results = [_direction(e, spec, d, x, inputs, h0, c0, lens) for d in range(len(spec.directions))]
    # Every piece keeps its direction axis (of size 1), so that no gradient rule needs the shape of a
    # tensor that only the (otherwise unused) written-out forward computes.
    y = _joined(e, [ys for ys, _ in results], axis=1)  # (T, D, N, H)
    finals = [_joined(e, [states[k] for _, states in results], axis=0) for k in range(len(results[0][1]))]
    if batch_first:
        return [e.transpose(y, [2, 0, 1, 3]), *[e.transpose(f, [1, 0, 2]) for f in finals]]
    return [y, *finals]


def _direction(e: Emitter, spec: Recurrence, d: int, x: str, inputs: RecurrentInputs, h0, c0, lens):
    """One direction's outputs Y (T, 1, N, H) and final states [h] or [h, c] (1, N, H)."""
    reverse = spec.directions[d] == "reverse"
    if reverse and lens is not None:  # each sequence reversed within its own length, as ONNX Runtime does
        x = e.op("ReverseSequence", x, lens, batch_axis=1, time_axis=0)
    projected, weights = _prepare(e, spec, d, x, inputs)
    h, c = _direction_state(e, h0, d), _direction_state(e, c0, d)
    y, states = _scanned_steps(e, spec, weights, projected, x, h, c, lens, backwards=reverse and lens is None)
    if reverse and lens is not None:  # ReverseSequence wants the batch at axis 0 or 1
        y = e.unsqueeze(e.op("ReverseSequence", e.squeeze(y, [1]), lens, batch_axis=1, time_axis=0), [1])
    return y, states


def _scanned_steps(e: Emitter, spec: Recurrence, weights: StepWeights, projected, x, h, c, lens, backwards):
    """One Scan over the steps; its states are H (and C) and, with sequence lengths, the step count."""
    lstm = spec.op == "LSTM"
    zeros = _zero_state(e, spec, x) if h is None or (lstm and c is None) else None
    states = [h or zeros, *([c or zeros] if lstm else [])]
    carried = _invariants(weights) if spec.weights_as_states else []
    counters = [] if lens is None else [e.const(0, dtype=np.int64)]
    body = _step_body(e, spec, weights, len(states), lens, e.dtype(projected))
    direction = [1] if backwards else [0]
    outputs = e.op("Scan", *states, *carried, *counters, projected, outputs=len(body.output), body=body,
                   num_scan_inputs=1, scan_input_directions=direction, scan_output_directions=direction,
                   dtype_of=projected)
    return outputs[-1], outputs[:len(states)]


def _invariants(weights: StepWeights) -> list[str]:
    return [*weights.recurrent, *(weights.peepholes or []), *([weights.late_bias] if weights.late_bias else [])]


def _step_body(e: Emitter, spec: Recurrence, weights: StepWeights, n_states: int, lens: str | None, dtype):
    """The Scan body of one step: (H, [C], [operands], [step], X·Wᵀ + B at t) → (the same, Y_t).

    The step's operands (Rᵀ, P, Rbh) and the lengths are read from the enclosing graph, unless the
    operands need gradients: the Scan rule follows none through such reads, so they are then states."""
    hidden, width = spec.hidden, GATES[spec.op] * spec.hidden
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))

    def declared(name, shape, elem_type=elem):
        return helper.make_tensor_value_info(name, elem_type, shape)

    outer = _invariants(weights)
    own = [e.fresh("invariant") for _ in outer] if spec.weights_as_states else outer
    shapes = [[hidden, 2 * hidden], [hidden, hidden]] if spec.op == "GRU" else [[hidden, width]]
    invariants = [declared(name, shape) for name, shape in zip(own, shapes + [[hidden]] * (len(own) - len(shapes)))]
    states = [declared(e.fresh("state"), [1, "batch", hidden]) for _ in range(n_states)]
    step = [declared(e.fresh("step"), [], TensorProto.INT64)] if lens else []
    step_in = declared(e.fresh("xw"), ["batch", width])
    inputs = [*states, *(invariants if spec.weights_as_states else []), *step, step_in]
    read = ([] if spec.weights_as_states else invariants) + ([declared(lens, ["batch"], TensorProto.INT64)] if lens else [])
    model = helper.make_model(helper.make_graph([], "step", [*inputs, *read], []),
                              opset_imports=list(e.view.model.opset_import), ir_version=max(e.view.model.ir_version, 4))
    b = Emitter(GraphView(model, complete=False), prefix=e.fresh("step"))
    renamed = dict(zip(outer, own))
    step_weights = StepWeights([renamed[r] for r in weights.recurrent], weights.activations,
                               [renamed[p] for p in weights.peepholes] if weights.peepholes else None,
                               renamed.get(weights.late_bias))
    h, c = states[0].name, states[1].name if n_states == 2 else None
    new_h, new_c = CELLS[spec.op](b, spec, step_weights, step_in.name, h, c)
    if lens:
        y, new_h, new_c = _held(b, b.op("Less", step[0].name, lens), new_h, new_c, h, c)
        counted = [b.add(step[0].name, b.const(1, dtype=np.int64))]
    else:  # an Identity: ONNX Runtime 1.31 scans wrong values when a body lists one tensor as two outputs
        y, counted = b.op("Identity", new_h), []
    passed_on = [b.op("Identity", name) for name in own] if spec.weights_as_states else []
    outputs = [new_h, *([new_c] if c else []), *passed_on, *counted, y]
    return helper.make_graph(
        b.nodes, f"{spec.op}_step", inputs,
        [helper.make_tensor_value_info(o, helper.np_dtype_to_tensor_dtype(b.dtype(o)), None) for o in outputs],
        initializer=b.initializers)


def _held(e: Emitter, running: str, new_h: str, new_c, h: str, c):
    """Y_t, H, C where ``running`` (N,) says which sequences go on; past its end a sequence's Y is 0
    and its state is held."""
    valid = e.unsqueeze(running, [1])  # (N, 1), broadcast over (1, N, H)
    held_c = None if new_c is None else e.where(valid, new_c, c)
    return e.zero_where(valid, new_h), e.where(valid, new_h, h), held_c


def _zero_state(e: Emitter, spec: Recurrence, x: str) -> str:
    """Zeros (1, N, H) in ``x``'s float type: the initial state when the node has none."""
    shape = e.op("Concat", e.ints([1]), e.slice(e.shape(x), [1], [2], [0]), e.ints([spec.hidden]), axis=0)
    return e.op("Expand", e.scalar(0.0, x), shape, dtype_of=x)


def _prepare(e: Emitter, spec: Recurrence, d: int, x: str, inputs: RecurrentInputs) -> tuple[str, StepWeights]:
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
    return projected, StepWeights(parts, spec.activations[d], peepholes, late_bias)


def _lstm(e: Emitter, spec: Recurrence, weights: StepWeights, step_in: str, h: str, c: str):
    f, g, h_act = weights.activations
    gates = e.add(step_in, e.op("MatMul", h, weights.recurrent[0]))
    i, o, forget, candidate = e.split(gates, [spec.hidden] * 4, axis=-1)
    if weights.peepholes:
        i = e.add(i, e.mul(weights.peepholes[0], c))
        forget = e.add(forget, e.mul(weights.peepholes[2], c))
    new_c = e.add(e.mul(_act(e, spec, f, forget), c), e.mul(_act(e, spec, f, i), _act(e, spec, g, candidate)))
    if weights.peepholes:
        o = e.add(o, e.mul(weights.peepholes[1], new_c))
    return e.mul(_act(e, spec, f, o), _act(e, spec, h_act, new_c)), new_c


def _gru(e: Emitter, spec: Recurrence, weights: StepWeights, step_in: str, h: str, c=None):
    f, g = weights.activations
    hidden = spec.hidden
    r_zr, r_h = weights.recurrent
    x_zr, x_h = e.split(step_in, [2 * hidden, hidden], axis=-1)
    z, reset = e.split(_act(e, spec, f, e.add(x_zr, e.op("MatMul", h, r_zr))), [hidden, hidden], axis=-1)
    if spec.linear_before_reset:
        product = e.op("MatMul", h, r_h)
        inner = e.mul(reset, product if weights.late_bias is None else e.add(product, weights.late_bias))
    else:
        inner = e.op("MatMul", e.mul(reset, h), r_h)
    candidate = _act(e, spec, g, e.add(x_h, inner))
    return e.add(candidate, e.mul(z, e.sub(h, candidate))), None  # (1 − z) ⊙ h̃ + z ⊙ H


def _rnn(e: Emitter, spec: Recurrence, weights: StepWeights, step_in: str, h: str, c=None):
    return _act(e, spec, weights.activations[0], e.add(step_in, e.op("MatMul", h, weights.recurrent[0]))), None


# One time step: (e, spec, weights, X·Wᵀ + B at t (N, G·H), H, C (1, N, H)) → H, C (C None but for LSTM).
CELLS = {"LSTM": _lstm, "GRU": _gru, "RNN": _rnn}


def _act(e: Emitter, spec: Recurrence, op_type: str, x: str) -> str:
    """An activation, its input clipped to [−clip, clip] when the node has ``clip``."""
    return e.op(op_type, x if spec.clip is None else e.clip(x, -spec.clip, spec.clip))


def _pick(e: Emitter, tensor: str | None, direction: int) -> str | None:
    """One direction's part of a (D, ...) tensor."""
    return None if tensor is None else e.op("Gather", tensor, e.const(direction, dtype=np.int64), axis=0)


def _direction_state(e: Emitter, state: str | None, direction: int) -> str | None:
    """One direction's part of a (D, N, H) state, kept as (1, N, H)."""
    return None if state is None else e.slice(state, [direction], [direction + 1], [0])


def _joined(e: Emitter, parts: list[str], axis: int) -> str:
    return parts[0] if len(parts) == 1 else e.op("Concat", *parts, axis=axis)
