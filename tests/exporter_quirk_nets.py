"""Small graphs written the way paddle2onnx and tf2onnx write them, with onnx.helper:

* ``computed_reshape_recogniser``: a CTC-style recogniser whose Reshape target is computed
  (Shape → Slice → Concat), which ONNX's shape inference leaves unknown (PP-OCR's SVTR heads);
* ``keras_flatten_dense``: NHWC input, Conv between Transposes, Keras ``Flatten`` as a Reshape to
  Concat(Shape[:1], [-1]), ``Dense`` as MatMul + Add, Softmax;
* ``paddle_classifier``: the batch dim written as ``dim_value: -1``, and ``Softmax → Identity``
  as the output;
* ``tf2onnx_pool_flatten``: a Keras VGG's end, whose ``Flatten`` reads the Shape of the pooled map
  *before* the Transpose to NHWC (the layer), as tf2onnx writes it;
* ``paddle_loop_classifier``: a ``Loop`` (no gradient rule; paddle2onnx writes them for while-loops,
  as in PP-Structure's SLANet) between the maps and the classifier, or between two conv stages.
* ``tf2onnx_loop_recogniser``: a CTC recogniser whose per-step classifier runs in a ``Loop`` body that
  reads the conv features' columns by outer-scope name, as tf2onnx writes Keras LSTMs (mk8dx-table-reader).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 13


def _model(nodes, inputs, outputs, initializers) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "quirks", inputs, outputs,
                              initializer=[numpy_helper.from_array(np.asarray(v), k) for k, v in initializers.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = helper.find_min_ir_version_for(list(model.opset_import))
    return model


def _weights(seed: int, **shapes) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: rng.uniform(-0.5, 0.5, shape).astype(np.float32) for name, shape in shapes.items()}


def _flatten_shape(x: str, keep: int, prefix: str) -> list[onnx.NodeProto]:
    """Nodes computing Concat(Shape(x)[:keep], [-1]) into ``{prefix}_shape``."""
    return [helper.make_node("Shape", [x], [f"{prefix}_dims"]),
            helper.make_node("Slice", [f"{prefix}_dims", "zero", f"keep{keep}", "zero"], [f"{prefix}_kept"]),
            helper.make_node("Concat", [f"{prefix}_kept", "minus_one"], [f"{prefix}_shape"], axis=0)]


_SHAPE_CONSTANTS = {"zero": np.array([0], np.int64), "minus_one": np.array([-1], np.int64),
                    "keep1": np.array([1], np.int64), "keep2": np.array([2], np.int64)}


def computed_reshape_recogniser(classes: int = 6) -> onnx.ModelProto:
    """image (N, 3, H, W), H and W dynamic → probs (N, H·W/4, classes), the sequence axis from a computed Reshape."""
    init = {**_SHAPE_CONSTANTS, **_weights(0, conv_w=(8, 3, 3, 3), conv_b=(8,), fc=(8, classes), fc_b=(classes,))}
    nodes = [
        helper.make_node("Conv", ["image", "conv_w", "conv_b"], ["conv"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["conv"], ["features"]),
        *_flatten_shape("features", 2, "seq"),
        helper.make_node("Reshape", ["features", "seq_shape"], ["tokens_cf"]),  # (N, 8, T)
        helper.make_node("Transpose", ["tokens_cf"], ["tokens"], perm=[0, 2, 1]),  # (N, T, 8)
        helper.make_node("MatMul", ["tokens", "fc"], ["logits_nb"]),
        helper.make_node("Add", ["logits_nb", "fc_b"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=2),
    ]
    return _model(nodes, [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, "H", "W"])],
                  [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", "T", classes])], init)


def keras_flatten_dense(classes: int = 5) -> onnx.ModelProto:
    """input_1 (unk__0, 8, 8, 3) NHWC → dense (unk__0, classes), as tf2onnx writes a small Keras CNN."""
    init = {**_SHAPE_CONSTANTS, **_weights(1, conv_w=(4, 3, 3, 3), conv_b=(4,), dense_w=(8 * 8 * 4, classes),
                                           dense_b=(classes,))}
    nodes = [
        helper.make_node("Transpose", ["input_1"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["nchw", "conv_w", "conv_b"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["relu"]),
        helper.make_node("Transpose", ["relu"], ["nhwc"], perm=[0, 2, 3, 1]),
        *_flatten_shape("nhwc", 1, "flat"),
        helper.make_node("Reshape", ["nhwc", "flat_shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "dense_w"], ["dense_nb"]),
        helper.make_node("Add", ["dense_nb", "dense_b"], ["dense_logits"]),
        helper.make_node("Softmax", ["dense_logits"], ["dense"], axis=1),
    ]
    return _model(nodes, [helper.make_tensor_value_info("input_1", TensorProto.FLOAT, ["unk__0", 8, 8, 3])],
                  [helper.make_tensor_value_info("dense", TensorProto.FLOAT, ["unk__0", classes])], init)


def paddle_classifier(classes: int = 4) -> onnx.ModelProto:
    """x (-1, 3, 8, 8) → softmax_out → Identity → save_infer_model/scale_0.tmp_0 (-1, classes)."""
    init = _weights(2, conv_w=(6, 3, 3, 3), fc_w=(6, classes), fc_b=(classes,))
    nodes = [
        helper.make_node("Conv", ["x", "conv_w"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["relu"]),
        helper.make_node("GlobalAveragePool", ["relu"], ["pool"]),
        helper.make_node("Flatten", ["pool"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["fc"]),
        helper.make_node("Softmax", ["fc"], ["softmax_out"], axis=1),
        helper.make_node("Identity", ["softmax_out"], ["save_infer_model/scale_0.tmp_0"]),
    ]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                   [helper.make_tensor_value_info("save_infer_model/scale_0.tmp_0", TensorProto.FLOAT, [1, classes])],
                   init)
    for info in (model.graph.input[0], model.graph.output[0]):
        info.type.tensor_type.shape.dim[0].dim_value = -1
    return model


def tf2onnx_pool_flatten(classes: int = 5, batch: int | str = "unk__0", shape_end: bool = False) -> onnx.ModelProto:
    """input_1 (batch, 8, 8, 3) NHWC → dense (batch, classes): Conv, ReLU, MaxPool in NCHW, Transpose to NHWC
    ("nhwc", the layer), Flatten to Concat(Shape(pool)[[0, 2, 3, 1]][:1], [-1]) through int32 Casts, as
    tf2onnx writes it. ``shape_end``: Shape(pool, end=1) instead (opset 15's slicing Shape)."""
    init = {**_SHAPE_CONSTANTS, **_weights(3, conv_w=(4, 3, 3, 3), conv_b=(4,), dense_w=(4 * 4 * 4, classes),
                                           dense_b=(classes,)),
            "to_nhwc": np.array([0, 2, 3, 1], np.int64), "minus_one32": np.array([-1], np.int32)}
    if shape_end:
        dims = [helper.make_node("Shape", ["pool"], ["pool_dims"], end=1)]
    else:
        dims = [helper.make_node("Shape", ["pool"], ["pool_dims_nchw"]),
                helper.make_node("Gather", ["pool_dims_nchw", "to_nhwc"], ["pool_dims"])]
    nodes = [
        helper.make_node("Transpose", ["input_1"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["nchw", "conv_w", "conv_b"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["relu"]),
        helper.make_node("MaxPool", ["relu"], ["pool"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Transpose", ["pool"], ["nhwc"], perm=[0, 2, 3, 1]),
        *dims,
        helper.make_node("Cast", ["pool_dims"], ["pool_dims32"], to=TensorProto.INT32),
        helper.make_node("Slice", ["pool_dims32", "zero", "keep1", "zero"], ["flat_batch32"]),
        helper.make_node("Concat", ["flat_batch32", "minus_one32"], ["flat_shape32"], axis=0),
        helper.make_node("Cast", ["flat_shape32"], ["flat_shape"], to=TensorProto.INT64),
        helper.make_node("Reshape", ["nhwc", "flat_shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "dense_w"], ["dense_nb"]),
        helper.make_node("Add", ["dense_nb", "dense_b"], ["dense_logits"]),
        helper.make_node("Softmax", ["dense_logits"], ["dense"], axis=1),
    ]
    model = _model(nodes, [helper.make_tensor_value_info("input_1", TensorProto.FLOAT, [batch, 8, 8, 3])],
                   [helper.make_tensor_value_info("dense", TensorProto.FLOAT, [batch, classes])], init)
    if shape_end:
        model.opset_import[0].version = 15
        model.ir_version = helper.find_min_ir_version_for(list(model.opset_import))
    return model


def _halving_loop(x: str, out: str, name: str) -> onnx.NodeProto:
    """``out`` = ``x`` halved twice, by a Loop whose body multiplies its state by 0.5."""
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Constant", [], ["half"], value=numpy_helper.from_array(np.array(0.5, np.float32))),
         helper.make_node("Mul", ["state_in", "half"], ["state_out"])],
        f"{name}_body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []), helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("state_in", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("state_out", TensorProto.FLOAT, None)])
    return helper.make_node("Loop", ["trips", "", x], [out], name=name, body=body)


def paddle_loop_classifier(classes: int = 4, loop_between_stages: bool = False) -> onnx.ModelProto:
    """x (N, 3, 8, 8) → Conv, ReLU ("early") → Conv, ReLU ("late") → global pool → Gemm → probs (N, classes),
    with a Loop after the global pool, or (``loop_between_stages``) on "early" before the second Conv."""
    init = {**_weights(4, conv1_w=(4, 3, 3, 3), conv2_w=(6, 4, 3, 3), fc_w=(6, classes), fc_b=(classes,)),
            "trips": np.array(2, np.int64)}
    stage2_input, pooled = ("early_looped", "flat") if loop_between_stages else ("early", "flat_looped")
    nodes = [
        helper.make_node("Conv", ["x", "conv1_w"], ["conv1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv1"], ["early"]),
        *([_halving_loop("early", "early_looped", "stage_loop")] if loop_between_stages else []),
        helper.make_node("Conv", [stage2_input, "conv2_w"], ["conv2"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv2"], ["late"]),
        helper.make_node("GlobalAveragePool", ["late"], ["pool"]),
        helper.make_node("Flatten", ["pool"], ["flat"], axis=1),
        *([] if loop_between_stages else [_halving_loop("flat", "flat_looped", "head_loop")]),
        helper.make_node("Gemm", [pooled, "fc_w", "fc_b"], ["fc"]),
        helper.make_node("Softmax", ["fc"], ["probs"], axis=1),
    ]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                  [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", classes])], init)


def outer_scope_matmul_loop(outer: str, weights: str, out: str, name: str) -> onnx.NodeProto:
    """A one-trip Loop ("trips" = 1) whose body reads ``outer`` from the outer scope, not as an input, and
    stacks MatMul(``outer``, ``weights``) into ``out`` (1, ...): how tf2onnx writes a Keras LSTM's steps."""
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("MatMul", [outer, weights], ["step_out"])], f"{name}_body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("step_out", TensorProto.FLOAT, None)])
    return helper.make_node("Loop", ["trips", ""], [out], body=body, name=name)


def tf2onnx_loop_recogniser(classes: int = 5) -> onnx.ModelProto:
    """image (N, 3, 8, 16) → Conv, ReLU ("features", the layer) → mean over the height → columns (N, 16, 6) →
    a one-trip Loop whose body reads "columns" from the outer scope and applies the per-step MatMul →
    logits (N, 16, classes) → Softmax. No gradient reaches "features": the Loop has no gradient rule."""
    init = {**_weights(5, conv_w=(6, 3, 3, 3), fc=(6, classes)), "trips": np.array(1, np.int64),
            "axis0": np.array([0], np.int64)}
    nodes = [
        helper.make_node("Conv", ["image", "conv_w"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["features"]),
        helper.make_node("ReduceMean", ["features"], ["pooled"], axes=[2], keepdims=0),  # (N, 6, 16)
        helper.make_node("Transpose", ["pooled"], ["columns"], perm=[0, 2, 1]),  # (N, 16, 6)
        outer_scope_matmul_loop("columns", "fc", "stacked", "lstm_loop"),
        helper.make_node("Squeeze", ["stacked", "axis0"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=2),
    ]
    return _model(nodes, [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 8, 16])],
                  [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 16, classes])], init)
