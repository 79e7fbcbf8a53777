"""Recurrent layers exported by torch: the ONNX gradient against torch autograd, and the refusals.

The finite-difference cases of every variant are in tests/autodiff/cases/recurrent.py.
"""

import numpy as np
import onnx
import pytest
import torch
from onnx import helper
from torch import nn

from onnxcam.autodiff import backward
from onnxcam.errors import ModelError
from tests.autodiff.parity import SEED_INPUT, gradient_model, relative_error, session
from tests.nets import export_onnx

T, FEATURES, HIDDEN, CLASSES = 6, 5, 8, 7


class Recognizer(nn.Module):
    """A recurrent layer over (N, T, F) features and a per-step classifier, fed by Y and the final states."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.rnn = layer
        width = HIDDEN * (2 if layer.bidirectional else 1)
        self.head = nn.Linear(width, CLASSES)
        self.states = nn.Linear(HIDDEN * layer.num_layers * (2 if layer.bidirectional else 1), CLASSES)

    def forward(self, x):
        y, state = self.rnn(x)
        h = state[0] if isinstance(state, tuple) else state
        c = state[1] if isinstance(state, tuple) else h
        final = (h + c).transpose(0, 1).reshape(x.shape[0], -1)  # (N, layers·directions·H)
        return self.head(y) + self.states(final).unsqueeze(1)


LAYERS = {
    "lstm-bidirectional": lambda: nn.LSTM(FEATURES, HIDDEN, batch_first=True, bidirectional=True),
    "lstm-2-layers": lambda: nn.LSTM(FEATURES, HIDDEN, num_layers=2, batch_first=True),
    "gru-bidirectional": lambda: nn.GRU(FEATURES, HIDDEN, batch_first=True, bidirectional=True),
    "rnn-tanh-bidirectional": lambda: nn.RNN(FEATURES, HIDDEN, batch_first=True, bidirectional=True),
    "rnn-relu": lambda: nn.RNN(FEATURES, HIDDEN, nonlinearity="relu", batch_first=True),
}


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::torch.jit.TracerWarning")  # the exporter's notes
@pytest.mark.parametrize("name", list(LAYERS))
def test_gradient_matches_torch_autograd(name):
    torch.manual_seed(0)
    module = Recognizer(LAYERS[name]()).eval()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, T, FEATURES)).astype(np.float32)
    weights = rng.standard_normal((3, T, CLASSES)).astype(np.float32)
    model = export_onnx(module, torch.from_numpy(x[:1]), opset=14)
    recurrent = {n.op_type for n in model.graph.node} & {"LSTM", "GRU", "RNN"}
    assert recurrent, "torch exported no ONNX recurrent op"

    inp = torch.tensor(x, requires_grad=True)
    (module(inp) * torch.from_numpy(weights)).sum().backward()
    grad_model, names = gradient_model(model, "logits", ["input"])
    onnx.checker.check_model(grad_model, full_check=True)
    (grad,) = session(grad_model).run([names["input"]], {"input": x, SEED_INPUT: weights})
    assert relative_error(grad, inp.grad.numpy()) <= 1e-4


def _lstm_model(steps, **attrs) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w = helper.make_tensor("W", onnx.TensorProto.FLOAT, [2, 4 * HIDDEN, FEATURES],
                           rng.uniform(-0.5, 0.5, 8 * HIDDEN * FEATURES).astype(np.float32))
    r = helper.make_tensor("R", onnx.TensorProto.FLOAT, [2, 4 * HIDDEN, HIDDEN],
                           rng.uniform(-0.5, 0.5, 8 * HIDDEN * HIDDEN).astype(np.float32))
    node = helper.make_node("LSTM", ["x", "W", "R"], ["y"], name="lstm", hidden_size=HIDDEN, direction="bidirectional",
                            **attrs)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [steps, 1, FEATURES])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)], initializer=[w, r])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)], ir_version=8)


def _differentiate(model):
    model.graph.input.append(helper.make_tensor_value_info("dy", onnx.TensorProto.FLOAT, None))
    return backward(model, {"y": "dy"}, ["x"])


def test_a_dynamic_sequence_length_is_differentiated_at_every_length():
    forward = session(_lstm_model("steps"))
    result = _differentiate(_lstm_model("steps"))
    result.model.graph.output.append(helper.make_tensor_value_info(result.names["x"], onnx.TensorProto.FLOAT, None))
    gradient = session(result.model)
    rng = np.random.default_rng(3)
    for steps in (3, 9):
        x = rng.standard_normal((steps, 1, FEATURES)).astype(np.float32)
        dy = rng.standard_normal((steps, 2, 1, HIDDEN)).astype(np.float32)
        (grad,) = gradient.run([result.names["x"]], {"x": x, "dy": dy})
        v, h = rng.standard_normal(x.shape).astype(np.float32), 1e-2

        def score(at):
            return float(np.sum(forward.run(["y"], {"x": at})[0].astype(np.float64) * dy))

        numeric = (score(x + h * v) - score(x - h * v)) / (2 * h)
        assert abs(numeric - float(np.sum(grad * v))) <= 1e-2 * abs(numeric), (steps, numeric, float(np.sum(grad * v)))


@pytest.mark.parametrize("attrs, message", [
    ({"input_forget": 1}, "the attribute input_forget=1 (coupled input and forget gates) is not supported"),
    ({"activations": ["Sigmoid", "Softsign", "Tanh"] * 2}, "activation 'Softsign' is not supported (supported: "
                                                          "Sigmoid, Tanh, Relu)"),
])
def test_unsupported_forms_are_refused_naming_the_problem(attrs, message):
    with pytest.raises(ModelError, match="cannot differentiate LSTM node 'lstm'") as raised:
        _differentiate(_lstm_model(T, **attrs))
    assert message in str(raised.value)
