"""Planning: --input-shape on models exported at a fixed size."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxcam import ModelError, OnnxCamError, export
from onnxcam.graph import GraphView
from onnxcam.plan import fix_input_shape, layer_specs, parse_input_shape


def _fixed_conv_model(reshape_to_old_size: bool = False) -> onnx.ModelProto:
    """image fixed at 2x3x8x8 → Conv → Relu → (optionally a Reshape to 2x4x8x8) → GAP → Flatten → Gemm."""
    nodes = [helper.make_node("Conv", ["image", "w"], ["conv"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["conv"], ["relu"])]
    init = [numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32) * 0.1, "w")]
    last = "relu"
    if reshape_to_old_size:
        init.append(numpy_helper.from_array(np.array([2, 4, 8, 8], np.int64), "old_shape"))
        nodes.append(helper.make_node("Reshape", [last, "old_shape"], ["reshaped"], name="fixed_reshape"))
        last = "reshaped"
    init.append(numpy_helper.from_array(np.eye(4, dtype=np.float32), "fc"))
    nodes += [helper.make_node("GlobalAveragePool", [last], ["pooled"]),
              helper.make_node("Flatten", ["pooled"], ["flat"]),
              helper.make_node("Gemm", ["flat", "fc"], ["logits"])]
    graph = helper.make_graph(nodes, "fixed", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [2, 3, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [2, 4])], init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_a_fixed_size_is_replaced_when_the_graph_does_not_depend_on_it():
    model = fix_input_shape(_fixed_conv_model(), [1, 3, 32, 32])
    view = GraphView(model)
    assert view.shape("image") == (None, 3, 32, 32) and view.shape("relu") == (None, 4, 32, 32)
    result = export(_fixed_conv_model(), input_shape="1x3x32x32")
    assert result.plan.layer.shape == (None, 4, 32, 32)


def test_a_size_built_into_a_reshape_is_refused_naming_the_node():
    with pytest.raises(ModelError, match="Reshape node 'fixed_reshape' has that size built in"):
        fix_input_shape(_fixed_conv_model(reshape_to_old_size=True), [1, 3, 32, 32])


def _nhwc_model(head: str = "pool") -> onnx.ModelProto:
    """image (N, 8, 8, 3) → Transpose to NCHW → Conv(4) → Relu → a head: "pool" (GAP → Flatten → Gemm:
    any size), "reshape" (tf2onnx's Keras Flatten → Dense: back to NHWC, a Reshape to (N, 256) through
    Shape → Slice → Concat, a MatMul with 256 rows), "gemm" (PyTorch's Flatten → Linear(256, 2)) or
    "add" (a constant (1, 4, 8, 8) added, as a position embedding is) or "concat" (that constant joined
    to the channels, as a U-Net joins its skip connections): all but "pool" take 8x8 alone."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Transpose", ["image"], ["nchw"], perm=[0, 3, 1, 2]),
             helper.make_node("Conv", ["nchw", "w"], ["conv"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["conv"], ["relu"])]
    init = [numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")]
    if head == "reshape":
        init += [numpy_helper.from_array(np.array([0], np.int64), "zero"),
                 numpy_helper.from_array(np.array([1], np.int64), "one"),
                 numpy_helper.from_array(np.array([256], np.int64), "features"),
                 numpy_helper.from_array(rng.standard_normal((256, 2)).astype(np.float32), "dense")]
        nodes += [helper.make_node("Transpose", ["relu"], ["nhwc"], perm=[0, 2, 3, 1]),
                  helper.make_node("Shape", ["nhwc"], ["shape"]),
                  helper.make_node("Slice", ["shape", "zero", "one", "zero"], ["batch"]),
                  helper.make_node("Concat", ["batch", "features"], ["flat_shape"], axis=0),
                  helper.make_node("Reshape", ["nhwc", "flat_shape"], ["flat"], name="flatten"),
                  helper.make_node("MatMul", ["flat", "dense"], ["logits"])]
    elif head == "gemm":
        init.append(numpy_helper.from_array(rng.standard_normal((2, 256)).astype(np.float32), "fc"))
        nodes += [helper.make_node("Flatten", ["relu"], ["flat"]),
                  helper.make_node("Gemm", ["flat", "fc"], ["logits"], transB=1, name="linear")]
    else:
        last, channels = "relu", 4
        if head in ("add", "concat"):
            init.append(numpy_helper.from_array(rng.standard_normal((1, 4, 8, 8)).astype(np.float32), "embedding"))
            nodes.append(helper.make_node("Add", ["relu", "embedding"], ["embedded"], name="position") if head == "add"
                         else helper.make_node("Concat", ["relu", "embedding"], ["embedded"], axis=1, name="join"))
            last, channels = "embedded", 4 if head == "add" else 8
        init.append(numpy_helper.from_array(rng.standard_normal((2, channels)).astype(np.float32), "fc"))
        nodes += [helper.make_node("GlobalAveragePool", [last], ["pooled"]),
                  helper.make_node("Flatten", ["pooled"], ["flat"]),
                  helper.make_node("Gemm", ["flat", "fc"], ["logits"], transB=1)]
    nodes.append(helper.make_node("Softmax", ["logits"], ["probs"], axis=-1))
    graph = helper.make_graph(nodes, "nhwc", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 8, 8, 3])],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 2])], init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_a_layout_the_input_cannot_have_is_refused_naming_the_one_it_looks_like():
    with pytest.raises(OnnxCamError, match=r"--layout NCHW does not fit input 'image' \?x8x8x3: it would have 8 "
                                           r"channels; it looks NHWC"):
        export(_nhwc_model(), layout="NCHW")
    assert export(_nhwc_model(), layout="NHWC").plan.layout == "NHWC"


def test_an_input_shape_that_moves_the_channels_is_refused_naming_the_declared_shape():
    with pytest.raises(ModelError, match=r"declared \?x8x8x3 .*channels.* fixed at 3.*1x8x8x3"):
        fix_input_shape(_nhwc_model(), [1, 3, 16, 16])
    with pytest.raises(ModelError, match=r"declared 2x3x8x8 .*channels.* fixed at 3.*1x3x8x8"):
        fix_input_shape(_fixed_conv_model(), [1, 32, 32, 3])
    assert GraphView(fix_input_shape(_nhwc_model(), [1, 16, 16, 3])).shape("relu") == (None, 4, 16, 16)


@pytest.mark.parametrize("head, node", [("reshape", "Reshape node 'flatten'"), ("gemm", "Gemm node 'linear'"),
                                        ("add", "Add node 'position'"), ("concat", "Concat node 'join'")])
def test_an_input_size_the_graph_cannot_take_is_refused_at_export(head, node):
    with pytest.raises(ModelError, match=rf"1x12x12x3 does not fit .*{node}.*declared \?x8x8x3"):
        export(_nhwc_model(head), input_shape="1x12x12x3")  # 576 features where the Dense takes 256
    assert export(_nhwc_model(head), input_shape="1x8x8x3").plan.layer.shape[-2:] in ((8, 8), (8, 4))


def _pooled_rows_model() -> onnx.ModelProto:
    """image (N, 3, 8, 8) → Conv(4) → Relu → AveragePool 8x8 → Reshape to (-1, 4) → MatMul → Softmax, as
    nsfw.onnx's head: at 16x16 the pool leaves a 2x2 map, which the Reshape folds into four rows per image."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["image", "w"], ["conv"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["conv"], ["relu"]),
             helper.make_node("AveragePool", ["relu"], ["pooled"], kernel_shape=[8, 8], strides=[8, 8]),
             helper.make_node("Reshape", ["pooled", "rows"], ["flat"], name="to_rows"),
             helper.make_node("MatMul", ["flat", "fc"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1)]
    init = [numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w"),
            numpy_helper.from_array(np.array([-1, 4], np.int64), "rows"),
            numpy_helper.from_array(rng.standard_normal((4, 2)).astype(np.float32), "fc")]
    graph = helper.make_graph(nodes, "rows", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 8, 8])],
                              [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 2])], init)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_a_size_that_folds_the_map_into_the_batch_is_refused():
    with pytest.raises(ModelError, match=r"at 1x3x16x16 gives 'logits' 4 rows per image: the graph folds .* declared "
                                         r"\?x3x8x8\) with --input-shape"):
        export(_pooled_rows_model(), input_shape="1x3x16x16")


def test_the_rows_per_image_run_is_only_for_a_replaced_fixed_size(monkeypatch):
    from onnxcam import plan

    runs = []
    monkeypatch.setattr(plan, "_score_rows", lambda *args: runs.append(args[2]) or None)
    export(_pooled_rows_model(), input_shape="2x3x8x8")  # its own size, another batch
    dynamic = _pooled_rows_model()
    for d in dynamic.graph.input[0].type.tensor_type.shape.dim[2:]:
        d.dim_param = "side"
    export(dynamic, input_shape="1x3x8x8")  # a dynamic model is built for any size
    assert runs == []
    export(_pooled_rows_model(), input_shape="1x3x24x24")
    assert len(runs) == 1


def test_a_layer_spec_given_twice_is_named_as_given():
    """--layer auto --layer auto on a detector named one of the level tensors auto picked, which nobody gave."""
    with pytest.raises(OnnxCamError, match="layer 'auto' is given more than once"):
        layer_specs(["auto", "auto"])
    assert layer_specs(["relu", "conv"]) == ["relu", "conv"]


def test_an_input_shape_beyond_the_largest_side_is_refused_where_it_is_parsed():
    """export and layers took 1x3x100000x100000 (only run's explainer refused it)."""
    with pytest.raises(OnnxCamError, match="has a dim of 100000; image dims must be 1..16384"):
        parse_input_shape("1x3x100000x100000")
    assert parse_input_shape("64x3x16384x16") == [64, 3, 16384, 16]
