"""Guided backpropagation and Guided Grad-CAM against torch (hooks that clamp the ReLUs' gradients at 0)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from onnxcam import export
from onnxcam.autodiff.emitter import Emitter
from onnxcam.graph import GraphView
from onnxcam.targets import TaskOptions, choose_target, emit_target
from onnxcam.methods.guided import guided_input_gradient
from tests import nets
from tests.reference import gradcam, minmax

TARGETS = np.array([3, 0, 7], np.int64)


def _source(arch: str):
    spec = nets.ARCHITECTURES[arch]
    module, _ = spec.build()
    x = np.random.default_rng(0).standard_normal((3, *spec.input_shape)).astype(np.float32)
    return module, nets.export_onnx(module, torch.from_numpy(x[:1])), x


def _torch_guided(module: nn.Module, x: np.ndarray) -> np.ndarray:
    """∂logit[target]/∂x with every ReLU/ReLU6's input gradient clamped at 0 (torch's own rules otherwise)."""
    handles = [m.register_full_backward_hook(lambda _m, grad_in, _g: (grad_in[0].clamp(min=0),))
               for m in module.modules() if isinstance(m, (nn.ReLU, nn.ReLU6))]
    try:
        images = torch.from_numpy(x).requires_grad_(True)
        logits = module(images)
        (grad,) = torch.autograd.grad(logits[torch.arange(len(x)), torch.from_numpy(TARGETS)].sum(), images)
    finally:
        for handle in handles:
            handle.remove()
    return grad.numpy()


def _onnx_guided_gradient(source: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """The raw guided gradient the engine emits with the guided ReLU/Clip overrides."""
    model = onnx.ModelProto()
    model.CopyFrom(source)
    view = GraphView(model)
    emit = Emitter(view)
    target = emit_target(emit, choose_target(view, "input", kind="probability"), TaskOptions())
    gradient = guided_input_gradient(emit, target.seeds, "input")
    model.graph.node.extend(emit.nodes)
    model.graph.initializer.extend(emit.initializers)
    model.graph.input.append(onnx.helper.make_tensor_value_info("target", onnx.TensorProto.INT64, ["n"]))
    model.graph.input.append(onnx.helper.make_tensor_value_info("target_weights", onnx.TensorProto.FLOAT, [1, 1]))
    model.graph.output.append(onnx.helper.make_tensor_value_info(gradient, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    unfed = np.full((1, 1), np.nan, np.float32)
    return session.run([gradient], {"input": x, "target": TARGETS, "target_weights": unfed})[0]


def _saliency(gradient: np.ndarray) -> np.ndarray:
    return np.stack([minmax(np.abs(g).max(axis=0)) for g in gradient.astype(np.float64)])


@pytest.mark.parametrize("arch", ["resnet", "vgg", "mobilenet_v2"])  # ReLU; ReLU + Flatten head; ReLU6 (Clip)
def test_guided_gradient_matches_torch(arch):
    module, source, x = _source(arch)
    expected = _torch_guided(module, x)
    got = _onnx_guided_gradient(source, x)
    assert np.abs(got - expected).max() <= 1e-4 * np.abs(expected).max()
    ordinary = torch.from_numpy(x).requires_grad_(True)
    (plain,) = torch.autograd.grad(module(ordinary)[torch.arange(3), torch.from_numpy(TARGETS)].sum(), ordinary)
    assert np.abs(plain.numpy() - expected).max() > 1e-2 * np.abs(expected).max()  # guided really differs


@pytest.mark.parametrize("arch", ["resnet", "mobilenet_v2"])
def test_guided_backprop_map_matches_torch(arch):
    module, source, x = _source(arch)
    session = ort.InferenceSession(export(source, method="guided-backprop").model.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    (cam,) = session.run(["cam"], {"input": x, "target": TARGETS})
    np.testing.assert_allclose(cam, _saliency(_torch_guided(module, x)), rtol=0, atol=1e-4)


@pytest.mark.parametrize("arch", ["resnet", "vgg"])
def test_guided_gradcam_matches_torch_times_gradcam(arch):
    module, source, x = _source(arch)
    model = export(source, method="guided-gradcam", expose=["activations", "gradients"]).model
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    cam, acts, grads = session.run(["cam", "activations", "gradients"], {"input": x, "target": TARGETS})
    height, width = x.shape[2:]
    upsampled = gradcam(acts, grads, height, width)
    expected = _saliency(_torch_guided(module, x) * upsampled[:, None])
    np.testing.assert_allclose(cam, expected, rtol=0, atol=1e-4)
