"""The model-randomisation check flags maps that ignore the model, and passes Grad-CAM on the demo."""

import numpy as np
import onnx
from onnx import numpy_helper

from onnxcam import Explainer
from onnxcam.evaluation.sanity import randomised_model, sanity_check


def test_randomised_model_redraws_weights_only(demo_model):
    model = onnx.load(str(demo_model))
    randomised = randomised_model(model, seed=1)
    changed, kept = 0, 0
    for before, after in zip(model.graph.initializer, randomised.graph.initializer):
        a, b = numpy_helper.to_array(before), numpy_helper.to_array(after)
        assert a.shape == b.shape and a.dtype == b.dtype
        if a.ndim >= 2 and a.dtype.kind == "f":
            assert not np.array_equal(a, b)
            assert 0.5 < b.std() / a.std() < 2
            changed += 1
        else:
            np.testing.assert_array_equal(a, b)
            kept += 1
    assert changed >= 4 and kept >= 1
    assert numpy_helper.to_array(model.graph.initializer[0]).std() > 0  # the original is untouched


def test_a_method_that_ignores_the_model_is_flagged(demo_model):
    blob = np.exp(-((np.arange(64)[:, None] - 20.0) ** 2 + (np.arange(64)[None] - 40.0) ** 2) / 50.0)

    def ignoring_maps(model):  # an "explanation" that never looks at the model
        return np.stack([blob, blob * 0.5])

    result = sanity_check(ignoring_maps, onnx.load(str(demo_model)))
    assert result.spearman == [1.0, 1.0] and result.flagged


def test_gradcam_maps_change_with_the_weights(demo_model, demo_images):
    preprocess = Explainer(demo_model, provider="cpu").preprocess

    def gradcam_maps(model):
        return Explainer(model, provider="cpu", preprocess=preprocess).explain(list(demo_images), target=0).cam

    result = sanity_check(gradcam_maps, onnx.load(str(demo_model)))
    assert not result.flagged, result.spearman
    assert result.mean < 0.5
