"""Quantised models: int8 models written by onnxruntime.quantization from a small float CNN.

Integer-op models (dynamic; static QOperator) are explained through their float twin: it agrees
with the quantised model, its gradient matches finite differences of itself, and it is the float
model again (its gradient is the float model's up to quantisation error). QDQ models keep their
graph; their straight-through gradient matches finite differences of the same graph with each
fake-quantisation pair replaced by the Clip it approximates.
"""

import json
import logging
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from onnx import helper, numpy_helper
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, quantize_static
from torch import nn
from torch.nn import functional as F

from onnxcam import UnsupportedOpError, export
from onnxcam import quantized as quantized_module
from onnxcam.cli import cli
from onnxcam.graph import sort_topologically
from onnxcam.headmodel import cut_model
from onnxcam.quantized import TWIN_RULES, float_twin
from onnxcam.runtime import make_session
from tests import nets
from tests.exporter_quirk_nets import tf2onnx_loop_recogniser
from tests.targets import task_nets

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


def _probe(seed: int, shape=INPUT) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, shape).astype(np.float32)


class _Calibration(CalibrationDataReader):
    """Inputs wider than the probes (uniform in [-1, 2)), so that no probe saturates an activation's
    quantised range (where the gradient is zero, and finite differences cross the Clip's kink)."""

    def __init__(self, shape=INPUT):
        self._batches = iter([{"input": 3 * _probe(seed, shape) - 1} for seed in range(16)])

    def get_next(self):
        return next(self._batches, None)


class _Branches(nn.Module):
    """Residual add, x·sigmoid(x), LeakyReLU, average and max pooling, concat, a MatMul head: what
    ORT's QOperator format writes com.microsoft QLinear ops for."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2, self.conv3 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1), \
            nn.Conv2d(16, 8, 1)
        self.head = nn.Parameter(torch.randn(8, 5))

    def forward(self, x):
        a = F.leaky_relu(self.conv1(x), 0.1)
        b = a + self.conv2(a)
        b = b * torch.sigmoid(b)
        c = torch.cat([F.avg_pool2d(b, 2), F.max_pool2d(b, 2)], 1)
        return torch.relu(self.conv3(c)).mean((2, 3)) @ self.head


class _Recurrent(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(8, 6, bidirectional=True)

    def forward(self, x):
        return self.lstm(x)[0]


def _cnn() -> nn.Module:
    module = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                           nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))
    with torch.no_grad():
        module[-1].weight.mul_(10)  # logits that vary with the input, not only with the bias
    return module


SEQUENCE = (5, 1, 8)
# network → its input shape and the int8 versions the tests write of it
_NETWORKS = {"cnn": (_cnn, INPUT, ("dynamic", "qoperator", "qdq")), "branches": (_Branches, INPUT, ("dynamic", "qoperator")),
             "lstm": (_Recurrent, SEQUENCE, ("dynamic",)),
             "softmax": (lambda: nn.Sequential(_cnn(), nn.Softmax(dim=1)), INPUT, ("qoperator",)),  # QLinearSoftmax
             "pooled": (lambda: task_nets.PooledMapClassifier(), INPUT, ("dynamic",))}  # (N, C, 1, 1) probabilities


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, onnx.ModelProto]:
    """Small float networks ("cnn/float", ...) and their int8 versions ("cnn/dynamic", "cnn/qoperator", ...)."""
    folder = tmp_path_factory.mktemp("quantized")
    root, level = logging.getLogger(), logging.getLogger().level
    root.setLevel(logging.ERROR)  # the quantiser's advice on pre-processing, logged on the root logger
    try:
        return _write_models(folder)
    finally:
        root.setLevel(level)


def _write_models(folder) -> dict[str, onnx.ModelProto]:
    found = {}
    for name, (build, shape, kinds) in _NETWORKS.items():
        torch.manual_seed(0)
        path = folder / f"{name}.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's advice on the legacy exporter and on LSTM
            onnx.save(nets.export_onnx(build().eval(), torch.randn(*shape)), path)
        writers = {"dynamic": lambda out: quantize_dynamic(path, out, weight_type=QuantType.QInt8),
                   "qoperator": lambda out: quantize_static(path, out, _Calibration(shape),
                                                            quant_format=QuantFormat.QOperator),
                   "qdq": lambda out: quantize_static(path, out, _Calibration(shape), quant_format=QuantFormat.QDQ)}
        found[f"{name}/float"] = onnx.load(path)
        for kind in kinds:
            writers[kind](folder / f"{name}-{kind}.onnx")
            found[f"{name}/{kind}"] = onnx.load(folder / f"{name}-{kind}.onnx")
    return found


def _dynamic_quantize_matmul() -> onnx.ModelProto:
    """com.microsoft DynamicQuantizeMatMul (ORT's fusion of the dynamic MatMul pattern), by hand."""
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.integers(-100, 100, (8, 5)).astype(np.int8), "b"),
               numpy_helper.from_array(np.float32(0.01), "b_scale"), numpy_helper.from_array(np.int8(3), "b_zp"),
               numpy_helper.from_array(rng.standard_normal(5).astype(np.float32), "bias")]
    node = helper.make_node("DynamicQuantizeMatMul", ["input", "b", "b_scale", "b_zp", "bias"], ["y"], domain="com.microsoft")
    graph = helper.make_graph([node], "dqmm", [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 5])], initializer=weights)
    return helper.make_model(graph, ir_version=8,
                             opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])


def _shape(model: onnx.ModelProto) -> tuple[int, ...]:
    return tuple(d.dim_value or 1 for d in model.graph.input[0].type.tensor_type.shape.dim)


TWINNED = ["cnn/dynamic", "cnn/qoperator", "branches/dynamic", "branches/qoperator", "lstm/dynamic", "softmax/qoperator"]


@pytest.mark.parametrize("name", TWINNED)
def test_float_twin_replaces_integer_ops_and_agrees_with_the_model(models, name):
    model = models[name]
    twin = float_twin(model)
    integer = {n.op_type for n in model.graph.node if n.domain == "com.microsoft" or "Integer" in n.op_type
               or n.op_type.startswith(("QLinear", "DynamicQuantize"))}
    assert integer and integer <= set(twin.replaced)
    assert not {n.op_type for n in twin.model.graph.node} & integer
    onnx.checker.check_model(twin.model, full_check=True)
    feeds = {"input": 3 * _probe(7, _shape(model)) - 1}  # negative values too: non-zero input zero points
    quantized = make_session(model.SerializeToString(), "cpu").run(None, feeds)[0]
    float_model = make_session(models[name.split("/")[0] + "/float"].SerializeToString(), "cpu").run(None, feeds)[0]
    got = make_session(twin.model.SerializeToString(), "cpu").run(None, feeds)[0]
    scale = np.abs(quantized).max()
    assert np.abs(got - quantized).max() < 0.05 * scale  # only the rounding is gone
    assert np.abs(got - float_model).max() < 0.05 * scale  # it is the float model again, up to quantisation


def test_dynamic_quantize_matmul_twin_is_exact():
    model = _dynamic_quantize_matmul()
    twin = float_twin(model)
    assert twin.replaced == {"DynamicQuantizeMatMul": 1}
    feeds = {"input": 3 * _probe(1, (1, 8)) - 1}
    expected = make_session(model.SerializeToString(), "cpu").run(None, feeds)[0]
    got = make_session(twin.model.SerializeToString(), "cpu").run(None, feeds)[0]
    np.testing.assert_allclose(got, expected, atol=0.02 * np.abs(expected).max())


def test_every_twin_rule_is_exercised(models):
    replaced = {op for name in TWINNED for op in float_twin(models[name]).replaced}
    replaced |= set(float_twin(_dynamic_quantize_matmul()).replaced)
    missing = sorted({op for _, op in TWIN_RULES} - replaced)
    assert not missing, f"twin rules no test model exercises: {missing}"


def _explain(model: onnx.ModelProto):
    """Export with the tensors the checks need; run it on a probe image: (explain, weights, A, dA)."""
    explain = export(model, expose=["activations", "gradients"], for_runtime=True)
    session = make_session(explain.model.SerializeToString(), "cpu")
    image = _probe(100)
    weights, activations, gradients = session.run(["cam_weights", "activations", "gradients"], {"input": image})
    assert np.abs(gradients).max() > 0  # a saturated score would make the finite-difference check vacuous
    return explain, image, weights, activations, gradients


@pytest.mark.parametrize("name", ["cnn/dynamic", "cnn/qoperator", "branches/dynamic", "branches/qoperator"])
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
    float_model = models[name.split("/")[0] + "/float"]
    reference = export(float_model, layer=_last_relu(float_model), expose=["gradients"]).model
    expected = make_session(reference.SerializeToString(), "cpu").run(["gradients"], {"input": image})[0]
    cosine = float((expected * gradients).sum() / np.linalg.norm(expected) / np.linalg.norm(gradients))
    assert cosine > 0.98, cosine


def _last_relu(model: onnx.ModelProto) -> str:
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
    model = models["cnn/qdq"]
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
    model.CopyFrom(models["cnn/dynamic"])
    model.graph.input[0].type.tensor_type.shape.dim[3].dim_param = "width"
    with caplog.at_level(logging.WARNING, logger="onnxcam.quantized"):
        twin = quantized_module.checked_float_twin(model)
    assert twin.top1 == "unchecked"
    assert "give --input-shape to check the twin" in caplog.text


def test_large_disagreement_is_a_warning(models, caplog, monkeypatch):
    monkeypatch.setattr(quantized_module, "DISAGREEMENT", 0.0)  # any difference counts as large
    with caplog.at_level(logging.WARNING, logger="onnxcam.quantized"):
        quantized_module.checked_float_twin(models["cnn/dynamic"])
    assert any(r.levelno == logging.WARNING and "float twin" in r.getMessage() for r in caplog.records)


def test_integer_op_without_a_twin_rule_is_named(models):
    model = onnx.ModelProto()
    model.CopyFrom(models["cnn/qoperator"])
    node = next(n for n in model.graph.node if n.op_type == "QGemm")
    node.op_type = "QLinearReduceMean"
    with pytest.raises(UnsupportedOpError, match="no float twin for com.microsoft:QLinearReduceMean"):
        export(model)


def test_a_loop_body_keeps_the_weights_it_reads_from_the_outer_graph(tmp_path):
    """tf2onnx's LSTM steps: a Loop body reads "fc" by name; the twin dropped it as unused (checker error)."""
    onnx.save(tf2onnx_loop_recogniser(), str(tmp_path / "float.onnx"))
    quantize_dynamic(str(tmp_path / "float.onnx"), str(tmp_path / "int8.onnx"), op_types_to_quantize=["Conv"])
    quantized = onnx.load(str(tmp_path / "int8.onnx"))
    sort_topologically(quantized.graph)  # the quantiser puts the Loop before the node whose output it reads
    twin = float_twin(quantized)
    assert "fc" in {t.name for t in twin.model.graph.initializer}
    image = _probe(0, (1, 3, 8, 16))
    expected = make_session(quantized.SerializeToString(), "cpu").run(None, {"image": image})[0]
    got = make_session(twin.model.SerializeToString(), "cpu").run(None, {"image": image})[0]
    np.testing.assert_allclose(got, expected, atol=0.05)


def _run_cli(model: onnx.ModelProto, folder: Path, images) -> tuple[dict, list[dict], str]:
    """``onnxcam run --json`` on ``images``: (the summary, the records, stderr)."""
    path = folder / "model.onnx"
    onnx.save(model, path)
    result = CliRunner().invoke(cli, ["run", str(path), *map(str, images), "-o", str(folder / "out"),
                                      "--preset", "unit", "--size", "16x16", "--json"])
    assert result.exit_code == 0, result.output + result.stderr
    records = [json.loads(line) for line in (folder / "out" / "results.jsonl").read_text().splitlines()]
    return json.loads(result.stdout), records, result.stderr


def test_cli_runs_an_integer_model_and_checks_its_twin_on_the_first_batch(models, tmp_path, demo_images):
    summary, records, stderr = _run_cli(models["cnn/dynamic"], tmp_path, demo_images[:2])
    assert records[0]["status"] == "ok" and records[0]["layer"] == "/3/Relu_output_0"
    first = summary["twin"]["first_batch"]
    assert first["agrees"] and first["top1"] == "equal", first
    assert 0 < first["relative_difference"] < quantized_module.DISAGREEMENT
    assert summary["twin"]["replaced"].startswith("ConvInteger:2") and summary["twin"]["probe"]["top1"] == "equal"
    assert all(r["twin"] == summary["twin"] for r in records)
    assert "DISAGREE" not in stderr


def _coarse_requantisation(model: onnx.ModelProto, factor: float = 300.0) -> onnx.ModelProto:
    """``model`` (QOperator) with its first convolution's output scale ``factor`` times coarser, as a quantiser
    given a far too wide range would write: the integer model rounds that layer's values to a few steps,
    while the twin (which keeps the stored values unrounded, read back with the same scale) still computes
    the float model. The next convolution's int32 bias is in units of that scale, so it is divided too."""
    coarse = onnx.ModelProto()
    coarse.CopyFrom(model)
    convolutions = [n for n in coarse.graph.node if n.op_type == "QLinearConv"]
    values = {t.name: t for t in coarse.graph.initializer}

    def rescale(name: str, by: float, dtype) -> None:
        values[name].CopyFrom(numpy_helper.from_array(np.round(numpy_helper.to_array(values[name]) * by).astype(dtype)
                                                      if dtype == np.int32 else
                                                      (numpy_helper.to_array(values[name]) * by).astype(dtype), name))

    rescale(convolutions[0].input[6], factor, np.float32)
    rescale(convolutions[1].input[8], 1 / factor, np.int32)
    return coarse


def test_a_twin_that_disagrees_with_its_model_on_the_first_batch_is_warned_about_and_recorded(models, tmp_path,
                                                                                               demo_images):
    model = _coarse_requantisation(models["cnn/qoperator"])
    summary, records, stderr = _run_cli(model, tmp_path, demo_images[:2])
    first = summary["twin"]["first_batch"]
    assert not first["agrees"] and first["relative_difference"] > quantized_module.DISAGREEMENT, first
    assert records[0]["twin"]["first_batch"] == first
    warning = next(line for line in stderr.splitlines() if "DISAGREE on the first batch" in line)
    assert "(2 image(s))" in warning and f"relative output difference {first['relative_difference']:.2g}" in warning


def test_the_first_batch_check_runs_once_and_costs_nothing_without_a_twin(models, monkeypatch):
    from onnxcam import Explainer

    checks = []
    real_check = quantized_module.check_first_batch
    monkeypatch.setattr("onnxcam.explainer.check_first_batch", lambda *a, **k: checks.append(1) or real_check(*a, **k))
    images = 3 * _probe(3, (2, 3, 16, 16)) - 1
    float_explainer = Explainer(models["cnn/float"])
    float_explainer.explain(images)
    assert not checks and float_explainer.twin_facts is None
    explainer = Explainer(models["cnn/qoperator"])
    assert explainer.twin_facts["first_batch"]["reason"] == "no batch explained yet"
    explainer.explain(images)
    explainer.explain(images)
    assert len(checks) == 1 and explainer.twin_check.checked and not explainer.twin_check.large


def test_a_first_batch_check_interrupted_by_ctrl_c_is_done_on_the_next_batch(models, monkeypatch):
    """Its quantised model was let go before the check: the records then said an explain model holds only the twin."""
    from onnxcam import Explainer

    real_check = quantized_module.check_first_batch
    calls = []

    def interrupted_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise KeyboardInterrupt
        return real_check(*args, **kwargs)

    monkeypatch.setattr("onnxcam.explainer.check_first_batch", interrupted_once)
    explainer = Explainer(models["cnn/qoperator"])
    images = 3 * _probe(3, (2, 3, 16, 16)) - 1
    with pytest.raises(KeyboardInterrupt):
        explainer.explain(images)
    assert explainer.twin_facts["first_batch"]["reason"] == "no batch explained yet"
    explainer.explain(images)
    assert len(calls) == 2 and explainer.twin_facts["first_batch"]["agrees"]


def test_the_first_batch_check_compares_an_n_c_1_1_classifiers_top1_over_its_classes(models):
    from onnxcam import Explainer

    explainer = Explainer(models["pooled/dynamic"])
    assert explainer.task == "classification"
    explainer.explain(3 * _probe(3, (2, 3, 16, 16)) - 1)
    assert explainer.twin_check.top1_compared  # over C, not along the 1x1 map's last axis
    assert explainer.twin_facts["first_batch"]["top1"] == "equal" and explainer.twin_facts["first_batch"]["agrees"]


def _qdq(module: nn.Module, folder: Path, name: str, shape=INPUT) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    """(float export, its static QDQ quantisation): Q → DQ pairs after every quantised tensor."""
    torch.manual_seed(0)
    path = folder / f"{name}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        onnx.save(nets.export_onnx(module.eval(), torch.randn(*shape)), path)
    root, level = logging.getLogger(), logging.getLogger().level
    root.setLevel(logging.ERROR)
    try:
        quantize_static(path, folder / f"{name}-qdq.onnx", _Calibration(shape), quant_format=QuantFormat.QDQ)
    finally:
        root.setLevel(level)
    return onnx.load(path), onnx.load(folder / f"{name}-qdq.onnx")


def test_a_qdq_model_is_planned_as_its_float_model(tmp_path):
    """The final Softmax/Sigmoid behind a Q → DQ pair is still found (the logits are explained, not the
    probabilities), and a dense model's automatic layer is still before its head (the head's walk passes
    the pairs), as in the float model."""
    torch.manual_seed(0)
    classifier = nn.Sequential(_cnn(), nn.Softmax(dim=1))
    float_plan, qdq_plan = (export(m).plan for m in _qdq(classifier, tmp_path, "softmax"))
    assert float_plan.score_tensor.activation == qdq_plan.score_tensor.activation == "Softmax"
    torch.manual_seed(0)
    float_model, qdq_model = _qdq(task_nets.DBLikeDetector(), tmp_path, "db", (1, 3, 32, 32))
    float_plan, qdq_plan = export(float_model).plan, export(qdq_model).plan
    assert float_plan.score_tensor.activation == qdq_plan.score_tensor.activation == "Sigmoid"
    assert qdq_plan.task.name == "dense" and qdq_plan.layer.shape[1:] == float_plan.layer.shape[1:] == (16, 8, 8)


def test_the_twin_check_compares_only_clear_top1s():
    """A dense map of near-zero rows (a probe image): an arg-max among ties is no disagreement; a clear
    one is."""
    same = quantized_module._same_clear_top1
    flat = np.array([[[1e-9, 0.0, 2e-9], [5.0, 1.0, 0.0]]])
    assert same(flat, np.array([[[0.0, 3e-9, 1e-9], [5.0, 1.0, 0.0]]]))
    assert not same(flat, np.array([[[1e-9, 0.0, 2e-9], [1.0, 5.0, 0.0]]]))


def test_a_qlinear_op_with_a_scalar_constant_operand_gets_its_twin():
    """QLinearAdd of a 0-d quantised constant (PP-OCR's QOperator export): 0-d NumPy arithmetic gives
    scalars, which once reached the emitter as tensor names (a TypeError)."""
    def scalar(name, value, dtype):
        return numpy_helper.from_array(np.array(value, dtype), name)

    init = [scalar("xs", 0.1, np.float32), scalar("xz", 128, np.uint8), scalar("bq", 140, np.uint8),
            scalar("bs", 0.05, np.float32), scalar("bz", 128, np.uint8), scalar("ys", 0.1, np.float32),
            scalar("yz", 128, np.uint8)]
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
             helper.make_node("QLinearAdd", ["xq", "xs", "xz", "bq", "bs", "bz", "ys", "yz"], ["yq"],
                              domain="com.microsoft"),
             helper.make_node("DequantizeLinear", ["yq", "ys", "yz"], ["y"])]
    graph = helper.make_graph(nodes, "scalar_add",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])], init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)],
                              ir_version=8)
    twin = float_twin(model)
    assert twin.replaced["QLinearAdd"] == 1
    x = np.array([[0.0, 1.0, -1.0, 2.5]], np.float32)
    got = make_session(twin.model.SerializeToString(), "cpu").run(["y"], {"x": x})[0]
    np.testing.assert_allclose(got, x + 0.6, atol=0.11)  # b = (140 − 128)·0.05; the twin skips the rounding


def test_a_qoperator_models_final_softmax_is_found_through_its_twins_requantisation(models):
    """QLinearSoftmax's twin is Softmax, requantised (÷ scale, + zero point, the clip's ReLUs) and
    dequantised again: the logits before it are explained, as in the float model."""
    plan = export(models["softmax/qoperator"]).plan
    assert plan.score_tensor.activation == "Softmax" == export(models["softmax/float"]).plan.score_tensor.activation


def test_a_dynamically_quantised_yunet_keeps_its_raw_box_offsets(tmp_path):
    """ConvInteger's twin is a Conv followed by the model's own Cast, scale and bias: the box outputs
    still come straight from a convolution, so their offsets are decoded (they read as decoded boxes)."""
    from onnxcam import Explainer
    from onnxcam.detection.head import Head
    from tests.detection import detector_nets

    path = tmp_path / "yunet.onnx"
    onnx.save(detector_nets.export(detector_nets.TinyDetector("yunet")), path)
    quantize_dynamic(path, tmp_path / "yunet-dynamic.onnx", weight_type=QuantType.QInt8)
    explainer = Explainer(str(tmp_path / "yunet-dynamic.onnx"))
    assert Head.from_json(explainer.contract.detection).boxes == "yolox"
    images = np.random.default_rng(1).uniform(-1, 1, (1, 3, 32, 32)).astype(np.float32)
    boxes = explainer.explain_boxes(images, min_score=0.0, max_boxes=3).images[0].boxes
    assert explainer.twin_check.checked and not explainer.twin_check.large  # its level outputs, on this batch
    reference = Explainer(str(path)).explain_boxes(images, min_score=0.0, max_boxes=3).images[0].boxes
    np.testing.assert_allclose(boxes.xyxy, reference.xyxy, atol=1.0)  # int8 weights move them a little
