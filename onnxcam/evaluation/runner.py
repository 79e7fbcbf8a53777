"""Evaluating explainers on one set of images: maps, perturbation passes and the sanity check per method."""

from __future__ import annotations

import time
from collections.abc import Callable

import cv2
import numpy as np

from onnxcam.errors import InputError, OnnxCamError, TargetError
from onnxcam.evaluation.faithfulness import (MethodScores, image_scores, perturbation_probabilities,
                                              target_probabilities)
from onnxcam.evaluation.perturb import VariantPlan
from onnxcam.evaluation.sanity import sanity_check
from onnxcam.methods import get_method

__all__ = ["DELETION_SUBSTRATES", "EvalInputs", "evaluate_method", "random_reference", "score_maps", "truth_targets",
           "object_masks", "maps", "RANDOM"]


class EvalInputs:
    """The images as the model takes them, their targets and, where boxes or masks are given, object masks."""

    def __init__(self, explainer, paths, batch_size: int, truth=None, boxes=None, deletion_to: str = "blur",
                 masks=None):
        if explainer.task != "classification":
            raise OnnxCamError(f"eval scores the target class's probability, so it needs a classifier; this model's "
                               f"task is {explainer.task}")
        self.batch, decoded = explainer.prepare(paths)
        self.batch_size = batch_size
        self.layout = explainer.layout
        self.targets = truth_targets(explainer, paths, truth) if truth is not None else \
            maps(explainer, self.batch, None, batch_size)[1]
        given = boxes is not None or masks is not None
        self.masks = object_masks(paths, decoded, self.batch.shape, self.layout, boxes, masks) if given else None
        self.substrate = substrate(explainer, self.batch, self.size, deletion_to)

    @property
    def size(self) -> tuple[int, int]:
        shape = self.batch.shape
        return (shape[2], shape[3]) if self.layout == "NCHW" else (shape[1], shape[2])


DELETION_SUBSTRATES = ("blur", "black", "zero")


def substrate(explainer, batch: np.ndarray, size: tuple[int, int], kind: str) -> np.ndarray | None:
    """What deleted pixels become: None (each image blurred), a pre-processed black image, or zeros."""
    if kind not in DELETION_SUBSTRATES:
        raise OnnxCamError(f"unknown deletion substrate '{kind}'; choose one of: {', '.join(DELETION_SUBSTRATES)}")
    if kind == "blur":
        return None
    if kind == "zero":
        return np.zeros_like(batch[:1])
    return explainer.preprocess.batch([np.zeros((*size, 3), np.uint8)], size, explainer.layout)


def truth_targets(explainer, paths, truth) -> np.ndarray:
    """Class indices of the true labels (a name from the labels file, or an index)."""
    names = {name: i for i, name in enumerate(explainer.labels or [])}
    targets = []
    for path in paths:
        label = truth.lookup(str(path))
        if label is None:
            raise TargetError(f"the labels file has no line for '{path}'; add one (image,label) or leave the image out")
        index = names.get(label, int(label) if label.lstrip("-").isdigit() else None)
        if index is None:
            raise TargetError(f"true label '{label}' of '{path}' is neither a class name of the labels (--labels or "
                              "the sidecar) nor a class index")
        targets.append(index)
    for target in targets:
        explainer.check_target(target)
    return np.array(targets, np.int64)


def object_masks(paths, decoded, shape, layout, boxes=None, masks=None) -> list[np.ndarray | None]:
    """Per image a boolean object mask at the model input's size, from its boxes (in the image's
    pixels) and its mask file; None where it has neither."""
    height, width = (shape[2], shape[3]) if layout == "NCHW" else (shape[1], shape[2])
    found = []
    for path, image in zip(paths, decoded):
        mask = np.zeros((height, width), np.uint8)
        sy, sx = height / image.shape[0], width / image.shape[1]
        for x0, y0, x1, y1 in (boxes.lookup(str(path)) or []) if boxes is not None else []:
            cv2.rectangle(mask, (int(x0 * sx), int(y0 * sy)), (int(np.ceil(x1 * sx)) - 1, int(np.ceil(y1 * sy)) - 1),
                          1, thickness=-1)
        mask_file = masks.lookup(str(path)) if masks is not None else None
        if mask_file is not None:
            mask |= cv2.resize(_read_mask(mask_file), (width, height), interpolation=cv2.INTER_NEAREST) > 0
        found.append(mask.astype(bool) if mask.any() else None)
    return found


def _read_mask(path) -> np.ndarray:
    mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if mask is None:
        raise InputError(f"cannot read object mask '{path}'; give a PNG whose non-zero pixels are the object")
    return mask


def maps(explainer, batch: np.ndarray, targets, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(maps (N, H, W), targets (N,)) of a pre-processed batch, ``batch_size`` images per explain call."""
    cams, explained = [], []
    for first in range(0, len(batch), batch_size):
        chunk = None if targets is None else targets[first:first + batch_size]
        result = explainer.explain(batch[first:first + batch_size], target=chunk)
        cams.append(result.cam)
        explained.append(result.target)
    return np.concatenate(cams), np.concatenate(explained)


def score_maps(name: str, cams: np.ndarray, explainer, inputs: EvalInputs, plan: VariantPlan,
               progress: Callable[[int], None], ms_per_image: float | None, passes) -> MethodScores:
    """The metrics of maps ``cams`` of the inputs, the perturbed images scored by ``explainer``'s model."""
    contract = explainer.contract

    def probability(images, targets):
        return target_probabilities(explainer.forward_scores(images), targets, contract.output_activation,
                                    contract.score)

    probabilities = perturbation_probabilities(inputs.batch, cams, inputs.substrate, inputs.targets, inputs.layout,
                                               plan, probability, explainer.run_options.passes_batch, progress)
    masks = inputs.masks or [None] * len(cams)
    per_image = [image_scores(p, plan, c, m) for p, c, m in zip(probabilities, cams, masks)]
    return MethodScores.from_images(name, per_image, ms_per_image, passes)


def evaluate_method(explainer, inputs: EvalInputs, plan: VariantPlan, progress: Callable[[int], None],
                    explainer_for: Callable | None = None, plain_model=None) -> MethodScores:
    """One method's scores; with ``explainer_for(model, method)`` and ``plain_model`` also the randomisation check."""
    started = time.perf_counter()
    cams, _ = maps(explainer, inputs.batch, inputs.targets, inputs.batch_size)
    ms_per_image = 1000 * (time.perf_counter() - started) / len(cams)
    scores = score_maps(explainer.method, cams, explainer, inputs, plan, progress, ms_per_image,
                        get_method(explainer.method).passes)
    if explainer_for is not None:
        result = sanity_check(lambda model: maps(explainer_for(model, explainer.method), inputs.batch,
                                                 inputs.targets, inputs.batch_size)[0], plain_model)
        scores.sanity_spearman, scores.sanity_flagged = result.mean, result.flagged
    return scores


RANDOM = "random map"


def random_reference(explainer, inputs: EvalInputs, plan: VariantPlan, progress: Callable[[int], None],
                     seed: int = 0) -> MethodScores:
    """The scores of i.i.d. uniform random maps: what a method must beat to say anything."""
    height, width = inputs.size
    cams = np.random.default_rng(seed).random((len(inputs.batch), height, width)).astype(np.float32)
    return score_maps(RANDOM, cams, explainer, inputs, plan, progress, None, "-")
