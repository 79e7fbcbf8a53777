"""Boxes from a raw detector head's outputs (NumPy), and the per-box weighting of the score tensor.

Per anchor the box takes its most confident class (confidence = class probability, times the
objectness where the head has one); anchors below ``min_score`` are dropped, then OpenCV's
class-wise NMS (``cv2.dnn.NMSBoxesBatched``) at ``iou`` keeps the best of overlapping boxes
of one class, and the ``max_boxes`` most confident remain. Boxes are (x0, y0, x1, y1) in the
model input's pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from onnxcam.detection.head import Head, grid_strides
from onnxcam.errors import ModelError, OnnxCamError

__all__ = ["Boxes", "BoxOptions", "decode", "select", "box_weights"]


@dataclass(frozen=True)
class BoxOptions:
    min_score: float = 0.25
    iou: float = 0.45
    max_boxes: int = 10
    box: int | None = None  # keep only the box of this index (after NMS, most confident first)
    classes: tuple[int, ...] | None = None  # keep only boxes of these classes

    def __post_init__(self):
        for name in ("min_score", "iou"):
            if not 0.0 <= float(getattr(self, name)) <= 1.0:
                raise OnnxCamError(f"{name} must be between 0 and 1, got {getattr(self, name)}")
        if int(self.max_boxes) < 1:
            raise OnnxCamError(f"max_boxes must be at least 1, got {self.max_boxes}")
        if self.box is not None and not 0 <= int(self.box) < int(self.max_boxes):
            raise OnnxCamError(f"box {self.box} is not among the max_boxes={self.max_boxes} boxes (0..{self.max_boxes - 1})")


@dataclass
class Boxes:
    """One image's boxes, most confident first."""

    xyxy: np.ndarray  # (K, 4) float32, model input pixels
    classes: np.ndarray  # (K,) int64
    scores: np.ndarray  # (K,) float32: the confidence (class probability × objectness)
    anchors: np.ndarray  # (K,) int64: the anchor (row of the score tensor) each box was read from

    def __len__(self) -> int:
        return len(self.scores)


def decode(head: Head, outputs: dict[str, np.ndarray], input_hw: tuple[int, int]) -> list[tuple]:
    """Per image: boxes (A, 4) xyxy in input pixels, class confidences (A, C), and the (anchors, classes)
    the graph itself selected — by its NonMaxSuppression, or as an end-to-end head's rows — or None
    where onnxcam selects the boxes (:func:`select`)."""
    if head.layout == "end2end":
        return _end2end_rows(head, outputs)
    decoded = _decode(head, outputs, input_hw)
    given = _nms_selected(head, outputs) if head.layout == "nms" else [None] * len(decoded)
    return [(boxes, confidence, chosen) for (boxes, confidence), chosen in zip(decoded, given)]


def _decode(head: Head, outputs, input_hw: tuple[int, int]) -> list[tuple[np.ndarray, np.ndarray]]:
    if head.layout == "levels":
        return _decode_levels(head, outputs, input_hw)
    if head.layout == "nms":
        return _decode_nms(head, outputs)
    if head.layout == "nanodet":
        return _decode_nanodet(head, outputs, input_hw)
    raw = np.asarray(outputs[head.output], np.float32)
    rows = raw if head.layout == "yolov5" else np.swapaxes(raw, 1, 2)  # (N, A, K)
    results = []
    for sample in rows:
        boxes = sample[:, :4]
        if head.boxes == "yolox":
            boxes = _decode_yolox(boxes, input_hw)
        first = head.output_first_class
        confidence = _probability(sample[:, first:first + head.classes], head)
        if head.objectness >= 0:
            confidence = confidence * _probability(sample[:, head.objectness:head.objectness + 1], head)
        results.append((_xyxy(boxes), confidence))
    return results


def _probability(values: np.ndarray, head: Head) -> np.ndarray:
    """The columns as probabilities (a head without a final Sigmoid outputs logits)."""
    return values if head.probabilities else 1 / (1 + np.exp(-values))


def _xyxy(cxcywh: np.ndarray) -> np.ndarray:
    centre, size = cxcywh[:, :2], cxcywh[:, 2:4]
    return np.concatenate([centre - size / 2, centre + size / 2], axis=1)


def _decode_yolox(raw: np.ndarray, input_hw) -> np.ndarray:
    """YOLOX's raw regressions of all levels (strides 8, 16, 32 and maybe 64, joined) → (cx, cy, w, h)."""
    height, width = input_hw
    strides = [s for s in (8, 16, 32, 64)]
    for levels in (3, 4):
        chosen = strides[:levels]
        if sum((height // s) * (width // s) for s in chosen) == len(raw):
            break
    else:
        raise ModelError(f"cannot lay {len(raw)} anchors on the grids of strides 8-32 (or 8-64) of a "
                         f"{height}x{width} input; is the input size right (--input-shape)?")
    edges = np.cumsum([0, *[(height // s) * (width // s) for s in chosen]])
    return np.concatenate([_offsets_level(raw[a:b], s, input_hw) for a, b, s in zip(edges, edges[1:], chosen)])


def _offsets_level(raw: np.ndarray, stride: int, input_hw) -> np.ndarray:
    """One level's raw (A_l, 4) regressions → (cx, cy, w, h): ((x, y) + cell) · stride, exp(w, h) · stride
    (YOLOX's decoding; YuNet's too)."""
    ys, xs = np.meshgrid(np.arange(input_hw[0] // stride), np.arange(input_hw[1] // stride), indexing="ij")
    cells = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float32)
    return np.concatenate([(raw[:, :2] + cells) * stride, np.exp(raw[:, 2:4]) * stride], axis=1)


def _decode_levels(head: Head, outputs, input_hw) -> list[tuple[np.ndarray, np.ndarray]]:
    def joined(names):
        return np.concatenate([np.asarray(outputs[name], np.float32) for name in names], axis=1)

    confidence = _probability(joined(head.score_outputs), head)
    if head.objectness_outputs:
        confidence = confidence * _probability(joined(head.objectness_outputs), head)
    box_maps = [np.asarray(outputs[name], np.float32) for name in head.box_outputs]
    if head.boxes == "xyxy":
        boxes = np.concatenate(box_maps, axis=1)
    else:
        anchors = [m.shape[1] for m in box_maps]
        strides = grid_strides(input_hw, anchors)
        if not strides:
            raise ModelError(f"cannot lay the levels' anchors {anchors} on grids of strides 4-128 of a "
                             f"{input_hw[0]}x{input_hw[1]} input; is the input size right (--input-shape)?")
        decoded = [_decode_dfl(m, s, input_hw) if head.boxes == "dfl" else
                   np.stack([_xyxy(_offsets_level(sample, s, input_hw)) for sample in m])
                   for m, s in zip(box_maps, strides)]
        boxes = np.concatenate(decoded, axis=1)
    return [(boxes[n], confidence[n]) for n in range(len(confidence))]


def _decode_nanodet(head: Head, outputs, input_hw) -> list[tuple[np.ndarray, np.ndarray]]:
    """One (N, A, C + 4·(R+1)) output: class probabilities, then the DFL bins, of pyramid levels of
    doubling strides (8, 16, 32, 64 in NanoDet-Plus) found from A."""
    raw = np.asarray(outputs[head.output], np.float32)
    height, width = input_hw
    found = [(levels, counts) for first in (8, 4, 16) for n in (3, 4, 2, 5)
             for levels in [[first << i for i in range(n)]]
             for counts in [[int(np.ceil(height / s)) * int(np.ceil(width / s)) for s in levels]]
             if sum(counts) == raw.shape[1]]
    if not found:
        raise ModelError(f"cannot lay {raw.shape[1]} anchors on the grids of 2-5 levels of doubling strides (from 4, "
                         f"8 or 16) of a {height}x{width} input; is the input size right (--input-shape)?")
    levels, counts = found[0]
    bins = raw[..., head.classes:]
    edges = np.cumsum([0, *counts])
    boxes = np.concatenate([_decode_dfl(bins[:, a:b], s, input_hw) for a, b, s in zip(edges, edges[1:], levels)],
                           axis=1)
    scores = _probability(raw[..., :head.classes], head)
    return [(boxes[n], scores[n]) for n in range(len(raw))]


def _decode_nms(head: Head, outputs) -> list[tuple[np.ndarray, np.ndarray]]:
    """The NonMaxSuppression's inputs: boxes (N, A, 4) as (y0, x0, y1, x1) or (cx, cy, w, h), scores (N, C, A)."""
    boxes = np.asarray(outputs[head.box_outputs[0]], np.float32)
    scores = _probability(np.swapaxes(np.asarray(outputs[head.score_outputs[0]], np.float32), 1, 2), head)
    if head.boxes == "yxyx":
        y0, x0, y1, x1 = np.moveaxis(boxes, -1, 0)
        corners = np.stack([np.minimum(x0, x1), np.minimum(y0, y1), np.maximum(x0, x1), np.maximum(y0, y1)], -1)
    else:
        corners = np.stack([_xyxy(b) for b in boxes])
    return [(corners[n], scores[n]) for n in range(len(boxes))]


def _nms_selected(head: Head, outputs) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per image, the (anchors, classes) the graph's NonMaxSuppression kept."""
    rows = np.asarray(outputs[head.selected], np.int64).reshape(-1, 3)
    images = len(outputs[head.score_outputs[0]])
    return [(rows[rows[:, 0] == n, 2], rows[rows[:, 0] == n, 1]) for n in range(images)]


def _end2end_rows(head: Head, outputs):
    """Per image: boxes (A, 4) holding each selected row's box at its anchor (zeros elsewhere), the class
    probabilities (A, C), and the rows' (anchors, classes). A row's anchor is the one whose probability
    for the row's class is the row's score: the head's TopK and Gathers copy it, so they are equal."""
    probabilities = np.asarray(outputs[head.score_outputs[0]], np.float32)
    if head.class_axis == 1:
        probabilities = np.swapaxes(probabilities, 1, 2)  # (N, A, C)
    results = []
    for confidence, rows in zip(probabilities, np.asarray(outputs[head.box_outputs[0]], np.float32)):
        classes = np.rint(rows[:, 5]).astype(np.int64)
        real = (classes >= 0) & (classes < head.classes)  # some exports pad with rows of class -1
        rows, classes = rows[real], classes[real]
        gaps = np.abs(confidence[:, classes].T - rows[:, 4:5])  # (K, A)
        anchors = np.argmin(gaps, axis=1)
        closest = gaps[np.arange(len(rows)), anchors]
        if np.any(closest > 1e-6 + 1e-5 * np.abs(rows[:, 4])):
            k = int(np.argmax(closest))
            raise ModelError(f"the end-to-end head's row {k} (score {rows[k, 4]:.6g}, class {classes[k]}) equals no "
                             "anchor's probability of that class in the Sigmoid output before the rows, so onnxcam "
                             "cannot tell which anchor it was picked from; explain a raw (N, 4+C, A) head export "
                             "instead")
        boxes = np.zeros((len(confidence), 4), np.float32)
        boxes[anchors] = rows[:, :4]
        results.append((boxes, confidence, (anchors, classes)))
    return results


def _decode_dfl(distributions: np.ndarray, stride: int, input_hw) -> np.ndarray:
    """(N, A, 4·(R+1)) bin logits → (N, A, 4) xyxy: the centre (cell + ½)·stride minus/plus the
    expected distances (softmax over the R+1 bins · bin index) × stride (left, top, right, bottom)."""
    n, a, k = distributions.shape
    bins = k // 4
    logits = distributions.reshape(n, a, 4, bins)
    weights = np.exp(logits - logits.max(axis=-1, keepdims=True))
    weights /= weights.sum(axis=-1, keepdims=True)
    distances = (weights * np.arange(bins, dtype=np.float32)).sum(axis=-1) * stride  # (N, A, 4)
    height, width = input_hw
    rows, cols = int(np.ceil(height / stride)), int(np.ceil(width / stride))
    ys, xs = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    centres = (np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float32) + 0.5) * stride  # (A, 2)
    return np.concatenate([centres - distances[..., :2], centres + distances[..., 2:]], axis=-1)


def select(boxes: np.ndarray, confidence: np.ndarray, options: BoxOptions, given=None) -> Boxes:
    """Threshold, class-wise NMS, the most confident ``max_boxes``, then ``box``/``classes``; ``given``
    (anchors, classes) are the boxes a graph's own NMS selected: only thresholded and ranked."""
    if given is None:
        anchors = np.arange(len(boxes))
        classes = np.argmax(confidence, axis=1)
    else:
        anchors, classes = (np.asarray(a, np.int64) for a in given)
    scores = confidence[anchors, classes]
    keep = np.flatnonzero(scores >= options.min_score)
    if options.classes is not None:
        keep = keep[np.isin(classes[keep], options.classes)]
    if keep.size and given is None:
        keep = _nms(boxes, scores, classes, keep, options)
    keep = keep[np.argsort(-scores[keep], kind="stable")][:options.max_boxes]
    if options.box is not None:
        keep = keep[options.box:options.box + 1]
    return Boxes(boxes[anchors[keep]].astype(np.float32), classes[keep].astype(np.int64),
                 scores[keep].astype(np.float32), anchors[keep].astype(np.int64))


def _nms(boxes, scores, classes, keep: np.ndarray, options: BoxOptions) -> np.ndarray:
    """Class-wise NMS of the candidates ``keep``, exact for the ``max_boxes`` most confident survivors
    but run on the most confident candidates only: whether a box survives depends on the more
    confident boxes of its class alone, so when the best n candidates leave ``max_boxes`` survivors,
    those are the survivors' best of all candidates. n starts at 8 · max_boxes and doubles."""
    order = keep[np.argsort(-scores[keep], kind="stable")]
    count = 8 * options.max_boxes
    while True:
        if count < len(order):  # candidates tied with the last one taken come too
            count = int(np.searchsorted(-scores[order], -scores[order[count - 1]], side="right"))
        chosen = order[:count]
        xywh = np.concatenate([boxes[chosen, :2], boxes[chosen, 2:] - boxes[chosen, :2]], axis=1)
        kept = cv2.dnn.NMSBoxesBatched(xywh.tolist(), scores[chosen].tolist(), classes[chosen].tolist(),
                                       float(options.min_score), float(options.iou))
        survivors = chosen[np.asarray(kept, np.int64).reshape(-1)]
        if len(survivors) >= options.max_boxes or count >= len(order):
            return survivors
        count *= 2


def box_weights(head: Head, boxes: Boxes, anchors: int, dtype=np.float32) -> np.ndarray:
    """(K, *S) one-hot weightings of the batch-first score tensor S (``anchors`` rows), one per box."""
    weights = np.zeros((len(boxes), anchors, head.columns), dtype)  # anchors-last layout
    for k, (anchor, c) in enumerate(zip(boxes.anchors, boxes.classes)):
        weights[k, anchor, head.box_columns(c)] = 1
    return weights if head.class_axis == 2 else np.swapaxes(weights, 1, 2)
