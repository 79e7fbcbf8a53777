"""What to explain in a model: the image input and its layout, the score, and the target layer.

The score is the target class's logit *before* a final Softmax/Sigmoid/LogSoftmax when the
model ends in one (the Grad-CAM paper's y^c), or the output itself with ``score="probability"``
or when the model has no such final activation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import onnx

from onnxcam.errors import ModelError, OnnxCamError
from onnxcam.graph import GraphView
from onnxcam.layers import Layer, candidate_layers, resolve_layer

__all__ = ["Plan", "make_plan", "fix_input_shape", "parse_input_shape", "SCORE_CHOICES", "LAYOUT_CHOICES"]

SCORE_CHOICES = ("logit", "probability")
LAYOUT_CHOICES = ("auto", "NCHW", "NHWC")
_FINAL_ACTIVATIONS = {"Softmax", "Sigmoid", "LogSoftmax"}
_IMAGE_CHANNELS = (1, 3, 4)


@dataclass(frozen=True)
class Plan:
    image: str  # the image input's name
    layout: str  # "NCHW" or "NHWC"
    output: str  # the model output the score is read from
    score: str  # the tensor whose class entry is differentiated
    score_kind: str  # "logit" or "probability"
    score_description: str
    output_activation: str  # "Softmax", "Sigmoid", "LogSoftmax" or "" when the output is raw scores
    layer: Layer
    candidates: tuple[Layer, ...]


def make_plan(view: GraphView, layer: str = "auto", score: str = "logit", layout: str = "auto",
              output: str | None = None) -> Plan:
    if score not in SCORE_CHOICES:
        raise OnnxCamError(f"unknown score '{score}'; choose one of {', '.join(SCORE_CHOICES)}")
    image = _image_input(view)
    image_layout = _layout(view, image, layout)
    output_name = _classifier_output(view, output)
    score_tensor, description = _score_tensor(view, output_name, score)
    layouts = {image: image_layout}
    chosen = resolve_layer(view, layer, score_tensor, layouts)
    candidates = tuple(candidate_layers(view, score_tensor, layouts))
    activation = _final_activation(view, output_name)
    return Plan(image, image_layout, output_name, score_tensor, score, description,
                activation.op_type if activation is not None else "", chosen, candidates)


def _image_input(view: GraphView) -> str:
    images = [name for name in view.graph_inputs if view.rank(name) == 4 and view.is_float(name)]
    if len(images) == 1:
        return images[0]
    inputs = ", ".join(f"{n} {view.shape(n)}" for n in view.graph_inputs) or "none"
    if not images:
        raise ModelError(f"the model has no 4-D float image input (its inputs: {inputs}); onnxcam explains image models")
    raise ModelError(f"the model has several 4-D image inputs ({inputs}); onnxcam explains models with one image input")


def _layout(view: GraphView, image: str, requested: str) -> str:
    if requested not in LAYOUT_CHOICES:
        raise OnnxCamError(f"unknown layout '{requested}'; choose one of {', '.join(LAYOUT_CHOICES)}")
    if requested != "auto":
        return requested
    shape = view.shape(image)
    if shape[1] in _IMAGE_CHANNELS and shape[3] not in _IMAGE_CHANNELS:
        return "NCHW"
    if shape[3] in _IMAGE_CHANNELS and shape[1] not in _IMAGE_CHANNELS:
        return "NHWC"
    for node in view.consumers.get(image, []):
        if node.op_type == "Transpose" and [a.ints for a in node.attribute if a.name == "perm"] == [[0, 3, 1, 2]]:
            return "NHWC"
    return "NCHW"


def _classifier_output(view: GraphView, requested: str | None) -> str:
    outputs = view.graph_outputs
    if requested:
        if requested not in outputs:
            raise ModelError(f"output '{requested}' not found; the model's outputs are: {', '.join(outputs)}")
        if view.rank(requested) != 2:
            raise ModelError(f"output '{requested}' has shape {view.shape(requested)}, not (batch, classes)")
        return requested
    for name in outputs:
        if view.rank(name) == 2 and view.is_float(name):
            return name
    listing = ", ".join(f"{n} {view.shape(n)}" for n in outputs)
    raise ModelError(
        f"onnxcam explains classifiers: no output has shape (batch, classes) (outputs: {listing})"
    )


def _final_activation(view: GraphView, output: str) -> onnx.NodeProto | None:
    """The Softmax/Sigmoid/LogSoftmax node the output comes from (through reshapes), if any."""
    node = view.producers.get(output)
    while node is not None and node.op_type in ("Identity", "Flatten", "Reshape", "Squeeze") and view.rank(node.input[0]) == 2:
        node = view.producers.get(node.input[0])
    return node if node is not None and node.op_type in _FINAL_ACTIVATIONS else None


def _score_tensor(view: GraphView, output: str, kind: str) -> tuple[str, str]:
    if kind == "probability":
        return output, f"output '{output}' as the model returns it"
    activation = _final_activation(view, output)
    if activation is not None:
        logit = activation.input[0]
        return logit, f"logit '{logit}' before the final {activation.op_type} of output '{output}'"
    return output, f"output '{output}' (the model has no final Softmax/Sigmoid)"


def parse_input_shape(text: str) -> list[int]:
    """'1x3x224x224' → [1, 3, 224, 224]."""
    if not re.fullmatch(r"\s*\d+(\s*[xX,]\s*\d+)*\s*", text or ""):
        raise OnnxCamError(f"input shape '{text}' is not like 1x3x224x224; give all dims as positive integers joined by 'x'")
    dims = [int(d) for d in re.split(r"[xX,]", text)]
    if 0 in dims:
        raise OnnxCamError(f"input shape '{text}' has a zero dim; every dim must be positive")
    return dims


def fix_input_shape(model: onnx.ModelProto, dims: list[int]) -> onnx.ModelProto:
    """Fix the non-batch dims of the single image input (in place; the batch stays as it is)."""
    view = GraphView(model)
    image = _image_input(view)
    info = next(i for i in model.graph.input if i.name == image)
    shape = info.type.tensor_type.shape.dim
    if len(dims) != len(shape):
        raise ModelError(f"--input-shape has {len(dims)} dims but input '{image}' has {len(shape)}")
    for dim, value in list(zip(shape, dims))[1:]:
        if dim.HasField("dim_value") and dim.dim_value != value:
            raise ModelError(f"--input-shape {dims} disagrees with input '{image}' whose shape is {view.shape(image)}")
        dim.dim_value = value
    del model.graph.value_info[:]  # stale shapes; inferred again
    return model
