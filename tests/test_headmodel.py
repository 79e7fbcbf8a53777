"""cut_model: a Shape of a tensor before the cut, whose size shape inference knows, does not pull
that tensor's graph into the cut (tf2onnx's Flatten reads the Shape of the map before the layer)."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from onnxcam import Explainer
from onnxcam.headmodel import cut_model
from tests.exporter_quirk_nets import tf2onnx_pool_flatten
from tests.reference import finish

CLASSES = 5


def _run(model: onnx.ModelProto, feeds: dict, outputs: list[str]) -> list[np.ndarray]:
    model = onnx.ModelProto.FromString(model.SerializeToString())
    declared = {o.name for o in model.graph.output}
    model.graph.output.extend(onnx.helper.make_empty_tensor_value_info(n) for n in outputs if n not in declared)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(outputs, feeds)


def _images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, (n, 8, 8, 3)).astype(np.float32)


@pytest.mark.parametrize("shape_end", [False, True], ids=["gather", "shape-end"])
@pytest.mark.parametrize("batch", ["unk__0", 1], ids=["dynamic-batch", "fixed-batch"])
def test_head_reads_the_batch_from_its_own_input_not_the_image(batch, shape_end):
    model = tf2onnx_pool_flatten(CLASSES, batch=batch, shape_end=shape_end)
    cut = cut_model(model, ["nhwc"], "dense_logits")
    assert cut.inputs == ["nhwc"]
    assert not {"Conv", "MaxPool"} & {n.op_type for n in cut.model.graph.node}
    onnx.checker.check_model(cut.model, full_check=True)
    images = _images(3)
    per_image = [_run(model, {"input_1": images[i:i + 1]}, ["nhwc", "dense_logits"]) for i in range(3)]
    activations = np.concatenate([a for a, _ in per_image])
    want = np.concatenate([logits for _, logits in per_image])
    # three images in one head call, where the model's own batch is fixed at 1 too
    got = _run(cut.model, {"nhwc": activations}, ["dense_logits"])[0]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    # a caller that feeds inputs batches of their own sizes keeps the Shape's graph
    assert cut_model(model, ["nhwc"], "dense_logits", reread_shapes=False).inputs == ["nhwc", "input_1"]


def test_dims_shape_inference_names_are_read_where_the_head_input_has_them():
    model = tf2onnx_pool_flatten(CLASSES)
    for dim in model.graph.input[0].type.tensor_type.shape.dim[1:3]:
        dim.dim_param = "side"  # the pooled map's size: names of ONNX's inference, the layer's own
    cut = cut_model(model, ["nhwc"], "dense_logits")
    assert cut.inputs == ["nhwc"]
    images = _images(2)
    activations, want = _run(model, {"input_1": images}, ["nhwc", "dense_logits"])
    np.testing.assert_allclose(_run(cut.model, {"nhwc": activations}, ["dense_logits"])[0], want, rtol=0, atol=1e-5)
    # a size the cut's inputs do not carry (x's length, before the sum): x's graph stays in the cut
    nodes = [onnx.helper.make_node("Relu", ["x"], ["r"]),
             onnx.helper.make_node("ReduceSum", ["r"], ["s"], keepdims=1),
             onnx.helper.make_node("Shape", ["r"], ["r_shape"]),
             onnx.helper.make_node("Expand", ["s", "r_shape"], ["y"])]
    graph = onnx.helper.make_graph(nodes, "g", [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT,
                                                                                   ["N", "L"])],
                                   [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", "L"])])
    summed = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 11)])
    assert cut_model(summed, ["s"], "y").inputs == ["s", "x"]


def test_ablationcam_head_holds_no_backbone_and_equals_full_forward_passes():
    model = tf2onnx_pool_flatten(CLASSES)
    explainer = Explainer(model, layer="nhwc", method="ablationcam", provider="cpu", passes_batch=3)
    images, targets = _images(2, seed=1), np.array([1, 3])
    got = explainer.explain(images, target=targets).cam
    head, _ = explainer._sub_session("head")
    assert head.inputs == ["nhwc"] and "Conv" not in {n.op_type for n in head.model.graph.node}

    activations, logits = _run(model, {"input_1": images}, ["nhwc", "dense_logits"])
    channels = activations.shape[-1]
    keep = (1 - np.eye(channels, dtype=np.float32))[:, None, None, :]  # copy k has channel k zeroed (NHWC)
    want = []
    ablated = _with_keep(model, "nhwc")
    for i, c in enumerate(targets):
        scores = _run(ablated, {"input_1": np.repeat(images[i:i + 1], channels, 0), "keep": keep},
                      ["dense_logits"])[0][:, c]
        weights = (logits[i, c] - scores) / logits[i, c]
        want.append(finish(np.einsum("c,hwc->hw", weights, activations[i].astype(np.float64)), 8, 8))
    np.testing.assert_allclose(got, np.stack(want), rtol=0, atol=1e-4)


def _with_keep(model: onnx.ModelProto, layer: str) -> onnx.ModelProto:
    """``model`` with ``layer`` multiplied by an extra input ``keep``: full forward passes, ablated."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    for node in model.graph.node:
        node.input[:] = [f"{layer}.kept" if name == layer else name for name in node.input]
    model.graph.node.append(onnx.helper.make_node("Mul", [layer, "keep"], [f"{layer}.kept"]))
    model.graph.input.append(onnx.helper.make_tensor_value_info("keep", onnx.TensorProto.FLOAT, None))
    return model


@pytest.mark.parametrize("batch", ["N", 2], ids=["dynamic-batch", "fixed-batch"])
def test_a_size_of_a_tensor_before_the_cut_is_read_from_the_cut_input(batch):
    """y = t / Size(r): the element count of the tensor before the cut, read off the cut input's batch
    (or a constant), so that r's graph and the model's input stay out of the cut."""
    nodes = [onnx.helper.make_node("Relu", ["x"], ["r"]),
             onnx.helper.make_node("Mul", ["r", "two"], ["t"]),
             onnx.helper.make_node("Size", ["r"], ["count"]),
             onnx.helper.make_node("Cast", ["count"], ["count_f"], to=onnx.TensorProto.FLOAT),
             onnx.helper.make_node("Div", ["t", "count_f"], ["y"])]
    graph = onnx.helper.make_graph(
        nodes, "g", [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [batch, 4])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [batch, 4])],
        initializer=[onnx.numpy_helper.from_array(np.array(2, np.float32), "two")])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 13)], ir_version=8)
    cut = cut_model(model, ["t"], "y")
    assert cut.inputs == ["t"] and "Relu" not in {n.op_type for n in cut.model.graph.node}
    onnx.checker.check_model(cut.model, full_check=True)
    x = np.random.default_rng(0).normal(size=(2, 4)).astype(np.float32)
    t, want = _run(model, {"x": x}, ["t", "y"])
    np.testing.assert_allclose(_run(cut.model, {"t": t}, ["y"])[0], want, rtol=1e-6)
    if batch == "N":  # three rows: the count follows the cut input's batch
        t3 = np.concatenate([t, t[:1]])
        np.testing.assert_allclose(_run(cut.model, {"t": t3}, ["y"])[0], t3 / 12, rtol=1e-6)


def test_a_cut_at_one_output_of_a_split_whose_others_it_needs_defines_it_once():
    """nudenet at 32x32 took its DFL Split's second output as the layer; the boxes' cut kept the Split for its
    other outputs and ONNX Runtime refused the graph: "Duplicate definition of name"."""
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Split", ["x"], ["a", "b"], axis=1, num_outputs=2),
             helper.make_node("Relu", ["b"], ["layer"]),
             helper.make_node("Concat", ["a", "layer"], ["y"], axis=1)]
    graph = helper.make_graph(nodes, "split", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)
    cut = cut_model(model, ["b"], "y")  # 'a' still comes from x through the Split
    x = np.arange(8, dtype=np.float32).reshape(1, 4, 2) - 4
    fed = np.full((1, 2, 2), 5.0, np.float32)
    y = ort.InferenceSession(cut.model.SerializeToString()).run(None, {"x": x, "b": fed})[0]
    np.testing.assert_array_equal(y, np.concatenate([x[:, :2], fed], axis=1))
