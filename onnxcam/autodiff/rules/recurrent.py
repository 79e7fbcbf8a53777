"""Gradient rules: recurrent layers (LSTM, GRU, RNN), differentiated through their expanded form.

The rule writes the node out as standard ops (:mod:`onnxcam.autodiff.recurrence`: a Scan over the
time steps, so the sequence length may be dynamic) in a small model of its own, whose inputs are
the node's inputs and the incoming gradients, and runs the engine's backward on it (the Scan
rule for the recurrence); the nodes of both are then adopted into the rewrite.
"""

from __future__ import annotations

import onnx
from onnx import helper

from onnxcam.autodiff.emitter import Emitter
from onnxcam.autodiff.recurrence import ACTIVATIONS, DEFAULT_ACTIVATIONS, Recurrence, RecurrentInputs, expand
from onnxcam.autodiff.registry import RuleContext, register
from onnxcam.graph import GraphView


@register("LSTM", "GRU", "RNN", since=9)  # the Scan form needs Scan-9
def recurrent(ctx: RuleContext):
    """dX, dh₀, dc₀ (dW, dR, dB, dP too when they are activations): the backward of the op written as a Scan over its steps; all directions, sequence_lens, layouts, peepholes, clip; Sigmoid/Tanh/Relu activations"""
    from onnxcam.autodiff.engine import emit_backward  # the engine imports the rule table, so not at module level

    spec = _recurrence(ctx)
    inputs = RecurrentInputs(*[ctx.input(i) for i in range(len(ctx.inputs))])
    prefix = ctx.emit.fresh(ctx.node.op_type)
    seeds = {k: grad for k, (out, grad) in enumerate(zip(ctx.outputs, ctx.grads)) if out and grad}
    typed_like = {name: name for name in ctx.inputs if name}
    typed_like.update({grad: ctx.outputs[k] for k, grad in seeds.items()})  # a gradient has its output's type
    sub = _sub_model(ctx, typed_like)
    forward = Emitter(GraphView(sub, complete=False), prefix=f"{prefix}/expanded")
    outputs = expand(forward, spec, inputs)
    sub.graph.node.extend(forward.nodes)
    sub.graph.initializer.extend(forward.initializers)
    sub.graph.output.extend(helper.make_empty_tensor_value_info(outputs[k]) for k in seeds)
    backward = Emitter(GraphView(sub, complete=False), prefix=f"{prefix}/grad")
    wanted = _first_occurrences(ctx)
    grads = emit_backward(backward, {outputs[k]: grad for k, grad in seeds.items()}, [ctx.inputs[i] for i in wanted])
    ctx.emit.adopt(forward)
    ctx.emit.adopt(backward)
    return [grads[name] if i in wanted else None for i, name in enumerate(ctx.inputs)]


def _recurrence(ctx: RuleContext) -> Recurrence:
    """The node's attributes and sizes, or a refusal naming what is not supported."""
    op = ctx.node.op_type
    if ctx.attr("input_forget", 0):
        ctx.fail("the attribute input_forget=1 (coupled input and forget gates) is not supported")
    direction = ctx.attr("direction", "forward")
    directions = ("forward", "reverse") if direction == "bidirectional" else (direction,)
    if direction not in ("forward", "reverse", "bidirectional"):
        ctx.fail(f"direction '{direction}' is not one of forward, reverse, bidirectional; the model is damaged")
    layout = int(ctx.attr("layout", 0))
    hidden = ctx.attr("hidden_size") or (ctx.static_shape(ctx.inputs[2])[-1])
    if ctx.input(4) and "reverse" in directions and ctx.opset < 10:
        ctx.fail("a reverse direction with sequence_lens needs ReverseSequence (opset 10)",
                 "convert the model to opset 10 or later with onnx.version_converter")
    clip = ctx.attr("clip")
    return Recurrence(op=op, hidden=int(hidden), directions=directions,
                      activations=_activations(ctx, len(directions)), layout=layout,
                      clip=None if clip is None else float(clip),
                      linear_before_reset=bool(ctx.attr("linear_before_reset", 0)),
                      weights_as_states=any(need for i, need in enumerate(ctx.needs) if i in (1, 2, 3, 7)))


def _activations(ctx: RuleContext, directions: int) -> tuple[tuple[str, ...], ...]:
    """The activation ops per direction."""
    default = DEFAULT_ACTIVATIONS[ctx.node.op_type]
    names = list(ctx.attr("activations", None) or default * directions)
    names = [n.decode() if isinstance(n, bytes) else n for n in names]
    if len(names) != len(default) * directions:
        ctx.fail(f"it lists {len(names)} activations, but needs {len(default)} per direction; the model is damaged")
    unknown = [n for n in names if n.lower() not in ACTIVATIONS]
    if unknown:
        ctx.fail(f"activation '{unknown[0]}' is not supported (supported: Sigmoid, Tanh, Relu)",
                 "choose a layer after the recurrent layer, or re-export the model with those activations")
    ops = [ACTIVATIONS[n.lower()] for n in names]
    return tuple(tuple(ops[d * len(default):(d + 1) * len(default)]) for d in range(directions))


def _first_occurrences(ctx: RuleContext) -> list[int]:
    """Indices of the inputs needing a gradient, a tensor given twice counted at its first place."""
    wanted, seen = [], set()
    for i, (name, need) in enumerate(zip(ctx.inputs, ctx.needs)):
        if need and name not in seen:
            wanted.append(i)
            seen.add(name)
    return wanted


def _sub_model(ctx: RuleContext, typed_like: dict[str, str]) -> onnx.ModelProto:
    """A model with no nodes whose inputs are the keys of ``typed_like``, each with the type and shape
    of the model's tensor it maps to."""
    view = ctx.view
    infos = []
    for name, like in typed_like.items():
        shape = view.shape(like)
        dims = None if shape is None else [d if d is not None else f"{like}_dim{i}" for i, d in enumerate(shape)]
        infos.append(helper.make_tensor_value_info(name, view.elem_type(like) or onnx.TensorProto.FLOAT, dims))
    graph = helper.make_graph([], f"{ctx.node.name}_expanded", infos, [])
    # IR 4 at least: before it, initializers (the constants of the written-out form) had to be inputs too
    return helper.make_model(graph, opset_imports=list(view.model.opset_import), ir_version=max(view.model.ir_version, 4))
