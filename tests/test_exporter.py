"""The explain model: its interface, its numbers against a NumPy Grad-CAM, and its independence."""

import logging
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from onnxcam import LayerError, ModelError, OnnxCamError, UnsupportedOpError, export
from onnxcam.contract import Contract
from tests import nets
from tests.detection import detector_nets
from tests.exporter_quirk_nets import paddle_loop_classifier, tf2onnx_loop_recogniser
from tests.methods.reference_methods import cams, raw_eigencam
from tests.reference import gradcam


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _batch(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _build(name: str):
    arch = nets.ARCHITECTURES[name]
    module, targets = arch.build()
    return module, torch.randn(1, *arch.input_shape), targets


class _NHWCInput(torch.nn.Module):
    """Takes NHWC images and transposes them first, as tf2onnx-converted models do."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x.permute(0, 3, 1, 2))


def _export_dynamic_spatial(module, example) -> onnx.ModelProto:
    import io

    buffer = io.BytesIO()
    torch.onnx.export(module, (example,), buffer, dynamo=False, opset_version=17, input_names=["input"],
                      output_names=["logits"], dynamic_axes={"input": {0: "n", 2: "h", 3: "w"}, "logits": {0: "n"}})
    return onnx.load_from_string(buffer.getvalue())


@pytest.fixture(scope="module")
def resnet_onnx() -> onnx.ModelProto:
    module, example, _ = _build("resnet")
    return nets.export_onnx(module, example)


def test_interface_and_metadata(resnet_onnx):
    result = export(resnet_onnx, expose=["activations", "gradients"])
    model = result.model
    onnx.checker.check_model(model, full_check=True)
    inputs = {i.name: i for i in model.graph.input}
    assert inputs["target"].type.tensor_type.elem_type == onnx.TensorProto.INT64
    assert [o.name for o in model.graph.output] == ["logits", "cam", "cam_target", "cam_score", "activations", "gradients"]
    meta = Contract.read(model)
    assert meta.method == "gradcam" and meta.layer == result.plan.layer.tensor
    assert meta.input_layout == "NCHW" and meta.score == "logit"
    # the caller's model is untouched
    assert [o.name for o in resnet_onnx.graph.output] == ["logits"]


def test_cam_matches_numpy_gradcam(resnet_onnx):
    model = export(resnet_onnx, expose=["activations", "gradients"]).model
    x = _batch((4, 3, 64, 64))
    logits, cam, target, score, acts, grads = _session(model).run(
        ["logits", "cam", "cam_target", "cam_score", "activations", "gradients"],
        {"input": x, "target": np.array([3, -1, 0, 7], np.int64)})
    np.testing.assert_array_equal(target, [3, logits[1].argmax(), 0, 7])
    np.testing.assert_allclose(score, logits[np.arange(4), target], rtol=1e-6)
    expected = gradcam(acts, grads, 64, 64)
    np.testing.assert_allclose(cam, expected, rtol=0, atol=1e-5)
    assert cam.dtype == np.float32 and cam.min() >= 0 and cam.max() <= 1


def test_unfed_target_means_top1(resnet_onnx):
    session = _session(export(resnet_onnx).model)
    x = _batch((3, 3, 64, 64), seed=1)
    logits, target = session.run(["logits", "cam_target"], {"input": x})
    np.testing.assert_array_equal(target, logits.argmax(axis=1))


def test_gradients_match_torch_autograd():
    module, _, layers = _build("resnet")
    x = torch.randn(2, 3, 64, 64)
    model = export(nets.export_onnx(module, x[:1]), expose=["gradients"]).model
    captured = {}
    layer_module = dict(module.named_modules())[layers[-1]]
    handle = layer_module.register_forward_hook(lambda m, i, o: captured.setdefault("a", o))
    logits = module(x)
    handle.remove()
    targets = [1, 4]
    (grad,) = torch.autograd.grad(logits[[0, 1], targets].sum(), captured["a"])
    (onnx_grad,) = _session(model).run(["gradients"], {"input": x.numpy(), "target": np.array(targets, np.int64)})
    assert onnx_grad.shape == tuple(grad.shape)
    assert np.abs(onnx_grad - grad.numpy()).max() <= 1e-4 * np.abs(grad.numpy()).max()


def test_explain_model_runs_in_plain_onnxruntime(resnet_onnx, tmp_path):
    path = tmp_path / "m.cam.onnx"
    export(resnet_onnx).save(path)
    script = textwrap.dedent(f"""
        import sys, numpy as np, onnxruntime as ort
        s = ort.InferenceSession({str(path)!r}, providers=["CPUExecutionProvider"])
        x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
        logits, cam, target = s.run(["logits", "cam", "cam_target"], {{"input": x}})
        assert cam.shape == (2, 64, 64) and 0 <= cam.min() and cam.max() <= 1, cam.shape
        assert (target == logits.argmax(1)).all()
        assert not any(m.startswith("onnxcam") for m in sys.modules)
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_softmax_model_differentiates_the_logit():
    module, example, _ = _build("vgg")
    with_softmax = torch.nn.Sequential(module, torch.nn.Softmax(dim=1)).eval()
    source = nets.export_onnx(with_softmax, example)
    logit = export(source)
    assert logit.plan.score != logit.plan.output and "Softmax" in logit.plan.score_description
    probability = export(source, score="probability")
    assert probability.plan.score == probability.plan.output
    x = _batch((2, 3, 32, 32))
    probs, score = _session(probability.model).run(["logits", "cam_score"], {"input": x})
    np.testing.assert_allclose(score, probs.max(axis=1), rtol=1e-6)


def test_nhwc_input_is_detected():
    module, _, _ = _build("resnet")
    source = nets.export_onnx(_NHWCInput(module).eval(), torch.randn(1, 64, 64, 3))
    result = export(source)
    assert result.plan.layout == "NHWC"
    (cam,) = _session(result.model).run(["cam"], {"input": _batch((2, 64, 64, 3))})
    assert cam.shape == (2, 64, 64)


def test_layer_by_node_name_and_errors(resnet_onnx):
    auto = export(resnet_onnx).plan
    first = auto.candidates[0]
    assert export(resnet_onnx, layer=first.node).plan.layer == first
    with pytest.raises(LayerError, match="not found.*candidates"):
        export(resnet_onnx, layer="no_such_layer")
    pooled = next(n.output[0] for n in resnet_onnx.graph.node if n.op_type == "GlobalAveragePool")
    with pytest.raises(LayerError, match="no spatial extent"):
        export(resnet_onnx, layer=pooled)


def test_name_clash_is_refused(resnet_onnx):
    clashing = onnx.ModelProto()
    clashing.CopyFrom(resnet_onnx)
    clashing.graph.output[0].name = "cam"
    for node in clashing.graph.node:
        node.output[:] = ["cam" if o == "logits" else o for o in node.output]
    with pytest.raises(ModelError, match="already uses the name"):
        export(clashing)


def test_dynamic_spatial_dims_are_fixed_by_input_shape():
    module, example, _ = _build("resnet")
    source = _export_dynamic_spatial(module, example)
    result = export(source, input_shape="1x3x64x64")
    (cam,) = _session(result.model).run(["cam"], {"input": _batch((2, 3, 64, 64))})
    assert cam.shape == (2, 64, 64)


def test_the_weightless_check_still_catches_a_broken_explain_model(demo_model):
    from onnxcam.exporter import _check

    model = export(demo_model).model
    _check(model)
    model.graph.node.append(onnx.helper.make_node("Add", ["cam", "target"], ["broken"]))  # float + int64
    model.graph.output.append(onnx.helper.make_tensor_value_info("broken", onnx.TensorProto.FLOAT, None))
    with pytest.raises(ModelError, match="fails the ONNX checker"):
        _check(model)


def test_an_output_declared_without_a_type_is_given_its_type(resnet_onnx):
    """ONNX Runtime runs a graph output declared with a name only; the ONNX checker refuses one."""
    untyped = onnx.ModelProto()
    untyped.CopyFrom(resnet_onnx)
    pooled = next(n.output[0] for n in untyped.graph.node if n.op_type == "GlobalAveragePool")
    untyped.graph.output.append(onnx.ValueInfoProto(name=pooled))
    result = export(untyped)
    declared = {o.name: o.type.tensor_type for o in result.model.graph.output}
    assert declared[pooled].elem_type == onnx.TensorProto.FLOAT and len(declared[pooled].shape.dim) == 4
    (cam,) = _session(result.model).run(["cam"], {"input": _batch((1, 3, 64, 64))})
    assert cam.shape == (1, 64, 64)


def test_gradient_free_methods_build_no_backward_pass():
    """A Loop (no gradient rule) between the maps and the classifier: Eigen-CAM needs no gradient, so it exports."""
    model = paddle_loop_classifier()
    explain = export(model, layer="late", method="eigencam", expose=["activations"])
    x = _batch((2, 3, 8, 8))
    cam, activations = _session(explain.model).run(["cam", "activations"], {"x": x})
    np.testing.assert_allclose(cam, cams(raw_eigencam(activations, None), 8, 8), rtol=0, atol=1e-4)


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_auto_where_no_gradient_reaches_the_layer_exports_eigencam_and_says_why(caplog):
    """The LSTM's Loop reads the features by name and has no gradient rule: auto falls back to Eigen-CAM (an
    explain model on its own holds in-graph methods only), once in the log and in the metadata."""
    model = tf2onnx_loop_recogniser()
    with caplog.at_level(logging.WARNING, logger="onnxcam"):
        explain = export(model)
    reason = "gradients reach no target layer (Loop node 'lstm_loop' on the way has no gradient rule)"
    assert explain.method == "eigencam" and explain.contract.method_reason == f"auto: {reason}"
    (warning,) = _warnings(caplog)
    assert reason in warning and "method auto uses eigencam" in warning and "ignores the target" in warning
    x = _batch((2, 3, 8, 16))
    (cam,) = _session(explain.model).run(["cam"], {"image": x})
    (named,) = _session(export(model, method="eigencam").model).run(["cam"], {"image": x})
    np.testing.assert_array_equal(cam, named)
    with pytest.raises(UnsupportedOpError, match="no gradient rule for Loop node 'lstm_loop'"):
        export(model, method="gradcam")  # a method asked for by name is not replaced


def test_auto_falls_back_only_where_the_chosen_layer_is_cut_off(caplog):
    model = paddle_loop_classifier(loop_between_stages=True)  # the Loop sits between "early" and "late"
    with caplog.at_level(logging.WARNING, logger="onnxcam"):
        reached = export(model, layer="late")
    assert (reached.method, reached.contract.method_reason, _warnings(caplog)) == ("gradcam", "", [])
    cut_off = export(model, layer="early")
    assert cut_off.method == "eigencam" and "Loop node 'stage_loop'" in cut_off.contract.method_reason


@pytest.mark.parametrize("between_stages, layer, hint", [
    (False, "late", "gradients reach none of the candidate layers (see onnxcam layers), so choose a method that "
                    "needs none (eigencam, cam, ablationcam, scorecam)"),
    (True, "early", "choose a later layer, such as 'late'"),
])
def test_an_op_without_gradient_rule_suggests_what_can_work(between_stages, layer, hint):
    model = paddle_loop_classifier(loop_between_stages=between_stages)
    with pytest.raises(UnsupportedOpError, match="no gradient rule for Loop node") as caught:
        export(model, layer=layer, method="gradcam")
    assert hint in str(caught.value)
    assert ("later layer" in str(caught.value)) == between_stages


def test_a_runtime_method_on_a_detector_is_refused_for_the_task_not_for_its_level_layers():
    """The automatic layers of a detector are one per level: the refusal said "give a single layer", and a
    single layer then met the task's refusal."""
    model = detector_nets.export(detector_nets.TinyDetector("yolov8"))
    with pytest.raises(OnnxCamError, match="needs a score linear in the outputs, and task detection's is not"):
        export(model, method="ablationcam", for_runtime=True)
