"""Score-CAM's shortcuts: channels with constant maps share one masked pass, masks come from two matrix
products into a reused buffer, and the map stays the formula's."""

import cv2
import numpy as np
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from onnxcam import Explainer, export
from onnxcam.methods import scorecam
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


def _opencv_masks(activations, height, width):
    """The masks by their definition: OpenCV's bilinear resize per channel, then min-max (0 if constant)."""
    masks = []
    for channel in activations:
        up = cv2.resize(channel, (width, height), interpolation=cv2.INTER_LINEAR)
        low, high = up.min(), up.max()
        masks.append((up - low) / (high - low) if high > low else np.zeros_like(up))
    return np.stack(masks)


@pytest.mark.parametrize("source, size", [((7, 7), (224, 224)), ((13, 9), (64, 70)), ((1, 40), (48, 320)),
                                          ((7, 7), (200, 190)), ((8, 8), (4, 4))])
def test_masks_from_two_matrix_products_are_opencvs_resize(source, size):
    rng = np.random.default_rng(0)
    activations = np.maximum(rng.standard_normal((16, *source)), 0).astype(np.float32)
    activations[3] = 0.0
    activations[5] = 2.5
    activations[7] = 0.0
    activations[7].flat[rng.integers(activations[7].size)] = 1.0  # one active cell: a bump, not a constant
    masks = scorecam.channel_masks(activations, *size)
    np.testing.assert_allclose(masks, _opencv_masks(activations, *size), rtol=0, atol=1e-6)
    assert not masks[3].any() and not masks[5].any() and masks[7].max() == 1.0


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_masked_images_are_written_into_the_reused_buffer(layout):
    rng = np.random.default_rng(1)
    image = rng.standard_normal((3, 8, 6) if layout == "NCHW" else (8, 6, 3)).astype(np.float16)
    masks = rng.uniform(0, 1, (2, 8, 6)).astype(np.float32)
    buffer = np.empty((4, *image.shape), np.float16)
    images = scorecam.masked_images(image, masks, layout, buffer)
    expected = image[None] * (masks[:, None] if layout == "NCHW" else masks[..., None])
    assert images.dtype == np.float16 and images.shape == (2, *image.shape) and np.shares_memory(images, buffer)
    np.testing.assert_array_equal(images, expected.astype(np.float16))
