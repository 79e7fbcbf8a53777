"""Reverse-mode differentiation of an ONNX graph into standard ONNX nodes.

The engine owns everything rules share: finding the nodes between ``wrt`` and the seeded
tensors, the reverse topological sweep, summing the gradients of tensors with several
consumers, and the three-state op check (rule / non-differentiable / unsupported).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import onnx

from onnxcam.autodiff import rules as _rules  # noqa: F401  (fills the rule table)
from onnxcam.autodiff.emitter import Emitter
from onnxcam.autodiff.registry import RuleContext, carries_gradient, is_zero, lookup
from onnxcam.errors import NotDifferentiableError, UnsupportedOpError
from onnxcam.graph import GraphView, load_model, outer_names

__all__ = ["backward", "emit_backward", "Gradients"]

log = logging.getLogger(__name__)


@dataclass
class Gradients:
    """The rewritten model and, per ``wrt`` tensor, the name of the tensor holding its gradient."""

    model: onnx.ModelProto
    names: dict[str, str]


def backward(
    model: onnx.ModelProto,
    seeds: Mapping[str, str],
    wrt: Sequence[str],
    *,
    prefix: str = "onnxcam/grad",
) -> Gradients:
    """Append nodes computing the gradient of ``Σ_t <seeds[t], t>`` with respect to each ``wrt``.

    ``seeds`` maps forward tensors to tensors of the same shape that hold the incoming
    gradient (the cotangent); a one-hot seed on logits gives ∂logit[target]/∂wrt.
    The caller's model is not changed. Gradient tensors are not added as graph outputs.
    """
    model = load_model(model)
    emit = Emitter(GraphView(model), prefix=prefix)
    names = emit_backward(emit, seeds, wrt)
    emit.write_into(model)
    return Gradients(model, names)


Override = Callable[[RuleContext], "Sequence[str | None] | None"]


_UNSUPPORTED_HINT = "choose a later layer, or open an issue asking for this op"


def emit_backward(emit: Emitter, seeds: Mapping[str, str], wrt: Sequence[str],
                  overrides: Mapping[str, Override] | None = None, missing_ok: bool = False,
                  stop_at_wrt: bool = False, unsupported_hint: str = _UNSUPPORTED_HINT) -> dict[str, str]:
    """Emit the backward pass through ``emit``; returns the gradient tensor name per ``wrt``.

    Seed tensors may be ones that ``emit`` has already created (they need not be in the view).
    ``overrides`` maps op types to rules used instead of the registered ones (e.g. guided
    backpropagation's ReLU); an override may return ``None`` to leave a node to its usual rule.
    A ``wrt`` tensor the seeds do not depend on is an error, or with ``missing_ok`` left out of the
    result (its gradient is zero). ``stop_at_wrt`` gives partial derivatives: the ``wrt`` tensors are
    held fixed, so no gradient flows back through one of them into the others (a detector's levels:
    each level's gradient through its own head only). ``unsupported_hint`` ends the error for an op
    with no gradient rule: what to do instead, from a caller that knows the other layers.
    """
    view = emit.view
    active = frozenset(_active_tensors(view, seeds, wrt))
    grads: dict[str, list[str]] = defaultdict(list)
    for tensor, seed in seeds.items():
        grads[tensor].append(seed)

    first_node = len(emit.nodes)
    stops = set(wrt) if stop_at_wrt else set()
    for node in reversed(view.nodes):
        if not any(out in grads for out in node.output) or stops.intersection(node.output):
            continue
        needs = [bool(name) and name in active for name in node.input]
        if not any(needs) and not outer_names(node) & active:  # a subgraph's reads need its rule too
            continue
        _apply_rule(node, emit, grads, needs, view, wrt, seeds, overrides or {}, active, unsupported_hint)

    names = {}
    for target in wrt:
        if not grads.get(target) and missing_ok:
            continue
        if not grads.get(target):
            raise NotDifferentiableError(
                f"the score does not depend on '{target}' through differentiable ops; "
                "choose a layer the score is computed from"
            )
        names[target] = _total(emit, grads, target)
    log.debug("backward: %d nodes added", len(emit.nodes) - first_node)
    return names


def _apply_rule(node, emit, grads, needs, view, wrt, seeds, overrides, active, hint):
    if is_zero(node.op_type) and node.domain in ("", "ai.onnx"):
        return
    standard = node.domain in ("", "ai.onnx")
    override = overrides.get(node.op_type) if standard else None
    rule = lookup(node.op_type, view.opset) if standard else None
    if rule is None and override is None:
        raise UnsupportedOpError(
            f"no gradient rule for {_op_label(node)} node '{node.name}' (opset {view.opset}) "
            f"on the path from {', '.join(map(repr, wrt))} to {', '.join(map(repr, seeds))}; {hint}"
        )
    output_grads = [_total(emit, grads, out) if grads.get(out) else None for out in node.output]
    ctx = RuleContext(node=node, emit=emit, grads=output_grads, needs=needs, active=active, wrt=frozenset(wrt))
    overridden = override(ctx) if override is not None else None
    if overridden is None and rule is None:
        raise UnsupportedOpError(f"no gradient rule for {_op_label(node)} node '{node.name}' (opset {view.opset})")
    input_grads = list(overridden if overridden is not None else rule.fn(ctx))
    if len(input_grads) != len(node.input):
        raise AssertionError(
            f"gradient rule for {node.op_type} returned {len(input_grads)} gradients for {len(node.input)} inputs"
        )
    for name, need, grad in zip(node.input, needs, input_grads):
        if need and grad is not None:
            grads[name].append(grad)


def _total(emit: Emitter, grads: dict[str, list[str]], tensor: str) -> str:
    """Sum the gradient contributions of ``tensor`` once, and remember the sum."""
    terms = grads[tensor]
    if len(terms) > 1:
        grads[tensor] = [emit.sum(_unexpanded(emit, terms))]
    return grads[tensor][0]


def _unexpanded(emit: Emitter, terms: list[str]) -> list[str]:
    """The terms, with those that Expand a smaller gradient (GlobalAveragePool's, a broadcast
    operand's) given unexpanded when another term has the full shape: Sum broadcasts (opset 8 on),
    so the full-size copy is never made, and the dead-node pass drops the unused Expand."""
    if emit.opset < 8:
        return terms
    wanted, sources = set(terms), {}
    for node in reversed(emit.nodes):  # the terms were emitted recently: stop once all are found
        if node.output[0] in wanted:
            wanted.discard(node.output[0])
            if node.op_type == "Expand":
                sources[node.output[0]] = node.input[0]
            if not wanted:
                break
    if len(sources) == len(terms):  # no term has the full shape to broadcast to
        return terms
    return [sources.get(t, t) for t in terms]


def _op_label(node: onnx.NodeProto) -> str:
    return f"{node.domain}:{node.op_type}" if node.domain not in ("", "ai.onnx") else node.op_type


def _active_tensors(view: GraphView, seeds: Mapping[str, str], wrt: Sequence[str]) -> set[str]:
    """Tensors carrying a gradient (float ones, straight-through integers) that depend on some ``wrt``
    and that some seeded tensor depends on (what a node's subgraphs read from outside counts as its
    input)."""
    for name in [*wrt, *seeds]:
        if name not in view.producers and name not in view.graph_inputs and name not in view.initializers:
            raise NotDifferentiableError(f"tensor '{name}' is not in the model")
    reads = {id(node): [*node.input, *outer_names(node)] for node in view.nodes}
    downstream = set(wrt)
    for node in view.nodes:  # nodes are in topological order
        if is_zero(node.op_type):
            continue
        if any(i in downstream for i in reads[id(node)] if i):
            downstream.update(o for o in node.output if o and carries_gradient(view, o))
    return downstream & view.ancestors(seeds, inputs=lambda node: reads[id(node)])
