"""Scoring a method's maps: every perturbed copy through the model, ``passes_batch`` per ORT call.

:func:`perturbation_probabilities` is the one loop that runs the model: the images × variants of
:class:`~onnxcam.evaluation.perturb.VariantPlan`, batched as the multi-pass methods batch theirs
(:func:`onnxcam.methods.multipass.variant_batches`). :func:`image_scores` turns one image's
probabilities into its metrics; :class:`MethodScores` averages them over the images.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from onnxcam.evaluation import metrics
from onnxcam.evaluation.perturb import Perturbations, VariantPlan
from onnxcam.methods.multipass import softmax, variant_batches

__all__ = ["MethodScores", "ImageScores", "perturbation_probabilities", "image_scores", "target_probabilities",
           "to_hwc", "from_hwc"]

Probability = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (images (M, ...), targets (M,)) -> (M,)


def to_hwc(image: np.ndarray, layout: str) -> np.ndarray:
    return np.moveaxis(image, 0, -1) if layout == "NCHW" else image


def from_hwc(image: np.ndarray, layout: str) -> np.ndarray:
    return np.moveaxis(image, -1, 0) if layout == "NCHW" else image


def target_probabilities(scores: np.ndarray, targets: np.ndarray, activation: str, score_kind: str) -> np.ndarray:
    """The targets' probabilities from a classifier's score tensor S (M, C): S itself when the
    model was explained on its probability output, else S through the model's final activation
    (a softmax when it has none: raw logits)."""
    scores = np.asarray(scores, np.float64)
    if score_kind == "probability":
        probabilities = np.exp(scores) if activation == "LogSoftmax" else \
            scores if activation in ("Softmax", "Sigmoid") else softmax(scores)
    elif activation == "Sigmoid":
        probabilities = 1 / (1 + np.exp(-scores))
    else:
        probabilities = softmax(scores)
    return probabilities[np.arange(len(targets)), targets]


def perturbation_probabilities(images: np.ndarray, cams: np.ndarray, substrate: np.ndarray | None,
                               targets: np.ndarray, layout: str, plan: VariantPlan, probability: Probability,
                               passes_batch: int, progress: Callable[[int], None] = lambda n: None) -> np.ndarray:
    """(N, plan.count) target probabilities of every variant of every image (model-input batches);
    ``substrate`` (1, ...): what deleted pixels become (None: each image blurred)."""
    base = None if substrate is None else to_hwc(substrate[0], layout)
    perturbations = [Perturbations(to_hwc(image, layout), cam, plan, base, seed=i)
                     for i, (image, cam) in enumerate(zip(images, cams))]
    out = np.empty((len(images), plan.count), np.float64)
    for rows, variants in variant_batches(len(images), plan.count, passes_batch):
        batch = np.stack([from_hwc(perturbations[i].variant(j), layout) for i, j in zip(rows, variants)])
        out[rows, variants] = probability(batch.astype(images.dtype, copy=False), targets[rows])
        progress(len(rows))
    return out


@dataclass
class ImageScores:
    """One image's metrics under one map."""

    deletion: np.ndarray  # (K+1,) the probability curve
    insertion: np.ndarray
    full: float  # Y, the probability on the image
    masked: float  # O, on the image times the map
    road_morf: float  # mean probability over ROAD's removal fractions, most relevant first
    road_lerf: float  # ... least relevant first
    pointing: bool | None = None
    energy: float | None = None


def image_scores(probabilities: np.ndarray, plan: VariantPlan, cam: np.ndarray, mask: np.ndarray | None) -> ImageScores:
    scores = ImageScores(probabilities[plan.deletion], probabilities[plan.insertion], float(probabilities[0]),
                         float(probabilities[plan.masked]), float(probabilities[plan.road_morf].mean()),
                         float(probabilities[plan.road_lerf].mean()))
    if mask is not None and mask.any():
        scores.pointing, scores.energy = metrics.pointing_hit(cam, mask), metrics.energy_share(cam, mask)
    return scores


@dataclass
class MethodScores:
    """A method's metrics averaged over the images (see :mod:`onnxcam.evaluation.metrics`)."""

    method: str
    images: int
    deletion_auc: float
    insertion_auc: float
    average_drop: float
    increase_in_confidence: float
    road_morf: float
    road_lerf: float
    pointing_game: float | None
    energy_pointing_game: float | None
    ms_per_image: float  # the maps' cost: explaining the images with this method
    passes: str  # model runs per image the method needs, in words
    deletion_curve: list[float] = field(default_factory=list)  # mean over the images
    insertion_curve: list[float] = field(default_factory=list)
    sanity_spearman: float | None = None  # Adebayo et al.'s model randomisation, when asked
    sanity_flagged: bool | None = None

    @classmethod
    def from_images(cls, method: str, images: list[ImageScores], ms_per_image: float, passes) -> MethodScores:
        deletion = np.stack([s.deletion for s in images])
        insertion = np.stack([s.insertion for s in images])
        full = np.array([s.full for s in images])
        masked = np.array([s.masked for s in images])
        boxed = [s for s in images if s.pointing is not None]
        return cls(method, len(images), float(metrics.curve_auc(deletion).mean()),
                   float(metrics.curve_auc(insertion).mean()), metrics.average_drop(full, masked),
                   metrics.increase_in_confidence(full, masked), float(np.mean([s.road_morf for s in images])),
                   float(np.mean([s.road_lerf for s in images])),
                   float(np.mean([s.pointing for s in boxed])) if boxed else None,
                   float(np.mean([s.energy for s in boxed])) if boxed else None,
                   ms_per_image, str(passes), deletion.mean(axis=0).tolist(), insertion.mean(axis=0).tolist())

    def as_dict(self) -> dict:
        return asdict(self)
