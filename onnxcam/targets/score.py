"""The score tensor S and the weighting that turns it into one score per sample.

S is the tensor the score is read from: the pre-activation tensor before a final
Softmax/Sigmoid/LogSoftmax (``kind="logit"``, the Grad-CAM paper's y^c), or the output as the
model returns it (``kind="probability"``, or when there is no final activation). Every task's
score is Σ w ⊙ S per sample for a weighting w of S's batch-first shape; the backward pass is
seeded with w itself. The explain model's ``target_weights`` input is that w, NaN entries
standing for the task's default weighting (which the task builds in the graph).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from onnxcam.autodiff.emitter import Emitter
from onnxcam.errors import ModelError
from onnxcam.graph import GraphView, value_origin

__all__ = ["ScoreTensor", "SeedContext", "Seed", "TaskOptions", "score_tensor", "final_activation",
           "FINAL_ACTIVATIONS", "SCORE_CHOICES"]

SCORE_CHOICES = ("logit", "probability")
FINAL_ACTIVATIONS = ("Softmax", "Sigmoid", "LogSoftmax")
_RESHAPES = ("Flatten", "Reshape", "Squeeze")


@dataclass(frozen=True)
class ScoreTensor:
    """Where the score is read from."""

    output: str  # the model output
    tensor: str  # S
    kind: str  # "logit" or "probability"
    activation: str  # the final activation's op type, "" when the output is raw scores
    activation_output: str  # the activation's output (S itself when there is none)
    batch_axis: int  # where the batch is in S (1 for (T, N, C) sequences)
    shape: tuple  # S's shape, batch first (None for unknown dims), without the ``squeezed`` axes
    squeezed: tuple = ()  # batch-first axes of S dropped: the 1×1 map of an (N, C, 1, 1) classifier head

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def perm(self) -> list[int]:
        """S's axes in batch-first order (S's own axes, the squeezed ones among them)."""
        axes = list(range(self.rank + len(self.squeezed)))
        return [self.batch_axis, *[a for a in axes if a != self.batch_axis]]

    def describe(self) -> str:
        if self.tensor == self.output:
            how = "as the model returns it" if self.kind == "probability" else \
                f"(the logits of its {self.activation} entries)" if self.activation else \
                "(the model has no final Softmax/Sigmoid)"
            return f"output '{self.output}' {how}"
        return f"logit '{self.tensor}' before the final {self.activation} of output '{self.output}'"


@dataclass(frozen=True)
class TaskOptions:
    """Export-time settings of the tasks' default targets."""

    threshold: float = 0.5  # dense: pixels whose activation (after the final Sigmoid) exceeds this
    blank: int = 0  # sequence: the CTC blank index
    background: int = 0  # segmentation: the class never chosen by default (-1: none)


@dataclass
class SeedContext:
    """What a task sees when it builds its default weighting in the graph (tensors batch first)."""

    emit: Emitter
    score: ScoreTensor
    s: str  # S, batch first
    p: str  # the model's activation of S (S itself when there is none), batch first
    target: str  # int64 (N,): the ``target`` input broadcast to the batch (negative = the default)
    options: TaskOptions


@dataclass
class Seed:
    """A task's default weighting and the index it explains per sample (-1 where there is none)."""

    weights: str
    index: str


def final_activation(view: GraphView, output: str) -> onnx.NodeProto | None:
    """The Softmax/Sigmoid/LogSoftmax node ``output`` comes from, through ops that keep its values
    (:func:`onnxcam.graph.keeps_values`: QDQ pairs, float Casts, a float twin's requantisation) and,
    for (batch, classes) outputs, reshapes, if any."""
    node = view.producers.get(value_origin(view, output, lambda n: n.op_type in _RESHAPES and
                                           view.rank(n.input[0]) == 2))
    return node if node is not None and node.op_type in FINAL_ACTIVATIONS else None


def score_tensor(view: GraphView, output: str, kind: str, batch_axis: int = 0) -> ScoreTensor:
    activation = final_activation(view, output)
    if kind == "probability" or activation is None:
        tensor, op_type, activated = output, activation.op_type if activation is not None else "", output
    else:
        tensor, op_type, activated = activation.input[0], activation.op_type, activation.output[0]
    shape = view.shape(tensor)
    if shape is None:
        raise ModelError(f"the rank of the score tensor '{tensor}' is unknown; {view.unknown_shape_fix()}, or "
                         "choose another --output")
    dims = [shape[batch_axis], *[d for i, d in enumerate(shape) if i != batch_axis]]
    squeezed = _SPATIAL if len(dims) == 4 and dims[2:] == [1, 1] else ()
    dims = [d for i, d in enumerate(dims) if i not in squeezed]
    return ScoreTensor(output, tensor, kind, op_type, activated, batch_axis, tuple(dims), squeezed)


# SqueezeNet's and DenseNet's (N, 1000, 1, 1) probabilities are a classifier's (N, C): read as a map,
# they were a segmentation whose class 0 was the background and whose records had no top-k
_SPATIAL = (2, 3)


def batch_first(e: Emitter, score: ScoreTensor, tensor: str) -> str:
    first = e.transpose(tensor, score.perm)
    return e.squeeze(first, list(score.squeezed)) if score.squeezed else first


def from_batch_first(e: Emitter, score: ScoreTensor, tensor: str) -> str:
    if score.squeezed:
        tensor = e.unsqueeze(tensor, list(score.squeezed))
    return e.transpose(tensor, list(np.argsort(score.perm)))
