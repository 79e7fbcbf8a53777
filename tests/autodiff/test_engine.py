"""The engine's own duties: clear errors for unsupported ops and unconnected tensors, fan-in sums, cut paths."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper

from onnxcam.autodiff import backward
from onnxcam.errors import NotDifferentiableError, UnsupportedOpError


def _model(nodes, inputs=("x",)):
    """A graph of ``nodes`` from ``inputs`` to ``y``, with a cotangent input ``u`` for ``y``."""
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(i, onnx.TensorProto.FLOAT, [2, 3]) for i in (*inputs, "u")],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _gradient(model, wrt="x"):
    result = backward(model, {"y": "u"}, [wrt])
    result.model.graph.output.append(helper.make_tensor_value_info(result.names[wrt], onnx.TensorProto.FLOAT, [2, 3]))
    onnx.checker.check_model(result.model, full_check=True)
    session = ort.InferenceSession(result.model.SerializeToString(), providers=["CPUExecutionProvider"])
    return lambda x, u: session.run([result.names[wrt]], {"x": x, "u": u})[0]


def test_unsupported_op_names_the_op_node_and_path():
    model = _model([helper.make_node("Cos", ["x"], ["y"], name="my_cos")])
    with pytest.raises(UnsupportedOpError, match=r"no gradient rule for Cos node 'my_cos' \(opset 17\).*'x'.*'y'"):
        backward(model, {"y": "u"}, ["x"])


def test_unsupported_op_off_the_path_is_fine():
    model = _model([helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Cos", ["x"], ["unused"])])
    x = np.array([[1, -1, 2], [-2, 3, -3]], np.float32)
    u = np.ones((2, 3), np.float32)
    np.testing.assert_array_equal(_gradient(model)(x, u), (x > 0).astype(np.float32))


def test_score_not_depending_on_wrt():
    model = _model([helper.make_node("Relu", ["z"], ["y"])], inputs=("x", "z"))
    with pytest.raises(NotDifferentiableError, match="does not depend on 'x'"):
        backward(model, {"y": "u"}, ["x"])


def test_fan_out_gradients_are_summed():
    # y = x·x + x  →  dy/dx = 2x + 1
    model = _model([helper.make_node("Mul", ["x", "x"], ["sq"]), helper.make_node("Add", ["sq", "x"], ["y"])])
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    u = np.random.default_rng(1).standard_normal((2, 3)).astype(np.float32)
    np.testing.assert_allclose(_gradient(model)(x, u), u * (2 * x + 1), rtol=1e-6)


def test_integer_paths_are_cut():
    # y = x · Cast(Shape(x)[1]) : the shape path carries no gradient, so dy/dx = 3 (the constant factor)
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "one"], ["d"], axis=0),
        helper.make_node("Cast", ["d"], ["df"], to=onnx.TensorProto.FLOAT),
        helper.make_node("Mul", ["x", "df"], ["y"]),
    ]
    model = _model(nodes)
    model.graph.initializer.append(onnx.numpy_helper.from_array(np.array(1, np.int64), "one"))
    u = np.ones((2, 3), np.float32)
    np.testing.assert_allclose(_gradient(model)(np.ones((2, 3), np.float32), u), 3 * u)


def test_stop_at_wrt_holds_the_other_wrt_tensors_fixed():
    """a = 2x, b = 3a, y = a + b: ∂y/∂a is 1 + 3 through b, and 1 with b held fixed (a detector's levels)."""
    from onnxcam.autodiff import emit_backward
    from onnxcam.autodiff.emitter import Emitter
    from onnxcam.graph import GraphView

    model = _model([helper.make_node("Mul", ["x", "two"], ["a"]), helper.make_node("Mul", ["a", "three"], ["b"]),
                    helper.make_node("Add", ["a", "b"], ["y"])])
    model.graph.initializer.extend([onnx.numpy_helper.from_array(np.float32(v), n) for n, v in (("two", 2), ("three", 3))])
    u = np.arange(6, dtype=np.float32).reshape(2, 3)
    for stop, through_b in ((False, 4.0), (True, 1.0)):
        emit = Emitter(GraphView(model))
        names = emit_backward(emit, {"y": "u"}, ["a", "b"], stop_at_wrt=stop)
        rewritten = onnx.ModelProto()
        rewritten.CopyFrom(model)
        rewritten.graph.node.extend(emit.nodes)
        rewritten.graph.initializer.extend(emit.initializers)
        for name in ("a", "b"):
            rewritten.graph.output.append(helper.make_tensor_value_info(names[name], onnx.TensorProto.FLOAT, [2, 3]))
        session = ort.InferenceSession(rewritten.SerializeToString(), providers=["CPUExecutionProvider"])
        da, db = session.run([names["a"], names["b"]], {"x": np.ones((2, 3), np.float32), "u": u})
        np.testing.assert_allclose(da, through_b * u)
        np.testing.assert_allclose(db, u)
