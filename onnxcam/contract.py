"""The explain model's interface: its input and output names and its metadata, in one place.

Everything a caller of a ``*.cam.onnx`` file needs — in C++, Node or Python without onnxcam —
is defined here and documented in the README's interface table:

* inputs: the model's own, plus ``target`` (int64 ``[N]`` or ``[1]``: the task's index — a
  class, an output unit, a time step; negative = the task's default) and ``target_weights``
  (float, broadcastable to the batch-first score tensor: the score of sample n is
  Σ target_weights[n] ⊙ S[n]; NaN entries mean "use the default target there"). Both are
  optional in the default export (they carry default initializers) or plain required inputs
  with ``target_inputs="required"`` (for runtimes that fold initializers, such as OpenVINO);
* outputs: the model's own, plus ``cam``, ``cam_target``, ``cam_score`` and, when asked for,
  ``activations`` and ``gradients``; runtime methods also read ``cam_weights`` (the effective
  weighting).

:class:`Contract` is the metadata record, written by the exporter and read back by the
Explainer and the CLI — the only place that knows the keys.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import onnx

__all__ = ["TARGET", "TARGET_WEIGHTS", "CAM", "CAM_TARGET", "CAM_SCORE", "CAM_WEIGHTS", "ACTIVATIONS", "GRADIENTS",
           "CAM_OUTPUTS", "EXPOSABLE", "RESERVED_NAMES", "TARGET_INPUT_MODES", "METADATA_PREFIX", "Contract",
           "is_explain_model", "format_shape"]

TARGET = "target"
TARGET_WEIGHTS = "target_weights"
CAM = "cam"
CAM_TARGET = "cam_target"
CAM_SCORE = "cam_score"
CAM_WEIGHTS = "cam_weights"
ACTIVATIONS = "activations"
GRADIENTS = "gradients"

CAM_OUTPUTS = (CAM, CAM_TARGET, CAM_SCORE)
EXPOSABLE = (ACTIVATIONS, GRADIENTS)
RESERVED_NAMES = (TARGET, TARGET_WEIGHTS, *CAM_OUTPUTS, CAM_WEIGHTS, *EXPOSABLE)
TARGET_INPUT_MODES = ("optional", "required")
METADATA_PREFIX = "onnxcam."


@dataclass(frozen=True)
class Contract:
    """What an explain model explains and how to call it: its ``metadata_props`` as one record.

    Lists (several layers) are stored comma-separated; the score tensor's shape as ``?x26x6625``
    (batch first, ``?`` for dims unknown at export time).
    """

    version: str
    task: str
    method: str
    layer: str  # the target layer's tensor name(s), comma-separated
    layer_layout: str  # "NCHW", "NHWC" or "tokens/PREFIX/HxW" per layer, comma-separated
    input: str  # the image input
    input_layout: str
    output: str  # the model output the score is read from
    output_activation: str  # "Softmax", "Sigmoid", "LogSoftmax" or "" (raw scores)
    score: str  # "logit" (before the final activation) or "probability" (the output as it is)
    score_tensor: str  # S, the tensor the weighting applies to
    score_shape: str  # S's shape, batch first
    score_batch_axis: int  # where the batch is in S itself (1 for (T, N, C) sequences)
    score_description: str
    target_description: str  # the task's default target, in words
    target_inputs: str = "optional"  # "optional" (default initializers) or "required"
    threshold: float = 0.5  # dense: the default target's activation threshold
    blank: int = 0  # sequence: the CTC blank index
    background: int = 0  # segmentation: the class not chosen by default
    fuse: str = ""
    passes: str = "1"
    exposed: str = ""
    detection: str = ""  # detection: the head's layout as JSON (onnxcam.detection.head.Head)
    layer_gradients: str = ""  # detection: the tensor holding each layer's gradient, comma-separated
    layer_maps: str = ""  # detection: each layer's finished map before they are fused, comma-separated
    # A quantised model with integer ops is explained through its float twin (onnxcam.quantized): the
    # ops replaced ("ConvInteger:2,MatMulInteger:1"; "" = the model as it is), whether the twin's top-1
    # equals the model's on the probe input ("equal", "differs", "unchecked", "not compared"), their largest
    # difference, and their relative (RMS) difference (onnxcam.quantized.Agreement).
    float_twin: str = ""
    twin_top1: str = ""
    twin_max_difference: float = 0.0
    twin_relative_difference: float = 0.0
    precision: str = ""  # "" (float32), "float16", "bfloat16", or "bfloat16 upcast to float32" (onnxcam.precision)
    # why method "auto" became a gradient-free method ("auto: gradients reach no target layer (...)"); "" otherwise
    method_reason: str = ""

    @property
    def layers(self) -> list[str]:
        return self.layer.split(",")

    @property
    def score_dims(self) -> tuple[int | None, ...]:
        return tuple(None if d == "?" else int(d) for d in self.score_shape.split("x"))

    def write(self, model: onnx.ModelProto) -> None:
        """Set these entries in ``model.metadata_props`` (other entries are kept)."""
        props = {p.key: p.value for p in model.metadata_props}
        props.update({f"{METADATA_PREFIX}{key}": str(value) for key, value in asdict(self).items()})
        onnx.helper.set_model_props(model, props)

    @classmethod
    def read(cls, model: onnx.ModelProto) -> Contract | None:
        """The record of an explain model, or ``None`` for a plain model."""
        props = {p.key[len(METADATA_PREFIX):]: p.value for p in model.metadata_props
                 if p.key.startswith(METADATA_PREFIX)}
        if "version" not in props:
            return None
        values = {}
        for entry in fields(cls):
            if entry.name in props:
                values[entry.name] = _PARSERS.get(entry.type, str)(props[entry.name])
        return cls(**{**_OLD_DEFAULTS, **values})


_PARSERS = {"int": int, "float": float}

# Entries an explain model written before tasks existed lacks (it explains a classifier).
_OLD_DEFAULTS = {"task": "classification", "score_shape": "?", "score_batch_axis": 0, "target_description": "top-1"}


def is_explain_model(model: onnx.ModelProto) -> bool:
    return any(p.key == f"{METADATA_PREFIX}version" for p in model.metadata_props)


def format_shape(dims) -> str:
    """1x3x224x224, with ? for a dynamic dim (unknown, or named)."""
    return "x".join(str(d) if isinstance(d, int) else "?" for d in dims)
