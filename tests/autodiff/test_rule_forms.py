"""Which ops the fast gradient forms emit (their numbers are the finite-difference cases' business)."""

import numpy as np
import pytest

from onnxcam.autodiff.rules.conv import flipped_kernel
from tests.autodiff.harness import C, Case, X, build_forward, build_gradient, session


def _backward_nodes(case: Case, opset: int = 17):
    forward = build_forward(case, opset)
    shapes = {f"x{i}": spec.shape for i, spec in enumerate(case.inputs) if isinstance(spec, X)}
    rng = np.random.default_rng(0)
    feeds = {name: rng.standard_normal(shape).astype(np.float32) for name, shape in shapes.items()}

    outputs = session(forward).run(["y0"], feeds)
    grad_model, _ = build_gradient(forward, outputs, shapes)
    return grad_model.graph.node[len(forward.graph.node):]


def _backward_ops(case: Case, opset: int = 17) -> list[str]:
    return [n.op_type for n in _backward_nodes(case, opset)]


def _w(*shape):
    return C(np.random.default_rng(0).uniform(-1, 1, size=shape).astype(np.float32))


@pytest.mark.parametrize("attrs, weight, x, fast", [
    (dict(group=8, pads=[1, 1, 1, 1]), (8, 1, 3, 3), (1, 8, 6, 6), True),  # depthwise
    (dict(pads=[1, 1, 1, 1]), (4, 3, 3, 3), (1, 3, 6, 6), True),  # dense 3×3
    (dict(group=8, strides=[2, 2], pads=[1, 1, 1, 1]), (8, 1, 3, 3), (1, 8, 6, 6), False),  # strided
    (dict(), (4, 3, 1, 1), (1, 3, 6, 6), True),  # 1×1: the transposed kernel
    (dict(pads=[1, 1, 1, 1]), (4, 3, 1, 1), (1, 3, 6, 6), False),  # 1×1 with pads: outside reach
    (dict(pads=[3, 3, 3, 3]), (4, 3, 3, 3), (1, 3, 6, 6), False),  # pads past the kernel's reach
])
def test_conv_input_gradient_is_a_conv_on_the_flipped_kernel_at_stride_one(attrs, weight, x, fast):
    ops = _backward_ops(Case("Conv", [X(x), _w(*weight)], attrs=attrs))
    assert ("ConvTranspose" not in ops and "Conv" in ops) if fast else "ConvTranspose" in ops


@pytest.mark.parametrize("x, weight", [((1, 2, 6, 6), (3, 2, 1, 1)), ((1, 3, 8, 8), (4, 3, 3, 3))],
                         ids=["1x1 on an even size", "3x3 with an uncovered tail"])
def test_a_strided_conv_gradient_zero_fills_its_tail_with_output_padding_not_a_pad(x, weight):
    ops = _backward_ops(Case("Conv", [X(x), _w(*weight)], attrs=dict(strides=[2, 2])))
    assert "ConvTranspose" in ops and "Pad" not in ops


def test_flipped_kernel_swaps_channels_per_group_and_reverses_taps():
    w = np.arange(4 * 3 * 2 * 2, dtype=np.float32).reshape(4, 3, 2, 2)  # 2 groups: 2 out, 3 in each
    flipped = flipped_kernel(w, group=2)
    assert flipped.shape == (6, 2, 2, 2)
    np.testing.assert_array_equal(flipped[4, 1], w[3, 1, ::-1, ::-1])  # group 1: in 1 ↔ out 1
    np.testing.assert_array_equal(flipped[0, 1], w[1, 0, ::-1, ::-1])


@pytest.mark.parametrize("op, inputs", [
    ("Relu", [X((2, 3, 4))]),
    ("Clip", [X((2, 3, 4)), C(np.float32(0.0)), C(np.float32(6.0))]),
])
def test_activation_masks_multiply_instead_of_select(op, inputs):
    nodes = _backward_nodes(Case(op, inputs))
    ops = [n.op_type for n in nodes]
    assert "Where" not in ops and {"Cast", "Mul"} <= set(ops)
    # the mask reads the output: the forward's X stays a Conv's private result, which ORT fuses
    assert not any("x0" in n.input for n in nodes)


def test_fan_in_sums_broadcast_an_expanded_gradient_instead_of_copying_it():
    from onnx import TensorProto, helper

    from onnxcam.autodiff import backward

    shape = [2, 3, 4, 5]
    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["x"], ["s"]), helper.make_node("Mul", ["x", "s"], ["y"])], "se",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape),
         helper.make_tensor_value_info("u", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    result = backward(model, {"y": "u"}, ["x"])
    grad = result.names["x"]
    produced = {o: n for n in result.model.graph.node for o in n.output}
    total = produced[grad]
    assert total.op_type == "Sum" and not any(produced[i].op_type == "Expand" for i in total.input if i in produced)
    result.model.graph.output.append(helper.make_tensor_value_info(grad, TensorProto.FLOAT, shape))
    rng = np.random.default_rng(0)
    x, u = rng.standard_normal(shape).astype(np.float32), rng.standard_normal(shape).astype(np.float32)
    got = session(result.model).run([grad], {"x": x, "u": u})[0]
    s = x.mean(axis=(2, 3), keepdims=True)
    want = u * s + (u * x).sum(axis=(2, 3), keepdims=True) / 20  # through Mul, and through the pool
    np.testing.assert_allclose(got, np.broadcast_to(want, shape), rtol=1e-5, atol=1e-6)


def _silu_graph(extra_use: bool, swapped: bool):
    """y = x·Sigmoid(x) (operands in either order), and z = y + 2·s where ``extra_use`` (s read twice)."""
    import onnx
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Sigmoid", ["x"], ["s"]),
             helper.make_node("Mul", ["s", "x"] if swapped else ["x", "s"], ["y"])]
    out = "y"
    if extra_use:
        nodes += [helper.make_node("Mul", ["s", "two"], ["s2"]), helper.make_node("Add", ["y", "s2"], ["z"])]
        out = "z"
    graph = helper.make_graph(nodes, "silu", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4])],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, [2, 3, 4])],
                              [onnx.numpy_helper.from_array(np.array(2.0, np.float32), "two")])
    graph.input.append(helper.make_tensor_value_info("seed", TensorProto.FLOAT, [2, 3, 4]))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), out


@pytest.mark.parametrize("extra_use", [False, True])
@pytest.mark.parametrize("swapped", [False, True])
def test_silu_is_differentiated_as_one_op(extra_use, swapped):
    """x·Sigmoid(x): dX = dY·S·(1 + X − Y) in four element-wise ops and no fan-in Sum; exact where S is
    also read elsewhere (its other gradient still goes through the Sigmoid)."""
    from onnx import helper

    from onnxcam.autodiff.engine import backward

    model, out = _silu_graph(extra_use, swapped)
    grads = backward(model, {out: "seed"}, ["x"])
    model = grads.model
    model.graph.output.append(helper.make_tensor_value_info(grads.names["x"], 1, None))
    added = [n.op_type for n in model.graph.node[len(_silu_graph(extra_use, swapped)[0].graph.node):]]
    if not extra_use:
        assert "Sum" not in added and len(added) == 4, added
    rng = np.random.default_rng(0)
    x = rng.uniform(-6, 6, (2, 3, 4)).astype(np.float32)
    seed = rng.standard_normal((2, 3, 4)).astype(np.float32)
    got = session(model).run([grads.names["x"]], {"x": x, "seed": seed})[0]
    s = 1 / (1 + np.exp(-x.astype(np.float64)))
    expected = seed * (s * (1 + x * (1 - s)) + (2 * s * (1 - s) if extra_use else 0))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_a_sigmoid_output_asked_for_keeps_its_own_gradient():
    from onnxcam.autodiff.engine import backward

    model, out = _silu_graph(False, False)
    grads = backward(model, {out: "seed"}, ["s", "x"])
    assert set(grads.names) == {"s", "x"}
