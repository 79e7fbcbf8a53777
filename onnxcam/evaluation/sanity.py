"""The model-randomisation sanity check (Adebayo et al., *Sanity Checks for Saliency Maps*, NeurIPS 2018).

A map that explains the model must change when the model's weights are replaced by random ones.
:func:`randomised_model` re-draws every learned weight tensor (float initializers of rank ≥ 2:
convolution kernels, linear layers; biases and normalisation statistics stay) from a normal
distribution of the same standard deviation — the full cascade, all layers at once.
:func:`sanity_check` compares each image's map from the trained and the randomised model by
Spearman's rank correlation; a mean ρ above ``THRESHOLD`` flags the method: its maps do not
depend on what the model learned (an edge detector would pass as an explanation).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from onnxcam.evaluation.metrics import spearman

__all__ = ["randomised_model", "sanity_check", "SanityResult", "THRESHOLD"]

THRESHOLD = 0.5


def randomised_model(model: onnx.ModelProto, seed: int = 0) -> onnx.ModelProto:
    """A copy of ``model`` with every float weight tensor of rank ≥ 2 re-drawn at random."""
    randomised = onnx.ModelProto()
    randomised.CopyFrom(model)
    rng = np.random.default_rng(seed)
    for tensor in randomised.graph.initializer:
        values = numpy_helper.to_array(tensor)
        if values.dtype.kind != "f" or values.ndim < 2:
            continue
        std = float(values.std()) or 0.01
        tensor.CopyFrom(numpy_helper.from_array(rng.normal(0.0, std, values.shape).astype(values.dtype), tensor.name))
    return randomised


@dataclass(frozen=True)
class SanityResult:
    spearman: list[float]  # per image

    @property
    def mean(self) -> float:
        return float(np.mean(self.spearman))

    @property
    def flagged(self) -> bool:
        return self.mean > THRESHOLD


def sanity_check(maps_of: Callable[[onnx.ModelProto], np.ndarray], model: onnx.ModelProto,
                 seed: int = 0) -> SanityResult:
    """``maps_of(model)`` gives (N, H, W) maps of the same images; compare trained with randomised."""
    trained, randomised = maps_of(model), maps_of(randomised_model(model, seed))
    return SanityResult([spearman(a, b) for a, b in zip(trained, randomised)])
