"""GraphView facts that the rest of onnxcam relies on."""

import numpy as np
import pytest
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxcam.errors import ModelError
from onnxcam.graph import GraphView, load_model, load_model_and_origin, sort_topologically


def _relu_then_cast(spatial):
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Cast", ["r"], ["y"], to=TensorProto.DOUBLE)]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, *spatial])
    y = helper.make_tensor_value_info("y", TensorProto.DOUBLE, None)
    return helper.make_model(helper.make_graph(nodes, "g", [x], [y]), opset_imports=[helper.make_opsetid("", 17)])


def test_bytes_per_sample_counts_every_node_output():
    view = GraphView(_relu_then_cast([4, 5]))
    assert view.bytes_per_sample() == 3 * 4 * 5 * (np.dtype(np.float32).itemsize + np.dtype(np.float64).itemsize)


def test_bytes_per_sample_leaves_out_unknown_sizes():
    assert GraphView(_relu_then_cast(["h", "w"])).bytes_per_sample() == 0


def test_outer_names_are_what_a_subgraph_reads_from_outside():
    from onnx import TensorProto, helper

    from onnxcam.graph import outer_names

    body = helper.make_graph(
        [helper.make_node("Add", ["x", "outside"], ["inner"]), helper.make_node("Identity", ["inner"], ["y"])],
        "body", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    node = helper.make_node("If", ["cond"], ["out"], then_branch=body, else_branch=body)
    assert outer_names(node) == {"outside"}


def test_sort_topologically_moves_producers_first_and_keeps_a_valid_order():
    model = _relu_then_cast([4, 5])
    assert not sort_topologically(model.graph)  # already in order: unchanged
    model.graph.node.reverse()  # the Cast before the Relu that feeds it
    assert sort_topologically(model.graph)
    assert [n.op_type for n in model.graph.node] == ["Relu", "Cast"]


def test_sort_topologically_refuses_a_cycle():
    model = _relu_then_cast([4, 5])
    model.graph.node[0].input[0] = "y"  # Relu reads the Cast's output, which reads the Relu's
    with pytest.raises(ModelError, match="cycle"):
        sort_topologically(model.graph)


def test_external_data_outside_the_model_folder_is_refused(tmp_path):
    weights = numpy_helper.from_array(np.ones(1000, np.float32), "w")
    graph = helper.make_graph([helper.make_node("Identity", ["w"], ["y"])], "g", [],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1000])], initializer=[weights])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, tmp_path / "secret.onnx", save_as_external_data=True, location="secret.data", size_threshold=0)
    evil = onnx.load(tmp_path / "secret.onnx", load_external_data=False)
    evil.graph.initializer[0].external_data[0].value = "../secret.data"
    (tmp_path / "bundle").mkdir()
    onnx.save(evil, tmp_path / "bundle" / "model.onnx")
    with pytest.raises(ModelError, match="points outside the directory"):
        load_model(tmp_path / "bundle" / "model.onnx")
    model, external = load_model_and_origin(tmp_path / "secret.onnx")
    assert external and model.graph.initializer[0].data_location == TensorProto.DEFAULT
    assert numpy_helper.to_array(model.graph.initializer[0]).sum() == 1000
