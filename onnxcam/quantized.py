"""The float twin of an integer-op model: the pass that lets onnxcam explain quantised models.

Integer ops (``ConvInteger``, ``MatMulInteger``, ``QLinearConv``, ``QLinearMatMul``,
``DynamicQuantizeLinear``, ORT's ``com.microsoft`` QLinear ops, ``DynamicQuantizeLSTM``) have
no gradient: their outputs are rounded integers. :func:`float_twin` rewrites each into the same
arithmetic in float32, without the rounding, so that gradients flow:

* an integer tensor is replaced by its *stored value* before rounding, as a float: the twin of
  ``QuantizeLinear(x, s, zp)`` is ``Clip(x/s + zp, qmin, qmax)``, of ``DequantizeLinear(q, s, zp)``
  is ``(q − zp)·s``, so a tensor keeps its units and every op reading it still means the same;
  ``DynamicQuantizeLinear``'s scale is a choice of units that the ops after it undo, so its twin
  takes scale 1 and zero point 0 and the pass folds what the model computes from them;
* ops on quantised values compute in real units with weights dequantised at export time
  (``QLinearConv`` → ``Conv`` on ``(x − x_zp)·x_s`` and ``(w − w_zp)·w_s``, then requantised
  into the output's stored value); ``ConvInteger``/``MatMulInteger`` return the accumulator, so
  their twin is ``Conv``/``MatMul`` of zero-point-free stored values, the model's own
  ``Cast → Mul(scale)`` after them applying the scales; ``DynamicQuantizeLSTM`` → ``LSTM``;
* other ops reading a twinned tensor (``Reshape``, ``MaxPool``, ``Add`` of a quantised bias, ...)
  stay and compute in float; integer operands of the same type are cast to float beside them.

The twin computes what the quantised model computes without its rounding, so its predictions
differ from the model's by the rounding error of its activations: :func:`check_agreement` measures
that on a probe input (the exporter logs it and records it in the contract), and
:func:`check_first_batch` on the first real batch an explainer runs (a probe is not an image: a
twin can agree with the model on it, and not on real images).

Pass: ``float_twin(model) -> Twin``. Requires a loaded model (never modified) whose integer ops
are all in :data:`TWIN_RULES`. Ensures: no op of the table remains, every tensor keeps its name
(twinned ones become float32), and the model passes ``onnx.checker.check_model``; a model
without integer ops is returned unchanged (``modified`` false; QDQ models are explained as they
are, with the straight-through gradient of :mod:`onnxcam.autodiff.rules.quantize`).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from onnxcam.autodiff.emitter import Emitter
from onnxcam.autodiff.rules.quantize import INTEGER_RANGES
from onnxcam.errors import ModelError, UnsupportedOpError
from onnxcam.graph import (FLOAT_TYPES, TWIN_PREFIX, GraphView, fed_inputs, node_attribute, outer_names,
                           size_fixed_by)
from onnxcam.runtime import model_session, runtime_message

__all__ = ["Twin", "Agreement", "Predictions", "float_twin", "checked_float_twin", "check_agreement", "check_first_batch",
           "TWIN_RULES", "DISAGREEMENT"]

log = logging.getLogger(__name__)

_MS = "com.microsoft"
_FLOAT = TensorProto.FLOAT
# Twin and model disagree when an output's RMS difference exceeds this fraction of its RMS (the rounding
# noise's energy about a tenth of the output's: SQNR near 10 dB). On real images the zoo's orientation
# classifier, quantised three ways (dynamic uint8/int8, QOperator), flipped its top-1 from 0.29 on (and
# kept it up to 0.51); nudenet's YOLOv8n, whose boxes survived quantisation, stayed under 0.07.
DISAGREEMENT = 0.3


@dataclass(frozen=True)
class Agreement:
    """How far the twin's outputs are from the quantised model's on the same input (the probe, or a batch)."""

    top1_equal: bool | None  # None: not checked (``reason`` says why)
    max_difference: float = 0.0
    largest_output: float = 0.0
    relative_difference: float = 0.0  # the largest over the outputs of RMS(twin − model) / RMS of the larger
    reason: str = ""
    top1_compared: bool = True  # False: no output has classes on its last axis (dense maps, boxes)

    @property
    def checked(self) -> bool:
        return self.top1_equal is not None

    @property
    def large(self) -> bool:
        return self.checked and (not self.top1_equal or self.relative_difference > DISAGREEMENT)

    @property
    def top1(self) -> str:
        """The contract's and the run records' word: "equal", "differs", "unchecked", "not compared"."""
        if not self.checked:
            return "unchecked"
        if not self.top1_compared:
            return "not compared"
        return "equal" if self.top1_equal else "differs"

    def describe(self) -> str:
        if not self.checked:
            return f"not checked ({self.reason})"
        top1 = f"top-1 {'equal' if self.top1_equal else 'DIFFERS'}, " if self.top1_compared else ""
        return (f"{top1}relative output difference {self.relative_difference:.2g}, max output difference "
                f"{self.max_difference:.3g} (largest output magnitude {self.largest_output:.3g})")

    def as_record(self) -> dict:
        """The figures as JSON values (a run's records and summary)."""
        if not self.checked:
            return {"top1": "unchecked", "reason": self.reason}
        return {"top1": self.top1, "relative_difference": round(self.relative_difference, 4),
                "max_difference": _rounded(self.max_difference), "largest_output": _rounded(self.largest_output),
                "agrees": not self.large}


def _rounded(value: float) -> float:
    return float(f"{value:.4g}")


@dataclass(frozen=True)
class Twin:
    """The pass's result: the float model and how many ops of each type it replaced."""

    model: onnx.ModelProto
    replaced: dict[str, int] = field(default_factory=dict)
    agreement: Agreement | None = None  # set by :func:`checked_float_twin`

    @property
    def modified(self) -> bool:
        return bool(self.replaced)

    def describe(self) -> str:
        return ",".join(f"{op}:{count}" for op, count in sorted(self.replaced.items()))

    @property
    def top1(self) -> str:
        """The contract's word for the agreement: "equal", "differs", "not compared", "unchecked" ("" for no
        twin)."""
        if not self.modified or self.agreement is None:
            return ""
        return self.agreement.top1


def checked_float_twin(model: onnx.ModelProto) -> Twin:
    """:func:`float_twin`, with its agreement with ``model`` measured and logged (a warning when the
    twin disagrees or could not be checked)."""
    twin = float_twin(model)
    if not twin.modified:
        return twin
    twin = replace(twin, agreement=check_agreement(model, twin.model))
    agreement = twin.agreement
    level = logging.WARNING if agreement.large or not agreement.checked else logging.INFO
    log.log(level, "quantised model: explaining its float twin (%s replaced by float ops); twin vs model on a "
            "probe input: %s", twin.describe(), agreement.describe())
    return twin


# --- the rewrite context ----------------------------------------------------------------------------
@dataclass
class _State:
    """What the pass knows across nodes: the twinned tensors, and the real values it built (each once,
    named ``NAME/dequantized`` after the tensor they dequantise, so that layers read as the model's)."""

    twinned: set[str]
    taken: set[str]
    dequantized: dict[tuple, str] = field(default_factory=dict)
    constants: dict[str, np.ndarray] = field(default_factory=dict)  # tensors the twin made constant


class _Context:
    """What a twin rule sees: the node, the emitter, and the stored and real values of its inputs."""

    def __init__(self, node: onnx.NodeProto, emit: Emitter, state: _State):
        self.node, self.emit, self.state = node, emit, state
        self.twinned = state.twinned

    @property
    def view(self) -> GraphView:
        return self.emit.view

    def input(self, i: int) -> str:
        return self.node.input[i] if i < len(self.node.input) else ""

    def attr(self, name: str, default=None):
        return node_attribute(self.node, name, default)

    def attrs(self, *drop: str) -> dict:
        return {a.name: helper.get_attribute_value(a) for a in self.node.attribute if a.name not in drop}

    def const(self, name: str) -> np.ndarray | None:
        if not name:
            return None
        return self.state.constants[name] if name in self.state.constants else self.view.const_value(name)

    def fail(self, why: str):
        raise UnsupportedOpError(f"cannot build the float twin of {self.node.op_type} node '{self.node.name}': {why}; "
                                 "explain the float model this one was quantised from")

    def stored(self, name: str) -> str:
        """The float stored value of an integer (or float) tensor: a twin, a float constant, or a Cast."""
        value = self.const(name)
        if value is not None:
            return self.emit.const(value.astype(np.float32), hint="twin")
        if name in self.twinned or self.view.elem_type(name) == _FLOAT:
            return name
        return _cast_float(self.emit, name)

    def per_axis(self, name: str, rank: int | None, axis: int | None) -> np.ndarray | str:
        """A scale or zero point (a constant array where it is one) shaped to broadcast along ``axis``
        of a rank-``rank`` tensor; ``axis=None`` keeps NumPy broadcasting (a scalar, or the last axis)."""
        value = self.const(name)
        own_rank = value.ndim if value is not None else self.view.rank(name)
        if axis is None or rank is None or rank <= 1 or own_rank in (0, None):
            return value if value is not None else self.stored(name)
        shape = [-1 if k == axis % rank else 1 for k in range(rank)]
        if value is not None:
            return value.reshape(shape)
        return self.emit.reshape(self.stored(name), self.emit.ints(shape))

    def _centered(self, q: int, zero_point: int, axis: int | None) -> np.ndarray | str:
        name, zp_name = self.input(q), self.input(zero_point)
        value = self.const(name)
        zp = self.per_axis(zp_name, self.view.rank(name), axis) if zp_name else None
        if value is not None and (zp is None or isinstance(zp, np.ndarray)):  # asarray: 0-d minus 0-d is a scalar
            return np.asarray(value.astype(np.float32) - (np.float32(0) if zp is None else zp.astype(np.float32)))
        stored = self.stored(name)
        if zp is None or (isinstance(zp, np.ndarray) and not zp.any()):
            return stored
        return self.emit.sub(stored, self.tensor(zp))

    def centered(self, q: int, zero_point: int, axis: int | None = None) -> str:
        """``q − zero_point`` in float (folded to a constant when both are constants)."""
        return self.tensor(self._centered(q, zero_point, axis))

    def real(self, q: int, scale: int, zero_point: int, axis: int | None = None) -> str:
        """``(q − zero_point)·scale`` in float: a quantised tensor's real value (dequantised at export
        time when all three are constants)."""
        key = (self.input(q), self.input(scale), self.input(zero_point), axis)
        if key in self.state.dequantized:
            return self.state.dequantized[key]
        centered = self._centered(q, zero_point, axis)
        factor = self.per_axis(self.input(scale), self.view.rank(self.input(q)), axis)
        if isinstance(centered, np.ndarray) and isinstance(factor, np.ndarray):
            real = self.tensor(centered * factor.astype(np.float32))
        else:
            real = self._named(self.emit.mul(self.tensor(centered), self.tensor(factor)), f"{key[0]}/dequantized")
        self.state.dequantized[key] = real
        return real

    def _named(self, tensor: str, name: str) -> str:
        if name in self.state.taken:
            return tensor
        self.state.taken.add(name)
        self.emit.nodes.append(helper.make_node("Identity", [tensor], [name], name=self.emit.fresh("twin_name")))
        return name

    def requantize(self, real: str, scale: int, zero_point: int) -> str:
        """The stored value of ``real`` quantised with (scale, zero_point), without the rounding."""
        return self.quantize(real, scale, zero_point, rank=None, axis=None)

    def quantize(self, x: str, scale: int, zero_point: int, rank: int | None, axis: int | None) -> str:
        """``Clip(x/scale + zero_point, qmin, qmax)``: QuantizeLinear without its rounding."""
        e, zp_name = self.emit, self.input(zero_point)
        stored = e.div(x, self.tensor(self.per_axis(self.input(scale), rank, axis)))
        if zp_name:
            stored = e.add(stored, self.tensor(self.per_axis(zp_name, rank, axis)))
        elem = self.view.elem_type(zp_name) if zp_name else TensorProto.UINT8
        low, high = INTEGER_RANGES.get(elem, (None, None))
        if low is None:
            self.fail(f"its output type ({elem}) is not an integer type with a known range")
        return _clip(e, stored, float(low), float(high))

    def tensor(self, value: np.ndarray | str) -> str:
        """A tensor name for a value: constants (arrays, and the NumPy scalars 0-d arithmetic gives) become
        float32 initializers."""
        if not isinstance(value, str):
            return self.emit.const(np.asarray(value, np.float32), hint="twin")
        return value


def _cast_float(e: Emitter, name: str) -> str:
    """Cast to float32 (the emitter then takes the output for float32, as for any tensor it does not know)."""
    out = e.fresh("twin_cast")
    e.nodes.append(helper.make_node("Cast", [name], [out], name=e.fresh("twin_cast_node"), to=_FLOAT))
    return out


def _clip(e: Emitter, x: str, low: float, high: float) -> str:
    """``Clip(x, low, high)`` written as ``x − ReLU(x − high) + ReLU(low − x)``: the same values, with a
    gradient that passes at the bounds themselves (as PyTorch's clamp and the straight-through rule
    do), so that values an earlier requantisation put exactly on a bound (a fused ReLU's zeros) keep
    the float model's gradient."""
    bound = [e.const(np.asarray(b, np.float32), hint="twin_bound") for b in (low, high)]
    above = e.op("Relu", e.sub(x, bound[1]))
    below = e.op("Relu", e.sub(bound[0], x))
    return e.add(e.sub(x, above), below)


# --- one rule per integer op: returns the twin of each output (None: the output keeps its name) ----------
TwinRule = Callable[[_Context], list]


def _quantize_linear(t: _Context):
    return [t.quantize(t.input(0), 1, 2, rank=t.view.rank(t.input(0)), axis=t.attr("axis", 1))]


def _dequantize_linear(t: _Context):
    return [t.real(0, 1, 2, axis=t.attr("axis", 1))]


def _dynamic_quantize_linear(t: _Context):
    """Stored value x, scale 1, zero point 0: a dynamic scale is a choice of units that every op after
    it undoes (the accumulator is multiplied back by it), so the twin picks the units of x itself, and
    what the model computes from the scale becomes constant (folded by the pass)."""
    return [t.input(0), np.array(1.0, np.float32), np.array(0, np.uint8)]


def _conv_integer(t: _Context):
    x, w = t.centered(0, 2), t.centered(1, 3, axis=0)
    return [t.emit.op("Conv", x, w, **t.attrs())]


def _matmul_integer(t: _Context):
    return [t.emit.op("MatMul", t.centered(0, 2), t.centered(1, 3))]


def _qlinear_conv(t: _Context):
    x, w = t.real(0, 1, 2), t.real(3, 4, 5, axis=0)
    inputs = [x, w]
    if t.input(8):
        bias_scale = t.const(t.input(1)), t.const(t.input(4))
        bias = t.const(t.input(8))
        if bias is None or any(s is None for s in bias_scale):
            t.fail("its bias and input/weight scales must be constants")
        inputs.append(t.emit.const((bias * bias_scale[0] * bias_scale[1]).astype(np.float32), hint="twin_bias"))
    return [t.requantize(t.emit.op("Conv", *inputs, **t.attrs()), 6, 7)]


def _qlinear_matmul(t: _Context):
    return [t.requantize(t.emit.op("MatMul", t.real(0, 1, 2), t.real(3, 4, 5)), 6, 7)]


def _qlinear_binary(op_type: str) -> TwinRule:
    def rule(t: _Context):
        return [t.requantize(t.emit.op(op_type, t.real(0, 1, 2), t.real(3, 4, 5)), 6, 7)]
    return rule


def _qlinear_unary(op_type: str, *drop: str) -> TwinRule:
    """QLinearSigmoid, QLinearLeakyRelu, QLinear*Pool: X, x_scale, x_zp, y_scale, y_zp."""
    def rule(t: _Context):
        if t.attr("channels_last", 0):
            t.fail("channels_last=1 has no float twin yet")
        return [t.requantize(t.emit.op(op_type, t.real(0, 1, 2), **t.attrs("channels_last", *drop)), 3, 4)]
    return rule


def _qlinear_softmax(t: _Context):
    """QLinearSoftmax: X, x_scale, x_zp, y_scale, y_zp; its ``opset`` attribute says whose Softmax it is
    (before opset 13 Softmax flattens the axes from ``axis`` on into one)."""
    if (int(t.attr("opset", t.emit.opset)) >= 13) != (t.emit.opset >= 13):
        t.fail(f"it computes opset {t.attr('opset')}'s Softmax, whose axis means something else at the model's "
               f"opset {t.emit.opset}")
    return [t.requantize(t.emit.op("Softmax", t.real(0, 1, 2), axis=t.attr("axis", -1)), 3, 4)]


def _qlinear_concat(t: _Context):
    parts = [t.real(k, k + 1, k + 2) for k in range(2, len(t.node.input), 3)]
    return [t.requantize(t.emit.op("Concat", *parts, axis=t.attr("axis")), 0, 1)]


def _qgemm(t: _Context):
    """Y = alpha·A'·B' + C, C quantised with scale alpha·a_scale·b_scale; requantised when y_scale is given."""
    alpha = float(t.attr("alpha", 1.0))
    inputs = [t.real(0, 1, 2), t.real(3, 4, 5)]
    if t.input(6):
        scales = [t.const(t.input(1)), t.const(t.input(4)), t.const(t.input(6))]
        if any(s is None for s in scales):
            t.fail("its bias and input/weight scales must be constants")
        inputs.append(t.emit.const((scales[2] * alpha * scales[0] * scales[1]).astype(np.float32), hint="twin_bias"))
    y = t.emit.op("Gemm", *inputs, alpha=alpha, transA=t.attr("transA", 0), transB=t.attr("transB", 0))
    return [t.requantize(y, 7, 8) if t.input(7) else y]


def _dynamic_quantize_matmul(t: _Context):
    y = t.emit.op("MatMul", t.input(0), t.real(1, 2, 3))
    return [t.emit.add(y, t.input(4)) if t.input(4) else y]


def _dynamic_quantize_lstm(t: _Context):
    """LSTM with W and R dequantised and transposed back to ONNX's [directions, 4·hidden, size] layout."""
    weights = []
    for q, scale, zero_point in ((1, 8, 9), (2, 10, 11)):
        w, s, zp = (t.const(t.input(k)) for k in (q, scale, zero_point))
        if w is None or s is None:
            t.fail("its weights and their scales must be constants")
        s = s.reshape(s.shape[0], 1, -1)  # per direction, or per direction and output column
        zp = np.zeros_like(s) if zp is None else zp.reshape(zp.shape[0], 1, -1)
        real = (w.astype(np.float32) - zp.astype(np.float32)) * s.astype(np.float32)
        weights.append(t.emit.const(real.transpose(0, 2, 1).astype(np.float32), hint="twin_lstm_weight"))
    rest = [t.input(k) or None for k in range(3, 8)]
    while rest and rest[-1] is None:
        rest.pop()
    return t.emit.op("LSTM", t.input(0), *weights, *rest, outputs=len(t.node.output), **t.attrs())


TWIN_RULES: dict[tuple[str, str], TwinRule] = {
    ("", "QuantizeLinear"): _quantize_linear,
    ("", "DequantizeLinear"): _dequantize_linear,
    ("", "DynamicQuantizeLinear"): _dynamic_quantize_linear,
    ("", "ConvInteger"): _conv_integer,
    ("", "MatMulInteger"): _matmul_integer,
    ("", "QLinearConv"): _qlinear_conv,
    ("", "QLinearMatMul"): _qlinear_matmul,
    (_MS, "QLinearAdd"): _qlinear_binary("Add"),
    (_MS, "QLinearMul"): _qlinear_binary("Mul"),
    (_MS, "QLinearGlobalAveragePool"): _qlinear_unary("GlobalAveragePool"),
    (_MS, "QLinearAveragePool"): _qlinear_unary("AveragePool"),
    (_MS, "QLinearSigmoid"): _qlinear_unary("Sigmoid"),
    (_MS, "QLinearLeakyRelu"): _qlinear_unary("LeakyRelu"),
    (_MS, "QLinearSoftmax"): _qlinear_softmax,
    (_MS, "QLinearConcat"): _qlinear_concat,
    (_MS, "QGemm"): _qgemm,
    (_MS, "DynamicQuantizeMatMul"): _dynamic_quantize_matmul,
    (_MS, "DynamicQuantizeLSTM"): _dynamic_quantize_lstm,
}

# Ops that only exist to compute on integers: the ones above, and those the table lacks so far.
_INTEGER_OPS = {"ConvInteger", "MatMulInteger", "QLinearConv", "QLinearMatMul", "DynamicQuantizeLinear", "QGemm",
                "QAttention", "QEmbedLayerNormalization", "QOrderedMatMul", "MatMulIntegerToFloat",
                "DynamicQuantizeMatMul", "DynamicQuantizeLSTM"}


def _is_integer_op(node: onnx.NodeProto) -> bool:
    return node.op_type in _INTEGER_OPS or node.op_type.startswith("QLinear")


def _key(node: onnx.NodeProto) -> tuple[str, str]:
    return ("" if node.domain == "ai.onnx" else node.domain, node.op_type)


# --- the pass ------------------------------------------------------------------------------------
def float_twin(model: onnx.ModelProto) -> Twin:
    """The float twin of ``model`` (not modified), or ``model`` itself when it has no integer ops."""
    if not any(_is_integer_op(node) for node in model.graph.node):
        return Twin(model)
    missing = [n for n in model.graph.node if _is_integer_op(n) and _key(n) not in TWIN_RULES]
    if missing:
        node = missing[0]
        raise UnsupportedOpError(f"no float twin for {node.domain + ':' if node.domain else ''}{node.op_type} node "
                                 f"'{node.name}', so this quantised model cannot be explained; explain the float model "
                                 "it was quantised from, or open an issue asking for this op")
    view = GraphView(model, complete=False)
    emit = Emitter(view, prefix=TWIN_PREFIX)
    state = _State(set(), view.all_names())
    replaced: Counter = Counter()
    for node in model.graph.node:
        rule = TWIN_RULES.get(_key(node))
        if rule is not None:
            _rewrite(node, rule, emit, state)
            replaced[node.op_type] += 1
        elif any(i in state.constants for i in node.input) and _foldable(node, view, state):
            _fold(node, model, emit, state)
        elif any(i in state.twinned for i in node.input):
            _carry(node, emit, state.twinned)
        else:
            emit.nodes.append(node)
    twin = _assemble(model, emit, state.twinned)
    _ensure(twin)
    return Twin(twin, dict(replaced))


def _rewrite(node: onnx.NodeProto, rule: TwinRule, emit: Emitter, state: _State) -> None:
    results = rule(_Context(node, emit, state))
    for name, result in zip(node.output, results):
        if isinstance(result, np.ndarray):
            _set_constant(name, result, emit, state)
        elif result is not None and name:
            emit.nodes.append(helper.make_node("Identity", [result], [name], name=emit.fresh("twin_output")))
            if emit.view.elem_type(name) != _FLOAT:
                state.twinned.add(name)


def _set_constant(name: str, value: np.ndarray, emit: Emitter, state: _State) -> None:
    state.constants[name] = value
    emit.initializers.append(numpy_helper.from_array(value, name))


def _foldable(node: onnx.NodeProto, view: GraphView, state: _State) -> bool:
    """A node reading a tensor the twin made constant, and only constants: the pass folds it."""
    has_subgraph = any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute)
    return not has_subgraph and all(not i or i in state.constants or view.const_value(i) is not None for i in node.input)


def _fold(node: onnx.NodeProto, model: onnx.ModelProto, emit: Emitter, state: _State) -> None:
    """Evaluate the node with onnx's reference implementation; its outputs become initializers."""
    values = {i: value for i in node.input if i
              for value in [state.constants[i] if i in state.constants else emit.view.const_value(i)]}
    inputs = [helper.make_tensor_value_info(i, helper.np_dtype_to_tensor_dtype(v.dtype), list(v.shape))
              for i, v in values.items()]
    outputs = [o for o in node.output if o]
    graph = helper.make_graph([node], "fold", inputs, [helper.make_empty_tensor_value_info(o) for o in outputs])
    folded = ReferenceEvaluator(helper.make_model(graph, opset_imports=model.opset_import)).run(None, values)
    for name, value in zip(outputs, folded):
        _set_constant(name, np.asarray(value), emit, state)


def _carry(node: onnx.NodeProto, emit: Emitter, twinned: set[str]) -> None:
    """A float-capable op reading a twin: its integer operands of the twin's original type are cast to
    float beside it, and its outputs of that type (a Cast's, to an integer type) become twins too."""
    view = emit.view
    kinds = {view.elem_type(i) for i in node.input if i in twinned} - {_FLOAT}
    inputs = [_cast_float(emit, i) if i and i not in twinned and view.elem_type(i) in kinds - {None} else i
              for i in node.input]
    copy = helper.make_node(node.op_type, inputs, list(node.output), name=node.name, domain=node.domain or None)
    copy.attribute.extend(node.attribute)
    to_integer = node.op_type == "Cast" and helper.get_attribute_value(
        next(a for a in node.attribute if a.name == "to")) not in FLOAT_TYPES
    if to_integer:
        copy.attribute.remove(next(a for a in copy.attribute if a.name == "to"))
        copy.attribute.append(helper.make_attribute("to", _FLOAT))
    emit.nodes.append(copy)
    twinned.update(o for o in node.output if o and (view.elem_type(o) in kinds or to_integer))


def _assemble(model: onnx.ModelProto, emit: Emitter, twinned: set[str]) -> onnx.ModelProto:
    twin = onnx.ModelProto()
    twin.CopyFrom(model)
    graph = twin.graph
    del graph.node[:]
    graph.node.extend(emit.nodes)
    graph.initializer.extend(emit.initializers)
    kept = [info for info in graph.value_info if info.name not in twinned]
    del graph.value_info[:]
    graph.value_info.extend(kept)
    for output in graph.output:
        if output.name in twinned:
            output.type.tensor_type.elem_type = _FLOAT
    used = {i for node in graph.node for i in (*node.input, *outer_names(node))} | {o.name for o in graph.output}
    weights = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(weights)
    return twin


def _ensure(twin: onnx.ModelProto) -> None:
    left = [n.op_type for n in twin.graph.node if _key(n) in TWIN_RULES]
    assert not left, f"float twin still holds {left}"
    try:
        onnx.checker.check_model(twin)
    except Exception as exc:  # the checker raises several types
        raise ModelError(f"the float twin of this quantised model fails the ONNX checker ({exc}); please report "
                         "this with the model") from None


# --- agreement -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Predictions:
    """What of a model's outputs its predictions are, for comparing a twin with its model: the outputs
    holding classes on their last axis (compared by ``same``: the clear arg-maxes unless given, e.g. a
    recogniser's decoded text), and ``parts``, which splits an output into parts compared on their own
    (a detector's box coordinates would otherwise drown its probabilities in one difference) or
    reshapes it (a class output named as itself: an (N, C, 1, 1) classifier's as (N, C))."""

    class_outputs: frozenset[str] = frozenset()
    same: Callable[[np.ndarray, np.ndarray], bool] | None = None  # (model's, twin's) -> the same prediction
    parts: Callable[[str, np.ndarray], dict[str, np.ndarray]] | None = None  # (name, values) -> {label: values}


def check_agreement(quantized: onnx.ModelProto, twin: onnx.ModelProto, seed: int = 0) -> Agreement:
    """Run both on one probe input (uniform in [0, 1), batch 1) and compare their float outputs (top-1
    along the last axis of each)."""
    feeds = _probe_feeds(quantized, seed)
    if isinstance(feeds, str):
        return Agreement(None, reason=feeds)
    names = [o.name for o in quantized.graph.output]
    expected = model_session(quantized, "cpu").run(names, feeds)
    got = model_session(twin, "cpu").run(names, feeds)
    return compare_outputs(dict(zip(names, expected)), dict(zip(names, got)), Predictions(frozenset(names)))


def check_first_batch(quantized: onnx.ModelProto, feeds: dict[str, np.ndarray], twin_outputs: dict,
                      predictions: Predictions = Predictions(), threads: int | None = None) -> Agreement:
    """Run the quantised model (a plain CPU session, dropped after) on the feeds an explain model was just
    run on, and compare its outputs with the twin's the explain model returned (``twin_outputs``, by
    name). Logged: a warning when they disagree."""
    names = [o.name for o in quantized.graph.output if o.name in twin_outputs]
    agreement = _compared_on(quantized, feeds, names, twin_outputs, predictions, threads) if names else \
        Agreement(None, reason="the explain model returned none of the quantised model's outputs")
    images = next(iter(feeds.values())).shape[0] if feeds else 0
    if agreement.large:
        log.warning("quantised model and its float twin DISAGREE on the first batch (%d image(s)): %s; the maps "
                    "explain the twin (the model without its rounding), so they may not explain what the model "
                    "predicts: explain the float model it was quantised from", images, agreement.describe())
    else:
        log.log(logging.INFO if agreement.checked else logging.WARNING,
                "quantised model vs its float twin on the first batch (%d image(s)): %s", images, agreement.describe())
    return agreement


def _compared_on(quantized: onnx.ModelProto, feeds: dict, names: list[str], twin_outputs: dict,
                 predictions: Predictions, threads: int | None) -> Agreement:
    try:
        expected = model_session(quantized, "cpu", threads=threads, announce=False).run(names, feeds)
    except Exception as exc:  # a check must not stop the run: ORT raises its own types
        return Agreement(None, reason=f"ONNX Runtime could not run the quantised model on the batch: "
                                      f"{runtime_message(exc)}")
    try:
        return compare_outputs(dict(zip(names, expected)), twin_outputs, predictions)
    except Exception as exc:  # noqa: BLE001 - nor must an output the comparison cannot read (an empty batch)
        return Agreement(None, reason=f"the outputs could not be compared: {type(exc).__name__}: {exc}")


def compare_outputs(expected: dict, got: dict, predictions: Predictions) -> Agreement:
    """The agreement of the float outputs of ``got`` (the twin's) with ``expected`` (the model's), by name."""
    pairs = {name: (np.asarray(a, np.float64), np.asarray(got[name], np.float64)) for name, a in expected.items()
             if name in got and np.asarray(a).dtype.kind == "f" and np.shape(a) == np.shape(got[name])}
    if not pairs:
        return Agreement(None, reason="the model has no float output to compare")
    if predictions.parts:
        pairs = {label: pair for name, (a, b) in pairs.items()
                 for label, pair in _paired(predictions.parts(name, a), predictions.parts(name, b)).items()}
    ranked = [pair for name, pair in pairs.items()
              if name in predictions.class_outputs and pair[0].ndim and pair[0].shape[-1] > 1]
    top1 = all((predictions.same or _same_clear_top1)(a, b) for a, b in ranked)
    difference = max(float(np.abs(a - b).max(initial=0.0)) for a, b in pairs.values())
    largest = max(float(np.abs(a).max(initial=0.0)) for a, _ in pairs.values())
    relative = max(_relative_difference(a, b) for a, b in pairs.values())
    return Agreement(top1, difference, largest, relative, top1_compared=bool(ranked))


def _paired(expected: dict, got: dict) -> dict:
    """The parts of an output split alike, model's and twin's, by label."""
    return {label: (part, got[label]) for label, part in expected.items()}


def _relative_difference(expected: np.ndarray, got: np.ndarray) -> float:
    """RMS(got − expected) over the larger RMS of the two: 0 when equal, at most 2, and defined when the
    model's output is all zeros (a map that real images push below its quantised range)."""
    scale = max(float(np.sqrt(np.mean(expected ** 2))), float(np.sqrt(np.mean(got ** 2)))) if expected.size else 0.0
    return float(np.sqrt(np.mean((got - expected) ** 2))) / scale if scale > 0 else 0.0


def _same_clear_top1(expected: np.ndarray, got: np.ndarray) -> bool:
    """The arg-max along the last axis agrees wherever ``expected`` has a clear one (a margin over the
    runner-up above 1e-3 of the output's magnitude): a dense map's near-zero rows on a probe image
    (or a tie) would otherwise read as a disagreement."""
    rows, other = expected.reshape(-1, expected.shape[-1]), got.reshape(-1, got.shape[-1])
    top2 = np.sort(rows, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 1e-3 * max(float(np.abs(rows).max(initial=0.0)), 1e-12)
    return bool(np.array_equal(rows[clear].argmax(1), other[clear].argmax(1)))


def _probe_feeds(model: onnx.ModelProto, seed: int) -> dict[str, np.ndarray] | str:
    rng = np.random.default_rng(seed)
    feeds = {}
    for info, dims in fed_inputs(model):
        if None in dims[1:]:
            return f"input '{info.name}' has dynamic dims {tuple(dims)}; give {size_fixed_by()} to check the twin"
        shape = [1 if dims and dims[0] is None else dims[0], *dims[1:]] if dims else []
        dtype = helper.tensor_dtype_to_np_dtype(info.type.tensor_type.elem_type)
        feeds[info.name] = rng.uniform(0, 1, size=shape).astype(dtype)
    return feeds
