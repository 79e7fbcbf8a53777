"""What ``onnxcam run`` writes per image, by task: the files and the ``results.jsonl`` record.

Every image gets ``NAME.overlay.png`` (the map over the image) and ``NAME.cam.png`` (the map as a
16-bit PNG), unless ``overlays``/``heatmaps`` turn them off; dense models also ``NAME.output.png``,
the model's own map, so that a user sees what the model predicted beside why. The record says what
was explained (task, target, score) and what the model predicted, in the task's terms: classes and
probabilities, the decoded sequence, the class's pixel count. A record names only files written.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

from onnxcam.io.files import write_atomically, write_staged
from onnxcam.io.images import DICTIONARY_KEY
from onnxcam.methods.multipass import softmax
from onnxcam.io.render import draw_boxes, encode_png, fitted, heatmap16, overlay

__all__ = ["TaskOutputs", "ctc_decode", "same_greedy_text", "sequence_labels"]

log = logging.getLogger(__name__)


class TaskOutputs:
    """Writes one image's files into a folder and returns its record. ``staged``: the folder is an
    :class:`~onnxcam.io.files.OutputSet`'s staging folder, so files need not be written atomically.
    ``png``: "compact" or "fast" (stored uncompressed: faster to encode, larger)."""

    def __init__(self, explainer, colormap: str = "jet", alpha: float = 0.5, topk: int = 5, max_boxes: int = 10,
                 overlays: bool = True, heatmaps: bool = True, staged: bool = False, png: str = "compact"):
        self.explainer = explainer
        self.contract = explainer.contract
        self.task = explainer.task
        self.colormap, self.alpha, self.topk, self.max_boxes = colormap, alpha, topk, max_boxes
        self.overlays, self.heatmaps = overlays, heatmaps
        self._save = write_staged if staged else write_atomically
        self._fast_png = png == "fast"
        self._characters = self._sequence_characters(explainer) if self.task == "sequence" else None

    @staticmethod
    def _sequence_characters(explainer) -> list[str] | None:
        classes, labels = explainer.score_shape[-1], explainer.labels
        characters = sequence_labels(labels, classes, explainer.contract.blank)
        source = f"the model's own dictionary (metadata '{DICTIONARY_KEY}')" if explainer.labels_in_model else ""
        if labels and characters is None:
            _warn_unfit_dictionary(len(labels), classes, source)
        elif characters is not None and source:
            log.info("text from %s: %d characters for %d classes (--labels FILE replaces it)", source, len(labels),
                     classes)
        return characters

    def files(self, stem: str) -> list[str]:
        """Every file an image may get (a detector's image gets the box files of the boxes it has)."""
        kinds = [kind for kind, wanted in (("cam", self.heatmaps), ("overlay", self.overlays)) if wanted]
        if self.task == "detection":
            return [*self._overlay_name(stem), *[f"{stem}.box{i}.{kind}.png" for i in range(self.max_boxes)
                                                 for kind in kinds]]
        return [*self._overlay_name(stem), *self._heatmap_name(stem), *self._output_name(stem)]

    def _overlay_name(self, stem: str) -> list[str]:
        return [f"{stem}.overlay.png"] if self.overlays else []

    def _heatmap_name(self, stem: str) -> list[str]:
        return [f"{stem}.cam.png"] if self.heatmaps else []

    def _output_name(self, stem: str) -> list[str]:
        return [f"{stem}.output.png"] if self.task == "dense" else []

    def _write_overlay(self, path: Path, image: np.ndarray, cam: np.ndarray, boxes=None, captions=None) -> None:
        picture = overlay(image, cam, self.alpha, self.colormap)
        if boxes is not None:
            picture = draw_boxes(picture, boxes, captions)
        self._save(path, encode_png(picture, self._fast_png))

    def _write_heatmap(self, path: Path, cam: np.ndarray, height: int, width: int) -> None:
        self._save(path, encode_png(heatmap16(cam, height, width), self._fast_png))

    def write_boxes(self, staging: Path, stem: str, image_path: str, image: np.ndarray, detection,
                    input_hw: tuple[int, int], result) -> list[dict]:
        """A detector's image: one overlay with every box, per box its map and overlay; one record per box
        (one record with ``"boxes": 0`` when nothing is detected). Boxes are in the image's pixels."""
        height, width = image.shape[:2]
        boxes = detection.boxes
        scale = np.array([width / input_hw[1], height / input_hw[0]] * 2, np.float32)
        xyxy = np.clip(boxes.xyxy * scale, 0, [width, height, width, height])
        label = self.explainer.label
        captions = [f"#{i} {label(int(c))} {s:.2f}" for i, (c, s) in enumerate(zip(boxes.classes, boxes.scores))]
        image_overlay = {"image_overlay": name for name in self._overlay_name(stem)}
        if image_overlay:
            everything = detection.maps.max(axis=0) if len(boxes) else np.zeros(input_hw, np.float32)
            self._write_overlay(staging / image_overlay["image_overlay"], image, everything, xyxy, captions)
        common = {"image": image_path, "task": self.task, **image_overlay, "boxes": len(boxes), **self._run_facts(result)}
        if not len(boxes):
            return [{**common, "box_index": None, **{"overlay": name for name in image_overlay.values()}}]
        records = []
        for i in range(len(boxes)):
            files = {}
            cam = fitted(detection.maps[i], height, width) if self.heatmaps or self.overlays else None
            if self.heatmaps:
                files["heatmap"] = f"{stem}.box{i}.cam.png"
                self._write_heatmap(staging / files["heatmap"], cam, height, width)
            if self.overlays:
                files["overlay"] = f"{stem}.box{i}.overlay.png"
                self._write_overlay(staging / files["overlay"], image, cam, xyxy[i:i + 1],
                                    captions[i:i + 1])
            records.append({**common, "box_index": i, "box": [round(float(v), 2) for v in xyxy[i]],
                            "class": int(boxes.classes[i]), "label": label(int(boxes.classes[i])),
                            "score": _number(boxes.scores[i]), "anchor": int(boxes.anchors[i]),
                            "target_score": _number(detection.scores[i]), **files})
        return records

    def write(self, staging: Path, stem: str, image_path: str, image: np.ndarray, result, i: int) -> dict:
        height, width = image.shape[:2]
        files = {}
        cam = fitted(result.cam[i], height, width) if self.heatmaps or self.overlays else None  # once for both
        for name in self._overlay_name(stem):
            files["overlay"] = name
            self._write_overlay(staging / name, image, cam)
        for name in self._heatmap_name(stem):
            files["heatmap"] = name
            self._write_heatmap(staging / name, cam, height, width)
        output = self._sample_output(result, i)
        record = {
            "image": image_path,
            **files,
            "task": self.task,
            "target": int(result.target[i]),
            "target_description": result.target_description,
            "target_score": _number(result.scores[i]),
            **self._run_facts(result),
        }
        record.update(getattr(self, f"_{self.task}")(staging, stem, output, int(result.target[i]), (height, width)))
        if self.task == "embedding":
            record["similarity"] = record["target_score"]
        return record

    def _run_facts(self, result) -> dict:
        """What every record repeats of the run: the layer, method and provider, and a quantised model's twin."""
        twin = self.explainer.twin_facts
        return {"layer": result.layer, "method": result.method, "provider": result.provider,
                **({"twin": twin} if twin else {})}

    def _sample_output(self, result, i: int) -> np.ndarray:
        return self.explainer.batch_first(result.outputs[self.contract.output])[i]

    # --- per task ------------------------------------------------------------------------------------
    def _classification(self, staging, stem, scores, target, size) -> dict:
        probabilities = _probabilities(scores, self.contract.output_activation)
        order = np.argsort(-scores)[:self.topk]
        label = self.explainer.label
        return {"target_label": label(target),
                "topk": [{"class": int(c), "label": label(int(c)), "output": _number(scores[c]),
                          "probability": _number(probabilities[c])} for c in order]}

    def _regression(self, staging, stem, values, target, size) -> dict:
        return {"outputs": [_number(v) for v in np.ravel(values)[:64]]}

    def _embedding(self, staging, stem, vector, target, size) -> dict:
        return {"dimensions": int(np.size(vector))}

    def _segmentation(self, staging, stem, maps, target, size) -> dict:
        predicted = np.argmax(maps, axis=0)
        classes, counts = np.unique(predicted, return_counts=True)
        return {"target_label": self.explainer.label(target), "target_pixels": int(np.sum(predicted == target)),
                "predicted": {self.explainer.label(int(c)): int(n) for c, n in zip(classes, counts)}}

    def _dense(self, staging, stem, maps, target, size) -> dict:
        activation = maps[target if 0 <= target < len(maps) else 0].astype(np.float32)  # the channel explained
        if not self.contract.output_activation and (activation.min() < 0 or activation.max() > 1):
            activation = 1 / (1 + np.exp(-activation))  # raw logits: show them as the Sigmoid would
        name = self._output_name(stem)[0]
        self._save(staging / name, encode_png(_gray8(activation, *size), self._fast_png))
        return {"output_map": name, "output_max": _number(activation.max()),
                "output_mean": _number(activation.mean())}

    def _sequence(self, staging, stem, steps, target, size) -> dict:
        best = np.argmax(steps, axis=-1)
        decoded = ctc_decode(best, self.contract.blank)
        record = {"decoded": decoded, "steps": int(best.size)}
        if self._characters is not None:
            record["text"] = "".join(self._characters[i] for i in decoded)
        if target >= 0:
            record["timestep_class"] = int(best[target])
        return record


def ctc_decode(best: np.ndarray, blank: int) -> list[int]:
    """Greedy CTC decoding: collapse repeated indices, then drop the blank."""
    out, previous = [], None
    for index in np.asarray(best).tolist():
        if index != previous and index != blank:
            out.append(int(index))
        previous = index
    return out


def same_greedy_text(expected: np.ndarray, got: np.ndarray, batch_axis: int, blank: int) -> bool:
    """Whether two recogniser outputs ((N, T, C) or (T, N, C)) read the same text, sample by sample: their
    greedy-decoded paths, so a step whose arg-max flips between the blank and a repeat of its
    neighbour's character is no difference."""
    paths = [[ctc_decode(np.argmax(sample, -1), blank) for sample in np.moveaxis(steps, batch_axis, 0)]
             for steps in (expected, got)]
    return paths[0] == paths[1]


def sequence_labels(labels: list[str] | None, classes: int | None, blank: int = 0) -> list[str] | None:
    """The character of each class from a CTC dictionary, in one of the layouts recognisers use: every
    class listed (``classes`` lines, the blank's among them); every class but the blank, whose index
    gets ""; or, blank first, every class but the blank and a space class appended last (PaddleOCR:
    blank 0, the dictionary, then " " with ``use_space_char``). ``None`` when no layout fits."""
    if not labels or classes is None:
        return None
    if len(labels) == classes:
        return list(labels)
    if len(labels) == classes - 1 and 0 <= blank < classes:
        return [*labels[:blank], "", *labels[blank:]]
    if len(labels) == classes - 2 and blank == 0:
        return ["", *labels, " "]
    return None


def _warn_unfit_dictionary(count: int, classes: int | None, source: str = "") -> None:
    """``source``: where the labels came from, when not from a labels file (the model's metadata)."""
    log.warning("%s do not fit the model's %s classes as a CTC dictionary (it lists every class, "
                "every class but the blank, or, as PaddleOCR's, every class but the blank and a last space class: "
                "%s lines); the records get no text: give the model's own dictionary%s",
                f"the {count} lines of {source}" if source else f"the {count} labels",
                "?" if classes is None else classes,
                "?" if classes is None else f"{classes}, {classes - 1} or {classes - 2}",
                " with --labels FILE" if source else "")


def _probabilities(scores: np.ndarray, activation: str) -> np.ndarray:
    """Class probabilities from one sample's outputs, whatever final activation the model has."""
    if activation in ("Softmax", "Sigmoid"):
        return scores
    if activation == "LogSoftmax":
        return np.exp(scores)
    return softmax(scores[None])[0]


def _gray8(values: np.ndarray, height: int, width: int) -> np.ndarray:
    import cv2

    resized = fitted(np.clip(values, 0, 1), height, width)
    return cv2.multiply(resized, 255.0, dtype=cv2.CV_8U)  # rounds like np.round, 8x faster


def _number(value) -> float | None:
    """A JSON number; None for NaN and infinities (which JSON cannot hold)."""
    value = float(value)
    return value if math.isfinite(value) else None
