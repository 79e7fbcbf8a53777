"""Candidate target layers (4-D activations with spatial extent) and the automatic choice.

A tensor's layout (NCHW or NHWC) is known where it can be traced: ONNX convolutions and pools
produce NCHW; layout-preserving ops keep it; a ``Transpose`` with perm (0,2,3,1) or (0,3,1,2)
switches it. The automatic choice is the last candidate, in graph order, that the score depends
on and whose spatial extent exceeds 1×1 — the usual Grad-CAM target (MATLAB's ``gradCAM`` and
torch-cam choose alike).
"""

from __future__ import annotations

from dataclasses import dataclass

from onnxcam.errors import LayerError
from onnxcam.graph import GraphView

__all__ = ["Layer", "candidate_layers", "resolve_layer", "tensor_layouts"]

_NCHW_SOURCES = {"Conv", "ConvTranspose", "MaxPool", "AveragePool", "LpPool", "BatchNormalization",
                 "InstanceNormalization", "Resize", "Upsample", "DepthToSpace", "SpaceToDepth", "LRN"}
# Ops whose 4-D output has the layout of their 4-D inputs.
_LAYOUT_PRESERVING = {"Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish",
                      "Tanh", "Gelu", "Erf", "Softplus", "Mish", "Add", "Sub", "Mul", "Div", "Sum", "Max", "Min",
                      "Identity", "Dropout", "Cast", "Pad", "Neg", "Abs", "Exp", "Sqrt", "Pow", "Where"}
_PERMS = {(0, 2, 3, 1): {"NCHW": "NHWC"}, (0, 3, 1, 2): {"NHWC": "NCHW"}}


@dataclass(frozen=True)
class Layer:
    """A candidate target: the tensor, the node producing it, its shape and its layout."""

    tensor: str
    node: str
    op_type: str
    shape: tuple
    layout: str  # "NCHW" or "NHWC"

    @property
    def spatial(self) -> tuple:
        return self.shape[2:4] if self.layout == "NCHW" else self.shape[1:3]

    @property
    def channels(self):
        return self.shape[1] if self.layout == "NCHW" else self.shape[3]

    def describe(self) -> str:
        dims = "x".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.tensor} ({self.op_type} '{self.node}', {self.layout} {dims})"


def tensor_layouts(view: GraphView, input_layouts: dict[str, str] | None = None) -> dict[str, str]:
    """Layouts of the 4-D tensors whose layout can be traced from convolutions or the inputs."""
    layouts = dict(input_layouts or {})
    for node in view.nodes:
        outputs = [o for o in node.output if o and view.rank(o) == 4]
        if not outputs:
            continue
        layout = None
        if node.op_type in _NCHW_SOURCES:
            layout = "NCHW"
        elif node.op_type in _LAYOUT_PRESERVING:
            known = {layouts[i] for i in node.input if i in layouts}
            layout = known.pop() if len(known) == 1 else None
        elif node.op_type == "Transpose" and node.input[0] in layouts:
            perm = next((tuple(a.ints) for a in node.attribute if a.name == "perm"), None)
            layout = _PERMS.get(perm, {}).get(layouts[node.input[0]])
        elif node.op_type == "Concat" and node.input and node.input[0] in layouts:
            layout = layouts[node.input[0]]
        if layout:
            for out in outputs:
                layouts[out] = layout
    return layouts


def candidate_layers(view: GraphView, score: str, input_layouts: dict[str, str] | None = None) -> list[Layer]:
    """4-D float activations the score depends on, with spatial extent > 1×1, in graph order."""
    layouts = tensor_layouts(view, input_layouts)
    needed = view.ancestors([score])
    layers = []
    for node in view.nodes:
        for out in node.output:
            if out in layouts and out in needed and view.is_float(out):
                layer = Layer(out, node.name, node.op_type, view.shape(out), layouts[out])
                if _has_spatial_extent(layer):
                    layers.append(layer)
    return layers


def _has_spatial_extent(layer: Layer) -> bool:
    dims = [d for d in layer.spatial if d is not None]
    return not dims or max(dims) > 1  # unknown (dynamic) spatial dims count as extended


def resolve_layer(view: GraphView, spec: str, score: str, input_layouts: dict[str, str] | None = None) -> Layer:
    """The layer named by ``spec``: "auto", a tensor name, or a node name."""
    candidates = candidate_layers(view, score, input_layouts)
    if not candidates:
        raise LayerError(
            "the model has no 4-D activation with spatial extent that the score depends on; "
            "Grad-CAM needs a convolutional layer (NCHW or NHWC)"
        )
    if spec in (None, "", "auto"):
        return candidates[-1]
    for layer in candidates:
        if spec in (layer.tensor, layer.node):
            return layer
    raise LayerError(_not_a_candidate(view, spec, score, candidates))


def _not_a_candidate(view: GraphView, spec: str, score: str, candidates: list[Layer]) -> str:
    names = ", ".join(layer.tensor for layer in candidates[-8:])
    more = f" (last 8 of {len(candidates)}; 'onnxcam layers MODEL' lists all)" if len(candidates) > 8 else ""
    node = view.node_by_name(spec)
    tensor = node.output[0] if node is not None else spec
    if tensor in view.producers or tensor in view.graph_inputs:
        shape = view.shape(tensor)
        if tensor not in view.ancestors([score]):
            why = "the score does not depend on it"
        elif shape is None or len(shape) != 4:
            why = f"it is not a 4-D activation (shape {shape})"
        else:
            why = f"it has no spatial extent (shape {shape}) or its layout cannot be traced"
        return f"layer '{spec}' cannot be explained: {why}; candidates: {names}{more}"
    return f"layer '{spec}' not found in the model; candidates: {names}{more}"
