"""Graphs as paddle2onnx and tf2onnx write them (tests/exporter_quirk_nets.py): computed Reshape
targets, Keras Flatten/Dense, a batch written as -1, Softmax → Identity; each exports, passes the
full checker, and its exposed gradient matches central finite differences of the score on the
graph cut at the layer (the zoo's check). Shape hints depend on what is fixed already."""

import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from onnxcam import ModelError, export
from onnxcam.autodiff import emit_backward
from onnxcam.autodiff.emitter import Emitter
from onnxcam.graph import GraphView, load_model
from onnxcam.plan import fix_input_shape
from tests.exporter_quirk_nets import computed_reshape_recogniser, keras_flatten_dense, paddle_classifier

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from zoo_report import finite_difference_error  # noqa: E402

FD_TOLERANCE = 1e-2


def _explain_and_check(model, image_shape, input_shape=None):
    explain = export(model, input_shape=input_shape, expose=["activations", "gradients"], for_runtime=True)
    onnx.checker.check_model(explain.model, full_check=True)
    contract = explain.contract
    session = ort.InferenceSession(explain.model.SerializeToString(), providers=["CPUExecutionProvider"])
    batch = np.random.default_rng(0).uniform(0, 1, image_shape).astype(np.float32)
    cam, weights, activations, gradients = session.run(["cam", "cam_weights", "activations", "gradients"],
                                                      {contract.input: batch})
    assert np.isfinite(cam).all() and cam.std() > 0
    error = finite_difference_error(explain.model, contract, batch, weights, activations, gradients)
    assert error <= FD_TOLERANCE, error
    return explain


@pytest.mark.parametrize("input_shape", [None, "1x3x8x16"])
def test_reshape_to_a_computed_shape_is_differentiated(input_shape):
    model = computed_reshape_recogniser()
    assert GraphView(model, complete=False).shape("tokens") is None  # ONNX's own inference gives up here
    explain = _explain_and_check(model, (1, 3, 8, 16), input_shape)
    assert explain.contract.task == "sequence" and explain.contract.layer == "features"


def test_keras_flatten_and_dense_as_tf2onnx_writes_them():
    model = keras_flatten_dense()
    assert GraphView(model, complete=False).shape("flat") is None
    explain = _explain_and_check(model, (2, 8, 8, 3))
    assert explain.contract.task == "classification" and explain.plan.layout == "NHWC"


def test_paddle_batch_of_minus_one_and_identity_after_softmax():
    model = paddle_classifier()
    assert GraphView(load_model(model)).shape("x")[0] is None  # -1 is dynamic, not a size
    explain = _explain_and_check(model, (2, 3, 8, 8))
    assert explain.contract.score_tensor == "fc"  # the logits before the Softmax that Identity passes on
    cam = next(o for o in explain.model.graph.output if o.name == "cam")
    assert cam.type.tensor_type.shape.dim[0].dim_param == "batch"
    assert all(d.dim_value >= 0 for o in explain.model.graph.output for d in o.type.tensor_type.shape.dim)


def test_unknown_shape_hint_asks_for_input_shape_only_when_the_input_size_is_not_fixed():
    dynamic = computed_reshape_recogniser()
    fixed = fix_input_shape(computed_reshape_recogniser(), [1, 3, 8, 16])
    messages = []
    for model in (dynamic, fixed):
        emit = Emitter(GraphView(model, complete=False))  # ONNX's inference only: the Reshape stays unknown
        with pytest.raises(ModelError) as caught:
            emit_backward(emit, {"probs": "image"}, ["features"])
        messages.append(str(caught.value))
    assert "--input-shape" in messages[0]
    assert "--input-shape" not in messages[1] and "the input's size is fixed" in messages[1]
