"""Per-box maps on crops (onnxcam.detection.local): the same maps as the whole explain model, the
head's reach read off its windows, and heads that are not local keep the per-box head pass."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxcam import Explainer
from onnxcam.detection.boxes import box_weights
from onnxcam.detection.head import Head
from onnxcam.detection.local import _corner, _window_reach
from onnxcam.graph import GraphView
from tests.detection import detector_nets
from tests.detection.detector_nets import LAYOUTS, TinyDetector


def _images(n=2, seed=3):
    return np.random.default_rng(seed).uniform(-1, 1, (n, 3, 32, 32)).astype(np.float32)


def _assert_maps_equal_whole_model(explainer, images, max_boxes):
    result = explainer.explain_boxes(images, min_score=0.0, max_boxes=max_boxes)
    head = Head.from_json(explainer.contract.detection)
    checked = 0
    for n, det in enumerate(result.images):
        weights = box_weights(head, det.boxes, result.anchors)
        for i in range(len(det.boxes)):
            full = explainer.explain(images[n:n + 1], target_weights=weights[i:i + 1])
            np.testing.assert_allclose(det.maps[i], full.cam[0], atol=2e-6)
            np.testing.assert_allclose(det.scores[i], full.scores[0], rtol=1e-4, atol=1e-4)
            checked += 1
    return checked


@pytest.mark.parametrize("method", ["hirescam", "gradcam", "layercam"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_crop_maps_equal_the_whole_explain_model(layout, method):
    """Every box of two images (corner cells included: 8×8 and 4×4 levels, 3×3 crops) from crops."""
    explainer = Explainer(detector_nets.export(TinyDetector(layout)), method=method)
    checked = _assert_maps_equal_whole_model(explainer, _images(), max_boxes=40)
    local = explainer._box_plan[0]
    assert local is not None, "the tiny detectors' heads are convolutions: the crop path must be taken"
    assert {level.crop for level in local.levels.values()} == {(3, 3)}  # a 3×3 conv then 1×1 convs: R = 1
    assert checked > 20


def test_a_graph_ending_in_nms_takes_crops_too():
    explainer = Explainer(detector_nets.with_nms(detector_nets.export(TinyDetector("yolov8"))), method="hirescam")
    assert _assert_maps_equal_whole_model(explainer, _images(1), max_boxes=5) > 0
    assert explainer._box_plan[0] is not None


def test_an_end_to_end_head_takes_crops_too():
    model = detector_nets.export_end_to_end(detector_nets.EndToEnd(TinyDetector("yolov8")))
    explainer = Explainer(model, method="hirescam")
    assert _assert_maps_equal_whole_model(explainer, _images(2), max_boxes=12) > 0
    assert explainer._box_plan[0] is not None


@pytest.mark.parametrize("layout", ["yolov8", "yolov5"])
def test_a_head_that_reads_the_whole_map_keeps_the_head_pass(layout):
    """A squeeze-and-excitation gate makes every cell's score read every cell: no crop is exact."""
    explainer = Explainer(detector_nets.export(TinyDetector(layout, squeeze=True)), method="gradcam")
    assert _assert_maps_equal_whole_model(explainer, _images(1), max_boxes=6) > 0
    assert explainer._box_plan[0] is None


def test_a_method_with_its_own_backward_keeps_the_head_pass():
    explainer = Explainer(detector_nets.export(TinyDetector("yolov8")), method="guided-gradcam")
    explainer.explain_boxes(_images(1), min_score=0.0, max_boxes=2)
    assert explainer._box_plan[0] is None


@pytest.mark.parametrize("kernel,dilation,pads,auto_pad", [
    (3, 1, (1, 1, 1, 1), "NOTSET"), (5, 1, (2, 1, 2, 3), "NOTSET"), (3, 2, (2, 2, 2, 2), "NOTSET"),
    (4, 1, None, "SAME_UPPER"), (4, 1, None, "SAME_LOWER"), (1, 1, (0, 0, 0, 0), "NOTSET")])
def test_a_windows_reach_covers_exactly_the_cells_an_output_reads(kernel, dilation, pads, auto_pad):
    """Perturbing one input cell at a time: the output's centre cell changes for offsets up to the reach."""
    size = 11
    attrs = dict(kernel_shape=[kernel, kernel], dilations=[dilation, dilation], auto_pad=auto_pad)
    if pads is not None:
        attrs["pads"] = list(pads)
    weight = numpy_helper.from_array(np.random.default_rng(0).uniform(0.5, 1, (1, 1, kernel, kernel)).astype(
        np.float32), "w")
    node = helper.make_node("Conv", ["x", "w"], ["y"], **attrs)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, size, size])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    view = GraphView(model)
    assert view.shape("y") == (1, 1, size, size)
    reach = tuple(_window_reach(view, node))
    session = ort.InferenceSession(model.SerializeToString())
    centre = size // 2
    base = session.run(None, {"x": np.ones((1, 1, size, size), np.float32)})[0][0, 0, centre, centre]
    read = np.zeros((size, size), bool)
    for y in range(size):
        for x in range(size):
            probe = np.ones((1, 1, size, size), np.float32)
            probe[0, 0, y, x] = 2
            read[y, x] = session.run(None, {"x": probe})[0][0, 0, centre, centre] != base
    ys, xs = np.nonzero(read)
    assert (abs(ys - centre).max(), abs(xs - centre).max()) == reach


def test_crops_stay_inside_the_map():
    assert _corner(0, 0, 3, 3, 8, 8) == (0, 0)
    assert _corner(7, 7, 3, 3, 8, 8) == (5, 5)
    assert _corner(4, 2, 3, 5, 8, 8) == (3, 0)
    assert _corner(1, 1, 4, 4, 4, 4) == (0, 0)  # a crop as large as the map is the map


def test_a_strided_window_is_not_local():
    node = helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 3], strides=[2, 2])
    weight = numpy_helper.from_array(np.ones((1, 1, 3, 3), np.float32), "w")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 9, 9])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [weight])
    view = GraphView(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    with pytest.raises(Exception, match="stride"):
        _window_reach(view, node)


@pytest.mark.parametrize("layout", ["yolov8", "levels"])
def test_a_level_without_boxes_does_not_change_the_others(layout):
    """One box per image: the other level runs a stand-in row, whose map is dropped."""
    explainer = Explainer(detector_nets.export(TinyDetector(layout)), method="hirescam")
    images = _images(3, seed=5)
    assert _assert_maps_equal_whole_model(explainer, images, max_boxes=1) == 3
    local = explainer._box_plan[0]
    head = Head.from_json(explainer.contract.detection)
    boxes = explainer.explain_boxes(images, min_score=0.0, max_boxes=1).images
    levels = {local.leaf_level[local.box_entries(head, det.boxes)[0][0][0]] for det in boxes}
    assert len(local.levels) == 2 and len(levels) == 1  # all three boxes on one level: the other stands in


def test_crops_run_in_openvino_too():
    pytest.importorskip("openvino")
    model = detector_nets.export(TinyDetector("yolov5"))
    images = _images()
    expected = Explainer(model, method="hirescam", provider="cpu").explain_boxes(images, min_score=0.0, max_boxes=8)
    explainer = Explainer(model, method="hirescam", provider="openvino")
    found = explainer.explain_boxes(images, min_score=0.0, max_boxes=8)
    assert explainer._box_plan[0] is not None
    for a, b in zip(expected.images, found.images):
        np.testing.assert_array_equal(a.boxes.anchors, b.boxes.anchors)
        np.testing.assert_allclose(a.maps, b.maps, atol=1e-5)
