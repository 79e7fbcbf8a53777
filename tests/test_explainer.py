"""The Python API: inputs in every accepted form, targets, threads, providers."""

import logging
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from onnxcam import Explainer, InputError, TargetError, export, load_explain_model
from onnxcam.io.images import PRESETS


@pytest.fixture(scope="module")
def explainer(demo_model):
    return Explainer(demo_model, provider="cpu")


def test_paths_bytes_and_arrays_give_the_same_maps(explainer, demo_images):
    from_paths = explainer.explain(demo_images)
    from_bytes = explainer.explain([p.read_bytes() for p in demo_images])
    from_arrays = explainer.explain(from_paths.images)
    batch, _ = explainer.prepare(demo_images)
    from_batch = explainer.explain(batch)
    for other in (from_bytes, from_arrays, from_batch):
        np.testing.assert_array_equal(other.cam, from_paths.cam)
        np.testing.assert_array_equal(other.target, from_paths.target)
    assert from_paths.cam.shape == (len(demo_images), 64, 64)
    assert from_batch.images is None and len(from_paths.images) == len(demo_images)


def test_sidecar_preprocessing_and_labels_are_used(explainer):
    assert explainer.preprocess.source == "sidecar shapes.json"
    assert explainer.preprocess.mean == (0.5, 0.5, 0.5)
    assert explainer.labels == ["circle", "square", "triangle", "cross"]


def test_targets(explainer, demo_images):
    top1 = explainer.explain(demo_images[:2])
    chosen = explainer.explain(demo_images[:2], target=[3, -1])
    assert chosen.target.tolist() == [3, int(top1.target[1])]
    np.testing.assert_allclose(chosen.scores, chosen.outputs["logits"][[0, 1], chosen.target], rtol=1e-6)
    assert explainer.explain(demo_images[:2], target=2).target.tolist() == [2, 2]
    with pytest.raises(TargetError, match="out of range"):
        explainer.explain(demo_images[:1], target=4)
    with pytest.raises(TargetError, match="one per sample"):
        explainer.explain(demo_images[:2], target=[1, 2, 3])


def test_bad_inputs(explainer, tmp_path):
    with pytest.raises(InputError, match="expects"):
        explainer.explain(np.zeros((1, 3, 32, 32), np.float32))
    with pytest.raises(InputError, match="cannot decode"):
        explainer.explain([b"garbage"])
    with pytest.raises(InputError, match="cannot read"):
        explainer.explain([tmp_path / "missing.png"])


def test_one_explainer_serves_several_threads(explainer, demo_images):
    expected = [explainer.explain([p]).cam for p in demo_images]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda p: explainer.explain([p]).cam, demo_images * 4))
    for i, cam in enumerate(results):
        np.testing.assert_array_equal(cam, expected[i % len(demo_images)])


def test_explain_model_is_used_as_it_is(demo_model, demo_images, tmp_path):
    path = tmp_path / "shapes.cam.onnx"
    export(demo_model).save(path)
    assert load_explain_model(path).metadata_props
    direct = Explainer(path, provider="cpu", preprocess=Explainer(demo_model).preprocess)
    assert direct.export_seconds == 0.0
    np.testing.assert_array_equal(direct.explain(demo_images).cam, Explainer(demo_model).explain(demo_images).cam)
    with pytest.raises(Exception, match="not an onnxcam explain model"):
        load_explain_model(demo_model)


def test_cuda_request_falls_back_to_cpu_with_a_reason(demo_model, caplog):
    logger = logging.getLogger("onnxcam")  # the CLI stops propagation to the root logger
    logger.addHandler(caplog.handler)
    try:
        explainer = Explainer(demo_model, provider="cuda")
    finally:
        logger.removeHandler(caplog.handler)
    if explainer.provider == "cuda":
        pytest.skip("a usable GPU is present")
    assert explainer.provider == "cpu"
    assert "CUDA was asked for but cannot be used" in caplog.text


def test_presets_are_sane():
    assert PRESETS["imagenet"].mean == (0.485, 0.456, 0.406)
    assert PRESETS["caffe"].color == "BGR"


def test_a_dynamic_size_model_is_explained_at_the_preprocessing_size(demo_images):
    """A CNN exported with dynamic height and width: the pre-processing size fixes its input (the Conv
    gradients need static spatial dims); without one the error says how to fix the size."""
    import io
    import warnings

    import torch
    from torch import nn

    from onnxcam.errors import ModelError

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, stride=2, padding=1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3)).eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(net, (torch.zeros(1, 3, 32, 32),), buffer, dynamo=False, opset_version=17,
                          input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": {0: "n", 2: "h", 3: "w"}, "logits": {0: "n"}})
    model = buffer.getvalue()
    result = Explainer(model, preprocess={"size": [40, 48]}).explain(demo_images[:2])
    assert result.cam.shape == (2, 40, 48) and result.cam.max() == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ModelError, match="--input-shape"):
        Explainer(model, layer="/1/Relu_output_0")
