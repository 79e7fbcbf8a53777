"""Transformer token layers: the grid found, the automatic layer, gradients against torch autograd at an
early, middle and last block, Grad-CAM against pytorch-grad-cam's ViT recipe, every method on tokens."""

import io
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from onnxcam import Explainer, export
from onnxcam.methods import METHODS
from tests import transformer_nets as nets
from tests.reference import finish

PREFIX = {"vit": 1, "deit": 2, "swin": 0, "swin-grid": 0, "hybrid": 1}
TARGETS = np.array([3, 0, 4], np.int64)


def _onnx(module, exporter: str = "legacy") -> onnx.ModelProto:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "dynamo":  # torch.export + onnxscript (opset 18)
            pytest.importorskip("onnxscript", reason="the dynamo exporter needs onnxscript")
            program = torch.onnx.export(module, (torch.randn(2, 3, 32, 32),), dynamo=True, opset_version=18,
                                        input_names=["input"], output_names=["logits"], verbose=False,
                                        dynamic_shapes={"x": {0: torch.export.Dim("n", min=1, max=64)}})
            return program.model_proto
        buffer = io.BytesIO()
        torch.onnx.export(module, (torch.randn(1, 3, 32, 32),), buffer, dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "n"}, "logits": {0: "n"}})
        return onnx.load_from_string(buffer.getvalue())


@pytest.fixture(scope="module", params=[(a, x) for a in nets.ARCHITECTURES for x in ("legacy", "dynamo")],
                ids=lambda p: f"{p[0]}-{p[1]}")
def arch(request):
    name, exporter = request.param
    torch.manual_seed(0)
    module = nets.ARCHITECTURES[name]().eval()
    return name, module, _onnx(module, exporter), exporter


def _norm1(index: int, exporter: str = "legacy") -> str:
    """Block ``index``'s norm1 output as each exporter names it (dynamo numbers the norms in order)."""
    if exporter == "dynamo":
        return f"layer_norm_{2 * index}" if index else "layer_norm"
    return f"/blocks/blocks.{index}/norm1/LayerNormalization_output_0"


def _final_norm(module, exporter: str) -> str:
    return f"layer_norm_{2 * len(module.blocks)}" if exporter == "dynamo" else "/norm/LayerNormalization_output_0"


def _norm2(module, exporter: str) -> str:
    last = len(module.blocks) - 1
    return f"layer_norm_{2 * last + 1}" if exporter == "dynamo" else f"/blocks/blocks.{last}/norm2/LayerNormalization_output_0"


def _torch_norm1(module, x, index):
    """The output of block ``index``'s norm1 and ∂logit[target]/∂it, from torch."""
    saved = {}
    hook = module.blocks[index].norm1.register_forward_hook(lambda m, i, o: saved.update(a=o) or o.retain_grad())
    try:
        logits = module(x)
        logits[torch.arange(len(x)), torch.as_tensor(TARGETS)].sum().backward()
    finally:
        hook.remove()
    return saved["a"].detach().numpy(), saved["a"].grad.numpy()


def _gradcam_recipe(a, g, prefix, grid, size=32):
    """pytorch-grad-cam's reshape_transform (drop the prefix tokens, tokens → grid, NCHW), then Grad-CAM."""
    def reshape(t):
        if t.ndim == 4:  # a channels-last grid
            return t.transpose(0, 3, 1, 2)
        return t[:, prefix:].reshape(len(t), grid, grid, -1).transpose(0, 3, 1, 2)

    a, g = reshape(a), reshape(g)
    raw = np.einsum("nc,nchw->nhw", g.mean(axis=(2, 3)), a)
    return np.stack([finish(r, size, size) for r in raw])


def test_automatic_layer_is_the_last_eligible_norm(arch):
    """Class-token models: the last block's first norm (the last one before the last attention);
    mean-pooled ones (the Swin here): the final norm, whose every token reaches the score."""
    name, module, model, exporter = arch
    layer = export(model).plan.layer
    last = len(module.blocks) - 1
    assert layer.tensor == (_final_norm(module, exporter) if name.startswith("swin") else _norm1(last, exporter))
    if name == "swin-grid":  # channels-last grids are NHWC maps
        assert layer.layout == "NHWC" and layer.spatial == (8, 8)
    else:
        assert layer.layout == "tokens" and layer.grid == (8, 8) and layer.prefix == PREFIX[name]


def test_tokens_after_the_last_attention_are_not_eligible(arch):
    name, module, model, exporter = arch
    refused = {c.layer.tensor: c.why_not for c in export(model).plan.considered}
    norm2 = _norm2(module, exporter)
    if name == "swin-grid":
        return  # a 4-D grid: every position reaches the mean pool, as in a CNN
    if name == "swin":  # mean pooling mixes every token: the last norm2 still explains
        assert refused[norm2] == ""
    else:  # only the class token(s) reach the score after the last attention
        assert "no op mixes its tokens" in refused[norm2]


@pytest.mark.parametrize("block", ["first", "middle", "last"])
def test_gradients_and_gradcam_match_torch(arch, block):
    name, module, model, exporter = arch
    index = {"first": 0, "middle": len(module.blocks) // 2, "last": len(module.blocks) - 1}[block]
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    exported = export(model, layer=_norm1(index, exporter), expose=["activations", "gradients"])
    session = ort.InferenceSession(exported.model.SerializeToString(), providers=["CPUExecutionProvider"])
    cam, acts, grads = session.run(["cam", "activations", "gradients"], {"input": x.numpy(), "target": TARGETS})
    a, g = _torch_norm1(module, x, index)
    np.testing.assert_allclose(acts, a, rtol=1e-4, atol=1e-5)
    assert np.abs(g).max() > 0
    assert np.abs(grads - g).max() / np.abs(g).max() <= 1e-4
    np.testing.assert_allclose(cam, _gradcam_recipe(a, g, PREFIX[name], 8), atol=1e-4)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_runs_on_tokens(method):
    if method == "cam":
        pytest.skip("CAM needs a global-average-pool → linear head on a conv map")
    torch.manual_seed(0)
    model = _onnx(nets.ViT().eval())
    options = {"samples": 4} if method == "smoothgradcampp" else {"steps": 3} if method == "integrated-gradcam" else {}
    explainer = Explainer(model, method=method, provider="cpu", passes_batch=16, **options)
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    cam = explainer.explain(x, target=[1, 2]).cam
    assert cam.shape == (2, 32, 32) and np.isfinite(cam).all()
    assert cam.min() >= 0 and cam.max() <= 1 and all(c.max() > c.min() for c in cam)


def test_ablationcam_on_tokens_keeps_the_class_token():
    """Ablating a channel of the grid tokens leaves the class token as the model computed it."""
    torch.manual_seed(0)
    module = nets.ViT().eval()
    explainer = Explainer(_onnx(module), method="ablationcam", provider="cpu", passes_batch=8)
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    got = explainer.explain(x.numpy(), target=[2]).cam[0]
    block = module.blocks[-1]
    with torch.no_grad():
        tokens = module.blocks[:-1](module.embed(x))
        normed = block.norm1(tokens)

        def score(n1):
            y = tokens + block.attention(n1)
            y = y + block.mlp(block.norm2(y))
            return module.heads[0](module.norm(y)[:, 0])[0, 2]

        base = score(normed)
        drops = []
        for k in range(normed.shape[2]):
            ablated = normed.clone()
            ablated[:, 1:, k] = 0
            drops.append(float((base - score(ablated)) / base))
        grid = normed[0, 1:].numpy().reshape(8, 8, -1).transpose(2, 0, 1)
    expected = finish(np.einsum("c,chw->hw", np.array(drops), grid), 32, 32)
    np.testing.assert_allclose(got, expected, atol=2e-4)
