"""CAM (Zhou et al., 2016): the feature maps weighted by the classifier's weights for the class.

CAM applies to a head that is global average pooling followed by one linear layer: score_c =
Σ_k W[c, k]·mean_ij A_k,ij + b_c, so Σ_k W[c, k]·A_k is where the score comes from. The weights are
read from the model — the linear layer's weight tensor, used by name in the graph — and the row of
the explained class is selected with the target's weighting of the scores (a one-hot row per sample).

The head must follow the target layer directly: optional Identity/Dropout, then
GlobalAveragePool or a ReduceMean over the spatial axes, optional Flatten/Reshape/Squeeze, then
Gemm, or MatMul with an optional constant bias Add, producing the score. On such a head Grad-CAM's
weights are W[c, k]/(h·w), so the two maps agree after normalisation; any other head stops the
export with an error that says what was found.
"""

from __future__ import annotations

import numpy as np
import onnx

from onnxcam.autodiff.emitter import Emitter
from onnxcam.errors import ModelError
from onnxcam.graph import GraphView
from onnxcam.methods.context import LayerContext
from onnxcam.plan import Plan

_PASS_THROUGH = {"Identity", "Dropout"}
_TO_VECTOR = _PASS_THROUGH | {"Flatten", "Reshape", "Squeeze"}


def build(e: Emitter, activations: str, gradients: str | None, ctx: LayerContext) -> str:
    """L = Σ_k W[c, k]·A_k, W the weights of the linear layer after global average pooling, c the class"""
    weight, transposed, alpha = linear_head(e.view, ctx.plan)
    rows = weight if transposed else e.transpose(weight, [1, 0])  # (classes, C)
    class_weights = e.op("MatMul", ctx.weights, rows)  # (N, C)
    if alpha != 1.0:
        class_weights = e.mul_scalar(class_weights, alpha)
    class_weights = e.unsqueeze(class_weights, [2, 3])
    if e.dtype(class_weights) != e.dtype(activations):
        class_weights = e.cast_like(class_weights, activations)
    return e.reduce_sum(e.mul(class_weights, activations), [1], keepdims=True)


def linear_head(view: GraphView, plan: Plan) -> tuple[str, bool, float]:
    """The head's weight tensor, whether it is stored (classes, C), and Gemm's alpha; else an error."""
    needed = view.ancestors([plan.score])
    layer = plan.layer

    def refuse(reason: str) -> ModelError:
        path = _describe_path(view, layer.tensor, needed)
        return ModelError(
            f"method 'cam' needs a global-average-pool → linear head right after layer '{layer.tensor}'; "
            f"this model has {path} there ({reason}); use gradcam, which needs no particular head"
        )

    def step(tensor: str) -> onnx.NodeProto | None:
        users = _users(view, tensor, needed)
        if len(users) > 1:
            raise refuse(f"'{tensor}' reaches the score through {len(users)} nodes")
        return users[0] if users else None

    tensor = layer.tensor
    node = step(tensor)
    while node is not None and node.op_type in _PASS_THROUGH:
        tensor, node = node.output[0], step(node.output[0])
    if node is None or not _is_global_average(view, node, layer.layout):
        raise refuse("no global average pooling over the spatial axes")
    tensor, node = node.output[0], step(node.output[0])
    while node is not None and node.op_type in _TO_VECTOR:
        tensor, node = node.output[0], step(node.output[0])
    if view.rank(tensor) != 2:
        raise refuse(f"the pooled features '{tensor}' are not (batch, channels)")
    if node is None or node.input[0] != tensor or node.op_type not in ("Gemm", "MatMul"):
        raise refuse("no Gemm or MatMul on the pooled features")
    weight = node.input[1]
    if plan.image in view.ancestors([weight]) or view.rank(weight) != 2:
        raise refuse(f"the linear layer's weights '{weight}' are not a fixed matrix")
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    if attrs.get("transA", 0):
        raise refuse("the Gemm transposes the pooled features")
    transposed, alpha = bool(attrs.get("transB", 0)), float(attrs.get("alpha", 1.0))
    out = node.output[0]
    if node.op_type == "MatMul":
        after = step(out)
        if after is not None and after.op_type == "Add":
            bias = next(i for i in after.input if i != out)
            if not view.is_const(bias):
                raise refuse(f"the Add after the MatMul adds '{bias}', which is not a constant bias")
            out = after.output[0]
    while out != plan.score:
        after = step(out)
        if after is None or after.op_type not in _TO_VECTOR or view.rank(after.output[0]) != 2:
            raise refuse(f"the linear layer's output '{out}' is not the score '{plan.score}'")
        out = after.output[0]
    return weight, transposed, alpha


def _users(view: GraphView, tensor: str, needed: set[str]) -> list[onnx.NodeProto]:
    """The consumers of ``tensor`` on a path to the score."""
    return [n for n in view.consumers.get(tensor, []) if any(o in needed for o in n.output)]


def _describe_path(view: GraphView, tensor: str, needed: set[str], limit: int = 5) -> str:
    """'Flatten → Gemm → Relu → Gemm': the ops from ``tensor`` towards the score, for messages."""
    ops: list[str] = []
    while len(ops) < limit:
        users = _users(view, tensor, needed)
        if not users:
            break
        if len(users) > 1:
            ops.append(" + ".join(n.op_type for n in users) + " (branches)")
            break
        ops.append(users[0].op_type)
        tensor = users[0].output[0]
    else:
        ops.append("…")
    return " → ".join(ops) if ops else "no op"


def _is_global_average(view: GraphView, node: onnx.NodeProto, layout: str) -> bool:
    if node.op_type == "GlobalAveragePool":
        return layout == "NCHW"
    if node.op_type != "ReduceMean":
        return False
    axes = next((list(a.ints) for a in node.attribute if a.name == "axes"), None)
    if axes is None and len(node.input) > 1 and node.input[1]:
        value = view.const_value(node.input[1])
        axes = None if value is None else [int(a) for a in np.ravel(value)]
    if not axes:
        return False
    spatial = {2, 3} if layout == "NCHW" else {1, 2}
    return {a % 4 for a in axes} == spatial
