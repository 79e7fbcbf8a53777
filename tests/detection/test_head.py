"""A YOLOv8 head as ultralytics exports it (levels joined, then split again), float and deployed: statically
quantised (QDQ; QOperator, explained through its float twin) and float16 with float32 inputs and outputs.
The deployed heads are read through the ops that keep values (requantisations, Casts), so each gets its
float model's plan: the class logits rebuilt from the class maps, and the neck outputs as layers."""

from __future__ import annotations

import logging

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static
from onnxruntime.transformers.float16 import convert_float_to_float16

from onnxcam import Explainer, export
from onnxcam.detection.boxes import box_weights
from onnxcam.detection.head import CLASS_LOGITS, Head
from onnxcam.headmodel import cut_model
from tests.detection import detector_nets
from tests.detection.detector_nets import STRIDES, TinyDetector

DEPLOYED = ("qdq", "qoperator", "float16")
# largest error of a deployed model's layer or class logit, as a fraction of the float model's largest value
QUANTISATION_ERROR = 0.05


def _images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (n, 3, 32, 32)).astype(np.float32)


def _detector() -> TinyDetector:
    """The joined YOLOv8 with convolutions of twice the gain and class logits of five times the range: class
    logits that differ from anchor to anchor (the plain tiny net's are nearly its bias everywhere)."""
    module = TinyDetector("yolov8", joined=True)
    with torch.no_grad():
        for conv in module.modules():
            if isinstance(conv, torch.nn.Conv2d):
                conv.weight.mul_(2)
        for branch in module.cls:
            branch[-1].weight.mul_(5)
    return module


class _Calibration(CalibrationDataReader):
    def __init__(self):
        self._batches = iter([{"image": _images(1, seed)} for seed in range(8)])

    def get_next(self):
        return next(self._batches, None)


@pytest.fixture(scope="module")
def yolov8(tmp_path_factory):
    """(torch module, {"float": path, "qdq": path, "qoperator": path, "float16": path})."""
    folder = tmp_path_factory.mktemp("yolov8")
    module = _detector()
    paths = {kind: str(folder / f"{kind}.onnx") for kind in ("float", *DEPLOYED)}
    onnx.save(detector_nets.export(module), paths["float"])
    root, level = logging.getLogger(), logging.getLogger().level
    root.setLevel(logging.ERROR)  # the quantiser's advice on pre-processing, logged on the root logger
    try:
        for kind, format_ in (("qdq", QuantFormat.QDQ), ("qoperator", QuantFormat.QOperator)):
            quantize_static(paths["float"], paths[kind], _Calibration(), quant_format=format_)
    finally:
        root.setLevel(level)
    onnx.save(convert_float_to_float16(onnx.load(paths["float"]), keep_io_types=True), paths["float16"])
    return module, paths


def _relative_error(got: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(got.astype(np.float64) - expected).max() / np.abs(expected).max())


@pytest.mark.parametrize("kind", ["float", *DEPLOYED])
def test_the_class_logits_are_rebuilt_from_the_class_maps(yolov8, kind):
    """S is the class logits (N, C, A) read off the per-level class maps, as in the float model: a deployed
    head's Concat, Reshape, Split and Sigmoid are found through its requantisations and Casts."""
    module, paths = yolov8
    explain = export(paths[kind])
    assert explain.plan.score == CLASS_LOGITS and explain.plan.output_activation == "Sigmoid"
    images = _images(2, seed=1)
    got = ort.InferenceSession(explain.model.SerializeToString()).run([CLASS_LOGITS], {"image": images})[0]
    with torch.no_grad():
        expected = module.logits(torch.from_numpy(images))[0].transpose(1, 2).numpy()
    assert _relative_error(got, expected) < (1e-6 if kind == "float" else QUANTISATION_ERROR)


@pytest.mark.parametrize("score", ["logit", "probability"])
@pytest.mark.parametrize("kind", ["float", *DEPLOYED])
def test_the_automatic_layers_are_the_neck_outputs(yolov8, kind, score):
    """One layer per level, holding the neck's output (or its dequantised copy) — never the level's joined
    box and class map, which the probability score reads (through the box branch's DFL convolution)."""
    module, paths = yolov8
    explain = export(paths[kind], score=score)
    layers = [plan.layer.tensor for plan in explain.plans]
    assert len(layers) == len(STRIDES)
    images = _images(2, seed=1)
    cut = cut_model(explain.model, ["image"], layers)
    got = ort.InferenceSession(cut.model.SerializeToString()).run(layers, {"image": images})
    with torch.no_grad():
        expected = [t.numpy() for t in module.features(torch.from_numpy(images))]
    for a, b in zip(got, expected):
        assert a.shape == b.shape
        assert _relative_error(a, b) < (1e-6 if kind == "float" else QUANTISATION_ERROR)


@pytest.mark.parametrize("kind", DEPLOYED)
def test_a_deployed_yolov8_explains_its_boxes_as_the_float_model_does(yolov8, kind):
    """The boxes come from the deployed model's own output, each scored by its class logit (not the logit of
    a probability requantised with the box coordinates' scale), with maps like the float model's."""
    module, paths = yolov8
    images = _images(2, seed=1)
    explainer, reference = Explainer(paths[kind]), Explainer(paths["float"])
    result = explainer.explain_boxes(images, min_score=0.5, max_boxes=4)
    head = Head.from_json(reference.contract.detection)
    with torch.no_grad():
        logits = module.logits(torch.from_numpy(images))[0].numpy()
    for n, found in enumerate(result.images):
        assert len(found.boxes) == 4
        expected = logits[n, found.boxes.anchors, found.boxes.classes]
        np.testing.assert_allclose(found.scores, expected, atol=QUANTISATION_ERROR * np.abs(logits).max())
        weights = box_weights(head, found.boxes, result.anchors)
        for cam, w in zip(found.maps, weights):
            float_cam = reference.explain(images[n:n + 1], target_weights=w[None]).cam[0]
            assert np.corrcoef(cam.ravel(), float_cam.ravel())[0, 1] > 0.9


def test_the_twin_check_weighs_a_deployed_heads_scores_apart_from_its_boxes(yolov8, tmp_path):
    """The integer model's output joins box pixels and probabilities under one scale; made 8x coarser, its
    probabilities round to 0 or 1 while its boxes move by a pixel at most. Over the whole output the
    boxes drown that (a relative difference under 0.1); the scored columns alone show it."""
    _, paths = yolov8
    model = onnx.load(paths["qoperator"])
    scale = next(t for t in model.graph.initializer if t.name == "detections_scale")
    scale.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(scale) * 8, scale.name))
    coarse = tmp_path / "coarse.onnx"
    onnx.save(model, coarse)
    images = _images(2, seed=1)
    explainer = Explainer(str(coarse))
    explainer.explain_boxes(images, min_score=0.5, max_boxes=2)
    check = explainer.twin_check
    assert check.checked and check.large and check.relative_difference > 0.3
    session = ort.InferenceSession(str(coarse), providers=["CPUExecutionProvider"])
    integer = session.run(["detections"], {"image": images})[0]
    twin = ort.InferenceSession(explainer.full_model().SerializeToString(), providers=["CPUExecutionProvider"]).run(
        ["detections"], {"image": images})[0]
    whole = np.sqrt(np.mean((integer - twin) ** 2)) / np.sqrt(np.mean(twin ** 2))
    assert whole < 0.1  # what the check saw before it split the columns


def test_a_detector_labels_its_classes_with_ultralytics_names(yolov8, tmp_path):
    _, paths = yolov8
    model = onnx.load(paths["float"])
    onnx.helper.set_model_props(model, {"names": "{0: 'person', 1: 'car', 2: 'dog'}"})
    named = tmp_path / "named.onnx"
    onnx.save(model, named)
    explainer = Explainer(str(named))
    assert [explainer.label(c) for c in range(3)] == ["person", "car", "dog"] and explainer.labels_in_model
