"""GraphView facts that the rest of onnxcam relies on."""

import logging

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxcam import graph as graph_module
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


def _ctc_model_declaring(declared, computed_reshape: bool, batch=1):
    """image (1, 1, 4, 6) → Conv (8 channels, height 1) → (W=6 steps, N, 8) → MatMul → (6, N, 5) logits,
    whose output is declared ``declared``, as ddddocr's recogniser declares [1, seqlen] for (T, 1, C).

    With ``computed_reshape`` the (N, C, W) view is a Reshape to a computed shape that ONNX's own
    inference cannot follow (ONNX Runtime's symbolic inference can)."""
    rng = np.random.default_rng(0)
    init = [numpy_helper.from_array(rng.standard_normal((8, 1, 4, 1)).astype(np.float32), "w"),
            numpy_helper.from_array(rng.standard_normal((8, 5)).astype(np.float32), "classifier")]
    nodes = [helper.make_node("Conv", ["image", "w"], ["features"]), helper.make_node("Relu", ["features"], ["relu"])]
    if computed_reshape:  # (N, C, H·W) with H·W a ReduceProd of the shape's tail, as tf2onnx writes Flatten
        init.append(numpy_helper.from_array(np.array([0, 1], np.int64), "batch_and_channels"))
        nodes += [helper.make_node("Shape", ["relu"], ["shape"]),
                  helper.make_node("Gather", ["shape", "batch_and_channels"], ["kept"]),
                  helper.make_node("Shape", ["relu"], ["spatial"], start=2),
                  helper.make_node("ReduceProd", ["spatial"], ["steps_count"], keepdims=1),
                  helper.make_node("Concat", ["kept", "steps_count"], ["new_shape"], axis=0),
                  helper.make_node("Reshape", ["relu", "new_shape"], ["sequence"])]
    else:
        init.append(numpy_helper.from_array(np.array([2], np.int64), "height"))
        nodes.append(helper.make_node("Squeeze", ["relu", "height"], ["sequence"]))
    nodes += [helper.make_node("Transpose", ["sequence"], ["steps"], perm=[2, 0, 1]),
              helper.make_node("MatMul", ["steps", "classifier"], ["logits"])]
    graph = helper.make_graph(nodes, "ctc", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [batch, 1, 4, 6])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, declared)], init)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.mark.parametrize("computed_reshape", [False, True], ids=["inferred", "computed-reshape"])
def test_a_computed_output_shape_wins_over_a_declaration_it_contradicts(computed_reshape, caplog):
    view = GraphView(_ctc_model_declaring([1, "seqlen"], computed_reshape))
    assert view.shape("logits") == (6, 1, 5)
    assert view.misdeclared_outputs == ("logits",)
    assert "output 'logits' is declared (1, seqlen), but the graph computes (6, 1, 5); using the computed shape" \
        in caplog.text


def test_a_declaration_completes_what_the_graph_leaves_open_and_agrees_with():
    view = GraphView(_ctc_model_declaring(["steps", 1, 5], computed_reshape=True), complete=False)
    assert view.shape("logits") == (None, 1, 5) and view.misdeclared_outputs == ()


def test_a_declared_dim_name_does_not_rename_the_batch_the_graph_computes():
    """A torch export declared its (T, N, C) output (batch_size, Addoutput_dim_1, C): the declaration
    put the input's batch name first, and the batch axis was taken for 0."""
    from onnxcam import export

    model = _ctc_model_declaring(["batch", "steps", 5], computed_reshape=False, batch="batch")
    assert GraphView(model).symbolic_shape("logits") == (6, "batch", 5)
    explained = export(model)
    assert explained.contract.score_batch_axis == 1 and explained.contract.score_shape == "?x6x5"
    session = ort.InferenceSession(explained.model.SerializeToString(), providers=["CPUExecutionProvider"])
    logits, cam = session.run(["logits", "cam"], {"image": np.random.default_rng(1).random((2, 1, 4, 6), np.float32)})
    assert logits.shape == (6, 2, 5) and cam.shape == (2, 4, 6) and np.isfinite(cam).all()


def test_a_model_lying_about_its_output_is_explained_as_the_sequence_it_computes():
    from onnxcam import export

    model = _ctc_model_declaring([1, "seqlen"], computed_reshape=True)
    explained = export(model, expose=["activations", "gradients"])
    assert explained.plan.task.name == "sequence" and explained.contract.score_shape == "1x6x5"
    declared = next(o for o in explained.model.graph.output if o.name == "logits").type.tensor_type.shape.dim
    assert [d.dim_value for d in declared] == [6, 1, 5]
    session = ort.InferenceSession(explained.model.SerializeToString(), providers=["CPUExecutionProvider"])
    logits, cam = session.run(["logits", "cam"], {"image": np.random.default_rng(1).random((1, 1, 4, 6), np.float32)})
    assert logits.shape == (6, 1, 5) and cam.shape == (1, 4, 6) and np.isfinite(cam).all()


def _growing_loop_model(trips: int) -> onnx.ModelProto:
    """A Loop that appends a value per iteration: its output's length is unknown until it runs."""
    body = helper.make_graph(
        [helper.make_node("Concat", ["acc_in", "one"], ["acc_out"], axis=0),
         helper.make_node("Identity", ["cond_in"], ["cond_out"])], "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.ones(1, np.float32), "one")])
    graph = helper.make_graph(
        [helper.make_node("Loop", ["trips", "cond", "x"], ["looped"], body=body),
         helper.make_node("Relu", ["looped"], ["y"])], "growing",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.array(trips, np.int64), "trips"), numpy_helper.from_array(np.array(True), "cond")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_the_probe_run_reads_shapes_inference_leaves_unknown():
    assert GraphView(_growing_loop_model(3)).shape("y") == (7,)


def test_a_probe_run_over_its_budget_is_stopped_with_a_warning(monkeypatch, caplog):
    monkeypatch.setattr(graph_module, "_PROBE_SECONDS", 0.2)
    with caplog.at_level(logging.WARNING, logger="onnxcam.graph"):
        view = GraphView(_growing_loop_model(10 ** 8))  # hours of Concat: stopped at 0.2 s
    assert view.shape("y") == (None,)
    assert "took over 0.2 s and was stopped" in caplog.text and "--input-shape" in caplog.text
