"""Finite-difference cases for onnxcam/autodiff/rules/recurrent.py (LSTM, GRU, RNN).

Small sizes: T = 4 steps, batch 2, input 3, hidden 4. Weights are constants (initializers) as in
deployed models, except in the cases named "weights-as-inputs"."""

import numpy as np
import onnx
from onnx import helper

from tests.autodiff.harness import C, Case, X

_RNG = np.random.default_rng(7)
T, N, I, H = 4, 2, 3, 4
_LENS = C(np.array([4, 2], dtype=np.int32))  # the second sequence ends after 2 steps


def _weights(op: str, directions: int = 1, bias: bool = True, peepholes: bool = False):
    gates = {"LSTM": 4, "GRU": 3, "RNN": 1}[op]
    arrays = [_RNG.uniform(-0.7, 0.7, (directions, gates * H, I)), _RNG.uniform(-0.7, 0.7, (directions, gates * H, H))]
    if bias or peepholes:
        arrays.append(_RNG.uniform(-0.5, 0.5, (directions, 2 * gates * H)))
    consts = [C(a.astype(np.float32)) for a in arrays]
    if peepholes:
        consts += [C(None), C(None), C(None), C(_RNG.uniform(-0.5, 0.5, (directions, 3 * H)).astype(np.float32))]
    return consts


def time_major(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with its batch-major (layout 1) recurrent nodes run time-major between Transposes:
    ONNX Runtime has no kernel for layout 1."""
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(model)
    nodes = []
    for node in rewritten.graph.node:
        layout = next((a for a in node.attribute if a.name == "layout"), None)
        if node.op_type not in ("LSTM", "GRU", "RNN") or layout is None or layout.i == 0:
            nodes.append(node)
            continue
        layout.i = 0
        for k in (0, 5, 6):  # X, initial_h, initial_c: swap the batch and the time/direction axes
            if k < len(node.input) and node.input[k]:
                nodes.append(helper.make_node("Transpose", [node.input[k]], [f"{node.input[k]}_tm"], perm=[1, 0, 2]))
                node.input[k] = f"{node.input[k]}_tm"
        outputs = list(node.output)
        node.output[:] = [f"{o}_tm" if o else "" for o in outputs]
        nodes.append(node)
        for k, name in enumerate(outputs):
            if name:
                perm = [2, 0, 1, 3] if k == 0 else [1, 0, 2]
                nodes.append(helper.make_node("Transpose", [f"{name}_tm"], [name], perm=perm))
    del rewritten.graph.node[:]
    rewritten.graph.node.extend(nodes)
    return rewritten


def _case(op: str, id: str, *, directions: int = 1, attrs=None, inputs=None, outputs=None, opsets=(14,), **kw):
    attrs = dict(hidden_size=H, **(attrs or {}))
    if directions == 2:
        attrs.setdefault("direction", "bidirectional")
    layout = attrs.get("layout", 0)
    x = X((N, T, I) if layout else (T, N, I))
    default_outputs = 3 if op == "LSTM" else 2
    return Case(op, inputs or [x, *_weights(op, directions)], attrs=attrs, outputs=outputs or default_outputs,
                opsets=opsets, id=id, runnable=time_major if layout else None, **kw)


def _state(directions: int = 1, layout: int = 0) -> X:
    return X((N, directions, H) if layout else (directions, N, H))


_CASES_PER_OP = []
for _op in ("LSTM", "GRU", "RNN"):
    _with_c = _op == "LSTM"
    _CASES_PER_OP += [
        _case(_op, "forward", opsets=(9, 14)),
        _case(_op, "lens-initial-states", inputs=[X((T, N, I)), *_weights(_op), _LENS, _state(),
                                                  *([_state()] if _with_c else [])], opsets=(10,)),
        _case(_op, "reverse", attrs=dict(direction="reverse")),
        _case(_op, "bidirectional", directions=2),
        _case(_op, "bidirectional-lens", directions=2,
              inputs=[X((T, N, I)), *_weights(_op, 2), _LENS]),
        _case(_op, "reverse-lens-initial-states", attrs=dict(direction="reverse"),
              inputs=[X((T, N, I)), *_weights(_op), _LENS, _state(), *([_state()] if _with_c else [])]),
        _case(_op, "layout1-bidirectional-initial-states", directions=2, attrs=dict(layout=1),
              inputs=[X((N, T, I)), *_weights(_op, 2), C(None), _state(2, 1), *([_state(2, 1)] if _with_c else [])]),
        _case(_op, "no-bias-y-only", inputs=[X((T, N, I)), *_weights(_op, bias=False)], outputs=1),
        _case(_op, "weights-as-inputs", inputs=[X((T, N, I)), X((1, {"LSTM": 4, "GRU": 3, "RNN": 1}[_op] * H, I)),
                                                  X((1, {"LSTM": 4, "GRU": 3, "RNN": 1}[_op] * H, H))]),
        _case(_op, "clip", attrs=dict(clip=0.8), inputs=[X((T, N, I), low=-2, high=2), *_weights(_op)], h=3e-4),
    ]

CASES = [
    *_CASES_PER_OP,
    _case("LSTM", "peepholes-lens-y-h", inputs=[X((T, N, I)), *_weights("LSTM", peepholes=True)[:3], _LENS,
                                                   C(None), C(None), _weights("LSTM", peepholes=True)[-1]], outputs=2),
    _case("LSTM", "bidirectional-peepholes-initial-states", directions=2,
          inputs=[X((T, N, I)), *_weights("LSTM", 2), C(None), _state(2), _state(2),
                  C(_RNG.uniform(-0.5, 0.5, (2, 3 * H)).astype(np.float32))]),
    _case("LSTM", "every-input-bidirectional", directions=2,  # as a float twin of DynamicQuantizeLSTM has them
          inputs=[X((T, N, I)), *_weights("LSTM", 2), _LENS, _state(2), _state(2),
                  C(_RNG.uniform(-0.5, 0.5, (2, 3 * H)).astype(np.float32))]),
    _case("GRU", "linear-before-reset", attrs=dict(linear_before_reset=1)),
    _case("GRU", "linear-before-reset-bidirectional-initial-state", directions=2, attrs=dict(linear_before_reset=1),
          inputs=[X((T, N, I)), *_weights("GRU", 2), C(None), _state(2)]),
    _case("RNN", "relu", attrs=dict(activations=["Relu"]), h=1e-3),
    _case("GRU", "activations-listed-bidirectional", directions=2,
          attrs=dict(activations=["Sigmoid", "Tanh", "Relu", "Relu"]), h=1e-3),
]
