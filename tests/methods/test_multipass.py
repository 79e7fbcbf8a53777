"""The runtime methods (Ablation-CAM, Score-CAM, Smooth Grad-CAM++, Integrated Grad-CAM), run by the
Explainer, against NumPy references built from separately run torch or ONNX Runtime passes."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner
from torch.nn import functional as F

from onnxcam import Explainer, OnnxCamError, export
from onnxcam.cli import cli
from onnxcam.graph import GraphView
from onnxcam.plan import make_plan
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


def _score_masks(a, height, width):
    """Score-CAM's masks from (C, h, w) activations: torch bilinear upsampling, min-max per channel."""
    up = F.interpolate(torch.from_numpy(a)[None], size=(height, width), mode="bilinear", align_corners=False)[0].numpy()
    low, high = up.min(axis=(1, 2), keepdims=True), up.max(axis=(1, 2), keepdims=True)
    return np.where(high > low, (up - low) / np.where(high > low, high - low, 1), 0)


def _scorecam_reference(module, x, module_name, topk=None):
    logits, a = _forward_with(module, x, module_name)
    raw = []
    for i, c in enumerate(TARGETS):
        channels = np.arange(a.shape[1])
        if topk:
            channels = np.argsort(-a[i].var(axis=(1, 2)))[:topk]  # Faster Score-CAM: most varied maps
        masks = _score_masks(a[i][channels], 64, 64)
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


# --- Smooth Grad-CAM++ and Integrated Grad-CAM: torch autograd at each noisy copy / path point --------
def _activations_and_gradients(module, x, module_name, targets):
    """A and ∂logit_target/∂A at the layer, by torch autograd, for a batch x with one target per row."""
    captured = {}

    def hook(_m, _i, output):
        output.retain_grad()
        captured["a"] = output

    handle = dict(module.named_modules())[module_name].register_forward_hook(hook)
    try:
        logits = module(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
        logits[torch.arange(len(x)), torch.from_numpy(np.asarray(targets))].sum().backward()
    finally:
        handle.remove()
    a = captured["a"]
    return a.detach().numpy().astype(np.float64), a.grad.numpy().astype(np.float64)


def _gradcampp_of_copies(a, g):
    """Grad-CAM++'s raw map from one image's A (C, h, w) and its copies' gradients G (n, C, h, w)."""
    d1, d2, d3 = (np.mean(g ** p, axis=0) for p in (1, 2, 3))
    denominator = 2 * d2 + d3 * a.sum(axis=(1, 2), keepdims=True)
    alpha = np.divide(d2, denominator, out=np.zeros_like(d2), where=denominator != 0)
    return np.einsum("c,chw->hw", (alpha * np.maximum(d1, 0)).sum(axis=(1, 2)), a)


def _smooth_gradcampp_reference(module, x, module_name, samples, noise, seed):
    raw = []
    for i, c in enumerate(TARGETS):
        sigma = noise * (x[i].max() - x[i].min())
        generator = np.random.default_rng(seed)  # documented: restarts for every image
        copies = np.stack([x[i] + generator.standard_normal(x[i].shape) * sigma for _ in range(samples)])
        _, g = _activations_and_gradients(module, copies, module_name, [c] * samples)
        a, _ = _activations_and_gradients(module, x[i:i + 1], module_name, [c])
        raw.append(_gradcampp_of_copies(a[0], g))
    return np.stack([finish(r, 64, 64) for r in raw])


@pytest.mark.parametrize("samples, passes_batch", [(3, 2), (4, 64)])
def test_smoothgradcampp_matches_torch(resnet, samples, passes_batch):
    module, source, x = resnet
    layer = _layer_tensor(source, "layer2.0.relu2")
    explainer = Explainer(source, layer=layer, method="smoothgradcampp", provider="cpu", passes_batch=passes_batch,
                          samples=samples, noise=0.2, seed=7)
    got = explainer.explain(x, target=TARGETS)
    want = _smooth_gradcampp_reference(module, x, "layer2.0.relu2", samples, 0.2, 7)
    np.testing.assert_allclose(got.cam, want, rtol=0, atol=1e-4)


def test_smoothgradcampp_without_noise_is_gradcampp(resnet):
    _, source, x = resnet
    layer = _layer_tensor(source, "layer3.0.relu2")
    smooth = Explainer(source, layer=layer, method="smoothgradcampp", provider="cpu", samples=2, noise=0.0)
    plain = Explainer(source, layer=layer, method="gradcampp", provider="cpu")
    np.testing.assert_allclose(smooth.explain(x, target=TARGETS).cam, plain.explain(x, target=TARGETS).cam,
                               rtol=0, atol=1e-5)


def test_smoothgradcampp_noise_is_seeded_per_image(resnet):
    _, source, x = resnet
    layer = _layer_tensor(source, "layer2.0.relu2")  # (the last stage's gradient is constant: GAP → linear)

    def explain(seed, images, targets):
        explainer = Explainer(source, layer=layer, method="smoothgradcampp", provider="cpu", samples=3, seed=seed)
        return explainer.explain(images, target=targets).cam

    first = explain(1, x, TARGETS)
    np.testing.assert_array_equal(explain(1, x, TARGETS), first)  # repeats
    np.testing.assert_array_equal(explain(1, x[1:], TARGETS[1:])[0], first[1])  # whatever the batch
    assert np.abs(explain(2, x, TARGETS) - first).max() > 1e-3  # another seed, other noise


def _summed_gradcam(a, g):
    """Σ over path points of ReLU(Grad-CAM) from their A and G (M, C, h, w)."""
    return np.maximum(np.einsum("mc,mchw->mhw", g.mean(axis=(2, 3)), a), 0).sum(axis=0)


def _integrated_gradcam_reference(module, x, module_name, steps, baseline):
    raw = []
    for i, c in enumerate(TARGETS):
        points = np.stack([baseline + m / steps * (x[i] - baseline) for m in range(1, steps + 1)])
        raw.append(_summed_gradcam(*_activations_and_gradients(module, points, module_name, [c] * steps)))
    return np.stack([finish(r, 64, 64) for r in raw])


@pytest.mark.parametrize("baseline, steps, passes_batch", [("zero", 5, 3), ("black", 3, 64), ("black", 1, 1)])
def test_integrated_gradcam_matches_torch(resnet, baseline, steps, passes_batch):
    module, source, x = resnet
    layer = _layer_tensor(source, "layer2.0.relu2")
    explainer = Explainer(source, layer=layer, method="integrated-gradcam", provider="cpu", preprocess="imagenet",
                          passes_batch=passes_batch, steps=steps, baseline=baseline)
    got = explainer.explain(x, target=TARGETS)
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    image = np.zeros(x.shape[1:]) if baseline == "zero" else np.broadcast_to((-mean / std)[:, None, None], x.shape[1:])
    want = _integrated_gradcam_reference(module, x, "layer2.0.relu2", steps, image)
    np.testing.assert_allclose(got.cam, want, rtol=0, atol=1e-4)


def test_integrated_gradcam_in_one_step_is_gradcam(resnet):
    _, source, x = resnet
    layer = _layer_tensor(source, "layer2.0.relu2")
    integrated = Explainer(source, layer=layer, method="integrated-gradcam", provider="cpu", steps=1)
    plain = Explainer(source, layer=layer, method="gradcam", provider="cpu")
    np.testing.assert_allclose(integrated.explain(x, target=TARGETS).cam, plain.explain(x, target=TARGETS).cam,
                               rtol=0, atol=1e-5)


@pytest.mark.parametrize("options, message", [
    ({"samples": 0}, "samples must be at least 1"),
    ({"steps": 0}, "steps must be at least 1"),
    ({"noise": -0.1}, "noise must be 0 or more"),
    ({"baseline": "grey"}, "unknown baseline 'grey'; choose one of: black, zero"),
])
def test_bad_run_options(resnet, options, message):
    _, source, _ = resnet
    with pytest.raises(OnnxCamError, match=message):
        Explainer(source, method="smoothgradcampp", **options)


# --- the runtime methods on other architectures: NumPy from separately run ORT passes -------------
def _separate_passes(source, layer):
    """x, targets → (A, G) at ``layer``, each call one separate run of a Grad-CAM explain model."""
    model = export(source, layer=layer, expose=["activations", "gradients"]).model
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    input_name = next(i.name for i in model.graph.input if i.name != "target")

    def run(x, targets):
        a, g = session.run(["activations", "gradients"], {input_name: x.astype(np.float32),
                                                          "target": np.asarray(targets, np.int64)})
        return a.astype(np.float64), g.astype(np.float64)
    return run


@pytest.mark.parametrize("arch", ["mobilenet_v2", "densenet", "efficientnet", "convnext"])
def test_smooth_and_integrated_on_other_architectures(arch):
    spec = nets.ARCHITECTURES[arch]
    module, _ = spec.build()
    source = nets.export_onnx(module, torch.zeros(1, *spec.input_shape))
    candidates = [c for c in make_plan(GraphView(source)).candidates if c.layout == "NCHW"]  # as the reference
    layer = candidates[len(candidates) // 2].tensor  # a middle layer: its gradient depends on the input
    x = np.random.default_rng(1).standard_normal((2, *spec.input_shape)).astype(np.float32)
    targets = np.array([1, 2])
    passes = _separate_passes(source, layer)
    height, width = spec.input_shape[1:]

    smooth = Explainer(source, layer=layer, method="smoothgradcampp", provider="cpu", samples=3, noise=0.1, seed=3)
    integrated = Explainer(source, layer=layer, method="integrated-gradcam", provider="cpu", steps=4,
                           baseline="zero", passes_batch=5)
    smooth_raw, integrated_raw = [], []
    for i, c in enumerate(targets):
        a, _ = passes(x[i:i + 1], [c])
        generator = np.random.default_rng(3)
        sigma = 0.1 * (x[i].max() - x[i].min())
        _, g = passes(np.stack([x[i] + generator.standard_normal(x[i].shape) * sigma for _ in range(3)]), [c] * 3)
        smooth_raw.append(_gradcampp_of_copies(a[0], g))
        integrated_raw.append(_summed_gradcam(*passes(np.stack([m / 4 * x[i] for m in range(1, 5)]), [c] * 4)))
    for explainer, raw in ((smooth, smooth_raw), (integrated, integrated_raw)):
        want = np.stack([finish(r, height, width) for r in raw])
        np.testing.assert_allclose(explainer.explain(x, target=targets).cam, want, rtol=0, atol=1e-4)


def _with_channel_keep(source, layer):
    """The model with the layer's tensor multiplied by an extra input ``keep`` (N, C, 1, 1)."""
    model = onnx.ModelProto()
    model.CopyFrom(source)
    for node in model.graph.node:
        node.input[:] = [f"{layer}.kept" if name == layer else name for name in node.input]
    model.graph.node.append(onnx.helper.make_node("Mul", [layer, "keep"], [f"{layer}.kept"]))
    model.graph.input.append(onnx.helper.make_tensor_value_info("keep", onnx.TensorProto.FLOAT, None))
    return model


def _session(model):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("arch", ["mobilenet_v2", "densenet", "efficientnet", "convnext"])
def test_ablation_and_score_cam_on_other_architectures(arch):
    spec = nets.ARCHITECTURES[arch]
    module, _ = spec.build()
    source = nets.export_onnx(module, torch.zeros(1, *spec.input_shape))
    candidates = [c for c in make_plan(GraphView(source)).candidates if c.layout == "NCHW"]
    layer = candidates[len(candidates) // 2].tensor
    x = np.random.default_rng(2).standard_normal((2, *spec.input_shape)).astype(np.float32)
    targets = np.array([1, 2])
    height, width = spec.input_shape[1:]
    plain, kept = _session(source), _session(_with_channel_keep(source, layer))
    input_name = source.graph.input[0].name
    logits = plain.run(None, {input_name: x})[0].astype(np.float64)
    activations, _ = _separate_passes(source, layer)(x, targets)

    ablation_raw, score_raw = [], []
    for i, c in enumerate(targets):
        a = activations[i]
        channels = a.shape[0]
        keep = (1 - np.eye(channels, dtype=np.float32))[:, :, None, None]  # copy k has channel k zeroed
        ablated = kept.run(None, {input_name: np.repeat(x[i:i + 1], channels, axis=0), "keep": keep})[0]
        y = logits[i, c]
        ablation_raw.append(np.einsum("c,chw->hw", (y - ablated[:, c]) / y, a))
        masks = _score_masks(a, height, width)
        masked = plain.run(None, {input_name: (x[i:i + 1] * masks[:, None]).astype(np.float32)})[0]
        score_raw.append(np.einsum("c,chw->hw", torch.softmax(torch.from_numpy(masked).double(), 1)[:, c].numpy(), a))
    for method, raw in (("ablationcam", ablation_raw), ("scorecam", score_raw)):
        explainer = Explainer(source, layer=layer, method=method, provider="cpu", passes_batch=16)
        want = np.stack([finish(r, height, width) for r in raw])
        np.testing.assert_allclose(explainer.explain(x, target=targets).cam, want, rtol=0, atol=1e-4, err_msg=method)
