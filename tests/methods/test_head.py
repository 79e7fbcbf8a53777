"""The shared CAM post-processing graph against the NumPy/OpenCV recipe."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper

from onnxcam.autodiff.emitter import Emitter
from onnxcam.graph import GraphView
from onnxcam.methods.head import finish_cam
from tests.reference import finish


def _head_model(opset: int, layout: str, image_shape, source_hw=None) -> onnx.ModelProto:
    graph = helper.make_graph(
        [], "head",
        [helper.make_tensor_value_info("raw", onnx.TensorProto.FLOAT, ["n", 1, *(source_hw or ("h", "w"))]),
         helper.make_tensor_value_info("image", onnx.TensorProto.FLOAT, image_shape)],
        [],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    emit = Emitter(GraphView(model))
    cam = finish_cam(emit, "raw", "image", layout, source_hw)
    model.graph.node.extend(emit.nodes)
    model.graph.initializer.extend(emit.initializers)
    model.graph.output.append(helper.make_tensor_value_info(cam, onnx.TensorProto.FLOAT, ["n", "H", "W"]))
    onnx.checker.check_model(model, full_check=True)
    return model


@pytest.mark.parametrize("opset", [11, 13, 17, 18, 21])
@pytest.mark.parametrize("layout, size", [("NCHW", (37, 53)), ("NHWC", (64, 48))])
def test_head_matches_recipe(opset, layout, size):
    height, width = size
    image_shape = ["n", 3, height, width] if layout == "NCHW" else ["n", height, width, 3]
    session = ort.InferenceSession(_head_model(opset, layout, image_shape).SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(opset)
    raw = rng.standard_normal((3, 1, 7, 9)).astype(np.float32)
    raw[2] = -np.abs(raw[2])  # all negative: ReLU leaves zeros, and zeros must stay zeros
    image = np.zeros([3, *[d for d in image_shape[1:]]], np.float32)
    (cam,) = session.run(None, {"raw": raw, "image": image})
    expected = np.stack([finish(r[0], height, width) for r in raw])
    assert cam.shape == (3, height, width)
    np.testing.assert_allclose(cam, expected, rtol=0, atol=1e-5)
    assert np.all(cam[2] == 0)
    assert cam[0].max() == pytest.approx(1.0, abs=1e-5) and cam[0].min() == 0


@pytest.mark.parametrize("source_hw, form", [((7, 9), "MatMul"), ((65, 70), "Resize")],
                         ids=["small map: two MatMuls", "over 64 cells: Resize"])
def test_a_small_static_map_is_resized_by_matmuls_with_the_same_result(source_hw, form):
    height, width = 37, 53
    model = _head_model(17, "NCHW", ["n", 3, height, width], source_hw)
    ops = {n.op_type for n in model.graph.node}
    assert form in ops and ({"MatMul", "Resize"} - {form}).isdisjoint(ops)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    raw = np.random.default_rng(5).standard_normal((2, 1, *source_hw)).astype(np.float32)
    (cam,) = session.run(None, {"raw": raw, "image": np.zeros((2, 3, height, width), np.float32)})
    np.testing.assert_allclose(cam, np.stack([finish(r[0], height, width) for r in raw]), rtol=0, atol=1e-5)
