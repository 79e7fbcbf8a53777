"""The demo model's maps point at the objects, and depend on the model's weights."""

import sys

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from onnxcam import Explainer
from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import shapes_data  # noqa: E402


@pytest.fixture(scope="module")
def fresh_images():
    """200 images the model has never seen (BGR, as decoded files are), labels and boxes."""
    return shapes_data.evaluation_batch(200)


def test_pointing_game(demo_model, fresh_images):
    images, labels, boxes = fresh_images
    explainer = Explainer(demo_model, provider="cpu")
    result = explainer.explain(list(images), target=labels)
    score = shapes_data.pointing_game(result.cam, boxes)
    assert score >= 0.90, f"pointing game {score:.3f} < 0.90"


def test_maps_depend_on_the_weights(demo_model, fresh_images):
    """Cascading randomisation (Adebayo et al.): random last-conv weights must change the maps."""
    images, labels, _ = fresh_images
    model = onnx.load(str(demo_model))
    last_conv = [n for n in model.graph.node if n.op_type == "Conv"][-1]
    weights = next(t for t in model.graph.initializer if t.name == last_conv.input[1])
    original = numpy_helper.to_array(weights)
    randomised = np.random.default_rng(0).standard_normal(original.shape).astype(np.float32) * original.std()
    weights.CopyFrom(numpy_helper.from_array(randomised, weights.name))
    trained = Explainer(demo_model, provider="cpu").explain(list(images[:50]), target=labels[:50]).cam
    random = Explainer(model, provider="cpu", preprocess=Explainer(demo_model).preprocess)
    random_cams = random.explain(list(images[:50]), target=labels[:50]).cam
    correlation = np.corrcoef(trained.reshape(50, -1).ravel(), random_cams.reshape(50, -1).ravel())[0, 1]
    assert correlation < 0.5, f"maps barely changed (correlation {correlation:.2f})"


VIT_MODEL = ROOT / "models" / "shapes_vit.onnx"


@pytest.mark.parametrize("method, floor", [("gradcam", 0.45), ("hirescam", 0.60)])
def test_vit_demo_pointing_game(fresh_images, method, floor):
    """The transformer demo (scripts/train_demo_vit.py) explained at its token layer; measured 0.545 and 0.700."""
    images, labels, boxes = fresh_images
    explainer = Explainer(VIT_MODEL, method=method, provider="cpu")
    assert explainer.layer == "/blocks/blocks.2/norm1/LayerNormalization_output_0"
    score = shapes_data.pointing_game(explainer.explain(list(images), target=labels).cam, boxes)
    assert score >= floor, f"{method} pointing game {score:.3f} < {floor}"
