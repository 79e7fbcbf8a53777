"""Quantised models: int8 models written by onnxruntime.quantization from a small float CNN.

Integer-op models (dynamic; static QOperator) are explained through their float twin: it agrees
with the quantised model, its gradient matches finite differences of itself, and it is the float
model again (its gradient is the float model's up to quantisation error). QDQ models keep their
graph; their straight-through gradient matches finite differences of the same graph with each
fake-quantisation pair replaced by the Clip it approximates.
"""

import logging
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, quantize_static
from torch import nn

from onnxcam import UnsupportedOpError, export
from onnxcam import quantized as quantized_module
from onnxcam.headmodel import cut_model
from onnxcam.quantized import float_twin
from onnxcam.runtime import make_session
from tests import nets

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import zoo_report  # noqa: E402

INPUT = (1, 3, 16, 16)
FD_TOLERANCE = 2e-2


def _fd_error(model, contract, image, weights, activations, gradients) -> float:
    """Finite differences along the live activations: the layer follows a ReLU that the quantiser
    fused into the next requantisation, so its zeros sit on a Clip's bound, where a central
    difference averages the two one-sided slopes."""
    return zoo_report.finite_difference_error(model, contract, image, weights, activations, gradients,
                                              where=activations > 0)


def _probe(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, INPUT).astype(np.float32)


class _Calibration(CalibrationDataReader):
    """Inputs wider than the probes (uniform in [-1, 2)), so that no probe saturates an activation's
    quantised range (where the gradient is zero, and finite differences cross the Clip's kink)."""

    def __init__(self):
        self._batches = iter([{"input": 3 * _probe(seed) - 1} for seed in range(16)])

    def get_next(self):
        return next(self._batches, None)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, onnx.ModelProto]:
    """The float CNN and its int8 versions: dynamic, static QOperator, static QDQ."""
    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                           nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5)).eval()
    with torch.no_grad():
        module[-1].weight.mul_(10)  # logits that vary with the input, not only with the bias
    folder = tmp_path_factory.mktemp("quantized")
    onnx.save(nets.export_onnx(module, torch.randn(*INPUT)), folder / "float.onnx")
    logging.getLogger().setLevel(logging.ERROR)  # the quantiser's advice on pre-processing
    quantize_dynamic(folder / "float.onnx", folder / "dynamic.onnx", weight_type=QuantType.QInt8)
    quantize_static(folder / "float.onnx", folder / "qoperator.onnx", _Calibration(), quant_format=QuantFormat.QOperator)
    quantize_static(folder / "float.onnx", folder / "qdq.onnx", _Calibration(), quant_format=QuantFormat.QDQ)
    return {name: onnx.load(folder / f"{name}.onnx") for name in ("float", "dynamic", "qoperator", "qdq")}


def _explain(model: onnx.ModelProto):
    """Export with the tensors the checks need; run it on a probe image: (explain, weights, A, dA)."""
    explain = export(model, expose=["activations", "gradients"], for_runtime=True)
    session = make_session(explain.model.SerializeToString(), "cpu")
    image = _probe(100)
    weights, activations, gradients = session.run(["cam_weights", "activations", "gradients"], {"input": image})
    assert np.abs(gradients).max() > 0  # a saturated score would make the finite-difference check vacuous
    return explain, image, weights, activations, gradients


@pytest.mark.parametrize("name, replaced", [
    ("dynamic", {"ConvInteger", "MatMulInteger", "DynamicQuantizeLinear"}),
    ("qoperator", {"QuantizeLinear", "QLinearConv", "QLinearGlobalAveragePool", "QGemm", "DequantizeLinear"}),
])
def test_float_twin_replaces_integer_ops_and_agrees_with_the_model(models, name, replaced):
    twin = float_twin(models[name])
    assert set(twin.replaced) == replaced
    integer_ops = {"ConvInteger", "MatMulInteger", "QLinearConv", "QGemm", "QLinearGlobalAveragePool"}
    assert not {n.op_type for n in twin.model.graph.node} & integer_ops
    onnx.checker.check_model(twin.model, full_check=True)
    feeds = {"input": 3 * _probe(7) - 1}  # negative values too: non-zero input zero points
    quantized = make_session(models[name].SerializeToString(), "cpu").run(None, feeds)[0]
    float_model = make_session(models["float"].SerializeToString(), "cpu").run(None, feeds)[0]
    got = make_session(twin.model.SerializeToString(), "cpu").run(None, feeds)[0]
    scale = np.abs(quantized).max()
    assert np.abs(got - quantized).max() < 0.05 * scale  # only the rounding is gone
    assert np.abs(got - float_model).max() < 0.05 * scale  # it is the float model again, up to quantisation


@pytest.mark.parametrize("name", ["dynamic", "qoperator"])
def test_integer_model_is_explained_through_its_twin(models, name, caplog):
    with caplog.at_level(logging.INFO, logger="onnxcam.quantized"):
        explain, image, weights, activations, gradients = _explain(models[name])
    contract = explain.contract
    assert contract.twin_top1 == "equal" and 0 < contract.twin_max_difference < 0.05
    assert "ConvInteger" in contract.float_twin or "QLinearConv" in contract.float_twin
    assert "twin vs model on a probe input: top-1 equal" in caplog.text
    error = _fd_error(explain.model, contract, image, weights, activations, gradients)
    assert error < FD_TOLERANCE, error
    # The twin's gradient is the float model's at the same activation, up to quantisation error.
    reference = export(models["float"], layer=_float_layer(models["float"], activations.shape),
                       expose=["gradients"]).model
    expected = make_session(reference.SerializeToString(), "cpu").run(["gradients"], {"input": image})[0]
    cosine = float((expected * gradients).sum() / np.linalg.norm(expected) / np.linalg.norm(gradients))
    assert cosine > 0.98, cosine


def _float_layer(model: onnx.ModelProto, shape) -> str:
    """The float model's last ReLU output (the layer the twins' automatic choice corresponds to)."""
    return [n.output[0] for n in model.graph.node if n.op_type == "Relu"][-1]


def _clip_oracle(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with each activation's QuantizeLinear → DequantizeLinear pair replaced by
    Clip(x, (qmin − zp)·s, (qmax − zp)·s): the function the straight-through gradient differentiates."""
    oracle = onnx.ModelProto()
    oracle.CopyFrom(model)
    graph = oracle.graph
    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    quantizers = {n.output[0]: n for n in graph.node if n.op_type == "QuantizeLinear"}
    nodes = []
    for node in graph.node:
        if node.op_type == "QuantizeLinear":
            continue
        source = quantizers.get(node.input[0]) if node.op_type == "DequantizeLinear" else None
        if source is None:
            nodes.append(node)
            continue
        scale, zero_point = values[source.input[1]], values[source.input[2]]
        info = np.iinfo(zero_point.dtype)
        bounds = [(float(b) - float(zero_point)) * float(scale) for b in (info.min, info.max)]
        names = [f"{node.output[0]}/low", f"{node.output[0]}/high"]
        graph.initializer.extend(numpy_helper.from_array(np.float32(b), n) for b, n in zip(bounds, names))
        nodes.append(helper.make_node("Clip", [source.input[0], *names], [node.output[0]]))
    del graph.node[:]
    graph.node.extend(nodes)
    return oracle


def test_qdq_gradient_is_straight_through(models):
    model = models["qdq"]
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in model.graph.node}
    explain, image, weights, activations, gradients = _explain(model)
    assert explain.contract.float_twin == ""  # explained as it is
    oracle = _clip_oracle(explain.model)
    assert "QuantizeLinear" not in {n.op_type for n in cut_model(
        oracle, [explain.contract.layer], explain.contract.score_tensor).model.graph.node}
    error = _fd_error(oracle, explain.contract, image, weights, activations, gradients)
    assert error < FD_TOLERANCE, error


def test_twin_of_a_dynamic_size_input_is_reported_unchecked(models, caplog):
    model = onnx.ModelProto()
    model.CopyFrom(models["dynamic"])
    model.graph.input[0].type.tensor_type.shape.dim[3].dim_param = "width"
    with caplog.at_level(logging.WARNING, logger="onnxcam.quantized"):
        twin = quantized_module.checked_float_twin(model)
    assert twin.top1 == "unchecked"
    assert "give --input-shape to check the twin" in caplog.text


def test_large_disagreement_is_a_warning(models, caplog, monkeypatch):
    monkeypatch.setattr(quantized_module, "DISAGREEMENT", 0.0)  # any difference counts as large
    with caplog.at_level(logging.WARNING, logger="onnxcam.quantized"):
        quantized_module.checked_float_twin(models["dynamic"])
    assert any(r.levelno == logging.WARNING and "float twin" in r.getMessage() for r in caplog.records)


def test_integer_op_without_a_twin_rule_is_named(models):
    model = onnx.ModelProto()
    model.CopyFrom(models["qoperator"])
    node = next(n for n in model.graph.node if n.op_type == "QGemm")
    node.op_type = "QLinearSoftmax"
    with pytest.raises(UnsupportedOpError, match="no float twin for com.microsoft:QLinearSoftmax"):
        export(model)
