"""Model → explain model: target selection, score, in-graph backward pass, CAM head, metadata.

The explain model's interface (stable; documented in the README):

* inputs: the original inputs, plus ``target`` (int64, shape (N) or (1)), optional: it defaults
  to [-1]; a negative entry means "the top-1 class of that sample";
* outputs: the original outputs, plus ``cam`` (float32 (N, H_in, W_in) in [0, 1]),
  ``cam_target`` (int64 (N): the class explained) and ``cam_score`` (float32 (N): its score),
  and with ``expose`` also ``activations`` and ``gradients`` (the layer's tensor and ∂score/∂it).

Several layers (``layer=[...]``) share one backward pass; each layer's map is finished on its
own and the maps are fused (``fuse``: "mean" or "max", see :mod:`onnxcam.methods.fusion`).
Multi-pass methods (``Method.kind == "runtime"``) are not exported on their own: the
:class:`onnxcam.Explainer` exports a model giving the target, score and the tensors the method
needs (``for_runtime=True``; no ``cam`` output) and runs the passes itself.
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

from onnxcam import __version__
from onnxcam.autodiff import emit_backward
from onnxcam.autodiff.emitter import Emitter
from onnxcam.errors import ModelError, OnnxCamError
from onnxcam.graph import GraphView, load_model
from onnxcam.methods import Method, get_method
from onnxcam.methods.fusion import check_fuse, fuse_maps
from onnxcam.methods.head import finish_cam
from onnxcam.plan import Plan, fix_input_shape, make_plan, parse_input_shape

__all__ = ["export", "ExplainModel", "GraphContext", "is_explain_model", "read_metadata", "EXPOSABLE", "TARGET_INPUT",
           "CAM_OUTPUTS", "METADATA_PREFIX"]

log = logging.getLogger(__name__)

TARGET_INPUT = "target"
CAM_OUTPUTS = ("cam", "cam_target", "cam_score")
EXPOSABLE = ("activations", "gradients")
METADATA_PREFIX = "onnxcam."


@dataclass
class ExplainModel:
    """An exported explain model and what it explains."""

    model: onnx.ModelProto
    plan: Plan
    method: str
    seconds: float
    plans: tuple[Plan, ...] = field(default=())  # one per target layer (``plan`` is the first)

    def save(self, path: str | Path) -> Path:
        from onnxcam.render import write_atomically

        path = Path(path)
        write_atomically(path, self.model.SerializeToString())
        return path


@dataclass
class GraphContext:
    """What a ``kind="graph"`` method sees: the emitter, the plans, the score's seed, A and G (NCHW)."""

    emit: Emitter
    plan: Plan
    plans: tuple[Plan, ...]
    seeds: dict[str, str]
    activations: list[str]
    gradients: list[str]
    fuse: str
    _gradcam: str | None = None

    def gradcam(self) -> str:
        """The finished (and fused, with several layers) Grad-CAM map (N, H, W), built once."""
        if self._gradcam is None:
            self._gradcam = _layer_maps(self.emit, get_method("gradcam"), self.plans, self.activations,
                                        self.gradients, self.fuse)
        return self._gradcam


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
    fuse: str = "mean",
    for_runtime: bool = False,
) -> ExplainModel:
    """Rewrite ``source`` (path, bytes or ModelProto; never modified) into an explain model.

    ``layer`` is one layer spec or a list of them (one backward pass; maps fused by ``fuse``).
    """
    started = time.perf_counter()
    model = load_model(source)
    if is_explain_model(model):
        raise ModelError("this model is already an explain model (it has onnxcam metadata); export the original model")
    _check_exposable(expose)
    check_fuse(fuse)
    chosen = get_method(method)
    if chosen.kind == "runtime" and not for_runtime:
        raise OnnxCamError(f"method '{chosen.name}' runs several passes; use onnxcam run or the Python API "
                           "(onnxcam.Explainer), which run them")
    specs = _layer_specs(layer)
    if input_shape:
        dims = parse_input_shape(input_shape) if isinstance(input_shape, str) else list(input_shape)
        model = fix_input_shape(model, dims)
    view = GraphView(model)
    plans = tuple(make_plan(view, layer=spec, score=score, layout=layout, output=output) for spec in specs)
    plan = plans[0]
    tensors = [p.layer.tensor for p in plans]
    _check_layers(tensors, chosen, expose)
    _check_names_free(view)
    log.info("explaining %s with %s at layer %s", plan.score_description, chosen.title,
             "; ".join(p.layer.describe() for p in plans))

    emit = Emitter(view, prefix="onnxcam")
    target, seed, cam_score = _target_and_seed(emit, plan.score)
    backward = chosen.kind != "runtime" or chosen.needs_gradients or "gradients" in expose
    gradients = emit_backward(emit, {plan.score: seed}, tensors) if backward else {}
    a_nchw = [_nchw(emit, t, p.layer.layout) for t, p in zip(tensors, plans)]
    g_nchw = [_nchw(emit, gradients[t], p.layer.layout) for t, p in zip(tensors, plans)] if backward else []

    outputs = {}
    if chosen.kind == "layer":
        outputs["cam"] = _layer_maps(emit, chosen, plans, a_nchw, g_nchw, fuse)
    elif chosen.kind == "graph":
        outputs["cam"] = chosen.build(emit, GraphContext(emit, plan, plans, {plan.score: seed}, a_nchw, g_nchw, fuse))
    outputs.update({"cam_target": target, "cam_score": cam_score})
    exposed = {"activations": tensors[0], "gradients": gradients.get(tensors[0])}
    outputs.update({name: exposed[name] for name in expose})
    _assemble(model, emit, plan, outputs)
    _write_metadata(model, plans, chosen, expose, fuse)
    _check(model)
    seconds = time.perf_counter() - started
    log.info("explain model built in %.2f s (%d nodes added)", seconds, len(emit.nodes))
    return ExplainModel(model, plan, chosen.name, seconds, plans)


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


def _nchw(emit: Emitter, tensor: str, layout: str) -> str:
    return tensor if layout == "NCHW" else emit.transpose(tensor, [0, 3, 1, 2])


def _layer_maps(emit: Emitter, method: Method, plans, activations, gradients, fuse: str) -> str:
    """Each layer's finished map (method, then ReLU/normalise/resize), fused into one (N, H, W) map."""
    plan = plans[0]
    maps = [finish_cam(emit, method.build(emit, a, g, p), plan.image, plan.layout)
            for a, g, p in zip(activations, gradients or [None] * len(plans), plans)]
    return fuse_maps(emit, maps, fuse)


def _check_exposable(expose: Sequence[str]) -> None:
    unknown = [name for name in expose if name not in EXPOSABLE]
    if unknown:
        raise OnnxCamError(f"cannot expose {', '.join(unknown)}; choose from: {', '.join(EXPOSABLE)}")


def _check_names_free(view: GraphView) -> None:
    taken = view.all_names() | {o.name for o in view.graph.output}
    clashes = [name for name in (TARGET_INPUT, *CAM_OUTPUTS, *EXPOSABLE) if name in taken]
    if clashes:
        raise ModelError(
            f"the model already uses the name(s) {', '.join(clashes)}, which the explain model needs for its "
            "own inputs/outputs; rename them in the model (e.g. with onnx.compose.add_prefix) and export again"
        )


def _target_and_seed(e: Emitter, score: str) -> tuple[str, str, str]:
    """Nodes for the effective target (input ``target``, negative → top-1), its one-hot seed, its score."""
    top1 = e.op("ArgMax", score, axis=1, keepdims=0)
    requested = TARGET_INPUT
    target = e.op("Where", e.op("Less", requested, e.const(np.int64(0))), top1, requested, dtype_of=top1)
    depth = e.slice(e.shape(score), [1], [2], [0])
    on_off = e.const(np.array([0, 1], dtype=e.dtype(score)), hint="on_off")
    seed = e.op("OneHot", target, depth, on_off, axis=-1, dtype_of=score)
    cam_score = e.reduce_sum(e.mul(score, seed), [1], keepdims=False)
    return target, seed, cam_score


def _assemble(model: onnx.ModelProto, emit: Emitter, plan: Plan, outputs: dict[str, str]) -> None:
    graph = model.graph
    graph.node.extend(emit.nodes)
    graph.initializer.extend(emit.initializers)
    graph.initializer.append(onnx.numpy_helper.from_array(np.array([-1], dtype=np.int64), TARGET_INPUT))
    graph.input.append(helper.make_tensor_value_info(TARGET_INPUT, onnx.TensorProto.INT64, ["target_batch"]))
    batch = _batch_dim(emit.view, plan.image)
    for name, tensor in outputs.items():
        graph.node.append(helper.make_node("Identity", [tensor], [name], name=f"onnxcam/output/{name}"))
        graph.output.append(_output_info(emit.view, name, batch, plan))


def _batch_dim(view: GraphView, image: str):
    dim = view.shape(image)[0]
    return dim if dim is not None else "batch"


def _output_info(view: GraphView, name: str, batch, plan: Plan):
    if name == "cam":
        shape = view.shape(plan.image)
        spatial = shape[2:4] if plan.layout == "NCHW" else shape[1:3]
        dims = [batch, *[d if d is not None else label for d, label in zip(spatial, ("height", "width"))]]
        return helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, dims)
    if name == "cam_target":
        return helper.make_tensor_value_info(name, onnx.TensorProto.INT64, [batch])
    if name == "cam_score":
        return helper.make_tensor_value_info(name, view.elem_type(plan.score), [batch])
    shape = view.shape(plan.layer.tensor)
    dims = [batch, *[d if d is not None else f"{name}_{i}" for i, d in enumerate(shape[1:], 1)]]
    return helper.make_tensor_value_info(name, view.elem_type(plan.layer.tensor), dims)


def _write_metadata(model: onnx.ModelProto, plans: Sequence[Plan], method: Method, expose: Sequence[str],
                    fuse: str) -> None:
    plan = plans[0]
    entries = {
        "version": __version__,
        "method": method.name,
        "layer": ",".join(p.layer.tensor for p in plans),
        "layer_layout": ",".join(p.layer.layout for p in plans),
        "fuse": fuse if len(plans) > 1 else "",
        "passes": str(method.passes),
        "score": plan.score_kind,
        "score_tensor": plan.score,
        "score_description": plan.score_description,
        "output": plan.output,
        "output_activation": plan.output_activation,
        "input": plan.image,
        "input_layout": plan.layout,
        "exposed": ",".join(expose),
    }
    props = read_metadata(model, raw=True)
    props.update({f"{METADATA_PREFIX}{key}": str(value) for key, value in entries.items()})
    helper.set_model_props(model, props)


def read_metadata(model: onnx.ModelProto, raw: bool = False) -> dict[str, str]:
    """The model's metadata_props; only onnxcam's entries, without the prefix, unless ``raw``."""
    props = {p.key: p.value for p in model.metadata_props}
    if raw:
        return props
    return {k[len(METADATA_PREFIX):]: v for k, v in props.items() if k.startswith(METADATA_PREFIX)}


def is_explain_model(model: onnx.ModelProto) -> bool:
    return "version" in read_metadata(model)


def _check(model: onnx.ModelProto) -> None:
    if model.ByteSize() > 2**31 - 1024:
        log.warning("model over 2 GB: skipping onnx.checker (it needs the model as one protobuf)")
        return
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:  # the checker raises several types
        raise ModelError(f"the explain model fails the ONNX checker ({exc}); please report this with the model") from None
