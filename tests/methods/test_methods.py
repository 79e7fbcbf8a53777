"""Every CAM method in the graph against its NumPy reference, CAM's head detection, and the CLI per method."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner
from onnx import helper

from onnxcam import ModelError, export
from onnxcam.autodiff.emitter import Emitter
from onnxcam.cli import cli
from onnxcam.graph import GraphView
from onnxcam.layers import Layer
from onnxcam.methods import METHODS
from onnxcam.methods.eigencam import principal_projection
from tests import nets
from tests.methods import reference_methods as ref

TARGETS = np.array([3, 0, 7], np.int64)
# the linear layer CAM reads, per architecture with a GAP → linear head
CLASSIFIER = {"resnet": "fc", "mobilenet_v2": "classifier", "efficientnet": "classifier"}
_CACHE: dict = {}


def _source(arch: str, opset: int = 17):
    """(torch module, exported ONNX model), built once per session."""
    key = (arch, opset)
    if key not in _CACHE:
        spec = nets.ARCHITECTURES[arch]
        module, _ = spec.build()
        _CACHE[key] = module, nets.export_onnx(module, torch.randn(1, *spec.input_shape), opset=opset)
    return _CACHE[key]


def _explain(arch: str, method: str, opset: int = 17):
    """Export with ``method``, run a batch of 3 with explicit targets: cam, effective targets, A, G."""
    _, source = _source(arch, opset)
    model = export(source, method=method, expose=["activations", "gradients"]).model
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    shape = nets.ARCHITECTURES[arch].input_shape
    x = np.random.default_rng(0).standard_normal((3, *shape)).astype(np.float32)
    cam, target, acts, grads = session.run(["cam", "cam_target", "activations", "gradients"],
                                           {"input": x, "target": TARGETS})
    np.testing.assert_array_equal(target, TARGETS)
    return cam, acts, grads


def _size(arch: str) -> tuple[int, int]:
    return nets.ARCHITECTURES[arch].input_shape[1:]


# --- every method against its NumPy reference ----------------------------------------------------
@pytest.mark.parametrize("method", list(ref.RAW))
@pytest.mark.parametrize("arch, opset", [("resnet", 17), ("mobilenet_v2", 17), ("efficientnet", 17),
                                         ("resnet", 13), ("efficientnet", 11)])
def test_method_matches_numpy_reference(arch, opset, method):
    cam, acts, grads = _explain(arch, method, opset)
    expected = ref.cams(ref.RAW[method](acts, grads), *_size(arch))
    assert cam.shape == expected.shape and cam.dtype == np.float32
    np.testing.assert_allclose(cam, expected, rtol=0, atol=1e-4)
    assert cam.max() == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("arch", list(CLASSIFIER))
def test_cam_reads_the_linear_weights_and_equals_gradcam(arch):
    module, _ = _source(arch)
    weight = dict(module.named_modules())[CLASSIFIER[arch]].weight.detach().numpy()
    cam, acts, _ = _explain(arch, "cam")
    expected = ref.cams(ref.raw_cam(acts, weight, TARGETS), *_size(arch))
    np.testing.assert_allclose(cam, expected, rtol=0, atol=1e-4)
    # on a GAP → linear head Grad-CAM's weights are W[c, k]/(h·w): the same map after normalisation
    gradcam, _, _ = _explain(arch, "gradcam")
    np.testing.assert_allclose(cam, gradcam, rtol=0, atol=1e-5)


def _with_linear_as(source: onnx.ModelProto, form: str) -> onnx.ModelProto:
    """resnet's Gemm(x, W, b, transB=1) rewritten as MatMul(x, Wᵀ) + b, or as Gemm(x, Wᵀ/2, b, alpha=2)."""
    model = onnx.ModelProto()
    model.CopyFrom(source)
    gemm = next(n for n in model.graph.node if n.op_type == "Gemm")
    inits = {t.name: t for t in model.graph.initializer}
    weight = onnx.numpy_helper.to_array(inits[gemm.input[1]])
    scale = 0.5 if form == "gemm" else 1.0
    model.graph.initializer.append(onnx.numpy_helper.from_array(np.ascontiguousarray(weight.T) * scale, "w_t"))
    if form == "gemm":
        nodes = [helper.make_node("Gemm", [gemm.input[0], "w_t", gemm.input[2]], list(gemm.output), alpha=2.0)]
    else:
        nodes = [helper.make_node("MatMul", [gemm.input[0], "w_t"], ["xw"]),
                 helper.make_node("Add", ["xw", gemm.input[2]], list(gemm.output))]
    index = list(model.graph.node).index(gemm)
    model.graph.node.remove(gemm)
    for offset, node in enumerate(nodes):
        model.graph.node.insert(index + offset, node)
    return model


@pytest.mark.parametrize("form", ["matmul", "gemm"])
def test_cam_reads_matmul_and_untransposed_gemm_heads(form):
    module, source = _source("resnet")
    model = export(_with_linear_as(source, form), method="cam", expose=["activations"]).model
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).standard_normal((3, 3, 64, 64)).astype(np.float32)
    cam, acts = session.run(["cam", "activations"], {"input": x, "target": TARGETS})
    expected = ref.cams(ref.raw_cam(acts, module.fc.weight.detach().numpy(), TARGETS), *_size("resnet"))
    np.testing.assert_allclose(cam, expected, rtol=0, atol=1e-4)


@pytest.mark.parametrize("arch, found", [("vgg", "Flatten → Gemm → Relu → Gemm"),
                                         ("convnext", "ReduceMean → LayerNormalization → Gemm")])
def test_cam_refuses_other_heads(arch, found):
    _, source = _source(arch)
    with pytest.raises(ModelError, match="needs a global-average-pool → linear head") as info:
        export(source, method="cam")
    assert found in str(info.value) and "use gradcam" in str(info.value)


def test_cam_refuses_an_early_layer():
    _, source = _source("resnet")
    first = export(source).plan.candidates[0]
    with pytest.raises(ModelError, match=f"right after layer '{first.tensor}'.*use gradcam"):
        export(source, method="cam", layer=first.tensor)


# --- the in-graph power iteration on hard spectra --------------------------------------------------
def _projection_model(opset: int, channels: int, height: int, width: int) -> ort.InferenceSession:
    shape = ["n", channels, height, width]
    graph = helper.make_graph([], "eigen", [helper.make_tensor_value_info("A", onnx.TensorProto.FLOAT, shape)], [])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    layer = Layer("A", "conv", "Conv", (None, channels, height, width), "NCHW")
    emit = Emitter(GraphView(model))
    raw = principal_projection(emit, "A", layer)
    model.graph.node.extend(emit.nodes)
    model.graph.initializer.extend(emit.initializers)
    model.graph.output.append(helper.make_tensor_value_info(raw, onnx.TensorProto.FLOAT, ["n", 1, height, width]))
    onnx.checker.check_model(model, full_check=True)
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _with_spectrum(rng, channels: int, pixels: int, singular_values) -> np.ndarray:
    """A (P, C) matrix of rank len(singular_values) with those singular values."""
    k = len(singular_values)
    u, _ = np.linalg.qr(rng.standard_normal((pixels, k)))
    v, _ = np.linalg.qr(rng.standard_normal((channels, k)))
    return (u * np.asarray(singular_values)) @ v.T


@pytest.mark.parametrize("opset", [11, 13, 18, 21])
@pytest.mark.parametrize("channels, height, width", [(24, 4, 4), (12, 6, 5)])  # Gram on pixels / channels
def test_power_iteration_finds_the_first_component(opset, channels, height, width):
    rng = np.random.default_rng(opset)
    pixels = height * width
    spectra = [[10.0, 9.95, 3.0, 1.0], [1.0, 0.999, 0.5], [5.0, 1.0]]
    batch = [_with_spectrum(rng, channels, pixels, s).T.reshape(channels, height, width) for s in spectra]
    batch.append(-np.abs(rng.standard_normal((channels, height, width))))  # negative: the sign flips
    batch.append(np.zeros((channels, height, width)))  # all zero: zeros, no NaN
    a = np.stack(batch).astype(np.float32)
    (raw,) = _projection_model(opset, channels, height, width).run(None, {"A": a})
    expected = ref.first_component_projection(a)
    assert np.all(raw[-1] == 0)
    for got, want in zip(raw[:-1, 0], expected[:-1]):
        assert got.sum() > 0
        direction = got / np.linalg.norm(got)
        np.testing.assert_allclose(direction, want / np.linalg.norm(want), rtol=0, atol=1e-4)


# --- the registry and the CLI ----------------------------------------------------------------------
def test_every_method_is_documented():
    assert set(METHODS) >= {"gradcam", "gradcampp", "xgradcam", "layercam", "hirescam", "gradcam-elementwise",
                            "eigencam", "eigengradcam", "cam", "guided-backprop", "guided-gradcam", "ablationcam",
                            "scorecam", "smoothgradcampp", "integrated-gradcam"}
    for method in METHODS.values():
        assert method.formula.startswith("L = ") and method.title and method.paper
    assert not METHODS["eigencam"].needs_gradients and not METHODS["cam"].needs_gradients


@pytest.mark.parametrize("method", list(METHODS))
def test_cli_run_with_each_method(method, demo_model, demo_images, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["run", str(demo_model), str(demo_images[0]), "-o", str(out), "--method", method])
    assert result.exit_code == 0, result.output
    (record,) = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert record["method"] == method
    assert (out / record["heatmap"]).is_file() and (out / record["overlay"]).is_file()
