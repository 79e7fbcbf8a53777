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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from onnxcam import contract
from onnxcam.autodiff import emit_backward
from onnxcam.autodiff.emitter import Emitter
from onnxcam.contract import Contract, format_shape
from onnxcam.errors import ModelError, OnnxCamError
from onnxcam.graph import GraphView, check_attributes, load_model, outer_names, without_weights
from onnxcam.io.files import write_atomically
from onnxcam.layers import nchw_view
from onnxcam.methods import Method, get_method
from onnxcam.methods.context import GraphContext, LayerContext
from onnxcam.methods.fusion import check_fuse, fuse_maps
from onnxcam.methods.head import finish_cam
from onnxcam.plan import Plan, fix_input_shape, make_plan, parse_input_shape
from onnxcam.targets import EmittedTarget, TaskOptions, emit_target
from onnxcam.version import __version__

__all__ = ["export", "ExplainModel", "prune_dead_nodes"]

log = logging.getLogger(__name__)


@dataclass
class ExplainModel:
    """An exported explain model and what it explains."""

    model: onnx.ModelProto
    plan: Plan
    method: str
    seconds: float
    plans: tuple[Plan, ...] = field(default=())  # one per target layer (``plan`` is the first)

    @property
    def contract(self) -> Contract:
        return Contract.read(self.model)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        write_atomically(path, self.model.SerializeToString())
        return path


def export(
    source,
    *,
    layer: str | Sequence[str] = "auto",
    method: str = "gradcam",
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
) -> ExplainModel:
    """Rewrite ``source`` (path, bytes or ModelProto; never modified) into an explain model.

    ``layer`` is one layer spec or a list of them (one backward pass; maps fused by ``fuse``).
    ``task`` is "auto" (detected from the output) or a name in :data:`onnxcam.targets.TASKS`;
    ``threshold`` (dense), ``blank`` (sequence) and ``background`` (segmentation) set the
    default targets. ``target_inputs="required"`` makes ``target`` and ``target_weights`` plain
    required inputs (for runtimes that treat inputs with a default as constants, e.g. OpenVINO).
    """
    started = time.perf_counter()
    chosen = get_method(method)
    _check_options(chosen, expose, fuse, target_inputs, for_runtime)
    options = TaskOptions(threshold=float(threshold), blank=int(blank), background=int(background))
    model = _load(source, input_shape)
    view = GraphView(model)
    plans = tuple(make_plan(view, layer=spec, score=score, layout=layout, output=output, task=task)
                  for spec in _layer_specs(layer))
    plan = plans[0]
    tensors = [p.layer.tensor for p in plans]
    _check_layers(tensors, chosen, expose)
    _check_names_free(view)
    _check_task(chosen, plan)
    log.info("task %s (%s): explaining %s with %s at layer %s", plan.task.name, plan.target.reason,
             plan.score_description, chosen.title, "; ".join(p.layer.describe() for p in plans))

    emit = Emitter(view, prefix="onnxcam")
    target = emit_target(emit, plan.target, options)
    needs_backward = chosen.kind != "runtime" or chosen.needs_gradients or contract.GRADIENTS in expose
    gradients = emit_backward(emit, target.seeds, tensors) if needs_backward else {}
    outputs = _method_outputs(emit, chosen, plans, target, tensors, gradients, fuse)
    outputs.update({contract.CAM_TARGET: target.index, contract.CAM_SCORE: target.score})
    if for_runtime:
        outputs[contract.CAM_WEIGHTS] = target.weights
    exposed = {contract.ACTIVATIONS: tensors[0], contract.GRADIENTS: gradients.get(tensors[0])}
    outputs.update({name: exposed[name] for name in expose})

    _assemble(model, emit, plan, outputs, target_inputs)
    _contract(plans, chosen, expose, fuse, target_inputs, options).write(model)
    removed = prune_dead_nodes(model)
    _check(model)
    seconds = time.perf_counter() - started
    log.info("explain model built in %.2f s (%d nodes added, %d unused removed)", seconds,
             len(emit.nodes) - removed, removed)
    return ExplainModel(model, plan, chosen.name, seconds, plans)


# --- stage 1: load ------------------------------------------------------------------------------
def _load(source, input_shape) -> onnx.ModelProto:
    model = load_model(source)
    check_attributes(model)
    if contract.is_explain_model(model):
        raise ModelError("this model is already an explain model (it has onnxcam metadata); export the original model")
    if input_shape:
        dims = parse_input_shape(input_shape) if isinstance(input_shape, str) else list(input_shape)
        model = fix_input_shape(model, dims)
    return model


def _check_options(method: Method, expose, fuse: str, target_inputs: str, for_runtime: bool) -> None:
    unknown = [name for name in expose if name not in contract.EXPOSABLE]
    if unknown:
        raise OnnxCamError(f"cannot expose {', '.join(unknown)}; choose from: {', '.join(contract.EXPOSABLE)}")
    check_fuse(fuse)
    if target_inputs not in contract.TARGET_INPUT_MODES:
        raise OnnxCamError(f"unknown target_inputs '{target_inputs}'; choose one of: "
                           f"{', '.join(contract.TARGET_INPUT_MODES)}")
    if method.kind == "runtime" and not for_runtime:
        raise OnnxCamError(f"method '{method.name}' runs several passes; use onnxcam run or the Python API "
                           "(onnxcam.Explainer), which run them")


# --- stage 2: plan ------------------------------------------------------------------------------
def _layer_specs(layer) -> list[str]:
    specs = [layer] if layer is None or isinstance(layer, str) else list(layer)
    specs = ["auto" if spec in (None, "") else spec for spec in specs]
    if not specs:
        raise OnnxCamError("no layer given; pass 'auto', a layer name, or a list of layer names")
    return specs


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


# --- stage 5: method ----------------------------------------------------------------------------
def _method_outputs(emit: Emitter, method: Method, plans, target: EmittedTarget, tensors, gradients,
                    fuse: str) -> dict[str, str]:
    if method.kind == "runtime":
        return {}
    a_nchw = [nchw_view(emit, t, p.layer) for t, p in zip(tensors, plans)]
    g_nchw = [nchw_view(emit, gradients[t], p.layer) for t, p in zip(tensors, plans)] if gradients else []
    if method.kind == "layer":
        return {contract.CAM: _layer_maps(emit, method, plans, target, a_nchw, g_nchw, fuse)}
    built: list[str] = []

    def gradcam() -> str:
        if not built:
            built.append(_layer_maps(emit, get_method("gradcam"), plans, target, a_nchw, g_nchw, fuse))
        return built[0]

    context = GraphContext(plans[0], plans, target.seeds, a_nchw, g_nchw, gradcam, emit)
    return {contract.CAM: method.build(emit, context)}


def _layer_maps(emit: Emitter, method: Method, plans, target: EmittedTarget, activations, gradients,
                fuse: str) -> str:
    """Each layer's finished map (method, then ReLU/normalise/resize), fused into one (N, H, W) map."""
    plan = plans[0]
    maps = [finish_cam(emit, method.build(emit, a, g, LayerContext(p, target.weights)), plan.image, plan.layout,
                       p.layer.spatial) for a, g, p in zip(activations, gradients or [None] * len(plans), plans)]
    return fuse_maps(emit, maps, fuse)


# --- stage 6: assemble --------------------------------------------------------------------------
def _assemble(model: onnx.ModelProto, emit: Emitter, plan: Plan, outputs: dict[str, str], target_inputs: str) -> None:
    graph = model.graph
    graph.node.extend(emit.nodes)
    graph.initializer.extend(emit.initializers)
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
        return helper.make_tensor_value_info(name, view.elem_type(plan.score), [batch])
    like = plan.score if name == contract.CAM_WEIGHTS else plan.layer.tensor
    shape = plan.score_tensor.shape if name == contract.CAM_WEIGHTS else view.shape(like)
    dims = [batch, *[d if d is not None else f"{name}_{i}" for i, d in enumerate(shape[1:], 1)]]
    return helper.make_tensor_value_info(name, view.elem_type(like), dims)


def _contract(plans: Sequence[Plan], method: Method, expose: Sequence[str], fuse: str, target_inputs: str,
              options: TaskOptions) -> Contract:
    plan = plans[0]
    score = plan.score_tensor
    return Contract(
        version=__version__, task=plan.task.name, method=method.name,
        layer=",".join(p.layer.tensor for p in plans), layer_layout=",".join(p.layer.layout_code for p in plans),
        input=plan.image, input_layout=plan.layout, output=plan.output, output_activation=score.activation,
        score=score.kind, score_tensor=score.tensor, score_shape=format_shape(score.shape),
        score_batch_axis=score.batch_axis, score_description=score.describe(), target_description=plan.task.default,
        target_inputs=target_inputs, threshold=options.threshold, blank=options.blank,
        background=options.background, fuse=fuse if len(plans) > 1 else "", passes=str(method.passes),
        exposed=",".join(expose))


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
