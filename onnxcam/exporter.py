"""Model → explain model, as a short sequence of stages.

1. *load*: read the model (never modified), fix dynamic dims (``input_shape``);
2. *plan*: image input and layout, task and score tensor, target layer(s)  (:mod:`onnxcam.plan`);
3. *target*: the ``target``/``target_weights`` inputs, the task's default weighting, the seed
   (:mod:`onnxcam.targets`);
4. *backward*: ∂score/∂layer as standard ONNX ops, only through the nodes between them;
5. *method*: the CAM weighting, ReLU, resize and normalisation (:mod:`onnxcam.methods`);
6. *assemble*: new inputs and outputs, the metadata record (:mod:`onnxcam.contract`);
7. *prune*: drop every node and initializer that feeds no output;
8. *check*: ``onnx.checker.check_model(full_check=True)``.

The interface is :mod:`onnxcam.contract`'s. Several layers (``layer=[...]``) share one backward
pass; each layer's map is finished on its own and the maps are fused (``fuse``). Multi-pass
methods (``Method.kind == "runtime"``) are not exported on their own: the
:class:`onnxcam.Explainer` exports a model giving the target, score, weighting and the tensors
the method needs (``for_runtime=True``; no ``cam`` output) and runs the passes itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from onnxcam import contract, precision
from onnxcam.autodiff import emit_backward
from onnxcam.autodiff.emitter import Emitter
from onnxcam.contract import Contract, format_shape
from onnxcam.errors import ModelError, OnnxCamError
from onnxcam.graph import (GraphView, check_attributes, fed_inputs, load_model, load_model_and_origin, outer_names,
                           sort_topologically, without_weights)
from onnxcam.io.model_files import save_model
from onnxcam.layers import nchw_view
from onnxcam.methods import AUTO, METHODS, Method, get_method, resolve_method
from onnxcam.methods.context import GraphContext, LayerContext
from onnxcam.methods.fusion import check_fuse, fuse_maps
from onnxcam.methods.head import finish_cam
from onnxcam.plan import (Plan, check_input_size, check_rows_per_image, fix_input_shape, layer_specs, make_plans,
                          parse_input_shape, plan_view)
from onnxcam.quantized import Twin, checked_float_twin
from onnxcam.targets import EmittedTarget, TaskOptions, emit_target
from onnxcam.targets.detection import head_for
from onnxcam.version import __version__

__all__ = ["export", "ExplainModel", "prune_dead_nodes", "load_explainable", "Loaded"]

log = logging.getLogger(__name__)


@dataclass
class ExplainModel:
    """An exported explain model and what it explains."""

    model: onnx.ModelProto
    plan: Plan
    method: str
    seconds: float
    plans: tuple[Plan, ...] = field(default=())  # one per target layer (``plan`` is the first)
    external_data: bool = False  # the source kept its weights in external data files: so does the saved model
    # an integer-op model explained through its float twin: the model itself, for the explainer to check the
    # twin against on its first batch (None for any other model)
    quantized: onnx.ModelProto | None = field(default=None, repr=False)

    @property
    def contract(self) -> Contract:
        return Contract.read(self.model)

    def save(self, path: str | Path) -> Path:
        """Write the explain model to ``path``; its weights go to a data file beside it when the source
        kept them outside or when the model is over 2 GB (:mod:`onnxcam.io.model_files`)."""
        return save_model(self.model, path, external=self.external_data)


def export(
    source,
    *,
    layer: str | Sequence[str] = "auto",
    method: str = AUTO,
    expose: Sequence[str] = (),
    input_shape: str | Sequence[int] | None = None,
    layout: str = "auto",
    score: str = "logit",
    output: str | None = None,
    task: str = "auto",
    fuse: str = "mean",
    target_inputs: str = "optional",
    threshold: float = TaskOptions.threshold,
    blank: int = TaskOptions.blank,
    background: int = TaskOptions.background,
    for_runtime: bool = False,
    runtime_fallback: bool = False,
) -> ExplainModel:
    """Rewrite ``source`` (path, bytes or ModelProto; never modified) into an explain model.

    ``method`` is a name in :data:`onnxcam.methods.METHODS`, or "auto": Grad-CAM, HiResCAM for detectors;
    where gradients reach no target layer, Eigen-CAM, or with ``runtime_fallback`` (a caller that runs
    multi-pass methods: :class:`onnxcam.Explainer`) Ablation-CAM, exported as ``for_runtime`` with the
    layer's activations (see :func:`onnxcam.methods.resolve_method`).

    ``layer`` is one layer spec or a list of them (one backward pass; maps fused by ``fuse``).
    ``task`` is "auto" (detected from the output) or a name in :data:`onnxcam.targets.TASKS`;
    ``threshold`` (dense), ``blank`` (sequence) and ``background`` (segmentation) set the
    default targets. ``target_inputs="required"`` makes ``target`` and ``target_weights`` plain
    required inputs (for runtimes that treat inputs with a default as constants, e.g. OpenVINO).
    """
    started = time.perf_counter()
    if method != AUTO:
        _check_method(get_method(method), for_runtime)  # an unknown or unexportable method fails before any work
    _check_options(expose, fuse, target_inputs)
    request = _Request(layer_specs(layer), method, tuple(expose), layout, score, output, task, fuse, target_inputs,
                       TaskOptions(threshold=float(threshold), blank=int(blank), background=int(background)),
                       for_runtime, runtime_fallback)
    loaded = load_explainable(source, input_shape, layout)
    model, twin = loaded.model, loaded.twin
    half = precision.half_precision(model)
    try:
        explain, added = _build(load_model(model) if half else model, request, twin, precision.describe(model, None),
                                loaded.resized)
        reason = precision.runs_on_cpu(explain.model) if half else ""
    except ModelError as exc:  # the checker or ONNX Runtime on ops without half-precision kernels
        if half is None:
            raise
        reason = str(exc)
    if reason:
        log.warning("the explain model cannot compute in %s (%s); upcasting the model to float32 (inputs and outputs "
                    "included)", precision.HALF_TYPES[half], reason)
        explain, added = _build(precision.upcast(model), request, twin, precision.describe(model, half), loaded.resized)
    explain.seconds, explain.external_data = time.perf_counter() - started, loaded.external_data
    explain.quantized = loaded.quantized
    log.info("explain model built in %.2f s (%d nodes added)", explain.seconds, added)
    return explain


@dataclass(frozen=True)
class _Request:
    """What to explain and how: :func:`export`'s options, checked."""

    layers: list[str]
    method: str  # a method's name, or "auto" (resolved once the task is known)
    expose: tuple[str, ...]
    layout: str
    score: str
    output: str | None
    task: str
    fuse: str
    target_inputs: str
    options: TaskOptions
    for_runtime: bool
    runtime_fallback: bool = False  # "auto" without gradients may become a runtime method (the caller runs it)


def _build(model: onnx.ModelProto, request: _Request, twin: Twin, computes_in: str,
           resized: tuple | None = None) -> tuple[ExplainModel, int]:
    """Stages 2-8 on the loaded model (changed in place); returns the explain model and the nodes added.
    ``resized``: the input's declared and fixed shapes, when the size was fixed (it is checked)."""
    view = plan_view(model)
    if resized:
        check_input_size(view, *resized)
    _declare_computed_output_shapes(model, view)
    plans = make_plans(view, request.layers, score=request.score, layout=request.layout, output=request.output,
                       task=request.task)
    plan = plans[0]
    if resized:
        check_rows_per_image(model, plan, *resized)
    chosen, request, method_reason = _resolved_method(request, plans)
    expose = request.expose
    _check_method(chosen, request.for_runtime)
    tensors = [p.layer.tensor for p in plans]
    _check_task(chosen, plan)  # first: a detector's automatic layers are several, but no layer fixes its task
    _check_layers(tensors, chosen, expose)
    _check_names_free(view)
    log.info("task %s (%s): explaining %s with %s at layer %s", plan.task.name, plan.target.reason,
             plan.score_description, chosen.title, "; ".join(p.layer.describe() for p in plans))

    emit = Emitter(view, prefix="onnxcam")
    target = emit_target(emit, plan.target, request.options)
    needs_backward = chosen.needs_gradients or contract.GRADIENTS in expose
    # a detector's levels: each layer's gradient through its own head (holding the other levels fixed)
    per_level = plan.task.name == "detection" and len(tensors) > 1
    gradients = emit_backward(emit, target.seeds, tensors, stop_at_wrt=per_level,
                              unsupported_hint=_unsupported_hint(plans)) if needs_backward else {}
    outputs, layer_maps = _method_outputs(emit, chosen, plans, target, tensors, gradients, request.fuse)
    outputs.update({contract.CAM_TARGET: target.index, contract.CAM_SCORE: target.score})
    if request.for_runtime:
        outputs[contract.CAM_WEIGHTS] = target.weights
    exposed = {contract.ACTIVATIONS: tensors[0], contract.GRADIENTS: gradients.get(tensors[0])}
    outputs.update({name: exposed[name] for name in expose})

    _assemble(model, emit, plan, outputs, request.target_inputs)
    _contract(plans, request, chosen, method_reason, twin, computes_in, view, gradients, layer_maps).write(model)
    removed = prune_dead_nodes(model)
    _check(model)
    return ExplainModel(model, plan, chosen.name, 0.0, plans), len(emit.nodes) - removed


# --- stage 1: load ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Loaded:
    """The model to explain, and what loading it found."""

    model: onnx.ModelProto
    twin: Twin  # ``twin.modified`` is false for a float or QDQ model
    external_data: bool  # the file kept its weights in external data files
    resized: tuple | None = None  # the image input's declared and fixed shapes, when input_shape fixed it
    quantized: onnx.ModelProto | None = None  # the integer-op model ``model`` is the float twin of


def load_explainable(source, input_shape=None, layout: str = "auto") -> Loaded:
    """The model to explain: read, its dynamic dims fixed, and integer ops replaced by their float
    twin (:mod:`onnxcam.quantized`). ``layout`` says where an ``input_shape``'s channels are."""
    model, external = load_model_and_origin(source)
    if sort_topologically(model.graph):
        log.info("the model's nodes were not in topological order; sorted them")
    check_attributes(model)
    if contract.is_explain_model(model):
        raise ModelError("this model is already an explain model (it has onnxcam metadata); export the original model")
    resized = None
    if input_shape:
        dims = parse_input_shape(input_shape) if isinstance(input_shape, str) else list(input_shape)
        declared = _declared_dims(model)
        model = fix_input_shape(model, dims, layout)
        resized = (declared, tuple(dims))
    twin = checked_float_twin(model)
    return Loaded(twin.model, twin, external, resized, model if twin.modified else None)


def _declared_dims(model: onnx.ModelProto) -> tuple | None:
    """The image input's dims as the model declares them (``None`` for dynamic ones); ``None`` without
    a 4-D input (which fix_input_shape refuses)."""
    return next((dims for _, dims in fed_inputs(model) if len(dims) == 4), None)


def _declare_computed_output_shapes(model: onnx.ModelProto, view: GraphView) -> None:
    """Declare the computed shapes of outputs whose declarations the graph contradicts, so that the
    explain model does not repeat the mistake (ONNX Runtime warns about it on every run), and the
    types of outputs declared without one (ONNX Runtime runs them; the ONNX checker refuses them)."""
    for output in model.graph.output:
        untyped = not output.type.tensor_type.elem_type and view.elem_type(output.name)
        if output.name in view.misdeclared_outputs or untyped:
            shape = view.symbolic_shape(output.name)
            dims = None if shape is None else [d if d is not None else f"{output.name}_dim{i}"
                                               for i, d in enumerate(shape)]
            output.CopyFrom(helper.make_tensor_value_info(output.name, view.elem_type(output.name), dims))


def _check_options(expose, fuse: str, target_inputs: str) -> None:
    unknown = [name for name in expose if name not in contract.EXPOSABLE]
    if unknown:
        raise OnnxCamError(f"cannot expose {', '.join(unknown)}; choose from: {', '.join(contract.EXPOSABLE)}")
    check_fuse(fuse)
    if target_inputs not in contract.TARGET_INPUT_MODES:
        raise OnnxCamError(f"unknown target_inputs '{target_inputs}'; choose one of: "
                           f"{', '.join(contract.TARGET_INPUT_MODES)}")


def _check_method(method: Method, for_runtime: bool) -> None:
    if method.kind == "runtime" and not for_runtime:
        raise OnnxCamError(f"method '{method.name}' runs several passes; use onnxcam run or the Python API "
                           "(onnxcam.Explainer), which run them")


# --- stage 2: plan ------------------------------------------------------------------------------
def _resolved_method(request: _Request, plans: Sequence[Plan]) -> tuple[Method, _Request, str]:
    """The method, the request as it needs it, and why "auto" chose a gradient-free one ("" otherwise).
    Ablation-CAM, a runtime method, needs the layer's activations exported for the caller's passes."""
    plan = plans[0]
    blocked = _gradient_blocked_by(plans) if request.method == AUTO else ""
    in_graph_only = _why_in_graph_only(request, plans)
    chosen = get_method(resolve_method(request.method, plan.task.name, not blocked, not in_graph_only))
    if not blocked:
        return chosen, request, ""
    reason = f"gradients reach no target layer ({blocked} on the way has no gradient rule)"
    if chosen.kind == "runtime":
        log.warning("%s: method auto uses %s, which needs none and explains the target (%s per image); "
                    "--method names another", reason, chosen.name, chosen.passes)
        expose = tuple(dict.fromkeys((*request.expose, contract.ACTIVATIONS)))
        request = replace(request, for_runtime=True, expose=expose)
    else:
        log.warning("%s: method auto uses %s, which needs none but ignores the target (one map for every target); "
                    "ablationcam explains the target, but %s; --method names another", reason, chosen.name,
                    in_graph_only)
    return chosen, request, f"auto: {reason}"


def _why_in_graph_only(request: _Request, plans: Sequence[Plan]) -> str:
    """Why "auto" without gradients cannot be a runtime method here ("" where it can)."""
    if not request.runtime_fallback:
        return "an explain model on its own holds in-graph methods only (onnxcam run and onnxcam.Explainer run it)"
    if len(plans) > 1:
        return "it explains one layer at a time"
    if plans[0].task.name == "detection":
        return "per-box maps need an in-graph method"
    if plans[0].task.score is not None:
        return f"it needs a score linear in the outputs, and task {plans[0].task.name}'s is not"
    return ""


def _gradient_blocked_by(plans: Sequence[Plan]) -> str:
    """The op with no gradient rule between a target layer and the score ("Loop node 'x'"); "" if none."""
    blocked = {c.layer.tensor: c.gradient_blocked_by for c in plans[0].considered}
    return next((blocked[p.layer.tensor] for p in plans if blocked.get(p.layer.tensor)), "")


def _check_layers(tensors: list[str], method: Method, expose: Sequence[str]) -> None:
    if len(tensors) > 1 and method.kind == "runtime":
        raise OnnxCamError(f"method '{method.name}' explains one layer at a time; give a single layer")
    repeated = sorted({t for t in tensors if tensors.count(t) > 1})
    if repeated:
        raise OnnxCamError(f"layer '{repeated[0]}' is given more than once; give each target layer once")
    if len(tensors) > 1 and expose:
        raise OnnxCamError("activations and gradients can be exposed for one layer only, and "
                           f"{len(tensors)} layers were given; export one layer to expose its tensors")


def _check_task(method: Method, plan: Plan) -> None:
    if method.kind == "runtime" and plan.task.score is not None:
        raise OnnxCamError(f"method '{method.name}' needs a score linear in the outputs, and task {plan.task.name}'s "
                           "is not; use an in-graph method such as gradcam")


def _check_names_free(view: GraphView) -> None:
    taken = view.all_names() | {o.name for o in view.graph.output}
    clashes = [name for name in contract.RESERVED_NAMES if name in taken]
    if clashes:
        raise ModelError(
            f"the model already uses the name(s) {', '.join(clashes)}, which the explain model needs for its "
            "own inputs/outputs; rename them in the model (e.g. with onnx.compose.add_prefix) and export again"
        )


# --- stage 4: backward ----------------------------------------------------------------------------
def _unsupported_hint(plans: Sequence[Plan]) -> str:
    """What to do where the backward pass meets an op with no gradient rule: a later layer that
    gradients reach, where there is one, else a method that needs no gradient."""
    considered = [c for c in plans[0].considered if c.eligible]
    names = [c.layer.tensor for c in considered]
    first = min((names.index(p.layer.tensor) for p in plans if p.layer.tensor in names), default=-1)
    reached = [name for i, (name, c) in enumerate(zip(names, considered)) if i > first and not c.gradient_blocked_by]
    if reached:
        where = "a later layer" if first >= 0 else "a layer that gradients reach"
        return f"choose {where}, such as '{reached[-1]}', or open an issue asking for this op"
    which = "" if all(c.gradient_blocked_by for c in considered) else "later "
    free = ", ".join(m.name for m in METHODS.values() if not m.needs_gradients)
    return (f"gradients reach none of the {which}candidate layers (see onnxcam layers), so choose a method "
            f"that needs none ({free}), or open an issue asking for this op")


# --- stage 5: method ----------------------------------------------------------------------------
def _method_outputs(emit: Emitter, method: Method, plans, target: EmittedTarget, tensors, gradients,
                    fuse: str) -> tuple[dict[str, str], list[str]]:
    """The method's outputs, and each layer's finished map where the method makes one per layer."""
    if method.kind == "runtime":
        return {}, []
    a_nchw = [nchw_view(emit, t, p.layer) for t, p in zip(tensors, plans)]
    g_nchw = [nchw_view(emit, gradients[t], p.layer) for t, p in zip(tensors, plans)] if gradients else []
    if method.kind == "layer":
        maps = _layer_maps(emit, method, plans, target, a_nchw, g_nchw)
        return {contract.CAM: fuse_maps(emit, maps, fuse)}, maps
    built: list[str] = []

    def gradcam() -> str:
        if not built:
            built.append(fuse_maps(emit, _layer_maps(emit, get_method("gradcam"), plans, target, a_nchw, g_nchw), fuse))
        return built[0]

    context = GraphContext(plans[0], plans, target.seeds, a_nchw, g_nchw, gradcam, emit)
    return {contract.CAM: method.build(emit, context)}, []


def _layer_maps(emit: Emitter, method: Method, plans, target: EmittedTarget, activations, gradients) -> list[str]:
    """Each layer's finished (N, H, W) map: the method, then ReLU/normalise/resize."""
    plan = plans[0]
    return [finish_cam(emit, method.build(emit, a, g, LayerContext(p, target.weights)), plan.image, plan.layout,
                       p.layer.spatial) for a, g, p in zip(activations, gradients or [None] * len(plans), plans)]


# --- stage 6: assemble --------------------------------------------------------------------------
def _assemble(model: onnx.ModelProto, emit: Emitter, plan: Plan, outputs: dict[str, str], target_inputs: str) -> None:
    graph = model.graph
    emit.write_into(model)
    score = plan.score_tensor
    weights_type = emit.view.elem_type(score.tensor) or onnx.TensorProto.FLOAT
    graph.input.append(helper.make_tensor_value_info(contract.TARGET, onnx.TensorProto.INT64, ["target_batch"]))
    graph.input.append(helper.make_tensor_value_info(
        contract.TARGET_WEIGHTS, weights_type, [f"target_weights_{i}" for i in range(score.rank)]))
    if target_inputs == "optional":
        graph.initializer.append(onnx.numpy_helper.from_array(np.array([-1], dtype=np.int64), contract.TARGET))
        unfed = np.full([1] * score.rank, np.nan, dtype=helper.tensor_dtype_to_np_dtype(weights_type))
        graph.initializer.append(onnx.numpy_helper.from_array(unfed, contract.TARGET_WEIGHTS))
    batch = _batch_dim(emit.view, plan.image)
    for name, tensor in outputs.items():
        # a half-precision model's map and score are float32 outputs (the score is summed in float32)
        if name in (contract.CAM, contract.CAM_SCORE) and emit.dtype(tensor) != np.float32:
            graph.node.append(helper.make_node("Cast", [tensor], [name], name=f"onnxcam/output/{name}",
                                               to=onnx.TensorProto.FLOAT))
        else:
            graph.node.append(helper.make_node("Identity", [tensor], [name], name=f"onnxcam/output/{name}"))
        graph.output.append(_output_info(emit.view, name, batch, plan))


def _batch_dim(view: GraphView, image: str):
    dim = view.shape(image)[0]
    return dim if dim is not None else "batch"


def _output_info(view: GraphView, name: str, batch, plan: Plan):
    if name == contract.CAM:
        shape = view.shape(plan.image)
        spatial = shape[2:4] if plan.layout == "NCHW" else shape[1:3]
        dims = [batch, *[d if d is not None else label for d, label in zip(spatial, ("height", "width"))]]
        return helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, dims)
    if name == contract.CAM_TARGET:
        return helper.make_tensor_value_info(name, onnx.TensorProto.INT64, [batch])
    if name == contract.CAM_SCORE:
        return helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, [batch])
    like = plan.score if name == contract.CAM_WEIGHTS else plan.layer.tensor
    shape = plan.score_tensor.shape if name == contract.CAM_WEIGHTS else view.shape(like)
    dims = [batch, *[d if d is not None else f"{name}_{i}" for i, d in enumerate(shape[1:], 1)]]
    return helper.make_tensor_value_info(name, view.elem_type(like), dims)


def _contract(plans: Sequence[Plan], request: _Request, method: Method, method_reason: str, twin: Twin,
              computes_in: str, view: GraphView, gradients: dict[str, str], layer_maps: list[str]) -> Contract:
    plan, options, fuse = plans[0], request.options, request.fuse
    score = plan.score_tensor
    detection = plan.task.name == "detection"
    head = head_for(view, score).to_json() if detection else ""
    per_layer = detection and gradients and len(layer_maps) == len(plans)  # what per-box maps on crops read
    layer_gradients = ",".join(gradients[p.layer.tensor] for p in plans) if per_layer else ""
    return Contract(
        version=__version__, task=plan.task.name, method=method.name, method_reason=method_reason,
        layer=",".join(p.layer.tensor for p in plans), layer_layout=",".join(p.layer.layout_code for p in plans),
        input=plan.image, input_layout=plan.layout, output=plan.output, output_activation=score.activation,
        score=score.kind, score_tensor=score.tensor, score_shape=format_shape(score.shape),
        score_batch_axis=score.batch_axis, score_description=score.describe(), target_description=plan.task.default,
        target_inputs=request.target_inputs, threshold=options.threshold, blank=options.blank,
        background=options.background, fuse=fuse if len(plans) > 1 else "", passes=str(method.passes),
        exposed=",".join(request.expose), float_twin=twin.describe(), twin_top1=twin.top1,
        twin_max_difference=twin.agreement.max_difference if twin.agreement else 0.0,
        twin_relative_difference=twin.agreement.relative_difference if twin.agreement else 0.0, precision=computes_in,
        detection=head, layer_gradients=layer_gradients, layer_maps=",".join(layer_maps) if per_layer else "")


# --- stage 7: prune -----------------------------------------------------------------------------
def prune_dead_nodes(model: onnx.ModelProto) -> int:
    """Remove the nodes and initializers no graph output depends on (in place); returns the nodes removed."""
    graph = model.graph
    needed = {o.name for o in graph.output}
    kept = []
    for node in reversed(graph.node):
        if any(o in needed for o in node.output):
            kept.append(node)
            needed.update(i for i in node.input if i)
            needed.update(outer_names(node))
    removed = len(graph.node) - len(kept)
    if removed:
        kept.reverse()
        del graph.node[:]
        graph.node.extend(kept)
    inputs = {i.name for i in graph.input}
    initializers = [t for t in graph.initializer if t.name in needed or t.name in inputs]
    if len(initializers) != len(graph.initializer):
        del graph.initializer[:]
        graph.initializer.extend(initializers)
    return removed


# --- stage 8: check -----------------------------------------------------------------------------
def _check(model: onnx.ModelProto) -> None:
    # The checker serializes what it checks; the weights (their shapes kept, as inputs) would make
    # that most of the export's time and memory, and models over 2 GB uncheckable.
    light = without_weights(model)
    light.metadata_props.extend(model.metadata_props)
    try:
        onnx.checker.check_model(light, full_check=True)
    except Exception as exc:  # the checker raises several types
        raise ModelError(f"the explain model fails the ONNX checker ({exc}); please report this with the model") from None
