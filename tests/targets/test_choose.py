"""Which output and task onnxcam picks on its own, and the automatic layer that goes with it."""

import pytest
import torch
from torch import nn

from onnxcam import LayerError, ModelError, export
from onnxcam.graph import GraphView
from onnxcam.targets import choose_target
from tests.targets import task_nets as nets


class _DetectorHead(nn.Module):
    """A YOLO-style raw head: box and sigmoid score branches, flattened and concatenated, (N, 4+C, A)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.box, self.cls = nn.Conv2d(8, 4, 1), nn.Conv2d(8, 3, 1)

    def forward(self, x):
        f = self.features(x)
        return torch.cat([self.box(f).flatten(2), torch.sigmoid(self.cls(f)).flatten(2)], dim=1)


class _FaceHeads(nn.Module):
    """CenterFace-like: shared features, a Sigmoid heat map and raw regression maps; the heat map is second."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.scale, self.heat = nn.Conv2d(8, 2, 1), nn.Conv2d(8, 1, 1)

    def forward(self, x):
        f = self.features(x)
        return self.scale(f), torch.sigmoid(self.heat(f))


def _onnx(module, shape, outputs=("output",), dynamic=None):
    import io
    import warnings

    import onnx

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(module.eval(), (torch.randn(*shape),), buffer, dynamo=False, opset_version=17,
                          input_names=["input"], output_names=list(outputs), dynamic_axes=dynamic)
    return onnx.load_from_string(buffer.getvalue())


def test_raw_ctc_logits_are_a_sequence_and_detector_heads_are_detectors():
    raw_ctc = nets.CTCRecogniser()
    raw_ctc.final = None
    assert choose_target(GraphView(_onnx(raw_ctc, (1, 3, 16, 32))), "input").task.name == "sequence"
    detector = export(_onnx(_DetectorHead(), (1, 3, 8, 8)))
    assert detector.plan.task.name == "detection"
    # S is the output (N, 4+C, A); its class rows are a Sigmoid's (reshaped) output, so their logits are explained
    assert detector.plan.score_tensor.shape[1:] == (7, 64)
    assert '"sigmoid":true' in detector.contract.detection


def test_a_named_output_that_fits_no_task_says_so_and_whether_a_task_takes_it():
    """Before, naming it with --output still ended in "name one with --output", then in "pick one with
    --task" where no task would take it either."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("Conv", ["input", "w"], ["maps"]),
             helper.make_node("Unsqueeze", ["maps", "axis"], ["volume"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("volume", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(np.ones((2, 3, 1, 1), np.float32), "w"),
                               numpy_helper.from_array(np.array([1], np.int64), "axis")])
    view = GraphView(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    with pytest.raises(ModelError, match=r"^output 'volume' \(1, 1, 2, 4, 4\) fits no task: .*; no task explains an "
                                         r"output of this shape$"):
        choose_target(view, "input", output="volume")


def test_outputs_ending_in_an_activation_come_first():
    model = _onnx(_FaceHeads(), (1, 3, 16, 16), outputs=("scale", "heat"))
    result = export(model)
    assert result.plan.output == "heat" and result.plan.task.name == "dense"
    assert export(model, output="scale").plan.task.name == "segmentation"


def test_a_layer_reached_only_through_shape_ops_is_not_eligible():
    """A tensor whose only path to the score is its Shape would get a zero gradient: never chosen."""

    class ShapeOnly(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
            self.side = nn.Conv2d(3, 4, 3, padding=1)
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            f = self.a(x)
            side = self.side(x)  # used only for its shape
            pooled = f.mean(dim=(2, 3)) * side.shape[-1]
            return self.fc(pooled)

    model = _onnx(ShapeOnly(), (1, 3, 8, 8), dynamic={"input": {0: "n", 2: "h", 3: "w"}})  # keeps the Shape op
    result = export(model)
    refused = {c.layer.tensor: c.why_not for c in result.plan.considered}
    side = next(t for t in refused if "side" in t)
    assert "only through non-differentiable ops" in refused[side]
    assert result.plan.layer.tensor != side
    with pytest.raises(LayerError, match="non-differentiable"):
        export(model, layer=side)


@pytest.mark.parametrize("method", ["gradcam", "scorecam"])
def test_an_n_c_1_1_head_is_a_classifier_explained_as_its_flattened_twin(method):
    """SqueezeNet's (N, 1000, 1, 1) probabilities were a segmentation (class 0 its background);
    scorecam reads S back in Python (head passes), gradcam only in the graph."""
    import numpy as np

    from onnxcam import Explainer

    torch.manual_seed(0)
    pooled, flat = nets.PooledMapClassifier(), nets.PooledMapClassifier(flat=True)
    flat.load_state_dict(pooled.state_dict())
    models = [nets.export(m.eval(), torch.randn(1, 3, 16, 16)) for m in (pooled, flat)]
    explained = export(models[0])
    assert explained.plan.task.name == "classification" and explained.contract.score_shape == "?x4"
    images = np.random.default_rng(0).random((3, 3, 16, 16), np.float32)
    four_d, two_d = (Explainer(m, method=method, provider="cpu").explain(images, target=[0, 1, -1]) for m in models)
    np.testing.assert_allclose(four_d.cam, two_d.cam, atol=1e-5)
    np.testing.assert_array_equal(four_d.target, two_d.target)
