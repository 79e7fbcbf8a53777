"""The Python API: inputs in every accepted form, targets, threads, providers."""

import logging
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from onnxcam import Explainer, InputError, TargetError, UnsupportedOpError, export, load_explain_model
from onnxcam.io.images import PRESETS
from tests.exporter_quirk_nets import tf2onnx_loop_recogniser


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


def test_a_preprocessing_size_other_than_the_models_names_both_fixes(demo_model, demo_images):
    explainer = Explainer(demo_model, preprocess={"size": [32, 32]})  # the demo model takes 64x64
    with pytest.raises(InputError, match=r"size 32x32 differs from the model's input size 64x64; give the model's "
                                         r"size \(--size HxW.*or fix the model's to yours with --input-shape"):
        explainer.explain(demo_images[:1])


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


def _batch(n=3):
    return np.random.default_rng(1).standard_normal((n, 3, 64, 64)).astype(np.float32)


@pytest.mark.parametrize("method, options", [("gradcam", {}), ("scorecam", {"scorecam_topk": 4})])
def test_io_binding_on_the_cpu_gives_the_same_maps(demo_model, method, options):
    plain = Explainer(demo_model, method=method, provider="cpu", **options)
    bound = Explainer(demo_model, method=method, provider="cpu", io_binding=True, **options)
    assert bound._session.io_binding and not plain._session.io_binding
    expected, got = plain.explain(_batch(), target=[0, 1, 2]), bound.explain(_batch(), target=[0, 1, 2])
    np.testing.assert_allclose(got.cam, expected.cam, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(got.target, [0, 1, 2])
    np.testing.assert_allclose(got.outputs["logits"], expected.outputs["logits"], rtol=0, atol=1e-6)


def test_device_outputs_are_ortvalues_equal_to_the_maps(explainer):
    import onnxruntime as ort

    expected = explainer.explain(_batch(), target=[2, 1, 0])
    kept = explainer.explain(_batch(), target=[2, 1, 0], device_outputs=True)
    assert isinstance(kept.cam, ort.OrtValue) and isinstance(kept.outputs["logits"], ort.OrtValue)
    assert kept.cam.device_name() == "cpu"  # no CUDA here: the values stay where the CPU session computed them
    np.testing.assert_array_equal(kept.cam.numpy(), expected.cam)
    np.testing.assert_array_equal(np.from_dlpack(kept.outputs["logits"]), expected.outputs["logits"])
    np.testing.assert_array_equal(kept.target, expected.target)
    np.testing.assert_array_equal(kept.scores, expected.scores)
    np.testing.assert_array_equal(kept.finite, expected.finite)
    assert kept.all_zero is None


def test_device_outputs_refused_where_the_maps_are_made_on_the_host(demo_model, tmp_path):
    import onnx

    from onnxcam import OnnxCamError
    from tests.reliability.models import classifier

    scorecam = Explainer(demo_model, method="scorecam", provider="cpu")
    with pytest.raises(OnnxCamError, match="device_outputs=True is for in-graph methods; scorecam"):
        scorecam.explain(_batch(1), device_outputs=True)
    path = tmp_path / "fixed.onnx"
    onnx.save(classifier(batch=2), str(path))
    fixed = Explainer(path, provider="cpu")
    image = np.zeros(fixed.input_shape[1:], np.float32)
    with pytest.raises(InputError, match="batch is fixed at 2: give 2 images at a time, not 3"):
        fixed.explain(np.stack([image] * 3), device_outputs=True)
    assert isinstance(fixed.explain(np.stack([image] * 2), device_outputs=True).cam.numpy(), np.ndarray)


def test_auto_where_no_gradient_reaches_the_layer_runs_ablation_cam_for_the_target(tmp_path):
    """An LSTM recogniser whose Loop reads the conv features by name: no gradient reaches them, so auto is
    Ablation-CAM (target-aware), the same maps as asking for it; a gradient method asked for still fails."""
    model = tf2onnx_loop_recogniser()
    auto = Explainer(model, provider="cpu")
    assert auto.method == "ablationcam"
    assert auto.contract.method_reason.startswith("auto: gradients reach no target layer (Loop node 'lstm_loop'")
    x = np.random.default_rng(0).uniform(0, 1, (2, 3, 8, 16)).astype(np.float32)
    maps = auto.explain(x).cam
    np.testing.assert_allclose(maps, Explainer(model, method="ablationcam", provider="cpu").explain(x).cam, atol=1e-6)
    first, last = (auto.explain(x, target=step).cam for step in (0, 15))
    assert np.abs(first - last).max() > 0.1  # the time step explained changes the map
    auto.save(tmp_path / "loop.cam.onnx")
    saved = Explainer(tmp_path / "loop.cam.onnx", provider="cpu")
    assert saved.method == "ablationcam" and np.allclose(saved.explain(x).cam, maps, atol=1e-6)
    with pytest.raises(UnsupportedOpError, match="no gradient rule for Loop node 'lstm_loop'"):
        Explainer(model, method="gradcam", provider="cpu")
