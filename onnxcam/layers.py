"""Candidate target layers (4-D activations with spatial extent) and the automatic choice.

A tensor's layout (NCHW or NHWC) is known where it can be traced: ONNX convolutions and pools
produce NCHW; layout-preserving ops keep it; a ``Transpose`` with perm (0,2,3,1) or (0,3,1,2)
switches it.

A tensor is *eligible* when it is a feature map the score is computed from: spatial extent
beyond 1×1, more than one channel, a differentiable path to the score (not only through
``Shape`` or other cut ops: its gradient would be zero), and a learned layer (Conv, Gemm,
MatMul with weights, ...) on that path. An eligible tensor whose way to the score passes an op
with no gradient rule (a ``Loop``) is for the gradient-free methods only
(:attr:`Candidate.gradient_blocked_by`). The automatic choice is the last eligible tensor in
graph order — the usual Grad-CAM target (MATLAB's ``gradCAM`` and torch-cam choose alike) —
except for dense and segmentation outputs, where it is the last eligible tensor *before the
prediction head*: the chain of single-input ops ending at the score (a DB text detector's
Conv→BN→ReLU→ConvTranspose→...→Sigmoid) would otherwise give the head's own upsampling layers.

Transformer token sequences (N, T, D) are candidates too when their last h·w tokens form a grid
of the input (see :func:`_token_layer`); they are eligible only when an op on the way to the score
still mixes tokens (attention, pooling): after a ViT's last attention only the class token reaches
the score, and the patch tokens' gradient is zero. For them the automatic layer is the last
eligible LayerNormalization output — the last block's first norm, pytorch-grad-cam's ViT recipe.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx

from onnxcam.autodiff import ZERO_OPS, carries_gradient, lookup
from onnxcam.contract import format_shape
from onnxcam.errors import LayerError
from onnxcam.graph import GraphView, node_attribute, outer_names, value_origin

__all__ = ["Layer", "Candidate", "ScorePaths", "considered_layers", "resolve_layer", "automatic_layer",
           "prediction_head_input", "level_layers", "tensor_layouts", "parse_layout", "nchw_view", "nchw_array", "native_array"]

_NCHW_SOURCES = {"Conv", "ConvTranspose", "MaxPool", "AveragePool", "LpPool", "BatchNormalization",
                 "InstanceNormalization", "Resize", "Upsample", "DepthToSpace", "SpaceToDepth", "LRN"}
# Ops whose 4-D output has the layout of their 4-D inputs.
_LAYOUT_PRESERVING = {"Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish",
                      "Tanh", "Gelu", "Erf", "Softplus", "Mish", "Add", "Sub", "Mul", "Div", "Sum", "Max", "Min",
                      "Identity", "Dropout", "Cast", "Pad", "Neg", "Abs", "Exp", "Sqrt", "Pow", "Where",
                      "LayerNormalization", "QuantizeLinear", "DequantizeLinear"}  # QDQ: fake quantisation
_PERMS = {(0, 2, 3, 1): {"NCHW": "NHWC"}, (0, 3, 1, 2): {"NHWC": "NCHW"}}


@dataclass(frozen=True)
class Layer:
    """A candidate target: the tensor, the node producing it, its shape and its layout.

    ``layout`` is "NCHW", "NHWC" or "tokens": a transformer's (N, T, D) token sequence whose last
    h·w tokens are the patch grid ``grid`` = (h, w), after ``prefix`` extra tokens (a class token,
    distillation or register tokens). Methods always see the NCHW view (:func:`nchw_view`).
    """

    tensor: str
    node: str
    op_type: str
    shape: tuple
    layout: str  # "NCHW", "NHWC" or "tokens"
    grid: tuple | None = None  # tokens: (h, w)
    prefix: int = 0  # tokens: extra tokens before the grid

    @property
    def spatial(self) -> tuple:
        if self.layout == "tokens":
            return self.grid
        return self.shape[2:4] if self.layout == "NCHW" else self.shape[1:3]

    @property
    def channels(self):
        return self.shape[1] if self.layout == "NCHW" else self.shape[-1]

    @property
    def layout_code(self) -> str:
        """The layout as the explain model's metadata records it: "NCHW", "NHWC" or "tokens/1/8x8"."""
        if self.layout != "tokens":
            return self.layout
        return f"tokens/{self.prefix}/{self.grid[0]}x{self.grid[1]}"

    def describe(self) -> str:
        dims = format_shape(self.shape)
        if self.layout == "tokens":
            extra = f"{self.prefix}+" if self.prefix else ""
            return f"{self.tensor} ({self.op_type} '{self.node}', tokens {dims} = {extra}{self.grid[0]}x{self.grid[1]} grid)"
        return f"{self.tensor} ({self.op_type} '{self.node}', {self.layout} {dims})"


def parse_layout(code: str) -> tuple[str, int, tuple[int, int] | None]:
    """(layout, prefix, grid) from :attr:`Layer.layout_code`."""
    if not code.startswith("tokens/"):
        return code, 0, None
    _, prefix, grid = code.split("/")
    h, w = grid.split("x")
    return "tokens", int(prefix), (int(h), int(w))


def nchw_view(e, tensor: str, layer: Layer) -> str:
    """The layer's tensor (or its gradient, of the same shape) as an (N, C, h, w) tensor in the graph.

    Token layers lose their prefix tokens (the class token's own gradient is ignored, as in
    pytorch-grad-cam's ViT recipe) and are reshaped to the grid."""
    if layer.layout == "NCHW":
        return tensor
    if layer.layout == "NHWC":
        return e.transpose(tensor, [0, 3, 1, 2])
    patches = e.slice(tensor, [layer.prefix], [layer.prefix + layer.grid[0] * layer.grid[1]], [1]) \
        if layer.prefix else tensor
    grid = e.reshape(patches, e.ints([0, layer.grid[0], layer.grid[1], layer.shape[2]]))
    return e.transpose(grid, [0, 3, 1, 2])


def nchw_array(array, code: str):
    """NumPy twin of :func:`nchw_view` for a tensor the explain model returned."""
    import numpy as np

    layout, prefix, grid = parse_layout(code)
    if layout == "NCHW" or array is None:
        return array
    if layout == "NHWC":
        return np.ascontiguousarray(array.transpose(0, 3, 1, 2))
    patches = array[:, prefix:prefix + grid[0] * grid[1]]
    return np.ascontiguousarray(patches.reshape(len(array), grid[0], grid[1], -1).transpose(0, 3, 1, 2))


def native_array(nchw, code: str, original):
    """The inverse of :func:`nchw_array`: an (N, C, h, w) array back in the layer's own layout; token
    layers take their prefix tokens from ``original`` (the layer's tensor as the model computed it)."""
    import numpy as np

    layout, prefix, grid = parse_layout(code)
    if layout == "NCHW":
        return nchw
    if layout == "NHWC":
        return np.ascontiguousarray(nchw.transpose(0, 2, 3, 1))
    tokens = nchw.reshape(len(nchw), nchw.shape[1], -1).transpose(0, 2, 1)
    return np.ascontiguousarray(np.concatenate([original[:, :prefix], tokens], axis=1))


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


_LEARNED = {"Conv", "ConvTranspose", "Gemm", "MatMul", "LSTM", "GRU", "RNN", "ConvInteger", "MatMulInteger",
            "QLinearConv", "QLinearMatMul", "Einsum"}
# Tasks whose automatic layer is the last feature tensor before the prediction head.
_HEAD_TASKS = {"dense", "segmentation"}


@dataclass(frozen=True)
class Candidate:
    """A 4-D tensor considered as a target layer, and why it is not eligible ("" when it is)."""

    layer: Layer
    why_not: str = ""
    gradient_blocked_by: str = ""  # an op on the way to the score with no gradient rule ("Loop node 'x'")

    @property
    def eligible(self) -> bool:
        return not self.why_not


class ScorePaths:
    """Which tensors reach the score through differentiable ops, through a learned layer, and through
    an op that mixes tokens; computed once per plan."""

    def __init__(self, view: GraphView, score: str):
        self.view = view
        self.variable = _image_dependent(view)
        self.to_score = _differentiable_ancestors(view, score, self.variable)
        self.learned_after = _found_after(view, self.to_score, lambda node: _is_learned(node, self.variable))
        self.mixing_after = _found_after(view, self.to_score, lambda node: _mixes_tokens(view, node, self.variable))
        self.blocked_by = _unruled_after(view, self.to_score)


def considered_layers(view: GraphView, score: str, input_layouts: dict[str, str] | None = None,
                      paths: ScorePaths | None = None) -> list[Candidate]:
    """Every 4-D float activation with a traced layout, and every (N, T, D) token sequence whose
    tokens form a grid of the input, that the score is computed from, in graph order, with the
    reason it cannot be a target layer where it cannot."""
    layouts = tensor_layouts(view, input_layouts)
    needed = view.ancestors([score], inputs=_reads)
    paths = paths or ScorePaths(view, score)
    strides = _patch_strides(view)
    image_hw = _image_size(view, input_layouts)
    considered = []
    for node in view.nodes:
        for out in node.output:
            if out not in needed or not view.is_float(out):
                continue
            if out in layouts:
                layer = Layer(out, node.name, node.op_type, view.shape(out), layouts[out])
            elif view.rank(out) in (3, 4) and image_hw is not None and _same_batch(view, out, input_layouts):
                layer = (_token_layer if view.rank(out) == 3 else _grid_layer)(view, node, out, image_hw, strides)
                if layer is None:
                    continue
            else:
                continue
            considered.append(Candidate(layer, _why_not(layer, paths), paths.blocked_by.get(layer.tensor, "")))
    return considered


def _why_not(layer: Layer, paths: ScorePaths) -> str:
    if layer.tensor not in paths.to_score:
        return "the score depends on it only through non-differentiable ops (its gradient is zero)"
    if any(d == 0 for d in (*(layer.spatial or ()), layer.channels)):
        return "a side of size 0 (an empty map)"
    if not _has_spatial_extent(layer):
        return "no spatial extent (1x1)"
    if layer.channels == 1:
        return "one channel (a map, not features)"
    if not paths.learned_after.get(layer.tensor):
        return "no learned layer between it and the score"
    if layer.layout == "tokens" and not paths.mixing_after.get(layer.tensor):
        return "no op mixes its tokens on the way to the score (only the class token reaches it: a zero map)"
    return ""


# Most tokens that come before a transformer's patch grid (class, distillation, register tokens).
_MAX_PREFIX = 8


def _image_size(view: GraphView, input_layouts) -> tuple[int, int] | None:
    for image, layout in (input_layouts or {}).items():
        shape = view.shape(image)
        if shape is not None and len(shape) == 4:
            hw = shape[2:4] if layout == "NCHW" else shape[1:3]
            if None not in hw:
                return tuple(hw)
    return None


def _same_batch(view: GraphView, tensor: str, input_layouts) -> bool:
    """Whether ``tensor``'s first dim is the image batch (not windows × batch, as inside Swin blocks)."""
    image = next(iter(input_layouts or {}), None)
    if image is None:
        return False
    batch, first = view.symbolic_shape(image)[0], (view.symbolic_shape(tensor) or (None,))[0]
    return first is not None and first == batch


def _patch_strides(view: GraphView) -> list[int]:
    """Strides of patch embeddings (a Conv whose stride equals its kernel), the likeliest grid steps first."""
    found = []
    for node in view.nodes:
        if node.op_type == "Conv":
            attrs = {a.name: list(a.ints) for a in node.attribute if a.name in ("strides", "kernel_shape")}
            strides, kernel = attrs.get("strides"), attrs.get("kernel_shape")
            if strides and kernel and strides == kernel and len(set(strides)) == 1 and strides[0] > 1:
                found.append(strides[0])
    return sorted(set(found), key=found.index)


def _grid_steps(image_hw, strides: list[int]):
    """Candidate grid steps: patch strides (×2ᵏ for patch merging) first, then any common divisor."""
    steps = [s * 2 ** k for s in strides for k in range(5)]
    steps += [s for s in range(2, 65) if s not in steps]
    return [s for s in steps if not image_hw[0] % s and not image_hw[1] % s]


def _grid_layer(view: GraphView, node, tensor: str, image_hw, strides: list[int]) -> Layer | None:
    """A channels-last (N, h, w, D) window grid (Swin blocks that keep the grid) as an NHWC layer."""
    shape = view.shape(tensor)
    if None in shape[1:] or shape[3] < 2:
        return None
    for step in _grid_steps(image_hw, strides):
        if (shape[1], shape[2]) == (image_hw[0] // step, image_hw[1] // step):
            return Layer(tensor, node.name, node.op_type, shape, "NHWC")
    return None


def _token_layer(view: GraphView, node, tensor: str, image_hw, strides: list[int]) -> Layer | None:
    """A Layer for an (N, T, D) tensor whose last h·w tokens form a grid of the input, else None.

    The grid is the input divided by a patch stride (a patch embedding's, times 2^k for the
    patch merging of hierarchical models, else any common divisor); the tokens before it
    (at most 8) are the prefix."""
    shape = view.shape(tensor)
    tokens = shape[1]
    if tokens is None or shape[2] is None:
        return None
    height, width = image_hw
    for step in _grid_steps(image_hw, strides):
        grid = (height // step, width // step)
        prefix = tokens - grid[0] * grid[1]
        if 0 <= prefix <= _MAX_PREFIX and grid[0] * grid[1] > 1:
            return Layer(tensor, node.name, node.op_type, shape, "tokens", grid, prefix)
    return None


def _has_spatial_extent(layer: Layer) -> bool:
    # an unknown (dynamic) dim counts as extended: an OCR recogniser's (N, C, 1, W?) features have extent in W
    return not layer.spatial or any(d is None or d > 1 for d in layer.spatial)


def automatic_layer(view: GraphView, candidates: list[Layer], score: str, task: str,
                    paths: ScorePaths | None = None) -> Layer:
    """The last eligible layer; for dense and segmentation tasks the last one not inside the
    prediction head (the chain of one-input ops that ends at the score)."""
    if task in _HEAD_TASKS:
        head_input = prediction_head_input(view, score, paths)
        before_head = view.ancestors([head_input])
        usable = [layer for layer in candidates if layer.tensor in before_head]
        if usable:
            return usable[-1]
    if candidates[-1].layout == "tokens":  # pytorch-grad-cam's ViT recipe: the last block's first LayerNorm
        normed = [layer for layer in candidates if layer.layout == "tokens" and layer.op_type == "LayerNormalization"]
        if normed:
            return normed[-1]
    return candidates[-1]


def prediction_head_input(view: GraphView, score: str, paths: ScorePaths | None = None) -> str:
    """Walk back from the score while each op has one varying input used by nothing else: where the walk
    stops (a merge of branches, or features shared by several heads) is the head's input."""
    paths = paths or ScorePaths(view, score)
    variable, to_score = paths.variable, paths.to_score
    tensor = score
    while (node := view.producers.get(tensor)) is not None and node.op_type not in ZERO_OPS:
        # a DequantizeLinear's varying input is its QuantizeLinear's integer output (QDQ models)
        inputs = [i for i in node.input if i in variable and (view.is_float(i) or node.op_type == "DequantizeLinear")]
        if len(inputs) != 1:
            break
        users = [n for n in view.consumers.get(inputs[0], []) if any(o in to_score for o in n.output)]
        if len(users) != 1:
            break
        tensor = inputs[0]
    return tensor


def level_layers(view: GraphView, candidates: list[Layer], outputs: list[str], image: str) -> list[Layer]:
    """A detector's automatic layers: per pyramid level, the last eligible tensor that every path from
    the image to the level's prediction maps passes through — the neck output feeding the level's
    head, or the head's stem where it has one (the last tensor the level's box and class branches
    share). The prediction maps are where walking back from the head's ``outputs`` first meets a 4-D
    map laid on a grid of the input — the maps a channel Concat joins, where it joins some (a YOLOv8
    level's box and class maps: the joined map would dominate itself); grouped by size they are the
    levels, the largest first. Empty when the head is not made of such maps."""
    image_hw = _image_size(view, {image: "NCHW"}) or _image_size(view, {image: "NHWC"})
    levels: dict[tuple, list[str]] = {}
    stack, seen = list(outputs), set()
    while stack:
        name = stack.pop()
        if name in seen or name in view.initializers:
            continue
        seen.add(name)
        shape = view.shape(name)
        if shape is not None and len(shape) == 4 and _on_input_grid(shape[2:], image_hw):
            joined = _joined_maps(view, name)
            if joined:
                stack.extend(joined)
            else:
                levels.setdefault(tuple(shape[2:]), []).append(name)
        elif (node := view.producers.get(name)) is not None and node.op_type not in ZERO_OPS:
            stack.extend(i for i in node.input if i)
    order = {layer.tensor: i for i, layer in enumerate(candidates)}
    chosen = []
    for size in sorted(levels, key=lambda hw: -hw[0] * hw[1]):
        maps = levels[size]
        before = view.ancestors(maps)
        found = next((layer for layer in reversed(candidates) if layer.tensor in before and layer.spatial == size
                      and _dominates(view, layer.tensor, maps, image)), None)
        if found is None:
            return []
        chosen.append(found)
    return sorted(dict.fromkeys(chosen), key=lambda layer: order[layer.tensor]) if len(chosen) > 1 else []


def _joined_maps(view: GraphView, tensor: str) -> list[str]:
    """The maps a Concat over channels joins into ``tensor`` (through ops that keep values: a QDQ pair, a
    twin's requantisation), else []: a YOLOv8 level's box and class maps, each its own branch's output."""
    node = view.producers.get(value_origin(view, tensor))
    if node is None or node.op_type != "Concat" or node_attribute(node, "axis", 0) not in (1, -3):
        return []
    return [i for i in node.input if i]


def _on_input_grid(hw, image_hw) -> bool:
    """A map of (h, w) cells is a grid of the input when both sides have the same stride (to a quarter)."""
    if not all(isinstance(d, int) and d > 1 for d in hw):
        return False
    if image_hw is None or None in image_hw:
        return True
    rows, cols = image_hw[0] / hw[0], image_hw[1] / hw[1]
    return abs(rows - cols) <= 0.25 * min(rows, cols) and rows >= 1


def _dominates(view: GraphView, tensor: str, targets: list[str], image: str) -> bool:
    """Every path from ``image`` to ``targets`` passes through ``tensor``."""
    reached, stack = {image}, [image]
    while stack:
        for node in view.consumers.get(stack.pop(), []):
            for out in node.output:
                if out and out != tensor and out not in reached:
                    reached.add(out)
                    stack.append(out)
    return not any(t in reached for t in targets)


def _reads(node: onnx.NodeProto) -> list[str]:
    """A node's inputs and the outer-scope names its subgraphs read (a tf2onnx LSTM's Loop body reads the
    features it runs over by name, not as an input of the Loop)."""
    if not any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
        return list(node.input)
    return [*node.input, *sorted(outer_names(node))]


def _image_dependent(view: GraphView) -> set[str]:
    """Tensors computed from the graph inputs (not constants)."""
    varying = set(view.graph_inputs)
    for node in view.nodes:
        if any(i in varying for i in _reads(node) if i):
            varying.update(o for o in node.output if o)
    return varying


def _differentiable_ancestors(view: GraphView, score: str, variable: set[str]) -> set[str]:
    """Tensors carrying a gradient that the score depends on through ops that carry one."""
    def carried(node):
        if node.op_type in ZERO_OPS:
            return []
        return [i for i in _reads(node) if i in variable and carries_gradient(view, i)]

    return view.ancestors([score], inputs=carried)


def _found_after(view: GraphView, to_score: set[str], found) -> dict[str, bool]:
    """Per tensor on a differentiable path to the score: does an op for which ``found(node)`` holds lie
    on the way (the tensor's consumer itself included)?"""
    after: dict[str, bool] = {}
    for node in reversed(view.nodes):
        outputs = [o for o in node.output if o in to_score]
        if not outputs:
            continue
        here = any(after.get(o) for o in outputs) or found(node)
        for name in _reads(node):
            if name in to_score:
                after[name] = after.get(name, False) or here
    return after


def _unruled_after(view: GraphView, to_score: set[str]) -> dict[str, str]:
    """Per tensor on a differentiable path to the score: an op on the way that has no gradient rule
    (the backward pass stops there), as "Loop node 'name'"; "" where none has."""
    after: dict[str, str] = {}
    for node in reversed(view.nodes):
        outputs = [o for o in node.output if o in to_score]
        if not outputs:
            continue
        here = next((after[o] for o in outputs if after.get(o)), "") or _without_rule(view, node)
        for name in _reads(node):
            if name in to_score and not after.get(name):
                after[name] = here
    return after


def _without_rule(view: GraphView, node) -> str:
    standard = node.domain in ("", "ai.onnx")
    if standard and (node.op_type in ZERO_OPS or lookup(node.op_type, view.opset) is not None):
        return ""
    return f"{node.op_type if standard else f'{node.domain}:{node.op_type}'} node '{node.name}'"


def _is_learned(node, variable: set[str]) -> bool:
    """A layer with weights: Conv, Gemm, MatMul, ... with a constant operand besides the first; or a node
    whose subgraph holds one (a Loop running an LSTM cell's MatMuls)."""
    if node.op_type in _LEARNED and any(i and i not in variable for i in node.input[1:]):
        return True
    bodies = [g for a in node.attribute for g in ([a.g] if a.HasField("g") else list(a.graphs))]
    return any(_is_learned(sub, variable) for body in bodies for sub in body.node)


def _mixes_tokens(view: GraphView, node, variable: set[str]) -> bool:
    """Attention products, convolutions and poolings combine positions; so do reductions over the
    token axis and reshapes of a token sequence into one vector per sample."""
    op, inputs = node.op_type, [i for i in node.input if i]
    if op in ("MatMul", "Einsum"):
        return sum(i in variable for i in inputs) >= 2
    if op in ("Conv", "ConvTranspose", "GlobalAveragePool", "GlobalMaxPool", "AveragePool", "MaxPool"):
        return True
    rank = view.rank(inputs[0]) if inputs else None
    if op.startswith("Reduce") and rank == 3:
        axes = next((list(a.ints) for a in node.attribute if a.name == "axes"), None)
        if axes is None and len(inputs) > 1:
            value = view.const_value(inputs[1])
            axes = None if value is None else [int(a) for a in value.ravel()]
        return axes is None or any(a % 3 == 1 for a in axes)
    if op in ("Flatten", "Reshape") and rank == 3:
        out_rank = view.rank(node.output[0])
        return out_rank is not None and out_rank < 3 and not (out_rank == 2 and view.shape(node.output[0])[1] ==
                                                             view.shape(inputs[0])[2])
    return False


def resolve_layer(view: GraphView, spec: str, score: str, considered: list[Candidate], task: str = "classification",
                  paths: ScorePaths | None = None) -> Layer:
    """The layer named by ``spec`` ("auto", a tensor name, or a node name) among ``considered``."""
    candidates = [c.layer for c in considered if c.eligible]
    if not candidates:
        raise LayerError(
            "the model has no 4-D activation with spatial extent and several channels that the score depends on "
            "through a learned layer; Grad-CAM needs a convolutional feature layer (NCHW or NHWC); "
            "'onnxcam layers MODEL' shows what was considered"
        )
    if spec in (None, "", "auto"):
        return automatic_layer(view, candidates, score, task, paths)
    for layer in candidates:
        if spec in (layer.tensor, layer.node):
            return layer
    raise LayerError(_not_a_candidate(view, spec, score, candidates, considered))


def _not_a_candidate(view: GraphView, spec: str, score: str, candidates: list[Layer],
                     considered: list[Candidate]) -> str:
    names = ", ".join(layer.tensor for layer in candidates[-8:])
    more = f" (last 8 of {len(candidates)}; 'onnxcam layers MODEL' lists all)" if len(candidates) > 8 else ""
    node = view.node_by_name(spec)
    tensor = node.output[0] if node is not None else spec
    if tensor in view.producers or tensor in view.graph_inputs:
        shape = view.shape(tensor)
        refused = {c.layer.tensor: c.why_not for c in considered}
        if tensor not in view.ancestors([score]):
            why = "the score does not depend on it"
        elif refused.get(tensor):
            why = refused[tensor]
        elif shape is None or len(shape) != 4:
            why = f"it is neither a 4-D activation nor a token sequence over a grid of the input (shape {shape})"
        elif all(d == 1 for d in shape[2:]) or all(d == 1 for d in shape[1:3]):
            why = f"it has no spatial extent (shape {shape})"
        else:
            why = f"its layout cannot be traced (shape {shape})"
        return f"layer '{spec}' cannot be explained: {why}; candidates: {names}{more}"
    return f"layer '{spec}' not found in the model; candidates: {names}{more}"
