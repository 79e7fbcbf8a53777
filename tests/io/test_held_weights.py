"""The explainer's weights held in a temporary data file: the graph it keeps holds none of them,
sessions built from the file (whole model and cuts) compute what the complete model does, and
the complete model comes back byte for byte."""

import gc
import tempfile
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from onnxcam import Explainer, export
from onnxcam import explainer as explainer_module
from onnxcam.headmodel import cut_model
from onnxcam.io import held_weights, scratch
from onnxcam.io.held_weights import hold_weights
from onnxcam.io.model_files import EXTERNAL_THRESHOLD
from onnxcam.runtime import make_session
from tests import nets

INPUT = (2, 3, 32, 32)


@pytest.fixture(scope="module")
def plain_model() -> onnx.ModelProto:
    module, _ = nets.vgg()
    return nets.export_onnx(module, torch.randn(*INPUT))


@pytest.fixture(scope="module")
def explain_model(plain_model) -> onnx.ModelProto:
    return export(plain_model).model


def _image() -> np.ndarray:
    return np.random.default_rng(0).uniform(-1, 1, INPUT).astype(np.float32)


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy


def _holds_no_weights(model: onnx.ModelProto) -> bool:
    """Only tensors too small to move (scalars, shapes) keep their data."""
    return all(len(t.raw_data) < EXTERNAL_THRESHOLD for t in model.graph.initializer)


def _logits(session, image: np.ndarray) -> np.ndarray:
    return session.run(["logits"], {"input": image})[0]


def test_the_held_model_keeps_no_weights_and_restores_byte_for_byte(plain_model):
    model = _copy(plain_model)
    held = hold_weights(model)
    assert held is not None
    assert _holds_no_weights(model) and not _holds_no_weights(plain_model)
    weights = sum(len(t.raw_data) for t in plain_model.graph.initializer)
    assert (held.path / held_weights.DATA_FILE).stat().st_size > 0.98 * weights
    assert held.restored(model).SerializeToString() == plain_model.SerializeToString()


def test_sessions_of_the_held_model_and_of_its_cuts_compute_what_the_whole_model_does(plain_model):
    model = _copy(plain_model)
    held = hold_weights(model)
    whole = make_session(plain_model.SerializeToString(), "cpu")
    image = _image()
    np.testing.assert_array_equal(_logits(held.session(model, "cpu", None, False), image), _logits(whole, image))
    stem = next(n.output[0] for n in plain_model.graph.node if n.op_type == "Relu")
    features = cut_model(plain_model, ["input"], stem).model
    activations = make_session(features.SerializeToString(), "cpu").run([stem], {"input": image})[0]
    head = held.session(cut_model(model, [stem], "logits").model, "cpu", None, False)
    np.testing.assert_allclose(head.run(["logits"], {stem: activations})[0], _logits(whole, image), rtol=1e-5,
                               atol=1e-5)
    left = sorted(p.name for p in held.path.iterdir())
    assert left == sorted([held_weights.DATA_FILE, scratch.LOCK_FILE])  # graph files go at once


def test_without_a_writable_temporary_folder_the_model_stays_whole(plain_model, monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(held_weights, "_write_data", refuse)
    model = _copy(plain_model)
    assert hold_weights(model) is None
    assert model.SerializeToString() == plain_model.SerializeToString()


def test_the_explainer_holds_the_graph_saves_the_whole_model_and_removes_its_folder(explain_model, tmp_path):
    explainer = Explainer(explain_model, provider="cpu")
    assert _holds_no_weights(explainer.model)
    explainer.save(tmp_path / "saved.cam.onnx")
    assert (tmp_path / "saved.cam.onnx").read_bytes() == explain_model.SerializeToString()
    folder = explainer._held_weights.path
    assert folder.is_dir() and folder.parent == Path(tempfile.gettempdir())
    del explainer
    gc.collect()
    assert not folder.exists()


@pytest.mark.parametrize("method", ["scorecam", "ablationcam"])
def test_multi_pass_cuts_of_the_held_model_give_the_maps_of_the_whole_one(plain_model, method, monkeypatch):
    image = _image()
    held = Explainer(plain_model, method=method, provider="cpu", scorecam_topk=8)
    assert held._held_weights is not None
    monkeypatch.setattr(explainer_module, "hold_weights", lambda model: None)  # the weights stay in memory
    whole = Explainer(plain_model, method=method, provider="cpu", scorecam_topk=8)
    assert whole._held_weights is None
    np.testing.assert_allclose(held.explain(image).cam, whole.explain(image).cam, atol=1e-6)

