"""Targets: what is explained, as a weighting of the score tensor, one module per task.

Every task's score is Σ w ⊙ S per sample (:mod:`onnxcam.targets.score`); a task module only
recognises its outputs and builds its default w in the graph. :func:`emit_target` adds what
every task shares: the explain model's ``target`` and ``target_weights`` inputs (NaN weights
= the default), the seed of the backward pass, ``cam_score`` and ``cam_target``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from onnxcam.autodiff.emitter import Emitter
from onnxcam.contract import TARGET, TARGET_WEIGHTS
from onnxcam.errors import ModelError, OnnxCamError
from onnxcam.graph import GraphView
from onnxcam.targets import classification, dense, detection, embedding, regression, segmentation, sequence
from onnxcam.targets.base import Task
from onnxcam.targets.score import (SCORE_CHOICES, ScoreTensor, SeedContext, TaskOptions, batch_first,
                                   final_activation, from_batch_first, score_tensor)

__all__ = ["Task", "TASKS", "TASK_CHOICES", "get_task", "choose_target", "emit_target", "EmittedTarget",
           "ScoreTensor", "TaskOptions", "SCORE_CHOICES"]

# Auto-detection tries the tasks in this order; the first whose ``detect`` accepts the output wins.
TASKS: dict[str, Task] = {task.name: task for task in (
    embedding.TASK, regression.TASK, classification.TASK, sequence.TASK, detection.TASK, dense.TASK,
    segmentation.TASK)}
TASK_CHOICES = ("auto", *TASKS)


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise OnnxCamError(f"unknown task '{name}'; choose one of: {', '.join(TASK_CHOICES)}") from None


@dataclass(frozen=True)
class ChosenTarget:
    task: Task
    score: ScoreTensor
    reason: str  # why this output and task, for the log and ``onnxcam layers``


def choose_target(view: GraphView, image: str, task: str = "auto", output: str | None = None,
                  kind: str = "logit") -> ChosenTarget:
    """The output to explain, its score tensor and its task (detected unless ``task`` names one)."""
    if kind not in SCORE_CHOICES:
        raise OnnxCamError(f"unknown score '{kind}'; choose one of {', '.join(SCORE_CHOICES)}")
    requested = None if task in (None, "", "auto") else get_task(task)
    names = [output] if output else _candidate_outputs(view)
    if output and output not in view.graph_outputs:
        raise ModelError(f"output '{output}' not found; the model's outputs are: {', '.join(view.graph_outputs)}")
    for name in names:
        score = score_tensor(view, name, kind, _batch_axis(view, image, name))
        fits = [t for t in TASKS.values() if t.detect(view, score)]
        if requested is not None:
            if requested.fits(view, score):
                return ChosenTarget(requested, _located(requested, view, score), f"task {requested.name} as asked")
            if output:
                raise ModelError(f"output '{name}' has shape {_shape(view, name)}, which task {requested.name} "
                                 f"does not explain (it needs {requested.shapes})")
            continue
        if fits:
            why = f"output '{name}' {_shape(view, name)} looks like {fits[0].shapes}"
            return ChosenTarget(fits[0], _located(fits[0], view, score), why)
    listing = ", ".join(f"{n} {_shape(view, n)}" for n in view.graph_outputs)
    wanted = f"task {requested.name} needs {requested.shapes}" if requested else \
        "onnxcam explains outputs shaped (N, C), (N, T, C) with a Softmax, (N, 1, H, W), (N, C, H, W) or raw " \
        "detector heads ((N, 4+C, A), (N, A, 5+C), per-level scores and boxes, (N, K, 6) end-to-end rows)"
    if output and requested is None:
        raise ModelError(f"output '{output}' {_shape(view, output)} fits no task: {wanted}; "
                         f"{_tasks_on_request(view, image, output, kind)}")
    raise ModelError(f"no output fits: {wanted} (outputs: {listing}); name one with --output, or pick --task")


def _tasks_on_request(view: GraphView, image: str, output: str, kind: str) -> str:
    """What to do about an output no task detects: the tasks that explain it when asked, if any."""
    score = score_tensor(view, output, kind, _batch_axis(view, image, output))
    asked = [t.name for t in TASKS.values() if t.fits(view, score)]
    if asked:
        return f"--task {' or --task '.join(asked)} explains it"
    return "no task explains an output of this shape"


def _located(task: Task, view: GraphView, score: ScoreTensor) -> ScoreTensor:
    return task.locate(view, score) if task.locate is not None else score


def _candidate_outputs(view: GraphView) -> list[str]:
    """Float outputs of known rank 2–4, those that end in a Softmax/Sigmoid first."""
    usable = [n for n in view.graph_outputs if view.is_float(n) and view.rank(n) in (2, 3, 4)]
    return sorted(usable, key=lambda n: final_activation(view, n) is None)


def _batch_axis(view: GraphView, image: str, output: str) -> int:
    """Where the batch is in a rank-3 output: axis 1 for (T, N, C), found by matching the image's batch dim."""
    shape = view.symbolic_shape(output)
    if shape is None or len(shape) != 3:
        return 0
    batch = view.symbolic_shape(image)[0]
    if batch is not None and shape[0] != batch and shape[1] == batch:
        return 1
    return 0


def _shape(view: GraphView, name: str) -> str:
    shape = view.shape(name)
    return "(rank unknown)" if shape is None else "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"


@dataclass
class EmittedTarget:
    """The target's tensors in the explain graph."""

    seeds: dict[str, str]  # score tensor → the backward pass's seed
    weights: str  # the effective weighting w, batch first
    score: str  # (N,) the differentiated score
    index: str  # (N,) int64: the task's index explained, -1 where none (or where fed target_weights replace it)


def _weighted_sum(e: Emitter, s: str, w: str, axes: list[int]) -> str:
    """Σ w ⊙ S per sample, summed in float32 for a float16 S: a dense map's logits summed over its pixels
    pass float16's largest value (65504) on a text page, and the score would read inf."""
    if e.dtype(s) == np.float16:
        s, w = e.cast(s, np.float32), e.cast(w, np.float32)
    return e.reduce_sum(e.mul(s, w), axes, keepdims=False)


def emit_target(e: Emitter, chosen: ChosenTarget, options: TaskOptions) -> EmittedTarget:
    """Build the task's default weighting, let fed ``target_weights`` override it, and seed S."""
    score, task = chosen.score, chosen.task
    s = batch_first(e, score, score.tensor)
    p = s if score.activation_output == score.tensor else batch_first(e, score, score.activation_output)
    ctx = SeedContext(e, score, s, p, TARGET, options)
    default = task.weights(ctx)
    fed = e.op("Expand", TARGET_WEIGHTS, e.shape(s), dtype_of=s)
    unfed = e.op("IsNaN", fed)
    weights = e.where(unfed, default.weights, fed)
    if task.score is None:
        seed, total = weights, _weighted_sum(e, s, weights, list(range(1, score.rank)))
    else:
        seed, total = task.score(ctx, weights)
    # the default's index wherever the default still counts somewhere (NaN entries: a region that keeps a
    # segmentation class's own pixels); -1 where the fed weights replace it entirely
    defaulted = e.reduce("ReduceMax", e.op("Cast", unfed, to=7), list(range(1, score.rank)), keepdims=False)
    index = e.where(e.op("Equal", defaulted, e.const(1, dtype="int64")), default.index, e.const(-1, dtype="int64"))
    return EmittedTarget({score.tensor: from_batch_first(e, score, seed)}, weights, total, index)
