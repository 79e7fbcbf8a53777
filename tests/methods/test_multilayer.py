"""Several target layers in one explain model: fused maps against a NumPy fusion of single-layer maps."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner

from onnxcam import Explainer, OnnxCamError, export
from onnxcam.cli import cli
from onnxcam.contract import Contract
from tests import nets
from tests.methods import reference_methods as ref
from tests.reference import minmax

TARGETS = np.array([3, -1, 7], np.int64)


@pytest.fixture(scope="module")
def source() -> onnx.ModelProto:
    module, _ = nets.resnet()
    return nets.export_onnx(module, torch.randn(1, 3, 64, 64))


def _run(model, x, names):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(names, {"input": x, "target": TARGETS[:len(x)]})


def _layers(source):
    candidates = export(source).plan.candidates
    return [candidates[-1].tensor, candidates[-6].tensor, candidates[7].tensor]  # layer3, layer2 and layer1 outputs


@pytest.mark.parametrize("method", ["gradcam", "layercam"])
@pytest.mark.parametrize("fuse", ["mean", "max"])
def test_fused_map_matches_numpy_fusion(source, method, fuse):
    layers = _layers(source)
    x = np.random.default_rng(0).standard_normal((3, 3, 64, 64)).astype(np.float32)
    singles = []
    for layer in layers:
        acts, grads = _run(export(source, layer=layer, method=method, expose=["activations", "gradients"]).model, x,
                           ["activations", "gradients"])
        singles.append(ref.cams(ref.RAW[method](acts, grads), 64, 64))
    stacked = np.stack(singles)
    expected = (np.stack([minmax(m) for m in stacked.mean(axis=0)]) if fuse == "mean" else stacked.max(axis=0))
    result = export(source, layer=layers, method=method, fuse=fuse)
    (cam,) = _run(result.model, x, ["cam"])
    np.testing.assert_allclose(cam, expected, rtol=0, atol=1e-4)
    meta = Contract.read(result.model)
    assert meta.layer == ",".join(layers) and meta.fuse == fuse
    assert [p.layer.tensor for p in result.plans] == layers


def test_one_layer_in_a_list_is_the_single_layer_model(source):
    layer = _layers(source)[1]
    x = np.random.default_rng(1).standard_normal((3, 3, 64, 64)).astype(np.float32)
    (listed,) = _run(export(source, layer=[layer]).model, x, ["cam"])
    (single,) = _run(export(source, layer=layer).model, x, ["cam"])
    np.testing.assert_array_equal(listed, single)


def test_refusals(source):
    layers = _layers(source)
    with pytest.raises(OnnxCamError, match="exposed for one layer only"):
        export(source, layer=layers[:2], expose=["activations"])
    with pytest.raises(OnnxCamError, match="more than once"):
        export(source, layer=[layers[0], layers[0]])
    with pytest.raises(OnnxCamError, match="unknown fuse"):
        export(source, layer=layers[:2], fuse="median")


def test_explainer_and_cli_take_several_layers(source, tmp_path):
    layers = _layers(source)[:2]
    x = np.random.default_rng(2).standard_normal((2, 3, 64, 64)).astype(np.float32)
    explainer = Explainer(source, layer=layers, fuse="max", provider="cpu")
    (expected,) = _run(export(source, layer=layers, fuse="max").model, x, ["cam"])
    got = explainer.explain(x, target=TARGETS[:2])
    np.testing.assert_allclose(got.cam, expected, rtol=0, atol=1e-6)
    assert got.layer == ",".join(layers)

    model_path, out = tmp_path / "m.onnx", tmp_path / "m.cam.onnx"
    onnx.save(source, model_path)
    args = ["export", str(model_path), "-o", str(out), "--layer", layers[0], "--layer", layers[1], "--fuse", "max"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert result.output.count("layer:") == 2 and "fuse:   max" in result.output
    assert Contract.read(onnx.load(str(out))).layer == ",".join(layers)


@pytest.mark.parametrize("fuse", ["mean", "max"])
@pytest.mark.parametrize("layers", [1, 3])
def test_fusing_one_map_with_zero_maps_in_numpy_equals_the_graph(fuse, layers):
    """fuse_alone (a detector box's map: its level's alone) is fuse_maps with the other maps all zero."""
    from onnx import TensorProto, helper

    from onnxcam.autodiff.emitter import Emitter
    from onnxcam.graph import GraphView
    from onnxcam.methods.fusion import fuse_alone, fuse_maps

    names = [f"m{i}" for i in range(layers)]
    graph = helper.make_graph([], "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 5, 7]) for n in names],
                              [])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    emit = Emitter(GraphView(model))
    fused = fuse_maps(emit, names, fuse)
    emit.write_into(model)
    model.graph.output.append(helper.make_tensor_value_info(fused, TensorProto.FLOAT, None))
    maps = np.random.default_rng(0).uniform(0, 1, (2, 5, 7)).astype(np.float32)
    maps /= maps.max(axis=(1, 2), keepdims=True)  # each layer's finished map has maximum 1
    feeds = {n: maps if i == 0 else np.zeros_like(maps) for i, n in enumerate(names)}
    expected = ort.InferenceSession(model.SerializeToString()).run([fused], feeds)[0]
    np.testing.assert_allclose(fuse_alone(maps, layers, fuse), expected, atol=3e-7)
