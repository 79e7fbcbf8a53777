"""Box selection (onnxcam.detection.boxes): NMS on the most confident candidates equals NMS on all; an
end-to-end head's rows find their anchors."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from onnxcam.detection.boxes import BoxOptions, decode, select
from onnxcam.detection.head import Head
from onnxcam.errors import ModelError


def _scene(n: int, classes: int, seed: int):
    """n boxes in clusters (heavy overlap, as a detector's anchors give), xyxy, and (n, classes) confidences."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, 300, (max(1, n // 40), 2))[rng.integers(0, max(1, n // 40), n)] + rng.normal(0, 6, (n, 2))
    sizes = rng.uniform(10, 60, (n, 2))
    boxes = np.concatenate([centres - sizes / 2, centres + sizes / 2], axis=1).astype(np.float32)
    return boxes, rng.uniform(0, 1, (n, classes)).astype(np.float32) ** 3


def _nms_on_all(boxes, confidence, options: BoxOptions) -> np.ndarray:
    classes = confidence.argmax(axis=1)
    scores = confidence[np.arange(len(boxes)), classes]
    keep = np.flatnonzero(scores >= options.min_score)
    xywh = np.concatenate([boxes[keep, :2], boxes[keep, 2:] - boxes[keep, :2]], axis=1)
    kept = keep[np.asarray(cv2.dnn.NMSBoxesBatched(xywh.tolist(), scores[keep].tolist(), classes[keep].tolist(),
                                                   options.min_score, options.iou), np.int64).reshape(-1)]
    return kept[np.argsort(-scores[kept], kind="stable")][:options.max_boxes]


@pytest.mark.parametrize("max_boxes", [1, 3, 10, 40])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_nms_on_the_best_candidates_equals_nms_on_all(max_boxes, seed):
    boxes, confidence = _scene(3000, 4, seed)
    options = BoxOptions(min_score=0.0, iou=0.45, max_boxes=max_boxes)
    np.testing.assert_array_equal(select(boxes, confidence, options).anchors, _nms_on_all(boxes, confidence, options))


def test_fewer_survivors_than_asked_for_are_all_found():
    """One cluster of one class: NMS leaves few boxes, so the candidates double until all are taken."""
    rng = np.random.default_rng(4)
    centres = 100 + rng.normal(0, 8, (500, 2))
    boxes = np.concatenate([centres - 20, centres + 20], axis=1).astype(np.float32)
    confidence = rng.uniform(0, 1, (500, 1)).astype(np.float32)
    options = BoxOptions(min_score=0.0, iou=0.3, max_boxes=50)
    found = select(boxes, confidence, options).anchors
    np.testing.assert_array_equal(found, _nms_on_all(boxes, confidence, options))
    assert 0 < len(found) < 50


def _end2end(rows, probabilities):
    head = Head("end2end", "detection_scores", "detection_scores", 2, 1, 0, -1, True, True, "rows", ("rows",),
                ("detection_scores",))
    return decode(head, {"rows": np.asarray(rows, np.float32)[None],
                         "detection_scores": np.asarray(probabilities, np.float32)[None]}, (32, 32))


def test_end_to_end_rows_find_their_anchors_and_skip_padding():
    probabilities = [[0.1, 0.9, 0.3], [0.8, 0.2, 0.7]]  # (C, A): class 0 at anchor 1 is 0.9
    (boxes, confidence, (anchors, classes)), = _end2end(
        [[1, 2, 3, 4, 0.9, 0], [5, 6, 7, 8, 0.7, 1], [0, 0, 0, 0, 0.0, -1]], probabilities)
    assert anchors.tolist() == [1, 2] and classes.tolist() == [0, 1]  # the class -1 padding row is dropped
    np.testing.assert_array_equal(boxes[[1, 2]], [[1, 2, 3, 4], [5, 6, 7, 8]])
    assert confidence.shape == (3, 2)


def test_end_to_end_rows_that_match_no_anchor_are_refused():
    with pytest.raises(ModelError, match="row 0 .* equals no anchor's probability"):
        _end2end([[1, 2, 3, 4, 0.5, 0]], [[0.1, 0.9, 0.3], [0.8, 0.2, 0.7]])
