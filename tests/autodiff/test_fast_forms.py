"""The fast gradient forms leave every test architecture's early-layer map unchanged (within 1e-5).

The reference forms are the textbook ones the fast ones replace: a Conv's input gradient as a
ConvTranspose cropped by a Slice, activation masks applied with Where, and SiLU (X·Sigmoid(X))
differentiated through its Mul and its Sigmoid.
"""

from collections import Counter

import numpy as np
import onnxruntime as ort
import pytest
import torch

from onnxcam import export
from onnxcam.autodiff.emitter import Emitter
from onnxcam.autodiff.rules import activation, conv, elementwise, pool
from tests.autodiff.parity import locate, torch_reference
from tests.nets import ARCHITECTURES, export_onnx


def module_output(module, model, name: str, x: np.ndarray) -> str:
    """The ONNX tensor that holds torch module ``name``'s output on ``x``."""
    values, _, _ = torch_reference(module, x, [name], [0] * len(x))
    return locate(model, {"input": x}, values)[name]


def _where_masked(e, mask, grad):
    return e.zero_where(mask, grad)


def _transposed_conv_grad(ctx, size, kernel, strides, dilations, begin, end):
    e = ctx.emit
    out = [(h + b + p - (k - 1) * d - 1) // s + 1 for h, b, p, k, s, d in zip(size, begin, end, kernel, strides, dilations)]
    full = [s * (o - 1) + (k - 1) * d + 1 for o, k, s, d in zip(out, kernel, strides, dilations)]
    spread = e.op("ConvTranspose", ctx.dy, ctx.inputs[1], strides=strides, dilations=dilations,
                  group=int(ctx.attr("group", 1)), dtype_of=ctx.dy)
    return conv.fit(e, spread, full, begin, size)


def _op_counts(model) -> Counter:
    return Counter(n.op_type for n in model.graph.node)


def _cam(model, x) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(["cam"], {"input": x})[0]


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_fast_forms_give_the_reference_forms_maps(arch, monkeypatch):
    spec = ARCHITECTURES[arch]
    module, targets = spec.build()
    model = export_onnx(module, torch.randn(1, *spec.input_shape))
    x = np.random.default_rng(0).standard_normal((2, *spec.input_shape)).astype(np.float32)
    layer = module_output(module, model, targets[0], x)  # the early layer: the longest backward
    fast = export(model, layer=layer).model
    with monkeypatch.context() as patched:
        for owner in (activation, pool):
            patched.setattr(owner, "masked", _where_masked)
        patched.setattr(conv, "_conv_input_grad", _transposed_conv_grad)
        patched.setattr(elementwise, "silu_input_grad", lambda ctx: None)  # SiLU through the Mul's and Sigmoid's rules
        reference = export(model, layer=layer).model
    assert _op_counts(fast) != _op_counts(reference)  # the reference forms did replace the fast ones
    want = _cam(reference, x)
    assert want.max() > 0.5  # a real map, not an all-zero one
    np.testing.assert_allclose(_cam(fast, x), want, atol=1e-5)


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_grad_cam_weights_behind_a_global_average_are_its_gradient_not_the_mean_of_a_copy(arch, monkeypatch):
    """Behind a global average pool the layer's gradient is one value per channel, broadcast; the
    spatial mean of that broadcast is the value itself, so no full-size Expand is made."""
    spec = ARCHITECTURES[arch]
    module, _ = spec.build()
    model = export_onnx(module, torch.randn(1, *spec.input_shape))
    x = np.random.default_rng(0).standard_normal((2, *spec.input_shape)).astype(np.float32)
    fast = export(model).model  # the automatic (last) layer
    with monkeypatch.context() as patched:
        patched.setattr(Emitter, "reduce_mean", lambda e, t, axes, keepdims=True: e.reduce("ReduceMean", t, axes, keepdims))
        reference = export(model).model
    if _op_counts(fast)["ReduceMean"] == _op_counts(reference)["ReduceMean"]:
        pytest.skip(f"{arch}'s automatic layer is not behind a global average")  # no shortcut to take
    assert _op_counts(fast)["Expand"] < _op_counts(reference)["Expand"]
    np.testing.assert_allclose(_cam(fast, x), _cam(reference, x), atol=1e-6)
