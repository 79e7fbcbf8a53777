"""The explain model's interface: target_weights, both target-input modes, metadata, other runtimes."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from onnxcam import Explainer, TargetError, export
from onnxcam.contract import RESERVED_NAMES, Contract
from onnxcam.targets import TASKS


def _session(model):
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def demo_batch(demo_model, demo_images):
    return Explainer(demo_model, provider="cpu").prepare(demo_images)[0]


def test_one_hot_weights_give_exactly_the_class_targets_map(demo_model, demo_batch):
    session = _session(export(demo_model).model)
    classes = np.array([3, 0, 2, 1, 1, 0], np.int64)[: len(demo_batch)]
    by_class = session.run(["cam", "cam_score", "cam_target"], {"image": demo_batch, "target": classes})
    one_hot = np.eye(4, dtype=np.float32)[classes]
    by_weights = session.run(["cam", "cam_score", "cam_target"], {"image": demo_batch, "target_weights": one_hot})
    np.testing.assert_array_equal(by_weights[0], by_class[0])
    np.testing.assert_array_equal(by_weights[1], by_class[1])
    np.testing.assert_array_equal(by_class[2], classes)
    np.testing.assert_array_equal(by_weights[2], -1)


def test_weights_are_a_linear_score(demo_model, demo_batch):
    session = _session(export(demo_model).model)
    weights = np.array([[0.5, -1.0, 2.0, 0.0]], np.float32)  # broadcast over the batch
    logits, score = session.run(["logits", "cam_score"], {"image": demo_batch, "target_weights": weights})
    np.testing.assert_allclose(score, logits @ weights[0], rtol=1e-5)


def test_required_target_inputs_are_plain_inputs(demo_model, demo_batch):
    optional = export(demo_model).model
    required = export(demo_model, target_inputs="required").model
    assert {"target", "target_weights"} <= {t.name for t in optional.graph.initializer}
    assert not {"target", "target_weights"} & {t.name for t in required.graph.initializer}
    session = _session(required)
    assert {i.name for i in session.get_inputs()} == {"image", "target", "target_weights"}
    unfed = np.full((1, 1), np.nan, np.float32)
    top1 = session.run(["cam"], {"image": demo_batch, "target": np.array([-1], np.int64), "target_weights": unfed})
    np.testing.assert_array_equal(top1[0], _session(optional).run(["cam"], {"image": demo_batch})[0])
    assert Contract.read(required).target_inputs == "required"


def test_openvino_runs_the_required_form_like_onnxruntime(demo_model, demo_batch):
    ov = pytest.importorskip("openvino", reason="OpenVINO is not installed (pip install openvino)")
    model = export(demo_model, target_inputs="required").model
    core = ov.Core()  # f32: on CPUs with bf16 units OpenVINO otherwise computes in bf16
    compiled = core.compile_model(core.read_model(model.SerializeToString(), b""), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    classes = np.array([2] * len(demo_batch), np.int64)
    unfed = np.full((1, 1), np.nan, np.float32)
    feeds = {"image": demo_batch, "target": classes, "target_weights": unfed}
    got = compiled(feeds)
    want = _session(model).run(["cam", "cam_target"], feeds)
    np.testing.assert_allclose(got[compiled.output("cam")], want[0], atol=1e-4)
    np.testing.assert_array_equal(got[compiled.output("cam_target")], classes)
    one_hot = {**feeds, "target": np.array([-1], np.int64), "target_weights": np.eye(4, dtype=np.float32)[classes]}
    np.testing.assert_allclose(compiled(one_hot)[compiled.output("cam")], want[0], atol=1e-4)


def test_contract_round_trip(demo_model):
    model = export(demo_model, layer=["/features/features.8/Relu_output_0", "auto"]).model
    contract = Contract.read(model)
    assert contract.task == "classification" and contract.score_shape == "?x4"
    assert contract.layers[0] == "/features/features.8/Relu_output_0" and contract.fuse == "mean"
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(model)
    contract.write(rewritten)
    assert Contract.read(rewritten) == contract
    assert Contract.read(onnx.load(str(demo_model))) is None


def test_the_explain_model_has_no_dead_nodes(demo_model):
    model = export(demo_model, method="gradcampp").model
    needed = {o.name for o in model.graph.output}
    for node in reversed(model.graph.node):
        assert any(o in needed for o in node.output), f"{node.name} feeds no output"
        needed.update(node.input)


def test_bad_target_weights_and_targets_are_refused(demo_model, demo_images):
    explainer = Explainer(demo_model, provider="cpu")
    with pytest.raises(TargetError, match=r"target_weights has shape \(2, 5\).*1x4"):
        explainer.explain(demo_images[:1], target_weights=np.ones((2, 5), np.float32))
    with pytest.raises(TargetError, match="region or mask needs"):
        explainer.explain(demo_images[:1], region=(0, 0, 10, 10))
    with pytest.raises(TargetError, match="reference is for embedding"):
        explainer.explain(demo_images[:1], reference=np.ones(4, np.float32))
    with pytest.raises(TargetError, match="give one of region, mask"):
        explainer.explain(demo_images[:1], target_weights=np.ones(4), reference=np.ones(4))


def test_reserved_names_and_task_registry_are_documented():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for name in RESERVED_NAMES:
        assert f"`{name}`" in readme, name
    table = readme[readme.index("<!-- tasks:start -->"):readme.index("<!-- tasks:end -->")]
    rows = {line.split("|")[1].strip(" `") for line in table.splitlines() if line.startswith("| `")}
    assert rows == set(TASKS), "the README's tasks table and onnxcam.targets.TASKS differ"
