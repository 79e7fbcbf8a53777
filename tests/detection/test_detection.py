"""The detection task on tiny torch detectors of every layout: layout, layers, per-box gradients, boxes."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

from onnxcam import Explainer, export
from onnxcam.detection.boxes import BoxOptions, box_weights, select
from onnxcam.detection.head import Head, find_head
from onnxcam.errors import OnnxCamError
from onnxcam.headmodel import cut_model
from onnxcam.plan import make_plans, plan_view
from tests.detection import detector_nets
from tests.detection.detector_nets import BINS, LAYOUTS, STRIDES, TinyDetector
from tests.test_cli import assert_one_line_error, invoke

ALL = BoxOptions(min_score=0.0, iou=0.45, max_boxes=6)


@pytest.fixture(scope="module", params=LAYOUTS)
def detector(request):
    module = TinyDetector(request.param)
    return module, detector_nets.export(module)


def _images(n=2, seed=1):
    return np.random.default_rng(seed).uniform(-1, 1, (n, 3, 32, 32)).astype(np.float32)


def _plans(model):
    return make_plans(plan_view(model), ["auto"])


def test_the_layout_is_recognised(detector):
    module, model = detector
    plans = _plans(model)
    assert plans[0].task.name == "detection"
    explainer = Explainer(model)
    head = Head.from_json(explainer.contract.detection)
    assert (head.layout, head.classes) == ({"yunet": "levels"}.get(module.layout, module.layout), 3)
    assert head.boxes == {"levels": "dfl", "nanodet": "dfl", "yunet": "yolox"}.get(module.layout, "cxcywh")
    assert head.objectness == {"yolov5": 4, "yunet": 0}.get(module.layout, -1)


def test_automatic_layers_are_the_neck_outputs(detector):
    module, model = detector
    layers = [p.layer.tensor for p in _plans(model)]
    assert len(layers) == len(STRIDES)
    images = _images()
    cut = cut_model(model, ["image"], layers)
    got = ort.InferenceSession(cut.model.SerializeToString()).run(layers, {"image": images})
    with torch.no_grad():
        expected = module.features(torch.from_numpy(images))
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b.numpy(), atol=1e-5)


def _torch_box_scores(module, images, boxes_per_image):
    """Per box: the score onnxcam differentiates and its gradient wrt each neck output, by autograd."""
    x = torch.from_numpy(images)
    neck = [t.detach().requires_grad_(True) for t in module.features(x)]
    classes, objectness, _ = module.logits(x, neck)
    results = []
    for n, boxes in enumerate(boxes_per_image):
        for a, c in zip(boxes.anchors, boxes.classes):
            score = classes[n, a, c] + (objectness[n, a] if module.layout in ("yolov5", "yunet") else 0)
            grads = torch.autograd.grad(score, neck, retain_graph=True)
            results.append((float(score.detach()), [g[n].numpy() for g in grads]))
    return results


def test_per_box_gradients_equal_autograd(detector):
    """The exposed gradient for each kept box's one-hot weighting is torch's gradient of its logit."""
    module, model = detector
    images = _images()
    explainer = Explainer(model)
    result = explainer.explain_boxes(images, min_score=0.0, max_boxes=6)
    boxes = [det.boxes for det in result.images]
    expected = _torch_box_scores(module, images, boxes)
    layers = [p.layer.tensor for p in _plans(model)]
    session = {}
    for level, layer in enumerate(layers):
        exported = export(model, layer=layer, expose=["gradients"])
        session[level] = ort.InferenceSession(exported.model.SerializeToString())
    k = 0
    for n, image_boxes in enumerate(boxes):
        weights = box_weights(Head.from_json(explainer.contract.detection), image_boxes, result.anchors)
        for i in range(len(image_boxes)):
            score, grads = expected[k]
            k += 1
            for level in session:
                got_grad, got_score = session[level].run(["gradients", "cam_score"], {
                    "image": images[n:n + 1], "target_weights": weights[i:i + 1]})
                np.testing.assert_allclose(got_score[0], score, rtol=1e-4, atol=1e-4)
                np.testing.assert_allclose(got_grad[0], grads[level], atol=1e-4, rtol=1e-3)
    assert k == sum(len(b) for b in boxes) > 0


def test_box_maps_equal_the_whole_explain_model(detector):
    """The cheap per-box path (head passes on the layers' activations) gives the full model's maps."""
    _, model = detector
    images = _images()
    explainer = Explainer(model, method="hirescam")
    result = explainer.explain_boxes(images, min_score=0.0, max_boxes=4)
    head = Head.from_json(explainer.contract.detection)
    for n, det in enumerate(result.images):
        assert len(det.boxes) == 4 and det.maps.shape == (4, 32, 32)
        weights = box_weights(head, det.boxes, result.anchors)
        for i in range(len(det.boxes)):
            full = explainer.explain(images[n:n + 1], target_weights=weights[i:i + 1])
            np.testing.assert_allclose(det.maps[i], full.cam[0], atol=1e-5)
            np.testing.assert_allclose(det.scores[i], full.scores[0], rtol=1e-5, atol=1e-5)


def _reference_boxes(module, images):
    """Boxes and confidences straight from torch's tensors, decoded by hand (centre ± distances)."""
    x = torch.from_numpy(images)
    with torch.no_grad():
        outputs = module(x)
        if module.layout == "yolov8":
            rows = outputs.transpose(1, 2).numpy()
            cxcywh, confidence = rows[..., :4], rows[..., 4:]
        elif module.layout == "yolov5":
            rows = outputs.numpy()
            cxcywh, confidence = rows[..., :4], rows[..., 5:] * rows[..., 4:5]
        elif module.layout == "yunet":  # cls, obj, bbox per level: YOLOX's ((x, y) + cell)·s, exp(w, h)·s
            levels = len(STRIDES)
            confidence = (torch.cat(outputs[:levels], 1) * torch.cat(outputs[levels:2 * levels], 1)).numpy()
            parts = []
            for stride, raw in zip(STRIDES, outputs[2 * levels:3 * levels]):
                side = 32 // stride
                ys, xs = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
                cells = np.stack([xs.ravel(), ys.ravel()], 1)
                raw = raw.numpy()
                parts.append(np.concatenate([(raw[..., :2] + cells) * stride, np.exp(raw[..., 2:4]) * stride], -1))
            cxcywh = np.concatenate(parts, 1)
        else:
            if module.layout == "nanodet":
                classes = module.classes
                split = [(8 * 8), (4 * 4)]
                confidence = outputs[..., :classes].numpy()
                outputs = (None, None, *torch.split(outputs[..., classes:], split, dim=1))
            else:
                confidence = torch.cat(outputs[:2], 1).numpy()
            boxes = []
            for level, raw in enumerate(outputs[2:]):
                n, a, _ = raw.shape
                d = (raw.reshape(n, a, 4, BINS).softmax(-1) * torch.arange(BINS)).sum(-1) * STRIDES[level]
                side = 32 // STRIDES[level]
                ys, xs = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
                centre = (np.stack([xs.ravel(), ys.ravel()], 1) + 0.5) * STRIDES[level]
                boxes.append(np.concatenate([centre - d[..., :2].numpy(), centre + d[..., 2:].numpy()], -1))
            return np.concatenate(boxes, 1), confidence
    return np.concatenate([cxcywh[..., :2] - cxcywh[..., 2:] / 2, cxcywh[..., :2] + cxcywh[..., 2:] / 2], -1), confidence


def _greedy_nms(boxes, scores, classes, iou):
    order, kept = list(np.argsort(-scores, kind="stable")), []
    while order:
        best = order.pop(0)
        kept.append(best)
        order = [j for j in order if classes[j] != classes[best] or _iou(boxes[best], boxes[j]) <= iou]
    return kept


def _iou(a, b):
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.mark.parametrize("min_score,iou", [(0.0, 0.45), (0.5, 0.3)])
def test_boxes_equal_a_numpy_reference(detector, min_score, iou):
    module, model = detector
    images = _images(3, seed=4)
    result = Explainer(model).explain_boxes(images, min_score=min_score, iou=iou, max_boxes=8)
    boxes, confidence = _reference_boxes(module, images)
    for n, det in enumerate(result.images):
        classes = confidence[n].argmax(1)
        scores = confidence[n].max(1)
        candidates = np.flatnonzero(scores >= min_score)
        kept = candidates[_greedy_nms(boxes[n][candidates], scores[candidates], classes[candidates], iou)][:8]
        np.testing.assert_array_equal(det.boxes.anchors, kept)
        np.testing.assert_array_equal(det.boxes.classes, classes[kept])
        np.testing.assert_allclose(det.boxes.scores, scores[kept], rtol=1e-5)
        np.testing.assert_allclose(det.boxes.xyxy, boxes[n][kept], atol=1e-3)


def test_box_and_class_narrow_the_boxes(detector):
    _, model = detector
    images = _images(1)
    explainer = Explainer(model)
    every = explainer.explain_boxes(images, min_score=0.0, max_boxes=6).images[0].boxes
    second = explainer.explain_boxes(images, min_score=0.0, max_boxes=6, box=1).images[0].boxes
    assert list(second.anchors) == [every.anchors[1]]
    one_class = explainer.explain_boxes(images, min_score=0.0, max_boxes=6, classes=[int(every.classes[0])])
    assert set(one_class.images[0].boxes.classes.tolist()) == {int(every.classes[0])}


def test_select_drops_everything_below_the_threshold():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]], np.float32)
    confidence = np.array([[0.9, 0.1], [0.8, 0.1], [0.1, 0.2]], np.float32)
    kept = select(boxes, confidence, BoxOptions(min_score=0.5, iou=0.45, max_boxes=10))
    assert kept.anchors.tolist() == [0]  # box 1 overlaps box 0 (IoU 0.68), box 2 is below 0.5
    none = select(boxes, confidence, BoxOptions(min_score=0.95, iou=0.45, max_boxes=10))
    assert len(none) == 0


def test_options_are_checked():
    with pytest.raises(OnnxCamError, match="min_score"):
        BoxOptions(min_score=1.5)
    with pytest.raises(OnnxCamError, match="max_boxes"):
        BoxOptions(max_boxes=0)


def test_cli_writes_boxes_and_per_box_maps(tmp_path):
    import cv2

    model = detector_nets.export(TinyDetector("yolov8"))
    path = tmp_path / "det.onnx"
    path.write_bytes(model.SerializeToString())
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        cv2.imwrite(str(images / f"{name}.png"), rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    out = tmp_path / "out"
    result = invoke("-q", "run", path, images, "-o", out, "--preset", "unit", "--min-score", "0", "--max-boxes", "3",
                    "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["images"] == 2 and summary["task"] == "detection"
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["box_index"] for r in records] == [0, 1, 2, 0, 1, 2]
    for record in records:
        assert record["status"] == "ok" and record["boxes"] == 3
        x0, y0, x1, y1 = record["box"]
        assert 0 <= x0 <= x1 <= 64 and 0 <= y0 <= y1 <= 48  # in the image's pixels
        heat = cv2.imread(str(out / record["heatmap"]), cv2.IMREAD_UNCHANGED)
        assert heat.dtype == np.uint16 and heat.shape == (48, 64)
        assert (out / record["overlay"]).is_file() and (out / record["image_overlay"]).is_file()
    assert_one_line_error(invoke("run", path, images, "-o", tmp_path / "o2", "--preset", "unit", "--target", "3"),
                          "does not apply to detection")


def test_a_graph_ending_in_nms_explains_the_boxes_it_selects():
    module = TinyDetector("yolov8")
    model = detector_nets.with_nms(detector_nets.export(module))
    images = _images(2, seed=3)
    selected = ort.InferenceSession(model.SerializeToString()).run(["selected"], {"image": images})[0]
    explainer = Explainer(model)
    head = Head.from_json(explainer.contract.detection)
    assert head.layout == "nms" and head.classes == 3
    result = explainer.explain_boxes(images, min_score=0.0, max_boxes=50)
    for n, det in enumerate(result.images):
        rows = selected[selected[:, 0] == n]
        assert sorted(zip(det.boxes.anchors.tolist(), det.boxes.classes.tolist())) == \
            sorted(zip(rows[:, 2].tolist(), rows[:, 1].tolist()))
    boxes = [det.boxes for det in result.images]
    expected = _torch_box_scores(module, images, boxes)
    k = 0
    for n, det in enumerate(result.images):
        for i in range(len(det.boxes)):
            np.testing.assert_allclose(det.scores[i], expected[k][0], rtol=1e-4, atol=1e-4)  # the class logit
            k += 1
    assert k > 0


def test_an_end_to_end_head_explains_the_rows_it_selects():
    """YOLOv10/YOLO26-style (N, K, 6) rows: the boxes are the rows (scores, classes, boxes), each scored by
    its class logit at the anchor it was picked from."""
    module = detector_nets.EndToEnd(TinyDetector("yolov8"), rows=12)
    model = detector_nets.export_end_to_end(module)
    images = _images(2, seed=3)
    rows = ort.InferenceSession(model.SerializeToString()).run(["rows"], {"image": images})[0]
    explainer = Explainer(model)
    head = Head.from_json(explainer.contract.detection)
    assert (head.layout, head.classes, head.boxes) == ("end2end", 3, "rows")
    result = explainer.explain_boxes(images, min_score=0.0, max_boxes=50)
    for n, det in enumerate(result.images):
        assert len(det.boxes) == 12
        np.testing.assert_array_equal(det.boxes.scores, rows[n, :, 4])  # the model's own order: most confident first
        np.testing.assert_array_equal(det.boxes.classes, rows[n, :, 5].astype(np.int64))
        np.testing.assert_array_equal(det.boxes.xyxy, rows[n, :, :4])
    expected = _torch_box_scores(module.detector, images, [det.boxes for det in result.images])
    got = np.concatenate([det.scores for det in result.images])
    np.testing.assert_allclose(got, [score for score, _ in expected], rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        picked_from = module.anchors(torch.from_numpy(images)).numpy()
    for n, det in enumerate(result.images):  # each row's anchor is the one it was picked from
        np.testing.assert_array_equal(det.boxes.anchors, picked_from[n])
    threshold = float(np.median(rows[0, :, 4]))
    kept = explainer.explain_boxes(images, min_score=threshold, max_boxes=50).images[0].boxes
    assert len(kept) == int(np.sum(rows[0, :, 4] >= threshold)) and len(kept) < 12


class _Landmarks(torch.nn.Module):
    """A face detector's landmark branch alone: (N, A, 10) regressions straight from a Conv, no Sigmoid."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.stem = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, 2, 1), torch.nn.ReLU())
        self.kps = torch.nn.Conv2d(8, 10, 1)

    def forward(self, x):
        return self.kps(self.stem(x)).flatten(2).transpose(1, 2)


def test_raw_regressions_without_a_sigmoid_are_no_detector_head():
    """YuNet's kps outputs (N, A, 10) once read as a (N, A, 5+C) head with 5 classes."""
    model = detector_nets.export_module(_Landmarks(), "kps")
    assert find_head(plan_view(model), "kps") is None
