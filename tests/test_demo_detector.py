"""The shipped demo detector (scripts/train_demo_detector.py) finds the objects of fresh scenes."""

import json
import sys

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import shapes_data  # noqa: E402

MODEL = ROOT / "models" / "shapes_det.onnx"
SIDECAR = ROOT / "models" / "shapes_det.json"
ANCHORS = 16 * 16 + 8 * 8


@pytest.fixture(scope="module")
def scenes():
    return shapes_data.validation_scenes(50)


@pytest.fixture(scope="module")
def outputs(scenes):
    session = ort.InferenceSession(str(MODEL), providers=["CPUExecutionProvider"])
    images = np.stack([image for image, _, _ in scenes]).transpose(0, 3, 1, 2)
    (boxes,) = session.run(["boxes"], {"image": images.astype(np.float32) / 255.0})
    return boxes


def decode(output: np.ndarray):
    """(4 + C, A) -> x0, y0, x1, y1 boxes and classes kept by threshold 0.25 and class-wise NMS 0.45."""
    cx, cy, w, h = output[:4]
    probs = output[4:]
    classes, scores = probs.argmax(axis=0), probs.max(axis=0)
    xywh = np.stack([cx - w / 2, cy - h / 2, w, h], axis=1)
    keep = np.asarray(cv2.dnn.NMSBoxesBatched(xywh.tolist(), scores.tolist(), classes.tolist(), 0.25, 0.45))
    keep = keep.reshape(-1).astype(int)
    corners = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    return corners[keep], classes[keep]


def iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    lt, rb = np.maximum(box[:2], others[:, :2]), np.minimum(box[2:], others[:, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=1)
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
    return inter / (area(box) + area(others) - inter)


def test_layout_is_a_yolov8_head(outputs):
    model = onnx.load(str(MODEL))
    last = model.graph.node[-1]
    producers = {out: node.op_type for node in model.graph.node for out in node.output}
    assert last.op_type == "Concat" and producers[last.input[-1]] == "Sigmoid"
    assert outputs.shape == (50, 4 + len(shapes_data.CLASSES), ANCHORS)
    sidecar = json.loads(SIDECAR.read_text())
    assert sidecar["size"] == [128, 128] and sidecar["mean"] == [0.0] * 3 and sidecar["std"] == [1.0] * 3


def test_recall_on_fresh_scenes(scenes, outputs):
    found = total = 0
    for output, (_, gt_boxes, gt_classes) in zip(outputs, scenes):
        boxes, classes = decode(output)
        for gt_box, gt_class in zip(gt_boxes, gt_classes):
            same_class = boxes[classes == gt_class]
            found += bool(len(same_class)) and bool((iou(gt_box.astype(float), same_class) >= 0.5).any())
        total += len(gt_boxes)
    assert found / total >= 0.85, f"recall {found / total:.3f} < 0.85 over {total} objects"


def test_per_box_maps_point_at_their_objects():
    """The pointing game of onnxcam's per-box maps (the default method, HiResCAM for detectors) on fresh scenes."""
    import detector_check

    hits, total = detector_check.demo_pointing_game(40)
    assert total >= 80 and hits / total >= 0.9, (hits, total)


def test_run_explains_every_object_of_the_examples(tmp_path):
    from tests.test_cli import invoke

    out = tmp_path / "out"
    assert invoke("-q", "run", MODEL, ROOT / "models" / "examples_det", "-o", out).exit_code == 0
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert {r["image"].rsplit("/", 1)[-1] for r in records} == {f"scene_{i}.png" for i in range(1, 5)}
    assert all(r["status"] == "ok" and r["method"] == "hirescam" and r["box_index"] is not None for r in records)
    assert len(records) >= 8 and all((out / r["heatmap"]).is_file() for r in records)
