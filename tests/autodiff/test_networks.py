"""Whole-network gradients against torch autograd.

Each architecture of tests/nets.py is exported with the legacy torch exporter; for its early,
middle and last stage the ONNX gradient of Σ_n logits[n, t_n] (four samples, four different
classes) must match torch autograd to a relative error of 1e-4 (max|Δ| / max|g_torch|), and the
gradient model must pass the full ONNX checker. ``pytest -s`` prints the errors;
scripts/grad_parity.py prints them as a table.
"""

from collections import OrderedDict

import onnx
import pytest
import torch
from onnx import helper
from torch import nn

from tests.autodiff.parity import (
    INPUT,
    TOLERANCE,
    check_parity,
    locate,
    network_parity,
    relative_error,
    sample_batch,
    torch_reference,
)
from tests.nets import ARCHITECTURES, export_onnx, vgg

NETWORKS = [
    pytest.param(arch, opset, id=f"{arch}-opset{opset}")
    for arch, spec in ARCHITECTURES.items()
    for opset in spec.opsets
]


def _report(label: str, parity) -> None:
    for target, error in parity.errors.items():
        print(f"\n{label:<28} {target:<18} -> {parity.tensors[target]:<50} max rel. error {error:.2e}", end="")


@pytest.mark.parametrize("arch, opset", NETWORKS)
def test_network_gradients_match_torch(arch, opset):
    parity = network_parity(arch, opset)  # also runs onnx.checker.check_model(..., full_check=True)
    _report(f"{arch} opset {opset}", parity)
    assert len(set(parity.tensors.values())) == 3, f"two targets resolved to one ONNX tensor: {parity.tensors}"
    parity.assert_close(label=f"{arch} opset {opset}:")


# --- (a) a classifier ending in Softmax ----------------------------------------------------------
def test_softmax_head_seeding_its_input_and_its_output():
    net, targets = vgg(seed=1)
    module = nn.Sequential(OrderedDict(net=net, softmax=nn.Softmax(dim=1))).eval()
    targets = [f"net.{t}" for t in targets[1:]]
    x, classes = sample_batch((3, 32, 32), seed=1)
    model = export_onnx(module, torch.from_numpy(x[:1]), output_name="probs")
    softmax = model.graph.node[-1]
    assert softmax.op_type == "Softmax" and softmax.output[0] == "probs"

    # the usual Grad-CAM score: the logit, i.e. the Softmax input
    logit = check_parity(module, model, x, targets, classes, score_module="net")
    _report("softmax model, seed logits", logit)
    assert logit.score_tensor == softmax.input[0]
    logit.assert_close(label="seed on the Softmax input:")

    # the probability: the gradient goes through the Softmax
    prob = check_parity(module, model, x, targets, classes)
    _report("softmax model, seed probs", prob)
    assert prob.score_tensor == "probs"
    prob.assert_close(label="seed on the Softmax output:")

    for t in targets:  # the two scores really differ, so each check tests its own seed
        assert relative_error(prob.onnx_grads[t], logit.onnx_grads[t]) > 1e-2


# --- (b) NHWC input with a Transpose in front, as tf2onnx writes it ----------------------------
class _ChannelsLast(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x.permute(0, 3, 1, 2))


def test_nhwc_input_behind_a_transpose():
    net, targets = vgg(seed=2)
    module = _ChannelsLast(net).eval()
    x, classes = sample_batch((32, 32, 3), seed=2)
    model = export_onnx(module, torch.from_numpy(x[:1]))
    first = next(n for n in model.graph.node if "input" in n.input)
    assert first.op_type == "Transpose" and list(helper.get_attribute_value(first.attribute[0])) == [0, 3, 1, 2]

    parity = check_parity(module, model, x, [INPUT, f"net.{targets[0]}", f"net.{targets[2]}"], classes)
    _report("NHWC input", parity)
    assert parity.tensors[INPUT] == "input" and parity.onnx_grads[INPUT].shape == x.shape
    parity.assert_close(label="NHWC model:")


# --- (c) constants as Constant nodes, as paddle2onnx writes them --------------------------------
def constants_as_nodes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Every initializer moved into a ``Constant`` node at the front of the graph."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    names = {t.name for t in out.graph.initializer}
    constants = [
        helper.make_node("Constant", [], [t.name], name=f"const/{t.name}", value=t) for t in out.graph.initializer
    ]
    nodes = constants + list(out.graph.node)
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    del out.graph.initializer[:]
    inputs = [i for i in out.graph.input if i.name not in names]
    del out.graph.input[:]
    out.graph.input.extend(inputs)
    return out


@pytest.mark.parametrize("arch", ["densenet", "convnext"])
def test_constants_as_constant_nodes(arch):
    rewritten = []

    def rewrite(model):
        rewritten.append(constants_as_nodes(model))
        return rewritten[-1]

    reference = network_parity(arch, 17)
    parity = network_parity(arch, 17, model_hook=rewrite)
    _report(f"{arch} Constant nodes", parity)
    assert not rewritten[0].graph.initializer
    assert sum(n.op_type == "Constant" for n in rewritten[0].graph.node) > 10
    parity.assert_close(label=f"{arch} with Constant nodes:")
    for target, grad in parity.onnx_grads.items():
        error = relative_error(grad, reference.onnx_grads[target])
        assert error <= TOLERANCE / 10, (
            f"{target}: the gradient changed by {error:.2e} when initializers became Constant nodes"
        )


def test_tensor_location_is_by_value():
    """The helper that maps torch modules to ONNX tensors must not match a different tensor."""
    net, targets = vgg(seed=3)
    x, classes = sample_batch((3, 32, 32), seed=3)
    model = export_onnx(net, torch.from_numpy(x[:1]))
    values, _, _ = torch_reference(net, x, targets, classes)
    found = locate(model, {"input": x}, values)
    assert all(name.endswith("Relu_output_0") for name in found.values()), found
    assert len(set(found.values())) == len(targets)
    with pytest.raises(AssertionError, match="no tensor"):
        locate(model, {"input": x}, {"perturbed": values[targets[0]] * (1 + 1e-3)})
