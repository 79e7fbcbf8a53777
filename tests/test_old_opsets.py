"""Old-opset models end to end: the same small CNN written at opsets 7–12 (each op in its
opset's form; onnx.version_converter cannot convert down, so tests/old_opset_nets.py writes
them) exports from the CLI into an explain model that passes the full checker, runs in ONNX
Runtime, and gives the map, gradient and prediction of the same model at opset 13."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner

from onnxcam import export
from onnxcam.cli import cli
from onnxcam.headmodel import cut_model
from tests.old_opset_nets import INPUT, OUTPUT, SHAPE, small_cnn

MODERN = 13
BATCH = np.random.default_rng(1).standard_normal((2, *SHAPE)).astype(np.float32)
NAMES = ["cam", OUTPUT, "activations", "gradients"]


def _run(model: onnx.ModelProto) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(NAMES, {INPUT: BATCH})


# the automatic layer (after the Upsample), and the first ReLU, whose gradient comes back through
# Softmax, Gemm, Dropout, GlobalAveragePool, Conv, Pad, Concat, Upsample/Resize, Clip, Conv and MaxPool
LAYERS = ["auto", "relu1"]


@pytest.fixture(scope="module", params=LAYERS)
def layer_and_modern(request):
    return request.param, _run(export(small_cnn(MODERN), layer=request.param,
                                      expose=["activations", "gradients"]).model)


@pytest.mark.parametrize("opset", [7, 8, 9, 10, 11, 12])
def test_old_opset_model_explains_like_its_modern_twin(opset, layer_and_modern, tmp_path):
    layer, modern = layer_and_modern
    source = tmp_path / f"cnn{opset}.onnx"
    onnx.save(small_cnn(opset), str(source))
    target = tmp_path / f"cnn{opset}.cam.onnx"
    result = CliRunner().invoke(cli, ["export", str(source), "-o", str(target), "--layer", layer,
                                      "--expose", "activations,gradients"])
    assert result.exit_code == 0, result.output
    explain = onnx.load(str(target))
    assert explain.opset_import[0].version == opset
    onnx.checker.check_model(explain, full_check=True)
    cam, prob, activations, gradients = _run(explain)
    assert cam.std() > 0.05  # a map with structure, not a constant
    np.testing.assert_allclose(prob, modern[1], rtol=0, atol=1e-6)
    np.testing.assert_allclose(activations, modern[2], rtol=0, atol=1e-5)
    np.testing.assert_allclose(gradients, modern[3], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(cam, modern[0], rtol=0, atol=1e-5)


def test_ir3_model_is_raised_to_ir4_and_keeps_its_interface():
    model = small_cnn(7)
    assert model.ir_version == 3
    explain = export(model).model
    assert explain.ir_version == 4
    assert {i.name for i in model.graph.input} <= {i.name for i in explain.graph.input}


def test_head_model_of_an_ir3_model_passes_the_checker():
    cut = cut_model(small_cnn(7), ["relu3"], "logits")
    onnx.checker.check_model(cut.model, full_check=True)
    activations = np.random.default_rng(2).uniform(0, 1, (2, 8, 8, 8)).astype(np.float32)
    logits = ort.InferenceSession(cut.model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"relu3": activations})[0]
    assert logits.shape == (2, 5)
