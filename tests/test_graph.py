"""GraphView facts that the rest of onnxcam relies on."""

import numpy as np
import pytest
from onnx import TensorProto, helper

from onnxcam.errors import ModelError
from onnxcam.graph import GraphView, sort_topologically


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
