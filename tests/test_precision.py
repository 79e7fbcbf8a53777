"""Half-precision models: float16 explained in float16, bfloat16 upcast to float32; both checked
against the float32 model they were converted from (same weights up to rounding)."""

import logging

import ml_dtypes
import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from onnx import numpy_helper
from onnxruntime.transformers.float16 import convert_float_to_float16

from onnxcam import export
from onnxcam.cli import cli
from onnxcam.precision import HALF_TYPES, upcast
from onnxcam.runtime import make_session
from tests import nets

# float16 keeps ~3 significant digits through a ResNet's forward and backward; bfloat16 weights ~2
TOLERANCE = {onnx.TensorProto.FLOAT16: 2e-2, onnx.TensorProto.BFLOAT16: 5e-2}


@pytest.fixture(scope="module")
def float_model() -> onnx.ModelProto:
    arch = nets.ARCHITECTURES["resnet"]
    module, _ = arch.build()
    return nets.export_onnx(module, torch.randn(1, *arch.input_shape))


def _image(dtype=np.float32) -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 1, (1, *nets.ARCHITECTURES["resnet"].input_shape)).astype(dtype)


def _bfloat16(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with bfloat16 weights, inputs and outputs (what a bfloat16 export holds), at opset 22,
    the first whose Conv and BatchNormalization take bfloat16."""
    half = onnx.ModelProto()
    half.CopyFrom(model)
    half.opset_import[0].version = 22
    half.ir_version = 10
    for index, tensor in enumerate(half.graph.initializer):
        if tensor.data_type == onnx.TensorProto.FLOAT:
            value = numpy_helper.to_array(tensor).astype(ml_dtypes.bfloat16)
            half.graph.initializer[index].CopyFrom(numpy_helper.from_array(value, tensor.name))
    for info in (*half.graph.input, *half.graph.output):
        info.type.tensor_type.elem_type = onnx.TensorProto.BFLOAT16
    del half.graph.value_info[:]
    return half


def _gradients(model: onnx.ModelProto, image: np.ndarray):
    explain = export(model, expose=["gradients"])
    session = make_session(explain.model.SerializeToString(), "cpu")
    cam, gradients = session.run(["cam", "gradients"], {"input": image})
    return explain, cam, gradients.astype(np.float32)


def _relative(got: np.ndarray, expected: np.ndarray) -> float:
    return float(np.linalg.norm(got.astype(np.float64) - expected) / np.linalg.norm(expected))


def test_float16_model_is_explained_in_float16(float_model):
    half = convert_float_to_float16(float_model, keep_io_types=False)
    explain, cam, gradients = _gradients(half, _image(np.float16))
    assert explain.contract.precision == "float16"
    types = {o.name: o.type.tensor_type.elem_type for o in explain.model.graph.output}
    assert types["gradients"] == onnx.TensorProto.FLOAT16 and types["cam"] == onnx.TensorProto.FLOAT
    _, expected_cam, expected = _gradients(float_model, _image())
    assert _relative(gradients, expected) < TOLERANCE[onnx.TensorProto.FLOAT16]
    assert np.abs(cam - expected_cam).max() < 0.05


def test_float16_model_with_float32_interface(float_model):
    """onnxruntime's converter with keep_io_types appends the input Cast after the nodes reading it."""
    half = convert_float_to_float16(float_model, keep_io_types=True)
    explain, _, gradients = _gradients(half, _image())
    assert explain.contract.precision == "float16"
    _, _, expected = _gradients(float_model, _image())
    assert _relative(gradients, expected) < TOLERANCE[onnx.TensorProto.FLOAT16]


def test_bfloat16_model_is_upcast(float_model, caplog):
    half = _bfloat16(float_model)
    with caplog.at_level(logging.WARNING, logger="onnxcam.exporter"):
        explain, _, gradients = _gradients(half, _image())
    assert explain.contract.precision == "bfloat16 upcast to float32"
    assert "cannot compute in bfloat16" in caplog.text and "upcasting the model to float32" in caplog.text
    assert explain.model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    _, _, expected = _gradients(float_model, _image())
    assert _relative(gradients, expected) < TOLERANCE[onnx.TensorProto.BFLOAT16]


def test_upcast_leaves_no_half_type(float_model):
    half = _bfloat16(float_model)
    wide = upcast(half)
    assert half.graph.initializer[0].data_type == onnx.TensorProto.BFLOAT16  # the input is not modified
    types = [t.data_type for t in wide.graph.initializer]
    types += [i.type.tensor_type.elem_type for i in (*wide.graph.input, *wide.graph.output)]
    assert not set(types) & set(HALF_TYPES)
    onnx.checker.check_model(wide, full_check=True)
    got = make_session(wide.SerializeToString(), "cpu").run(None, {"input": _image()})[0]
    expected = make_session(float_model.SerializeToString(), "cpu").run(None, {"input": _image()})[0]
    assert _relative(got, expected) < TOLERANCE[onnx.TensorProto.BFLOAT16]  # the weights' rounding only


def test_cli_runs_a_float16_model(float_model, tmp_path, demo_images):
    path = tmp_path / "half.onnx"
    onnx.save(convert_float_to_float16(float_model, keep_io_types=False), path)
    result = CliRunner().invoke(cli, ["-q", "run", str(path), str(demo_images[0]), "-o", str(tmp_path / "out"),
                                       "--preset", "unit", "--size", "64x64"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "results.jsonl").is_file()


def test_a_float16_detector_explains_its_boxes():
    """explain_boxes feeds the features pass in the input's type (it fed float32 to a float16 input)."""
    from onnxcam import Explainer
    from tests.detection import detector_nets

    model = detector_nets.export(detector_nets.TinyDetector("yolov8"))
    images = np.random.default_rng(1).uniform(-1, 1, (1, 3, 32, 32)).astype(np.float32)
    full = Explainer(model).explain_boxes(images, min_score=0.0, max_boxes=4).images[0]
    half = Explainer(convert_float_to_float16(model, keep_io_types=False)).explain_boxes(
        images.astype(np.float16), min_score=0.0, max_boxes=4).images[0]
    assert half.boxes.anchors.tolist() == full.boxes.anchors.tolist()
    assert np.abs(half.maps - full.maps).max() < 0.05
    # float32 outputs cast from the float16 head: the Sigmoid behind the Cast still makes it a detector head
    wrapped = Explainer(convert_float_to_float16(model, keep_io_types=True)).explain_boxes(
        images, min_score=0.0, max_boxes=4).images[0]
    assert wrapped.boxes.anchors.tolist() == full.boxes.anchors.tolist()


def test_a_float16_score_past_float16s_range_is_summed_in_float32():
    """A dense map's logits summed over its pixels: 32·32 pixels at ~100 each pass float16's 65504."""
    from onnxcam import Explainer
    from tests.targets import task_nets

    torch.manual_seed(0)
    module = task_nets.DBLikeDetector(offset=100.0).eval()
    model = task_nets.export(module, torch.randn(1, 3, 32, 32))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = module.head(module.features(x)).sum(dim=(1, 2, 3)).numpy()  # every pixel fires
    assert expected.min() > 65504
    explain = Explainer(convert_float_to_float16(model, keep_io_types=False)).explain(x.numpy().astype(np.float16))
    assert explain.scores.dtype == np.float32 and np.all(np.isfinite(explain.cam))
    np.testing.assert_allclose(explain.scores, expected, rtol=2e-3)
