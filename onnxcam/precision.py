"""Half-precision models (float16, bfloat16): the precision the explain model computes in.

The explain model computes in the model's own precision — forward and backward — when ONNX
Runtime's CPU build has kernels for every op of it in that precision (float16: the ops onnxcam
emits all have them in ONNX Runtime 1.31); otherwise (bfloat16: ONNX Runtime's CPU build has
almost no bfloat16 kernels, and its Python API cannot feed bfloat16 arrays) the model is *upcast*:
:func:`upcast` rewrites it to compute in float32, its inputs and outputs included, so that the
explain model runs anywhere. The contract's ``precision`` says which happened.

Pass: ``upcast(model) -> ModelProto``. Requires a loaded model (not modified). Ensures: no
initializer, ``Constant``/``ConstantOfShape`` value, ``Cast`` target or declared type (inputs,
outputs, intermediate ones; subgraphs included) is float16 or bfloat16; every tensor keeps its name.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from onnxcam.errors import ModelError
from onnxcam.runtime import model_session

__all__ = ["HALF_TYPES", "half_precision", "upcast", "runs_on_cpu", "describe"]

log = logging.getLogger(__name__)

HALF_TYPES = {TensorProto.FLOAT16: "float16", TensorProto.BFLOAT16: "bfloat16"}
_TYPE_ATTRIBUTES = ("to", "dtype", "output_dtype")  # Cast, Random*/EyeLike, QuantizeLinear-21


def half_precision(model: onnx.ModelProto) -> int | None:
    """The half type (TensorProto enum) a model computes in, judged from its float inputs and
    initializers, or None for a float32/float64 model."""
    types = [i.type.tensor_type.elem_type for i in model.graph.input]
    types += [t.data_type for t in model.graph.initializer]
    halves = [t for t in types if t in HALF_TYPES]
    return max(set(halves), key=halves.count) if halves else None


def describe(model: onnx.ModelProto, upcast_from: int | None) -> str:
    """The contract's ``precision``: "" for float32 models, "float16", or "bfloat16 upcast to float32"."""
    if upcast_from is not None:
        return f"{HALF_TYPES[upcast_from]} upcast to float32"
    half = half_precision(model)
    return HALF_TYPES.get(half, "") if half is not None else ""


def runs_on_cpu(model: onnx.ModelProto) -> str:
    """"" when ONNX Runtime's CPU build loads ``model``, else its reason (a missing kernel, typically)."""
    try:
        model_session(model, "cpu")
    except ModelError as exc:
        return str(exc)
    return ""


def upcast(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` computing in float32, with float32 inputs and outputs."""
    result = onnx.ModelProto()
    result.CopyFrom(model)
    _upcast_graph(result.graph)
    return result


def _upcast_graph(graph: onnx.GraphProto) -> None:
    for index, tensor in enumerate(graph.initializer):
        if tensor.data_type in HALF_TYPES:
            graph.initializer[index].CopyFrom(_float32(tensor))
    kept = [info for info in graph.value_info if info.type.tensor_type.elem_type not in HALF_TYPES]
    del graph.value_info[:]
    graph.value_info.extend(kept)
    for info in (*graph.input, *graph.output):
        if info.type.tensor_type.elem_type in HALF_TYPES:
            info.type.tensor_type.elem_type = TensorProto.FLOAT
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.name in _TYPE_ATTRIBUTES and attribute.type == onnx.AttributeProto.INT \
                    and attribute.i in HALF_TYPES:
                attribute.i = TensorProto.FLOAT
            if attribute.type == onnx.AttributeProto.TENSOR and attribute.t.data_type in HALF_TYPES:
                attribute.t.CopyFrom(_float32(attribute.t))
            for sub in ([attribute.g] if attribute.type == onnx.AttributeProto.GRAPH else list(attribute.graphs)):
                _upcast_graph(sub)


def _float32(tensor: onnx.TensorProto) -> onnx.TensorProto:
    return numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float32), tensor.name)
