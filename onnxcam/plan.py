"""What to explain in a model: the image input and its layout, the task and its score tensor, the layer.

The task and score tensor come from :mod:`onnxcam.targets` (detected from the outputs unless
named); the layer from :mod:`onnxcam.layers` (eligible feature maps, chosen per task).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import numpy as np
import onnx

from onnxcam.contract import format_shape
from onnxcam.errors import ModelError, OnnxCamError
from onnxcam.graph import GraphView, node_attribute, size_fixed_by
from onnxcam.detection.head import add_class_logits, add_end2end_outputs, add_level_scores, add_nms_outputs
from onnxcam.layers import Candidate, Layer, ScorePaths, considered_layers, level_layers, resolve_layer
from onnxcam.targets import SCORE_CHOICES, ChosenTarget, Task, choose_target
from onnxcam.targets.detection import head_for
from onnxcam.targets.score import ScoreTensor

log = logging.getLogger(__name__)

__all__ = ["Plan", "make_plan", "make_plans", "layer_specs", "plan_view", "fix_input_shape", "parse_input_shape",
           "check_input_size", "check_rows_per_image", "SCORE_CHOICES", "LAYOUT_CHOICES"]

LAYOUT_CHOICES = ("auto", "NCHW", "NHWC")
_IMAGE_CHANNELS = (1, 3, 4)


@dataclass(frozen=True)
class Plan:
    image: str  # the image input's name
    layout: str  # "NCHW" or "NHWC"
    target: ChosenTarget  # the task, the output and its score tensor
    layer: Layer
    considered: tuple[Candidate, ...]  # every 4-D tensor looked at, eligible or not

    @property
    def task(self) -> Task:
        return self.target.task

    @property
    def score_tensor(self) -> ScoreTensor:
        return self.target.score

    @property
    def output(self) -> str:
        return self.target.score.output

    @property
    def score(self) -> str:
        """The score tensor's name."""
        return self.target.score.tensor

    @property
    def score_kind(self) -> str:
        return self.target.score.kind

    @property
    def score_description(self) -> str:
        return self.target.score.describe()

    @property
    def output_activation(self) -> str:
        return self.target.score.activation

    @property
    def candidates(self) -> tuple[Layer, ...]:
        return tuple(c.layer for c in self.considered if c.eligible)


def make_plan(view: GraphView, layer: str = "auto", score: str = "logit", layout: str = "auto",
              output: str | None = None, task: str = "auto") -> Plan:
    image = _image_input(view)
    image_layout = _layout(view, image, layout)
    chosen = choose_target(view, image, task=task, output=output, kind=score)
    layouts = {image: image_layout}
    tensor = chosen.score.tensor
    paths = ScorePaths(view, tensor)
    considered = considered_layers(view, tensor, layouts, paths)
    picked = resolve_layer(view, layer, tensor, considered, chosen.task.name, paths)
    return Plan(image, image_layout, chosen, picked, tuple(considered))


def layer_specs(layer) -> list[str]:
    """One layer spec or several as a list, ``None``/"" meaning "auto"; an empty list, or one naming a
    layer twice, is refused."""
    specs = [layer] if layer is None or isinstance(layer, str) else list(layer)
    specs = ["auto" if spec in (None, "") else spec for spec in specs]
    if not specs:
        raise OnnxCamError("no layer given; pass 'auto', a layer name, or a list of layer names")
    repeated = next((spec for spec in specs if specs.count(spec) > 1), None)
    if repeated is not None:  # by the caller's own spelling: "auto" twice is not the tensor it picks, twice
        raise OnnxCamError(f"layer '{repeated}' is given more than once; give each target layer once")
    return specs


def make_plans(view: GraphView, layers, **options) -> tuple[Plan, ...]:
    """One plan per layer spec; a detector's ``auto`` is one layer per pyramid level (:func:`level_layers`)."""
    specs = layer_specs(layers)
    plans = tuple(make_plan(view, layer=spec, **options) for spec in specs)
    if specs != ["auto"] or plans[0].task.name != "detection":
        return plans
    plan = plans[0]
    head = head_for(view, plan.score_tensor)
    outputs = [*head.score_outputs, *head.objectness_outputs, *head.box_outputs] if head.score_outputs \
        else [head.output]
    levels = level_layers(view, list(plan.candidates), outputs, plan.image)
    return tuple(Plan(plan.image, plan.layout, plan.target, layer, plan.considered) for layer in levels) or plans


def plan_view(model: onnx.ModelProto) -> GraphView:
    """The view plans read; a detector's scores are first made one output (in place): a multi-level
    head's joined, the scores and boxes a graph's NonMaxSuppression reads, the probabilities an
    end-to-end head's rows are picked from, or a YOLOv8 head's class logits rebuilt from its per-level
    class maps."""
    view = GraphView(model)
    changed = add_nms_outputs(model, view) or add_end2end_outputs(model, view) or add_level_scores(model, view) \
        or add_class_logits(model, view)
    return GraphView(model) if changed else view


def _image_input(view: GraphView) -> str:
    images = [name for name in view.graph_inputs if view.rank(name) == 4 and view.is_float(name)]
    inputs = ", ".join(f"{n} ({_type_name(view, n)} {view.shape(n)})" for n in view.graph_inputs) or "none"
    if len(images) > 1:
        raise ModelError(f"the model has several 4-D image inputs ({inputs}); onnxcam explains models with one "
                         "image input")
    if not images:
        four_d = [n for n in view.graph_inputs if view.rank(n) == 4]
        if four_d:
            raise ModelError(f"the model's 4-D input '{four_d[0]}' holds {_type_name(view, four_d[0])} values, and "
                             "onnxcam feeds float images; re-export the model with a float input")
        raise ModelError(f"the model has no 4-D float image input (its inputs: {inputs}); onnxcam explains image models")
    others = [n for n in view.graph_inputs if n != images[0]]
    if others:
        raise ModelError(f"the model needs inputs besides the image ({inputs}); onnxcam feeds only the image: "
                         f"give '{others[0]}' a default (an initializer) or fix it in the model")
    return images[0]


def _type_name(view: GraphView, name: str) -> str:
    elem = view.elem_type(name)
    if elem in onnx.TensorProto.DataType.values() and elem:
        return onnx.TensorProto.DataType.Name(elem).lower()
    return f"element-type-{elem}"


def _layout(view: GraphView, image: str, requested: str) -> str:
    if requested not in LAYOUT_CHOICES:
        raise OnnxCamError(f"unknown layout '{requested}'; choose one of {', '.join(LAYOUT_CHOICES)}")
    shape = view.shape(image)
    if requested != "auto":
        axis, other = (1, 3) if requested == "NCHW" else (3, 1)
        if shape[axis] is not None and shape[axis] not in _IMAGE_CHANNELS and shape[other] in _IMAGE_CHANNELS:
            found = "NHWC" if requested == "NCHW" else "NCHW"
            raise OnnxCamError(f"--layout {requested} does not fit input '{image}' {format_shape(shape)}: it would "
                               f"have {shape[axis]} channels; it looks {found} (axis {other} holds {shape[other]}); "
                               "drop --layout, or give the layout it has")
        return requested
    if shape[1] in _IMAGE_CHANNELS and shape[3] not in _IMAGE_CHANNELS:
        return "NCHW"
    if shape[3] in _IMAGE_CHANNELS and shape[1] not in _IMAGE_CHANNELS:
        return "NHWC"
    for node in view.consumers.get(image, []):
        if node.op_type == "Transpose" and [a.ints for a in node.attribute if a.name == "perm"] == [[0, 3, 1, 2]]:
            return "NHWC"
    return "NCHW"


MAX_SIDE = 16384  # an image input's largest side onnxcam feeds


def parse_input_shape(text: str) -> list[int]:
    """'1x3x224x224' → [1, 3, 224, 224]."""
    if not re.fullmatch(r"\s*\d+(\s*[xX,]\s*\d+)*\s*", text or ""):
        raise OnnxCamError(f"input shape '{text}' is not like 1x3x224x224; give all dims as positive integers joined by 'x'")
    dims = [int(d) for d in re.split(r"[xX,]", text)]
    if 0 in dims:
        raise OnnxCamError(f"input shape '{text}' has a zero dim; every dim must be positive")
    huge = [d for d in dims[1:] if d > MAX_SIDE]  # the batch stays dynamic
    if huge:
        raise OnnxCamError(f"input shape '{text}' has a dim of {huge[0]}; image dims must be 1..{MAX_SIDE}")
    return dims


def fix_input_shape(model: onnx.ModelProto, dims: list[int], layout: str = "auto") -> onnx.ModelProto:
    """Fix the image input's non-batch dims to ``dims`` (in place); the batch becomes dynamic.

    Static sizes may be replaced — fully convolutional models are often exported at one size (as
    CenterFace is, at 10x3x32x32) — unless a constant shape in the graph repeats the old size
    (a Reshape to it, say): then the graph depends on it, and the node is named. A static channel
    count is never replaced: the first layer's weights fix it (``layout`` says where it is).
    """
    view = GraphView(model, complete=False)  # the inputs are all it reads
    image = _image_input(view)
    info = next(i for i in model.graph.input if i.name == image)
    shape = info.type.tensor_type.shape.dim
    if len(dims) != len(shape):
        raise ModelError(f"--input-shape has {len(dims)} dims but input '{image}' has {len(shape)}")
    old = view.shape(image)
    _check_channels_kept(view, image, dims, layout)
    replaced = [(i, d, v) for i, (d, v) in enumerate(zip(old, dims)) if i > 0 and d is not None and d != v]
    if replaced:
        _check_size_free(view, {d for _, d, _ in replaced if d > 1}, image, old)
        log.warning("replacing the fixed size %s of input '%s' with %s (no constant shape in the graph holds it)",
                    format_shape(old), image, format_shape(dims))
    for i, (dim, value) in enumerate(zip(shape, dims)):
        if i == 0:
            if dim.HasField("dim_value") and (replaced or dim.dim_value != value):
                dim.Clear()
                dim.dim_param = "batch"
            continue
        dim.dim_value = value
    if replaced:  # the outputs' declared sizes followed the old input: let inference find the new ones
        for output in model.graph.output:
            for j, dim in enumerate(output.type.tensor_type.shape.dim):
                if dim.HasField("dim_value") and j != 1:
                    dim.Clear()
                    dim.dim_param = f"{output.name}_dim{j}"
    del model.graph.value_info[:]  # stale shapes; inferred again
    return model


def _check_channels_kept(view: GraphView, image: str, dims: list[int], layout: str) -> None:
    """Refuse dims that put another number where the model declares its channel count (a shape
    given in the other layout, 1x3x256x256 for an NHWC input)."""
    declared = view.shape(image)
    layout = _layout(view, image, layout)
    axis = 1 if layout == "NCHW" else 3
    if declared[axis] is None or dims[axis] == declared[axis]:
        return
    height, width = declared[2:4] if layout == "NCHW" else declared[1:3]
    example = [1, height or "H", width or "W"]
    example.insert(axis, declared[axis])
    raise ModelError(f"--input-shape {format_shape(dims)} does not fit input '{image}', declared {format_shape(declared)} "
                     f"({layout}): its channels are fixed at {declared[axis]}, not {dims[axis]}; give the shape in "
                     f"{layout} order, e.g. {'x'.join(map(str, example))}")


def check_input_size(view: GraphView, declared, fixed) -> None:
    """Refuse an input size the graph cannot take, from the shapes inferred at that size (no run, so
    it costs next to nothing): inputs that contradict each other where a node needs them to agree
    (a flatten's built-in length, a MatMul's inner dims, a broadcast, a Concat)."""
    found = _size_contradiction(view)
    if found is None:
        return
    raise ModelError(f"input '{_image_input(view)}' at {format_shape(fixed)} does not fit the model: {found}; give a "
                     f"size its graph takes (the input is declared {format_shape(declared)}) with {size_fixed_by()}")


def check_rows_per_image(model: onnx.ModelProto, plan: Plan, declared, fixed) -> None:
    """Refuse an input size at which the score tensor no longer has one row per image: a Reshape to -1
    rows folds a map larger than the graph was built for into the batch (a classifier fed 256² instead
    of 224² then gives four rows per image), which inferred shapes cannot see. Runs the model once,
    on zeros at batch 1 (``fixed`` may fix another batch), where ``fixed`` replaced a static size the
    model was built for; skipped where that run fails."""
    if declared is None or None in declared[1:] or tuple(declared[1:]) == tuple(fixed[1:]):
        return  # a dynamic model is built for sizes; the size it declares is its own
    score = plan.score_tensor
    batch = fixed[0] if isinstance(fixed[0], int) and fixed[0] > 0 else 1
    rows = _score_rows(model, plan.image, [batch, *fixed[1:]], score.tensor, score.batch_axis)
    if rows is None or rows == batch:
        return
    raise ModelError(f"input '{plan.image}' at {format_shape(fixed)} gives '{score.tensor}' {rows / batch:g} rows "
                     f"per image: the graph folds the larger map into the batch, so its outputs no longer "
                     f"match the images; give the size the model was built for (its input is declared "
                     f"{format_shape(declared)}) with {size_fixed_by()}")


def _score_rows(model: onnx.ModelProto, image: str, dims: list, tensor: str, batch_axis: int) -> int | None:
    """The size of ``tensor``'s batch axis on one run of ``model`` on zeros of ``dims``; ``None`` where it
    does not run."""
    from onnxcam.runtime import model_session

    outputs = model.graph.output
    added = tensor not in {o.name for o in outputs}
    if added:  # for the run only (no copy of the weights)
        outputs.append(onnx.helper.make_empty_tensor_value_info(tensor))
    info = next(i for i in model.graph.input if i.name == image)
    try:
        dtype = onnx.helper.tensor_dtype_to_np_dtype(info.type.tensor_type.elem_type)
        session = model_session(model, "cpu", threads=None, announce=False)
        values = session.run([tensor], {image: np.zeros(dims, dtype)})[0]
    except Exception as exc:  # noqa: BLE001 - a model that does not run on zeros is checked no further here
        log.debug("rows-per-image probe did not run (%s)", exc)
        return None
    finally:
        if added:
            outputs.pop()
    return int(values.shape[batch_axis]) if values.ndim > batch_axis else None


def _size_contradiction(view: GraphView) -> str | None:
    """The first node whose inputs' inferred shapes cannot go together, in words; ``None`` if none."""
    for node in view.nodes:
        check = _AGREEMENTS.get(node.op_type)
        found = check(view, node) if check and len(node.input) > 1 else None
        if found:
            return f"{node.op_type} node '{node.name}' {found}"
    return None


def _reshape_contradiction(view: GraphView, node: onnx.NodeProto) -> str | None:
    """The values must fill the new shape. A dynamic first dim may hold the batch times a whole factor
    (a -1 there folds windows or tokens into it, and unfolds them), so then one side's values per
    first-dim entry need only divide the other's."""
    before, after = view.shape(node.input[0]), view.shape(node.output[0])
    if not before or not after or not all(isinstance(d, int) for d in (*before[1:], *after[1:])):
        return None
    values, kept = (int(np.prod([shape[0] or 1, *shape[1:]], dtype=np.int64)) for shape in (before, after))
    if before[0] and after[0]:
        fits = values == kept
    else:
        fits = 0 in (values, kept) or values % kept == 0 or kept % values == 0
    if fits:
        return None
    return f"reshapes {format_shape(before)} ({values} values) to {format_shape(after)} ({kept})"


def _matmul_contradiction(view: GraphView, node: onnx.NodeProto) -> str | None:
    a, b = view.shape(node.input[0]), view.shape(node.input[1])
    if not a or not b:
        return None
    transposed = node.op_type == "Gemm"
    inner_a = a[0] if transposed and node_attribute(node, "transA", 0) else a[-1]
    inner_b = b[-1] if transposed and node_attribute(node, "transB", 0) else b[-2] if len(b) > 1 else b[0]
    if inner_a is None or inner_b is None or inner_a == inner_b:
        return None
    return f"multiplies {format_shape(a)} by {format_shape(b)} (inner dims {inner_a} and {inner_b})"


def _broadcast_contradiction(view: GraphView, node: onnx.NodeProto) -> str | None:
    a, b = view.shape(node.input[0]), view.shape(node.input[1])
    if a is None or b is None:
        return None
    if any(x is not None and y is not None and x != y and 1 not in (x, y) for x, y in zip(a[::-1], b[::-1])):
        return f"cannot broadcast {format_shape(a)} with {format_shape(b)}"
    return None


def _concat_contradiction(view: GraphView, node: onnx.NodeProto) -> str | None:
    shapes = [view.shape(name) for name in node.input if name]
    if not shapes or any(not shape for shape in shapes) or len({len(shape) for shape in shapes}) != 1:
        return None
    axis = node_attribute(node, "axis", 0) % len(shapes[0])
    for i in range(len(shapes[0])):
        if i != axis and len({shape[i] for shape in shapes} - {None}) > 1:
            return f"joins {', '.join(map(format_shape, shapes))} along axis {axis}"
    return None


_AGREEMENTS = {"Reshape": _reshape_contradiction, "MatMul": _matmul_contradiction, "Gemm": _matmul_contradiction,
               "Add": _broadcast_contradiction, "Sub": _broadcast_contradiction, "Mul": _broadcast_contradiction,
               "Div": _broadcast_contradiction, "Concat": _concat_contradiction}

_SHAPE_INPUTS = {"Reshape": 1, "Expand": 1, "Tile": 1, "ConstantOfShape": 0, "Resize": 3}


def _check_size_free(view: GraphView, sizes: set[int], image: str, old) -> None:
    """Refuse when a constant shape in the graph holds one of the input's old sizes."""
    for node in view.nodes:
        position = _SHAPE_INPUTS.get(node.op_type)
        if position is None or len(node.input) <= position:
            continue
        value = view.const_value(node.input[position])
        if value is not None and sizes & {int(v) for v in value.ravel()[1:]}:
            raise ModelError(f"input '{image}' is fixed at {format_shape(old)} and {node.op_type} node "
                             f"'{node.name}' has that size built in ({value.ravel().tolist()}); the model cannot "
                             "take another size: re-export it at the size you need")
