"""Per-box maps: one forward pass per batch, then per box the backward pass from its score to the layers.

The explain model holds the forward pass, the backward pass from the score to the layers, and
the CAM method. Parts of it are run here:

* *features* — the image → the detector's outputs and the target layers' activations (and what
  the per-box pass reads besides);
* *boxes* — where the head is local (:mod:`onnxcam.detection.local`, the usual case: convolutions
  from the layers to the prediction maps), each box's gradient on a crop of its level's layer
  around its anchor and its level's map from it; otherwise the head's backward pass on the box's
  copy of the head's forward tensors, seeded with the box's one-hot ``target_weights``. Either
  way K boxes are rows of one batch and cost no forward pass of the whole model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from onnxcam import contract
from onnxcam.detection.boxes import BoxOptions, Boxes, box_weights, decode, select
from onnxcam.detection.head import Head
from onnxcam.detection.local import plan_local_boxes
from onnxcam.errors import InputError, ModelError, OnnxCamError
from onnxcam.explainer import zero_non_finite
from onnxcam.methods.multipass import padded_chunks

log = logging.getLogger(__name__)

__all__ = ["Detection", "Detections", "explain_boxes"]


@dataclass
class Detection:
    """One image's boxes (most confident first) and their maps."""

    boxes: Boxes
    maps: np.ndarray  # (K, H, W) float32 in [0, 1] at the model input's size
    scores: np.ndarray  # (K,) the differentiated score per box (its class logit, + objectness logit)
    image: np.ndarray | None = field(default=None, repr=False)  # the decoded BGR original, if given


@dataclass
class Detections:
    """``Explainer.explain_boxes``'s result: per image its boxes and per-box maps."""

    images: list[Detection]
    input_size: tuple[int, int]  # the model input's (height, width): the boxes' and maps' frame
    anchors: int  # rows of the score tensor (a box's ``anchors`` index them)
    layer: str
    method: str
    provider: str
    outputs: dict[str, np.ndarray] = field(default_factory=dict, repr=False)  # the model's outputs used

    def __len__(self) -> int:
        return len(self.images)


def explain_boxes(explainer, inputs, options: BoxOptions) -> Detections:
    head = explainer.detection_head
    if head is None:
        raise ModelError("this explain model carries no detector head description; export it again with this onnxcam")
    batch, decoded = explainer._as_batch(inputs)
    batch = batch.astype(explainer._input_dtype, copy=False)  # float16 for a half-precision detector
    input_hw = tuple(batch.shape[2:4] if explainer.layout == "NCHW" else batch.shape[1:3])
    layers = explainer.contract.layers
    if explainer._box_plan is None:  # the same for every call
        local = plan_local_boxes(explainer, head, batch)
        kept = local.leaves_wanted() if local else _head_tensors(explainer, layers)
        explainer._box_plan = (local, [*layers, *kept])
    local, kept = explainer._box_plan
    wanted = [*_head_outputs(head), *kept]
    features = _run_features(explainer, batch, wanted, head.selected)
    decoded = decode(head, features, input_hw)
    anchors = len(decoded[0][0])
    per_image = [select(boxes, confidence, options, given) for boxes, confidence, given in decoded]
    maps, scores = _box_maps(explainer, head, batch, features, kept, per_image, anchors, local)
    images, first = [], 0
    for n, boxes in enumerate(per_image):
        rows = slice(first, first + len(boxes))
        images.append(Detection(boxes, maps[rows], scores[rows], decoded[n] if decoded else None))
        first += len(boxes)
    outputs = {name: features[name] for name in _head_outputs(head)}
    return Detections(images, input_hw, anchors, explainer.layer, explainer.method, explainer.provider, outputs)


def _head_outputs(head: Head) -> list[str]:
    if head.layout == "nms":
        return [*head.score_outputs, *head.box_outputs, head.selected]
    if head.layout in ("levels", "end2end"):
        return [*head.score_outputs, *head.objectness_outputs, *head.box_outputs]
    return [head.output]


def _head_tensors(explainer, layers: list[str]) -> list[str]:
    """The head's forward tensors (between the layers and the score tensor) that the backward pass reads,
    with the layers' batch axis: computed once by the features pass and copied per box, so that the
    per-box pass runs the backward pass, not the head's forward pass K times."""
    view = explainer._view
    stop = set(layers)
    head = view.ancestors([explainer.contract.score_tensor],
                          inputs=lambda node: [] if stop.intersection(node.output) else node.input) - stop
    needed = view.ancestors([contract.CAM, contract.CAM_SCORE],
                            inputs=lambda node: [] if stop.intersection(node.output) else node.input)
    read_by_backward = {i for node in view.nodes if node.name.startswith("onnxcam/") and
                        any(o in needed for o in node.output) for i in node.input}
    batch = view.symbolic_shape(layers[0])[0]
    kept = []
    for name in sorted(head & read_by_backward):
        shape = view.symbolic_shape(name)
        if batch is not None and shape is not None and len(shape) >= 2 and shape[0] == batch and \
                view.is_float(name) and name in view.producers:
            kept.append(name)
    cut = stop | set(kept)
    reached = view.ancestors([contract.CAM, contract.CAM_SCORE],
                             inputs=lambda node: [] if cut.intersection(node.output) else node.input)
    return [name for name in kept if name in reached]  # not those read only beyond other kept tensors


def _run_features(explainer, batch: np.ndarray, wanted: list[str], selected: str = "") -> dict[str, np.ndarray]:
    """The outputs ``wanted`` for the batch (in calls of the model's fixed batch size, if it has one);
    ``selected`` is an NMS output of (batch, class, anchor) rows rather than a batch-first tensor."""
    cut, session = explainer._sub_session("features", [explainer.input_name], wanted)
    n = len(batch)
    calls = list(padded_chunks(n, explainer.input_shape[0] or n))
    parts = [session.run(wanted, {explainer.input_name: batch[rows]}) for _, _, rows in calls]
    explainer.check_twin(batch[calls[0][2]], dict(zip(wanted, parts[0])))  # once: a quantised model vs its twin
    joined = {}
    for i, name in enumerate(wanted):
        if name == selected:
            rows = np.concatenate([p[i].reshape(-1, 3) + [first, 0, 0] for p, (first, _, _) in zip(parts, calls)])
            joined[name] = rows[rows[:, 0] < len(batch)]  # rows of a padded chunk's repeated last image go
        else:
            joined[name] = parts[0][i][:n] if len(parts) == 1 else np.concatenate([p[i] for p in parts])[:n]
    return joined


def _box_maps(explainer, head: Head, batch, features, kept, per_image: list[Boxes], anchors: int, local):
    total = sum(len(b) for b in per_image)
    height, width = explainer._image_size() if explainer.input_size is None else explainer.input_size
    if total == 0:
        return np.zeros((0, height, width), np.float32), np.zeros(0, np.float32)
    owner = np.concatenate([np.full(len(b), n) for n, b in enumerate(per_image)])
    step = max(1, explainer.run_options.passes_batch)
    if local is not None:  # gradients on crops around each box's anchor, then its level's map
        entries = [cells for b in per_image for cells in local.box_entries(head, b)]
        maps, scores = local.box_maps(batch, features, owner, entries, step)
        return _finite(maps, scores)
    weights = np.concatenate([box_weights(head, b, anchors, explainer._weights_dtype) for b in per_image])
    # the head's backward pass per box
    cut, session = explainer._sub_session("boxes", kept, [contract.CAM, contract.CAM_SCORE])
    outputs = [contract.CAM, contract.CAM_SCORE]

    def feeds(rows):
        given = {name: features[name][owner[rows]] for name in kept}
        given[contract.TARGET_WEIGHTS] = weights[rows]
        given[contract.TARGET] = np.full(len(rows), -1, np.int64)
        given.update(_other_inputs(cut, explainer, batch, owner[rows]))
        return {name: value for name, value in given.items() if name in cut.inputs}

    fixed = explainer.input_shape[0]
    try:  # the head often runs at any batch size even where the model's input fixes it
        maps, scores = _run_box_rows(session, outputs, feeds, total, step, False)
    except InputError:
        if fixed is None:
            raise
        log.debug("the per-box pass runs %d box(es) per call: the model's batch size", fixed)
        maps, scores = _run_box_rows(session, outputs, feeds, total, fixed, True)
    return _finite(maps, scores)


def _finite(maps: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Boxes whose map or score is not finite get an all-zero map."""
    maps, _ = zero_non_finite(maps, scores)
    return maps.astype(np.float32), scores.astype(np.float32)


def _run_box_rows(session, outputs: list[str], feeds, total: int, size: int, pad: bool) -> list[np.ndarray]:
    """``outputs`` for every box row, ``size`` rows per call (the last call padded to ``size`` with ``pad``);
    ``feeds(rows)`` gives a call's inputs."""
    found = []
    for first, last, rows in padded_chunks(total, size):
        try:
            values = session.run(outputs, feeds(rows if pad else np.arange(first, last)))
        except OnnxCamError:
            raise
        except Exception as exc:  # ORT's own error types
            raise InputError(f"ONNX Runtime could not run the per-box maps: {str(exc).strip().splitlines()[-1]}") \
                from None
        found.append([v[:last - first] for v in values])
    return [np.concatenate(parts) for parts in zip(*found)]


def _other_inputs(cut, explainer, batch: np.ndarray, owner: np.ndarray) -> dict[str, np.ndarray]:
    """The graph inputs the head still reads besides the layers: the image (its size, for the resize;
    its pixels where a skip connection bypasses the layers)."""
    feeds = {}
    for name in cut.inputs:
        if name == explainer.input_name:
            feeds[name] = batch[owner]
    return feeds
