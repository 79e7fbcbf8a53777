"""Ablation-CAM and Score-CAM, run by the Explainer, against torch forward passes and NumPy."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from torch.nn import functional as F

from onnxcam import Explainer, OnnxCamError, export
from onnxcam.cli import cli
from tests import nets
from tests.reference import finish

TARGETS = np.array([3, 0], np.int64)


@pytest.fixture(scope="module")
def resnet():
    module, _ = nets.resnet()
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    return module, nets.export_onnx(module, torch.from_numpy(x[:1])), x


def _layer_tensor(source, module_name: str) -> str:
    """The ONNX tensor that torch module ``module_name`` outputs (the legacy exporter's naming)."""
    stage, block, relu = module_name.split(".")
    return next(n.output[0] for n in source.graph.node if n.name == f"/{stage}/{stage}.{block}/{relu}/Relu")


def _forward_with(module, x, module_name, edit=None):
    """The logits, and the layer's output as the torch module computes it (``edit`` may change it)."""
    captured = {}

    def hook(_m, _i, output):
        captured["a"] = output.detach().clone()
        return edit(output) if edit else None

    handle = dict(module.named_modules())[module_name].register_forward_hook(hook)
    try:
        with torch.no_grad():
            logits = module(torch.from_numpy(x))
    finally:
        handle.remove()
    return logits.numpy().astype(np.float64), captured["a"].numpy().astype(np.float64)


def _ablation_reference(module, x, module_name):
    """Ablation-CAM from full torch forward passes with channel k of the layer zeroed."""
    logits, a = _forward_with(module, x, module_name)
    raw = []
    for i, c in enumerate(TARGETS):
        y = logits[i, c]
        channels = a.shape[1]
        keep = (1 - torch.eye(channels))[:, :, None, None]  # copy k has channel k zeroed

        ablated, _ = _forward_with(module, np.repeat(x[i:i + 1], channels, axis=0), module_name,
                                   lambda out: out * keep)
        weights = (y - ablated[:, c]) / y
        raw.append(np.einsum("c,chw->hw", weights, a[i]))
    return np.stack([finish(r, 64, 64) for r in raw])


# layer3's output (a plain cut), and a ReLU inside a block, which the block's skip connection bypasses
@pytest.mark.parametrize("module_name", ["layer3.0.relu2", "layer1.0.relu1"])
@pytest.mark.parametrize("passes_batch", [5, 64])
def test_ablationcam_matches_full_forward_passes(resnet, module_name, passes_batch):
    module, source, x = resnet
    layer = _layer_tensor(source, module_name)
    explainer = Explainer(source, layer=layer, method="ablationcam", provider="cpu", passes_batch=passes_batch)
    got = explainer.explain(x, target=TARGETS)
    assert "cam" not in [o.name for o in explainer.model.graph.output]
    np.testing.assert_allclose(got.cam, _ablation_reference(module, x, module_name), rtol=0, atol=1e-4)


def _scorecam_reference(module, x, module_name, topk=None):
    logits, a = _forward_with(module, x, module_name)
    raw = []
    for i, c in enumerate(TARGETS):
        channels = np.arange(a.shape[1])
        if topk:
            channels = np.argsort(-a[i].var(axis=(1, 2)))[:topk]  # Faster Score-CAM: most varied maps
        up = F.interpolate(torch.from_numpy(a[i][channels])[None], size=(64, 64), mode="bilinear",
                           align_corners=False)[0].numpy()
        low, high = up.min(axis=(1, 2), keepdims=True), up.max(axis=(1, 2), keepdims=True)
        masks = np.where(high > low, (up - low) / np.where(high > low, high - low, 1), 0)
        with torch.no_grad():
            masked = module(torch.from_numpy((x[i:i + 1] * masks[:, None]).astype(np.float32)))
        weights = torch.softmax(masked.double(), dim=1)[:, c].numpy()
        raw.append(np.einsum("c,chw->hw", weights, a[i][channels]))
    return np.stack([finish(r, 64, 64) for r in raw])


@pytest.mark.parametrize("topk", [None, 4])
def test_scorecam_matches_torch(resnet, topk):
    module, source, x = resnet
    layer = _layer_tensor(source, "layer2.0.relu2")
    explainer = Explainer(source, layer=layer, method="scorecam", provider="cpu", passes_batch=7, scorecam_topk=topk)
    got = explainer.explain(x, target=TARGETS)
    np.testing.assert_allclose(got.cam, _scorecam_reference(module, x, "layer2.0.relu2", topk), rtol=0, atol=1e-4)


def test_multipass_methods_are_not_exported_alone(resnet, tmp_path):
    _, source, _ = resnet
    with pytest.raises(OnnxCamError, match="method 'scorecam' runs several passes; use onnxcam run or the Python API"):
        export(source, method="scorecam")
    path = tmp_path / "m.onnx"
    onnx.save(source, path)
    result = CliRunner().invoke(cli, ["export", str(path), "-o", str(tmp_path / "o.onnx"), "--method", "ablationcam"])
    assert result.exit_code == 1 and "runs several passes" in result.output
    with pytest.raises(OnnxCamError, match="one layer at a time"):
        Explainer(source, layer=["auto", _layer_tensor(source, "layer2.0.relu2")], method="ablationcam")
    with pytest.raises(OnnxCamError, match="unknown option"):
        Explainer(source, method="scorecam", topk=3)


def test_saved_runtime_explain_model_runs_again(resnet, tmp_path):
    _, source, x = resnet
    first = Explainer(source, method="scorecam", provider="cpu", scorecam_topk=6)
    path = tmp_path / "s.cam.onnx"
    first.save(path)
    again = Explainer(path, method="scorecam", provider="cpu", scorecam_topk=6)
    np.testing.assert_array_equal(again.explain(x).cam, first.explain(x).cam)
