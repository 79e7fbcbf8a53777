"""Score-CAM's shortcut: channels with constant maps share one masked pass, and the map stays the formula's."""

import cv2
import numpy as np
import onnxruntime as ort
from onnx import numpy_helper

from onnxcam import Explainer, export
from tests.reference import finish
from tests.reliability.models import classifier


def _with_dead_channels(dead=(1, 2)):
    model = classifier()
    weight = next(t for t in model.graph.initializer if t.name == "w")
    values = numpy_helper.to_array(weight).copy()
    values[list(dead)] = 0.0  # no bias: these channels are 0 everywhere after the ReLU
    weight.CopyFrom(numpy_helper.from_array(values, "w"))
    return model


def _session(model):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _reference(model, x, targets):
    """Score-CAM by its formula: one masked forward pass per channel, no sharing."""
    activations = _session(export(model, layer="relu", expose=["activations"]).model).run(["activations"], {"image": x})[0]
    plain, raw = _session(model), []
    for i, c in enumerate(targets):
        masks = np.stack([cv2.resize(a, (16, 16)) for a in activations[i]])
        low, high = masks.min(axis=(1, 2), keepdims=True), masks.max(axis=(1, 2), keepdims=True)
        masks = np.where(high > low, (masks - low) / np.where(high > low, high - low, 1), 0)
        logits = plain.run(None, {"image": (x[i:i + 1] * masks[:, None]).astype(np.float32)})[0].astype(np.float64)
        probabilities = np.exp(logits - logits.max(1, keepdims=True))
        weights = (probabilities / probabilities.sum(1, keepdims=True))[:, c]
        raw.append(np.einsum("c,chw->hw", weights, activations[i]))
    return np.stack([finish(r, 16, 16) for r in raw])


def test_constant_maps_share_one_masked_pass_and_keep_the_map():
    model = _with_dead_channels()
    explainer = Explainer(model, layer="relu", method="scorecam", provider="cpu")
    forwarded = []
    original = explainer._forward
    explainer._forward = lambda images: forwarded.append(len(images)) or original(images)
    x = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)
    got = explainer.explain(x, target=[0, 2])
    assert sum(forwarded) == 2 * 3  # per image: channels 0 and 3, and one pass for both dead ones
    np.testing.assert_allclose(got.cam, _reference(model, x, [0, 2]), rtol=0, atol=1e-5)
